// An inverted index over dense uint32 term ids and dense uint32 document ids.
//
// Postings are stored term by term, document ids ascending, in blocks of kBlockSize postings:
// bit-packed document-id gaps and, for BM25, bit-packed term frequencies (see
// cpp/src/sparse_codec.hpp); impact scoring keeps one float weight per posting. Beside each
// block stay, uncompressed, its last document and its largest impact, so that top-k search
// decodes only the blocks it cannot skip (block-max MaxScore). A BM25 impact is computed when
// its block is decoded, from the term frequency, the term's idf and the document's length
// normalisation, with the very expression (and so the very bits) earlier versions stored per
// posting. The derived tables (document frequencies, idf, norms, block maxima) are recomputed
// from the postings and the live collection statistics by commit(), which runs after every
// batch of additions or deletions, and on load.
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
#include "fastrag/reorder.hpp"

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

// When a BM25 index keeps one float impact per posting in memory (see SparseIndex).
enum class ImpactCache : std::uint32_t {
  Off = 0,
  On = 1,
  Auto = 2,  // on while the index holds at most SparseIndex::kAutoCacheMax postings
};

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
  static constexpr std::uint32_t kFormatVersion = 2;  // 1: uncompressed postings (still read)

  // impact_cache (BM25): keep one float impact per posting in memory, computed by commit() and
  // on load (never saved), so that search reads impacts instead of computing them from term
  // frequencies and document lengths: about 4 more bytes per posting. An index of at most
  // kDocCacheMax postings (and any impact-scored one that small) also keeps its postings'
  // document ids decoded, 4 more bytes per posting, which memory that small can spare: there,
  // decoding was 12-16% of an exhaustive search (cranfield). Without the cache a BM25 impact
  // is computed when its block is decoded. Results are the same bits either way.
  // ImpactCache::Auto (the default) keeps the cache while the index holds at most
  // kAutoCacheMax postings (at most 64 MB of cache; about 400,000 documents of 50 tokens):
  // collections that small are searched by accumulating every posting, where computing
  // impacts ran at about 0.6x the speed, while on larger ones (searched by MaxScore) it ran at
  // 0.9-0.97x for a third of the memory (benchmarks/NOTES.md, 2026-12-07 (afternoon)).
  static constexpr std::uint64_t kDocCacheMax = std::uint64_t{1} << 21;
  static constexpr std::uint64_t kAutoCacheMax = std::uint64_t{1} << 24;
  explicit SparseIndex(Scoring scoring, BM25Params params = {},
                       ImpactCache impact_cache = ImpactCache::Auto);
  SparseIndex(const SparseIndex&) = delete;
  SparseIndex& operator=(const SparseIndex&) = delete;

  Scoring scoring() const { return scoring_; }
  bool impact_cache() const;  // whether the cache is held now (by the policy and the size)
  ImpactCache impact_cache_policy() const;
  // Sets the policy, building or dropping the cache (BM25; impact scoring holds its weights
  // either way, the policy deciding only whether small indexes keep document ids decoded).
  void set_impact_cache(ImpactCache policy);
  const BM25Params& params() const { return params_; }

  // Appends n_docs documents: doc i holds terms[indptr[i]:indptr[i+1]]. BM25: values must be
  // null, repeated terms are counted (tf), the length is the number of entries. Impact:
  // values[j] is the weight of terms[j] (finite, >= 0); a repeated term keeps its largest
  // weight. Returns the internal id of the first new document.
  std::uint32_t add(const std::int64_t* indptr, std::size_t n_docs, const std::uint32_t* terms,
                    const float* values);

  // Marks documents deleted; returns how many were live. Unknown ids -> std::out_of_range.
  std::size_t remove(const std::uint32_t* ids, std::size_t n);

  // Drops deleted documents and renumbers the rest densely: in order, or with `reorder` in
  // the order recursive graph bisection gives (documents sharing terms get nearby ids: smaller
  // gaps, so fewer bytes per posting; see fastrag/reorder.hpp). Returns, for every old
  // internal id, its new id or -1. Scores do not change.
  std::vector<std::int64_t> compact(const ReorderParams* reorder = nullptr);

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
                                           std::string* extra,
                                           ImpactCache impact_cache = ImpactCache::Auto);

 private:
  struct Scratch;
  void commit_locked();  // merges pending documents, then compute_stats()
  void compute_stats();  // df, idf, norms, block and term maxima from the postings and stats
  // Every posting, decoded: document ids and values (term frequencies for BM25).
  void decode_postings(std::vector<std::uint32_t>& docs, std::vector<float>& vals) const;
  // Replaces the postings by the given lists (offsets: n_terms_ + 1 into docs and vals).
  void encode_postings(std::vector<std::uint64_t> offsets, const std::vector<std::uint32_t>& docs,
                       std::vector<float> vals);
  // Decodes block `blk` (absolute) of term t: its n documents and, for BM25, tfs - 1.
  std::size_t decode_block(std::uint64_t t, std::uint64_t blk, std::uint32_t* docs,
                           std::uint32_t* tfs) const;
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

  Column<std::uint64_t> offsets_;  // n_terms + 1: where each term's postings start
  Column<float> values_;           // impact scoring: the weight of each posting (BM25: empty)
  Column<std::uint8_t> packed_;    // bit-packed gaps and tfs of every block, then kPad zeros

  Column<std::uint64_t> block_offsets_;  // n_terms + 1, into the block arrays
  Column<std::uint64_t> block_data_;     // per block: where its bytes start in packed_
  Column<std::uint16_t> block_bits_;     // per block: doc gap bits | (tf bits << 8)
  Column<std::uint32_t> block_last_;     // per block: its last document
  // Derived by compute_stats() (not saved).
  Column<float> block_max_;   // per block: its largest impact
  Column<std::uint32_t> block_first_;  // per block: its first document (MaxScore bounds)
  Column<float> term_max_;    // n_terms: largest impact of each term
  Column<float> nonocc_;      // n_terms: BM25L / BM25+ score of absent terms (else empty)
  Column<std::uint32_t> df_;  // n_terms: live document frequency
  std::vector<double> idf_;   // BM25, n_terms: idf (0 for a term without live documents)
  std::vector<double> base_;  // BM25, n_terms: subtracted non-occurrence score (BM25L / BM25+)
  // BM25: term-frequency components by tf (1..16) and document length (below n_table_);
  // other postings compute theirs when scored.
  std::vector<double> len_tfc_;
  Column<float> impacts_;  // BM25 with the impact cache: per posting, 0 for deleted documents
  Column<std::uint32_t> doc_cache_;  // with the cache, small indexes: per posting, its document
  // BM25 without the cache: each document's length as a one-byte code (or two bytes when more
  // than 1/64 of the documents are 255 to n_table_ - 1 tokens long), see codec::Bm25View.
  std::vector<std::uint8_t> len_code8_;
  std::vector<std::uint16_t> len_code16_;
  std::uint32_t code_lim_ = 0;
  ImpactCache cache_policy_ = ImpactCache::Auto;
  bool impact_cache_ = true;  // the policy applied to the current size, set by compute_stats()
  std::uint32_t n_table_ = 0;
  double avgdl_ = 0;

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
