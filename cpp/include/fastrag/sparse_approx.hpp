// Approximate top-k over learned sparse vectors, after Seismic (Bruch, Nardini, Rulli,
// Venturini, "Efficient Inverted Indexes for Approximate Retrieval over Learned Sparse
// Representations", SIGIR 2024): each term's posting list keeps only its heaviest entries,
// split into blocks of similar documents, each block with a summary vector (per-term maxima,
// pruned to a share of their mass, quantised to 8 bits). A query visits its heaviest terms'
// lists, reads their blocks best summary first and stops where a summary's dot product times
// heap_factor falls under the current k-th score (Seismic's heap_factor is the inverse); the
// documents of the blocks it reads are scored with their full (forward) vectors.
//
// Blocks are made per list, as in Seismic, but cheaply: a list (its heaviest entries, in
// chunks of at most a thousand in weight order) is split around random seed documents, each
// document joining the seed it shares the most weight with over their heaviest terms. A block's
// summary is stored like a document (terms ascending, 8-bit levels, one scale), so a summary's
// dot product with the query is the same gather over a dense query array as a document's.
//
// Static: built once from CSR vectors. Documents are dense ids 0..n_docs-1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fastrag {

struct ApproxBuildParams {
  std::size_t list_size = 0;      // entries per posting list on average (0 = all): the
                                  // heaviest list_size x n_terms of the collection, at most
                                  // 1.5 x list_size in one list
  float summary_energy = 1.0f;    // share of a block summary's mass kept (its heaviest terms;
                                  // < 1: over each document's 24 heaviest terms)
  std::size_t doc_cut = 12;       // heaviest terms of a document used to cluster it
  std::size_t cluster_size = 16;  // documents per block (on average)
  bool quantize = true;           // forward weights as uint8 per document (else float32)
  std::uint64_t seed = 0;
  int threads = 0;
};

struct ApproxSearchParams {
  std::size_t k = 10;
  std::size_t query_cut = 0;   // lists visited: the query's heaviest terms (0 = all)
  float heap_factor = 1.0f;    // a block is read when summary x heap_factor >= k-th score
  int threads = 1;
  const std::uint64_t* allow = nullptr;  // bitset of the documents that may be returned
  std::size_t allow_words = 0;
};

struct ApproxStats {
  std::size_t n_docs = 0, n_terms = 0, n_entries = 0, n_postings = 0,
              n_blocks = 0, n_summary_entries = 0, memory_bytes = 0;
};

class ApproxSparseIndex {
 public:
  // Rows of a CSR matrix: row d is terms[indptr[d]:indptr[d+1]] with weights (finite, >= 0;
  // a repeated term keeps its largest weight, zeros are dropped). Throws invalid_argument.
  static std::unique_ptr<ApproxSparseIndex> build(const std::int64_t* indptr, std::size_t n_docs,
                                                  const std::uint32_t* terms,
                                                  const float* weights,
                                                  const ApproxBuildParams& params);

  // Queries in CSR form (weights >= 0); writes n_queries x k ids (-1 padding) and scores.
  void search(const std::int64_t* indptr, std::size_t n_queries, const std::uint32_t* terms,
              const float* weights, const ApproxSearchParams& params, std::int64_t* ids,
              float* scores) const;

  void save(const std::string& path, const std::string& extra) const;
  static std::unique_ptr<ApproxSparseIndex> load(const std::string& path, std::string* extra);

  std::size_t size() const { return n_docs_; }
  ApproxStats stats() const;
  const ApproxBuildParams& params() const { return params_; }

  struct Scratch;

 private:
  ApproxSparseIndex() = default;
  template <class TermT, class WeightT>
  void search_one(const std::uint32_t* terms, const float* weights, std::size_t n,
                  const ApproxSearchParams& p, Scratch& s, std::int64_t* ids,
                  float* scores) const;
  void check() const;

  ApproxBuildParams params_;
  std::size_t n_docs_ = 0, n_terms_ = 0;
  bool wide_ = false;  // term ids stored as uint32 (else uint16: n_terms <= 65536)
  // Forward vectors: doc d is entries [doc_offsets_[d], doc_offsets_[d+1]), terms ascending.
  std::vector<std::uint64_t> doc_offsets_;
  std::vector<std::uint16_t> fwd_terms16_;
  std::vector<std::uint32_t> fwd_terms32_;
  std::vector<std::uint8_t> fwd_levels_;  // quantize: weight = level x doc_scales_[d]
  std::vector<float> doc_scales_;
  std::vector<float> fwd_weights_;  // !quantize
  // Posting lists: term t's blocks are term_blocks_[t] .. term_blocks_[t+1]); block b holds
  // the documents list_docs_[block_first_[b] .. block_first_[b+1]) (ascending), so term t's
  // list is list_docs_[block_first_[term_blocks_[t]] .. block_first_[term_blocks_[t+1]]).
  std::vector<std::uint32_t> term_blocks_;
  std::vector<std::uint32_t> block_first_;
  std::vector<std::uint32_t> list_docs_;
  // Block summaries, stored like the forward vectors: block b's entries are
  // [sum_offsets_[b], sum_offsets_[b+1]), terms ascending, weight = level x block_scales_[b]
  // (levels rounded up: with summary_energy 1 a summary bounds its documents' weights).
  std::vector<std::uint64_t> sum_offsets_;
  std::vector<std::uint16_t> sum_terms16_;
  std::vector<std::uint32_t> sum_terms32_;
  std::vector<std::uint8_t> sum_levels_;
  std::vector<float> block_scales_;
};

}  // namespace fastrag
