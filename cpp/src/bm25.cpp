#include "fastrag/bm25.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace fastrag {

BM25Method parse_bm25_method(const std::string& name) {
  if (name == "lucene") return BM25Method::Lucene;
  if (name == "robertson") return BM25Method::Robertson;
  if (name == "atire") return BM25Method::Atire;
  if (name == "bm25l") return BM25Method::BM25L;
  if (name == "bm25+" || name == "bm25plus") return BM25Method::BM25Plus;
  throw std::invalid_argument("unknown BM25 method '" + name +
                              "'; choose one of lucene, robertson, atire, bm25l, bm25+");
}

std::string bm25_method_name(BM25Method m) {
  switch (m) {
    case BM25Method::Lucene: return "lucene";
    case BM25Method::Robertson: return "robertson";
    case BM25Method::Atire: return "atire";
    case BM25Method::BM25L: return "bm25l";
    case BM25Method::BM25Plus: return "bm25+";
  }
  return "unknown";
}

void validate(const BM25Params& p) {
  if (!std::isfinite(p.k1) || p.k1 < 0) throw std::invalid_argument("k1 must be a finite number >= 0");
  if (!std::isfinite(p.b) || p.b < 0 || p.b > 1) throw std::invalid_argument("b must lie in [0, 1]");
  if (!std::isfinite(p.delta) || p.delta < 0)
    throw std::invalid_argument("delta must be a finite number >= 0");
  if (static_cast<std::uint32_t>(p.method) > 4) throw std::invalid_argument("unknown BM25 method");
}

double bm25_idf(const BM25Params& p, double df, double n) {
  switch (p.method) {
    case BM25Method::Lucene: return std::log(1.0 + (n - df + 0.5) / (df + 0.5));
    case BM25Method::Robertson: return std::log(std::max(1.0, (n - df + 0.5) / (df + 0.5)));
    case BM25Method::Atire: return std::log(n / df);
    case BM25Method::BM25L: return std::log((n + 1.0) / (df + 0.5));
    case BM25Method::BM25Plus: return std::log((n + 1.0) / df);
  }
  return 0.0;
}

double bm25_tfc(const BM25Params& p, double tf, double dl, double avgdl) {
  const double k1 = p.k1, b = p.b, delta = p.delta;
  const double norm = avgdl > 0 ? (1.0 - b + b * dl / avgdl) : 1.0;
  switch (p.method) {
    case BM25Method::Lucene:
    case BM25Method::Robertson: return tf / (k1 * norm + tf);
    case BM25Method::Atire: return tf * (k1 + 1.0) / (tf + k1 * norm);
    case BM25Method::BM25L: {
      const double c = tf / norm;
      return (k1 + 1.0) * (c + delta) / (k1 + c + delta);
    }
    case BM25Method::BM25Plus: return (k1 + 1.0) * tf / (k1 * norm + tf) + delta;
  }
  return 0.0;
}

double bm25_nonoccurrence(const BM25Params& p, double df, double n, double avgdl) {
  if (p.method != BM25Method::BM25L && p.method != BM25Method::BM25Plus) return 0.0;
  return bm25_idf(p, df, n) * bm25_tfc(p, 0.0, avgdl, avgdl);
}

}  // namespace fastrag
