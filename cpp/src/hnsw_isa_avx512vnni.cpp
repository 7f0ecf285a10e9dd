// HNSW kernels built for one instruction set; see hnsw_kernels.inl. Compiled with the flags
// that CMakeLists.txt sets for this file only.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "hnsw_internal.hpp"

namespace fastrag {
namespace isa_avx512vnni {
#include "hnsw_kernels.inl"
}  // namespace isa_avx512vnni

const HnswIndex::Ops* hnsw_ops_avx512vnni() { return isa_avx512vnni::make_ops("avx512vnni"); }

}  // namespace fastrag
