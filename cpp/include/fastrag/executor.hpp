// The query executor: everything after query encoding in one call. Each leg (a sparse or a
// dense index) retrieves chunks at its depth with its allow-list; the legs are fused over chunk
// ids; chunks are grouped into documents (max or sum); the call deepens the legs until k
// distinct documents come out or every leg is exhausted; the top-k documents are written to
// preallocated outputs. A batch of queries runs across threads with parallel_for.
//
// Fusion reproduces python/fastrag/search/fusion.py bit for bit: the same float64 arithmetic
// in the same order (numpy's pairwise summation for means and standard deviations), the same
// first-appearance order among equal fused scores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fastrag/hnsw.hpp"
#include "fastrag/sparse_index.hpp"

namespace fastrag {

// "rrf" (weighted with weights), "minmax" (a convex combination of min-max normalised scores:
// weights rescaled to sum to 1; "convex" is the same method), "zscore", "dbsf". The score-based
// methods refuse an infinite leg score (std::invalid_argument), as fusion.py does. A chunk whose
// document is unknown takes part in fusion (ranks, statistics) and is skipped afterwards, as in
// the pipeline.
enum class Fusion : std::uint32_t { RRF = 0, MinMax = 1, ZScore = 2, DBSF = 3 };
// "max": a document scores as its best chunk; "sum": the sum of its chunks' fused scores.
enum class Aggregate : std::uint32_t { Max = 0, Sum = 1 };

Fusion parse_fusion(const std::string& name);        // std::invalid_argument if unknown
Aggregate parse_aggregate(const std::string& name);  // std::invalid_argument if unknown

constexpr std::uint32_t kNoChunk = 0xFFFFFFFFu;  // slot_chunk: slot not mapped to a chunk
constexpr std::uint32_t kNoDoc = 0xFFFFFFFFu;    // chunk_doc: chunk deleted or unknown

// One retriever. Exactly one of `sparse` / `dense` is set.
struct Leg {
  // Sparse leg: the index and the batch's queries (n_queries must be the batch's).
  const SparseIndex* sparse = nullptr;
  QueryBatch sparse_queries;
  SearchAlgorithm algorithm = SearchAlgorithm::Auto;

  // Dense leg: the index and the batch's query rows (n_queries x the index's dim, finite).
  const HnswIndex* dense = nullptr;
  const float* dense_queries = nullptr;
  std::size_t ef = 64;
  std::uint32_t dims = 0;  // > 0: Matryoshka funnel (a multiple of 16, at most dim)
  bool exact = false;
  // Candidates rescored with full float32 rows; with rescore_auto the wrapper's rule for
  // the current depth d: dims ? max(ef, d) : keep_float ? min(max(ef, d), 2d) : 0.
  std::size_t rescore = 0;
  bool rescore_auto = false;
  std::size_t exact_below = 0;  // a filtered search with this few allowed ids scans them

  // Common.
  // Chunks retrieved at first (>= 1; capped by the index's size). While fewer than k documents
  // come out, every leg that is not exhausted (it returned as many hits as asked, and the index
  // holds more) doubles its depth and runs again; an exhausted leg keeps its results.
  std::size_t depth = 100;
  double weight = 1.0;      // finite, >= 0; 0 = the leg is not run
  const std::uint64_t* allow = nullptr;  // bitset over the index's internal ids (null = all)
  std::size_t allow_words = 0;
  // Internal id -> chunk id (kNoChunk or past the end: not mapped, the hit is dropped before
  // fusion, so ranks count mapped hits only). Two hits of one leg on the same chunk: the first
  // counts (fusion.py would refuse the duplicate).
  const std::uint32_t* slot_chunk = nullptr;
  std::size_t slot_chunk_size = 0;
};

struct ExecuteOptions {
  std::size_t k = 10;  // documents per query (>= 1)
  Fusion fusion = Fusion::RRF;
  double rrf_k = 60.0;  // finite, > 0
  Aggregate aggregate = Aggregate::Max;
  int threads = 1;  // 0 = all cores
  // > 0: also write the first fused_width fused chunks of known documents (for rerank stages,
  // which work on chunks before they are grouped into documents).
  std::size_t fused_width = 0;
  // Chunk id -> document ordinal (kNoDoc or past the end: the chunk is skipped).
  const std::uint32_t* chunk_doc = nullptr;
  std::size_t n_chunks = 0;
};

// Preallocated outputs, row-major; n = n_queries, L = number of legs.
struct ExecuteOutput {
  std::int64_t* docs = nullptr;    // n x k document ordinals, -1 padded
  float* scores = nullptr;         // n x k, -inf padded
  std::int64_t* chunks = nullptr;  // n x k best chunk of each document, -1 padded
  // n x L: the depth of each leg's last search (0: weight 0, not run); may be null.
  std::int64_t* depths = nullptr;
  // Explain (both null or both set): n x k x (L + 1). For the best chunk of each document:
  // [l] = leg l's score and 1-based rank (NaN, 0 when the leg did not return the chunk),
  // [L] = its fused score and rank (one positive-weight leg: that leg's score and rank).
  // Padding: NaN, 0.
  float* explain_scores = nullptr;
  std::int32_t* explain_ranks = nullptr;
  // With fused_width m > 0: n x m chunk ids in fused order (-1 padded) and their fused scores
  // (one positive-weight leg: its own; -inf padded). Chunks of unknown documents are left out.
  std::int64_t* fused_chunks = nullptr;
  float* fused_scores = nullptr;
};

// Checks the legs and options (std::invalid_argument with what to fix) without searching.
void validate(const std::vector<Leg>& legs, std::size_t n_queries, const ExecuteOptions& opt);

// Runs n_queries queries (validate() first). Results do not depend on opt.threads.
// The indexes may take adds and deletes concurrently, but must not be compacted during the call
// (slot_chunk would no longer describe them).
void execute(const std::vector<Leg>& legs, std::size_t n_queries, const ExecuteOptions& opt,
             const ExecuteOutput& out);

}  // namespace fastrag
