// A hierarchical navigable small-world graph (Malkov & Yashunin, "Efficient and robust
// approximate nearest neighbor search using Hierarchical Navigable Small World graphs",
// TPAMI 2018) over dense uint32 ids, with exact search behind the same interface.
//
// Storage: float32 rows, or int8 codes with per-dimension ranges trained on the data (optionally
// with the float32 rows kept for exact rescoring), or float16 rows, or int4: 4-bit codes next
// to the links for the graph walk (ranges clipped to the bulk of each dimension) with int8
// codes in a column of their own for rescoring (and optionally the float32 rows). Rows are padded to a multiple
// of 16 values. Distances are "lower is better" inside; scores handed out are "higher is better":
// the inner product for ip and cosine, the negated squared distance for l2.
//
// Concurrency: add() and search() may run at the same time from different threads. Growth of
// the arrays happens under an exclusive lock; inserts and searches share the lock, and inserts
// guard each node's neighbour lists with striped spin locks.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "fastrag/column.hpp"
#include "fastrag/memory.hpp"

namespace fastrag {

struct QueryPrep;

enum class Metric : std::uint32_t { IP = 0, Cosine = 1, L2 = 2 };
enum class Storage : std::uint32_t { F32 = 0, I8 = 1, F16 = 2, I4 = 3 };

struct HnswParams {
  std::uint32_t dim = 0;
  Metric metric = Metric::Cosine;
  Storage storage = Storage::F32;
  bool keep_float = false;  // int8 / float16: also keep float32 rows for exact rescoring
  std::uint32_t M = 16;
  std::uint32_t ef_construction = 200;
  std::uint64_t seed = 100;
};

struct DenseSearchOptions {
  std::size_t k = 10;
  std::size_t ef = 64;
  int threads = 1;
  bool exact = false;
  std::uint32_t dims = 0;      // > 0: traverse on the first `dims` values (Matryoshka funnel)
  std::size_t rescore = 0;     // > 0: rescore this many candidates with full float32 rows
  const std::uint64_t* allow = nullptr;  // bitset over ids; ids past its end are not allowed
  std::size_t allow_words = 0;
  // Below this many allowed documents, a filtered search scans them exactly instead.
  std::size_t exact_below = 0;
};

class HnswIndex {
 public:
  // Version 2 added int4 storage (its sections); version 1 files load unchanged.
  static constexpr std::uint32_t kFormatVersion = 2;

  explicit HnswIndex(const HnswParams& p);
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;
  ~HnswIndex();

  const HnswParams& params() const { return p_; }
  std::uint32_t padded_dim() const { return pdim_; }

  // Inserts n rows (float32, n x dim, finite) with new consecutive ids; returns the first id.
  // With int8 storage the first call trains the per-dimension ranges.
  std::uint32_t add(const float* rows, std::size_t n, int threads);
  // Overwrites the rows of existing ids (deleted or live) and relinks them; the ids are live
  // afterwards. This is how deleted slots are reused.
  void replace(const std::uint32_t* ids, const float* rows, std::size_t n, int threads);
  // Marks ids deleted (never returned, still used to navigate); returns how many were live.
  std::size_t remove(const std::uint32_t* ids, std::size_t n);
  // Rebuilds the graph from the live rows only, ids renumbered densely in order. Returns the
  // new id of every old id (-1 for deleted ones).
  std::vector<std::int64_t> compact(int threads);

  // (n x k) ids (-1 padded) and scores (-inf padded), best first.
  void search(const float* queries, std::size_t n, const DenseSearchOptions& opt,
              std::int64_t* out_ids, float* out_scores) const;

  std::size_t size() const;  // ids in use, deleted ones included
  std::size_t live() const;
  bool is_live(std::uint32_t id) const;
  std::size_t memory_bytes() const;     // bytes of the arrays' contents
  std::size_t allocated_bytes() const;  // bytes held, spare capacity included
  std::size_t capacity() const;         // rows allocated
  // The float32 row of an id (the normalised one for cosine); throws when not kept.
  void get_row(std::uint32_t id, float* out) const;

