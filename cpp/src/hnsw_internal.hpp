// Pieces of the HNSW index shared by hnsw.cpp and the per-instruction-set kernel files.
#pragma once

#include <cstdint>
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
};

struct HnswIndex::Scratch {
  std::vector<std::uint32_t> visited;  // epoch per id
  std::uint32_t epoch = 0;
  std::vector<Cand> cands, top, result, pool;
  std::vector<std::uint32_t> neighbours;
  QueryPrep q, q2, q3;
  std::vector<float> row;

  void new_epoch(std::size_t capacity) {
    if (visited.size() < capacity) {
      visited.assign(capacity, 0);
      epoch = 0;
    }
    if (++epoch == 0) {
      std::fill(visited.begin(), visited.end(), 0);
      epoch = 1;
    }
  }
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
