// Pieces of the HNSW index shared by hnsw.cpp and the per-instruction-set kernel files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fastrag/hnsw.hpp"

namespace fastrag {

// A query in the form the distance kernels want: for int8 rows the per-dimension scale is
// folded into the query and the offsets into a constant (see hnsw.cpp, prepare()).
struct QueryPrep {
  std::vector<float> v;  // padded_dim values (only the first `n` are used)
  float c = 0;           // int8: constant part of the dot product
  float qnorm = 0;       // l2: squared norm of the query
  std::uint32_t n = 0;   // dimensions compared (the full padded dim or a Matryoshka prefix)
  bool f32 = false;      // compare with the kept float32 rows instead of the stored codes
  // int8 rows on CPUs with VNNI: the scaled query quantised too, so that the dot product
  // runs on bytes: dot ~ qs * (sum(code_u8 * t) - 128 * sum(t)) + c.
  bool bytes = false;  // use the byte form (graph walks); false: the float query (exact)
  std::vector<std::int8_t> t;
  float qs = 0;
  std::int32_t tsum128 = 0;
  // int4 rows (walks): the query times the int4 steps, quantised to int8 with scale qs4, the
  // even dimensions in t4[0, half) and the odd ones in t4[half, 2 half) (see i4_row); c4 is
  // the constant part: dot ~ qs4 * sum(code * t) + c4. v and c above then hold the form for
  // the int8 rows that rescore.
  std::vector<std::int8_t> t4;
  std::size_t half = 0;
  float qs4 = 0, c4 = 0;
};

// The ids one graph walk has visited. Up to 2^21 ids (HnswIndex::visited_bits_max): a bitset
// over all ids (at most 256 KiB a thread), cleared word by word after each walk; its test-and-set has no branch, and a
// walk's gather of unvisited neighbours (gather) none either, where a hash probe's "seen?"
// branch is mispredicted about every other time. Past that: open addressing in a power-of-two
// table, cleared per walk; a walk visits a few hundred to a few thousand nodes, so the table
// is kilobytes and stays in the L1 / L2 cache, where a bitset (or an epoch per id) of
// megabytes would not.
class VisitedSet {
 public:
  // Empties the set for ids below n, sized for about `expect` of them; a bitset when n is at
  // most bits_max.
  void reset(std::size_t expect, std::size_t n, std::size_t bits_max) {
    clear_bits();
    bitset_ = n <= bits_max;
    if (bitset_) {
      const std::size_t words = (n + 63) / 64;
      if (bits_.size() < words) bits_.resize(words, 0);
      return;
    }
    std::size_t want = 1024;
    expect = std::min<std::size_t>(expect, std::size_t{1} << 32);  // ids are 32-bit
    while (want < 2 * expect) want *= 2;
    // A table left large by a wide walk (a build's ef_construction) would cost a large memset
    // on every narrow one: resize it then.
    if (slots_.size() < want || slots_.size() > 4 * want) slots_.assign(want, 0);
    else std::memset(slots_.data(), 0, slots_.size() * sizeof(std::uint32_t));
    sized();
    count_ = 0;
  }
  // Appends the ids of ids[0, n) not visited yet to out (marking them visited); returns how
  // many. out has room for n.
  std::size_t gather(const std::uint32_t* ids, std::size_t n, std::uint32_t* out) {
    std::size_t m = 0;
    if (bitset_) {
      std::uint64_t* b = bits_.data();
      for (std::size_t j = 0; j < n; ++j) {
        const std::uint32_t v = ids[j];
        const std::uint64_t bit = std::uint64_t{1} << (v % 64), w = b[v / 64];
        b[v / 64] = w | bit;
        out[m] = v;
        m += (w & bit) == 0;
      }
      note(out, m);
      return m;
    }
    for (std::size_t j = 0; j < n; ++j)
      if (insert(ids[j])) out[m++] = ids[j];
    return m;
  }
  // Adds id; false when it was there already.
  bool insert(std::uint32_t id) {
    if (bitset_) {
      const std::uint64_t bit = std::uint64_t{1} << (id % 64), w = bits_[id / 64];
      if (w & bit) return false;
      bits_[id / 64] = w | bit;
      note(&id, 1);
      return true;
    }
    const std::uint32_t key = id + 1;  // 0 marks an empty slot
    std::uint32_t* t = table_;
    for (std::size_t h = slot(key);; h = (h + 1) & mask_) {
      if (t[h] == key) return false;
      if (t[h] == 0) {
        t[h] = key;
        if (++count_ > limit_) grow();
        return true;
      }
    }
  }

