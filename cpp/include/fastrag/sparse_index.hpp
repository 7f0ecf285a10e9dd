// An inverted index over dense uint32 term ids and dense uint32 document ids.
//
// Postings are stored term by term (CSR): document ids ascending, the raw value (term
// frequency for BM25, a learned weight for impact scoring) and the impact used at query time.
// Each term's list is cut into blocks of kBlockSize postings with the block's largest impact
// and last document, so that top-k search can skip blocks that cannot enter the result
// (block-max MaxScore). Impacts are derived from the raw values and the live collection
// statistics by commit(), which runs after every batch of additions or deletions.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "fastrag/bm25.hpp"
#include "fastrag/column.hpp"

namespace fastrag {

enum class Scoring : std::uint32_t {
  BM25 = 0,    // values are term frequencies; impacts = idf * tf component (bm25s formulas)
  Impact = 1,  // values are precomputed non-negative weights (SPLADE, BM42); impacts = values
};

enum class SearchAlgorithm : std::uint32_t {
  Auto = 0,        // picks per query from list lengths and collection size
  Exhaustive = 1,  // term-at-a-time accumulation of every posting, then top-k
  MaxScore = 2,    // document-at-a-time block-max MaxScore with block skipping
};

// "auto", "exhaustive" or "maxscore"; std::invalid_argument otherwise.
SearchAlgorithm parse_algorithm(const std::string& name);

// Queries as CSR: terms[indptr[q]:indptr[q+1]] with weights (null = 1 each).
// Duplicate terms in one query add up; weights must be finite and >= 0.
struct QueryBatch {
  const std::int64_t* indptr = nullptr;
  std::size_t n_queries = 0;
  const std::uint32_t* terms = nullptr;
  const float* weights = nullptr;
};

struct SearchOptions {
  std::size_t k = 10;
  int threads = 1;
  SearchAlgorithm algorithm = SearchAlgorithm::Auto;
  // Bitset over internal ids (null = all). Ids past its end are not allowed, so a bitset made
  // before documents were added stays valid.
  const std::uint64_t* allow = nullptr;
  std::size_t allow_words = 0;
};

struct IndexStats {
  std::uint64_t n_docs = 0;  // internal ids in use, deleted ones included
  std::uint64_t n_live = 0;
  std::uint64_t n_terms = 0;
  std::uint64_t n_postings = 0;
  double avgdl = 0;
  double total_len = 0;  // sum of live document lengths
  std::uint64_t memory_bytes = 0;     // the arrays' contents
  std::uint64_t allocated_bytes = 0;  // what they hold, spare capacity included
};

class SparseIndex {
 public:
  static constexpr std::uint32_t kBlockSize = 128;
  static constexpr std::uint32_t kFormatVersion = 1;

  explicit SparseIndex(Scoring scoring, BM25Params params = {});
  SparseIndex(const SparseIndex&) = delete;
  SparseIndex& operator=(const SparseIndex&) = delete;

  Scoring scoring() const { return scoring_; }
  const BM25Params& params() const { return params_; }

  // Appends n_docs documents: doc i holds terms[indptr[i]:indptr[i+1]]. BM25: values must be
  // null, repeated terms are counted (tf), the length is the number of entries. Impact:
  // values[j] is the weight of terms[j] (finite, >= 0); a repeated term keeps its largest
  // weight. Returns the internal id of the first new document.
  std::uint32_t add(const std::int64_t* indptr, std::size_t n_docs, const std::uint32_t* terms,
                    const float* values);

  // Marks documents deleted; returns how many were live. Unknown ids -> std::out_of_range.
  std::size_t remove(const std::uint32_t* ids, std::size_t n);

  // Drops deleted documents and renumbers the rest densely in order. Returns, for every old
  // internal id, its new id or -1.
  std::vector<std::int64_t> compact();

  // Writes (n_queries x k) ids (-1 padded) and scores (-inf padded). Only documents to which
  // the query's terms add a positive amount are returned; scores are summed in the query's
  // term order by every algorithm, so all return the same bits. Safe to call from many threads.
  void search(const QueryBatch& q, const SearchOptions& opt, std::int64_t* out_ids,
              float* out_scores) const;

  // Sharded BM25: scores with the statistics of a whole collection split into shards, so that
  // every shard's scores equal those of one index over all of them. n_docs and total_len are
  // the collection's live documents and their summed lengths; df[t] (n entries) the
  // collection's document frequency of local term t (terms past n keep their local one).
  // Each must cover this shard (df >= the local df, n_docs >= live documents), else
  // std::invalid_argument. Kept until cleared (not saved); BM25 scoring only.
  void set_global_stats(std::uint64_t n_docs, double total_len, const std::uint32_t* df,
                        std::size_t n);
  void clear_global_stats();
  bool has_global_stats() const;

  // Live document frequency of each term (n_terms entries).
  std::vector<std::uint32_t> document_frequencies() const;
  bool is_live(std::uint32_t id) const;
  std::size_t size() const;  // internal ids in use, deleted ones included
  IndexStats stats() const;

  // Saves to `path` with `extra` (opaque bytes for the caller: vocabulary, user ids...).
  void save(const std::string& path, const std::string& extra) const;
  // Loads a saved index; with use_mmap the arrays stay in the mapped file until modified.
  static std::unique_ptr<SparseIndex> load(const std::string& path, bool use_mmap,
                                           std::string* extra);

 private:
  struct Scratch;
  void commit_locked();  // recomputes df, impacts and block maxima from values and stats
  void ensure_committed() const;
  void search_one(const QueryBatch& q, std::size_t qi, const SearchOptions& opt, Scratch& s,
                  std::int64_t* ids, float* scores) const;
  void search_exhaustive(Scratch& s, const SearchOptions& opt) const;
  void search_maxscore(Scratch& s, const SearchOptions& opt) const;
  void check_invariants(const std::string& path) const;

  Scoring scoring_;
  BM25Params params_;

  std::uint64_t n_docs_ = 0;
  std::uint64_t n_live_ = 0;
  std::uint64_t n_terms_ = 0;
  double total_len_ = 0;  // sum of live document lengths

  Column<std::uint32_t> doc_len_;  // n_docs: tokens (BM25) or distinct terms (impact)
  Column<std::uint64_t> live_;     // bitset over n_docs

  Column<std::uint64_t> offsets_;  // n_terms + 1, into the posting arrays
  Column<std::uint32_t> docs_;
  Column<float> values_;
  Column<float> impacts_;

  Column<std::uint64_t> block_offsets_;  // n_terms + 1, into the block arrays
  Column<float> block_max_;
  Column<std::uint32_t> block_last_;
  Column<float> term_max_;   // n_terms: largest impact of each term
  Column<float> nonocc_;     // n_terms: BM25L / BM25+ score of absent terms (else empty)
  Column<std::uint32_t> df_; // n_terms: live document frequency

  // Documents added since the last commit, merged into the postings by commit_locked().
  std::vector<std::int64_t> pending_indptr_{0};
  std::vector<std::uint32_t> pending_terms_;
  std::vector<float> pending_values_;
  std::atomic<bool> dirty_{false};

  // set_global_stats(): used by commit_locked() in place of the local counts when global_.
  bool global_ = false;
  std::uint64_t global_n_ = 0;
  double global_total_len_ = 0;
  std::vector<std::uint32_t> global_df_;

  mutable std::shared_mutex mutex_;
};

}  // namespace fastrag
