// Pieces of MaxSim shared by maxsim.cpp and the per-instruction-set kernel files.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastrag {

// A query in the form the kernels want: transposed, dim rows of `lanes` values, where lanes is
// m rounded up to the kernels' width and the extra lanes are zeros (their maxima are ignored).
struct MaxsimQuery {
  const float* qt = nullptr;
  std::size_t m = 0, lanes = 0, dim = 0;
};

// The kernels of one instruction set (maxsim_kernels.inl compiled three times).
struct MaxsimKernels {
  const char* name;
  std::size_t width;  // lanes must be a multiple of this
  std::size_t block;  // tokens scored at a time; scratch holds block * dim + lanes floats
  // MaxSim of the query against one document's n >= 1 token rows.
  float (*score_f32)(const MaxsimQuery&, const float* tokens, std::size_t n, float* scratch);
  float (*score_f16)(const MaxsimQuery&, const std::uint16_t* tokens, std::size_t n,
                     float* scratch);
};

// Defined in maxsim_isa_*.cpp.
const MaxsimKernels* maxsim_kernels_generic();
const MaxsimKernels* maxsim_kernels_avx2();
const MaxsimKernels* maxsim_kernels_avx512();

}  // namespace fastrag
