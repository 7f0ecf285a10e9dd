// BM25 scoring variants with the formulas of bm25s (Kamphuis et al., ECIR 2020, "Which BM25
// do you mean?"): the index stores one impact per posting, score(q, d) = sum of q's impacts
// in d plus, for BM25L and BM25+, a per-query constant for the terms d does not contain.
#pragma once

#include <cstdint>
#include <string>

namespace fastrag {

enum class BM25Method : std::uint32_t { Lucene = 0, Robertson = 1, Atire = 2, BM25L = 3, BM25Plus = 4 };

struct BM25Params {
  BM25Method method = BM25Method::Lucene;
  float k1 = 1.5f;
  float b = 0.75f;
  float delta = 0.5f;  // BM25L and BM25+ only
};

// Parses "lucene", "robertson", "atire", "bm25l", "bm25+"; throws std::invalid_argument.
BM25Method parse_bm25_method(const std::string& name);
std::string bm25_method_name(BM25Method m);
// Throws std::invalid_argument for k1 < 0, b outside [0, 1], delta < 0 or non-finite values.
void validate(const BM25Params& p);

// Inverse document frequency of a term found in df of n documents (df >= 1).
double bm25_idf(const BM25Params& p, double df, double n);
// Term-frequency component for a term seen tf times in a document of length dl.
double bm25_tfc(const BM25Params& p, double tf, double dl, double avgdl);
// Score a document gets from a query term it does not contain (non-zero for BM25L / BM25+
// only); computed at the average length, as bm25s does.
double bm25_nonoccurrence(const BM25Params& p, double df, double n, double avgdl);

}  // namespace fastrag
