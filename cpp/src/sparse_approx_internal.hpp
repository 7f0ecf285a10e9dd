// Pieces of the approximate learned-sparse index shared by sparse_approx.cpp and the
// per-instruction-set kernel files (sparse_approx_isa_*.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastrag {

// The gathers of one instruction set (sparse_approx_kernels.inl compiled per file): the sum
// of q[terms[i]] x levels[i] over i < n, a document's or a block summary's 8-bit weights
// against the dense query.
struct ApproxKernels {
  const char* name;
  float (*dot16)(const float* q, const std::uint16_t* terms, const std::uint8_t* levels,
                 std::size_t n);
  float (*dot32)(const float* q, const std::uint32_t* terms, const std::uint8_t* levels,
                 std::size_t n);
};

// Defined in sparse_approx_isa_*.cpp.
const ApproxKernels* approx_kernels_generic();
const ApproxKernels* approx_kernels_avx2();
const ApproxKernels* approx_kernels_avx512();

}  // namespace fastrag