  void save(const std::string& path, const std::string& extra) const;
  static std::unique_ptr<HnswIndex> load(const std::string& path, bool use_mmap,
                                         std::string* extra);

  // ---- used by the per-ISA kernels (hnsw_kernels.inl) -------------------------------------
  struct Cand {
    float dist;
    std::uint32_t id;
  };
  struct Scratch;
  struct Ops;  // the kernels of one instruction set
  int level(std::uint32_t id) const { return level_[id]; }
  // Ids in use, read without the lock (the kernels run with it held).
  std::size_t count_locked() const { return n_; }
  // Whether a node's insertion has finished (all its lists written).
  bool ready(std::uint32_t id) const {
    return __atomic_load_n(ready_.data() + id, __ATOMIC_ACQUIRE) != 0;
  }
  std::uint32_t max_degree(int level) const { return level == 0 ? 2 * p_.M : p_.M; }
  // Neighbours of `id` at `level`: count at [0], ids after it.
  const std::uint32_t* links(std::uint32_t id, int level) const;
  std::uint32_t* links_mut(std::uint32_t id, int level);
  // Level 0 is one record per node: its links, padded to 64 bytes, then its stored row, so
  // that expanding a node and scoring it touch neighbouring cache lines.
  const std::uint32_t* record(std::uint32_t id) const {
    return block0_.data() + std::size_t(id) * stride_;
  }
  std::uint32_t record_words() const { return stride_; }  // 4-byte words per level-0 record
  std::size_t visited_bits_max() const { return visited_bits_max_; }
  const float* f32_row(std::uint32_t id) const {
    return p_.storage == Storage::F32
               ? reinterpret_cast<const float*>(record(id) + links_words_)
               : f32_.data() + std::size_t(id) * pdim_;
  }
  const std::int8_t* i8_row(std::uint32_t id) const {
    return reinterpret_cast<const std::int8_t*>(record(id) + links_words_);
  }
  const std::uint16_t* f16_row(std::uint32_t id) const {
    return reinterpret_cast<const std::uint16_t*>(record(id) + links_words_);
  }
  // int4: two dimensions per byte (dimension 2i in the low nibble of byte i, 2i + 1 in the
  // high one), codes 0..15; the int8 rows for rescoring are a column of their own.
  const std::uint8_t* i4_row(std::uint32_t id) const {
    return reinterpret_cast<const std::uint8_t*>(record(id) + links_words_);
  }
  const std::int8_t* r8_row(std::uint32_t id) const { return r8_.data() + std::size_t(id) * pdim_; }
  const float* r8_step() const { return rstep_.data(); }
  const float* r8_low() const { return rlow_.data(); }
  float r8_norm(std::uint32_t id) const { return rnorm_[id]; }
  bool has_f32() const { return p_.storage == Storage::F32 || p_.keep_float; }
  const float* i8_step() const { return qstep_.data(); }
  const float* i8_low() const { return qlow_.data(); }
  float i8_norm(std::uint32_t id) const { return qnorm_[id]; }
  bool allowed(std::uint32_t id, const DenseSearchOptions& opt) const {
    const std::uint64_t bit = std::uint64_t{1} << (id % 64);
    if (deleted_[id / 64] & bit) return false;
    return !opt.allow || (id / 64 < opt.allow_words && (opt.allow[id / 64] & bit));
  }
  // Striped spin locks guarding the neighbour lists of a node while the graph is built.
  void lock_links(std::uint32_t id) const;
  void unlock_links(std::uint32_t id) const;
  const char* kernels() const;

