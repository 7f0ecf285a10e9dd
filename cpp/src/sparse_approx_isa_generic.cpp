// The approximate index's gather kernels built for one instruction set; see
// sparse_approx_kernels.inl. Compiled with the flags that CMakeLists.txt sets for this file only.
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "sparse_approx_internal.hpp"

namespace fastrag {
namespace approx_generic {
#include "sparse_approx_kernels.inl"
}  // namespace approx_generic

const ApproxKernels* approx_kernels_generic() { return approx_generic::make_kernels("generic"); }

}  // namespace fastrag