 private:
  void note(const std::uint32_t* ids, std::size_t n) {  // ids whose words clear_bits zeroes
    touched_.insert(touched_.end(), ids, ids + n);
  }
  void clear_bits() {
    if (touched_.size() * 8 > bits_.size()) std::fill(bits_.begin(), bits_.end(), 0);
    else
      for (std::uint32_t v : touched_) bits_[v / 64] = 0;
    touched_.clear();
  }
  std::size_t slot(std::uint32_t key) const {
    return static_cast<std::uint32_t>(key * 0x9E3779B1u) >> shift_;  // Fibonacci hashing
  }
  void sized() {  // the fields that insert() reads, for the table's size
    table_ = slots_.data();
    mask_ = slots_.size() - 1;
    shift_ = 32 - static_cast<unsigned>(__builtin_ctzll(slots_.size()));
    limit_ = slots_.size() / 2;  // at most half full
  }
  void grow() {
    std::vector<std::uint32_t> old(slots_.size() * 2, 0);
    old.swap(slots_);
    sized();
    for (std::uint32_t key : old) {
      if (!key) continue;
      std::size_t h = slot(key);
      while (slots_[h]) h = (h + 1) & mask_;
      slots_[h] = key;
    }
  }
  bool bitset_ = false;
  std::vector<std::uint64_t> bits_;
  std::vector<std::uint32_t> touched_;  // ids set in bits_ since the last reset
  std::vector<std::uint32_t> slots_;
  std::uint32_t* table_ = nullptr;
  std::size_t mask_ = 0, count_ = 0, limit_ = 0;
  unsigned shift_ = 32;
};

struct HnswIndex::Scratch {
  VisitedSet visited;
  std::vector<Cand> cands, top, result, pool, relink;
  QueryPrep q, q2, q3;
  std::vector<float> row, row2;
};

// The kernels of one instruction set (hnsw_kernels.inl compiled three times).
struct HnswIndex::Ops {
  const char* name;
  // Distance of the prepared query to the row of `id` (lower is better).
  float (*dist)(const HnswIndex&, const QueryPrep&, std::uint32_t id);
  // Greedy walk at one upper level: the closest node reachable from `entry`. `building`:
  // skip nodes whose insertion is not finished (their lower lists may still be empty).
  std::uint32_t (*greedy)(const HnswIndex&, const QueryPrep&, std::uint32_t entry, int level,
                          bool building);
  // Beam search with `ef` at `level`; out gets the best nodes ascending by distance. With
  // `opt` only allowed nodes enter the results (all nodes still guide the walk). `locked`:
  // the graph is being built: read neighbour lists under their node locks and skip nodes
  // whose insertion is not finished.
  void (*search_layer)(const HnswIndex&, const QueryPrep&, std::uint32_t entry, int level,
                       std::size_t ef, const DenseSearchOptions* opt, bool locked, Scratch&,
                       std::vector<Cand>& out);
  // Exact distances to every allowed id in [0, n), keeping the best `keep` ascending.
  void (*scan)(const HnswIndex&, const QueryPrep&, const DenseSearchOptions& opt, std::size_t n,
               std::size_t keep, Scratch&, std::vector<Cand>& out);
  float (*dot)(const float*, const float*, std::size_t n);
  float (*l2)(const float*, const float*, std::size_t n);
  // int4 storage: fills q (n, v and bytes set) from the query row; see prep_i4.
  void (*prep_i4)(const HnswIndex&, const float* row, QueryPrep& q);
};

// Defined in hnsw_isa_*.cpp.
const HnswIndex::Ops* hnsw_ops_generic();
const HnswIndex::Ops* hnsw_ops_avx2();
const HnswIndex::Ops* hnsw_ops_avx512();
const HnswIndex::Ops* hnsw_ops_avx512vnni();

// Half-precision conversion without F16C (used by the generic kernels and by storage).
float half_to_float(std::uint16_t h);
std::uint16_t float_to_half(float f);

}  // namespace fastrag
