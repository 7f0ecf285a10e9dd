// MaxSim kernels built for one instruction set; see maxsim_kernels.inl. Compiled with the
// flags that CMakeLists.txt sets for this file only.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "hnsw_internal.hpp"  // half_to_float
#include "maxsim_internal.hpp"

namespace fastrag {
namespace maxsim_avx2 {
#include "maxsim_kernels.inl"
}  // namespace maxsim_avx2

const MaxsimKernels* maxsim_kernels_avx2() { return maxsim_avx2::make_kernels("avx2"); }

}  // namespace fastrag