 private:
  void check_rows(const float* rows, std::size_t n) const;
  void check_half(const float* rows, std::size_t n) const;  // float16: magnitudes <= 65504
  void own_columns_locked();  // copies the columns that view a loaded file (first write)
  void reserve_locked(std::size_t n);  // owns every column, then room for n rows
  void store_row(std::uint32_t id, const float* row);
  void train_i8(const float* rows, std::size_t n);
  void train_i4(const float* rows, std::size_t n);  // both the int4 and the int8 ranges
  void insert(std::uint32_t id, Scratch& s, bool relink);
  void relink(std::uint32_t id, Scratch& s);
  std::uint32_t prepare_batch_locked(std::size_t n, const float* rows);
  void prefetch_r8(const std::vector<Cand>& cands) const;
  void search_one(const float* q, const DenseSearchOptions& opt, Scratch& s, std::int64_t* ids,
                  float* scores) const;
  int draw_level();
  void check_invariants(const std::string& path) const;
  void float_row(std::uint32_t id, float* out) const;  // pdim values, dequantised if needed
  // `bytes`: also the byte form of an int8 query (for graph walks on VNNI).
  void prepare(const float* row, std::uint32_t dims, QueryPrep& q, bool bytes = true) const;
  void select(const std::vector<Cand>& cands, std::size_t m, std::uint32_t self, Scratch& s,
              std::vector<Cand>& out) const;
  bool connect(std::uint32_t node, std::uint32_t id, int level, Scratch& s, bool force);
  std::vector<float> normalised_copy(const float* rows, std::size_t n) const;
  // Writes `kept` as the level-`level` list of `node` (lock held), whose old list is `old`;
  // at level 0 it keeps dropped nodes that would lose their last in-link and updates indeg_.
  void write_links(std::uint32_t node, int level, std::vector<Cand>& kept,
                   const std::vector<std::uint32_t>& old);
  void count_in_links();

  HnswParams p_;
  std::uint32_t pdim_;
  const Ops* ops_;
  std::size_t visited_bits_max_;  // walks over at most this many ids use a bitset (VisitedSet)
  double level_mult_;

  std::size_t n_ = 0;         // ids in use
  std::size_t n_live_ = 0;
  std::size_t capacity_ = 0;  // rows allocated
  std::atomic<std::int64_t> entry_{-1};
  std::atomic<int> max_level_{-1};
  std::uint64_t rng_state_;

  template <class T>
  using BigColumn = Column<T, HugePageAllocator<T>>;  // read at random by graph walks
  std::uint32_t links_words_;  // 1 + 2M, rounded up to 16 words (64 bytes)
  std::uint32_t stride_;       // words per level-0 record
  BigColumn<std::uint32_t> block0_;  // capacity records: links, then the stored row
  BigColumn<float> f32_;             // float32 rows kept beside int8 / float16 (rescoring)
  bool trained_ = false;         // int8: ranges set
  Column<float> qlow_, qstep_;  // int8: per-dimension range (pdim_ each)
  Column<float> qnorm_;         // int8 / int4: squared norm of each dequantised row
  // int4 storage: the int8 rows used for rescoring, their ranges and squared norms.
  BigColumn<std::int8_t> r8_;
  Column<float> rlow_, rstep_, rnorm_;
  Column<std::uint8_t> level_;   // capacity
  // Upper levels: node -> offset into upper_ of its levels 1..level, each 1 + M entries.
  // Space is allocated under the exclusive lock before a batch is linked.
  Column<std::uint64_t> upper_off_;
  Column<std::uint32_t> upper_;
  Column<std::uint64_t> deleted_;  // bitset over capacity
  std::vector<std::uint8_t> ready_;  // capacity flags; every loaded node is ready
  // Level-0 in-degree of each node (atomic updates): pruning never takes a node's last
  // in-link, so that every node stays reachable.
  std::vector<std::uint32_t> indeg_;

  mutable std::shared_mutex mutex_;                      // growth vs. everything else
  mutable std::mutex entry_mutex_;                       // entry point and max level
  static constexpr std::size_t kStripes = 4096;
  mutable std::array<std::atomic<bool>, kStripes> node_locks_{};  // striped per-node locks
};

}  // namespace fastrag
