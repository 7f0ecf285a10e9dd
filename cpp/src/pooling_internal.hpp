// Pieces of span mean pooling shared by pooling.cpp and the per-instruction-set kernel files.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastrag {

// The kernels of one instruction set (pooling_kernels.inl compiled twice). Both add the n >= 0
// rows of x (n x dim, row-major) into acc[0, dim) in the same order: four rows at a time as
// acc += (r0 + r1) + (r2 + r3), then the remaining rows one by one.
struct PoolingKernels {
  const char* name;
  void (*sum_f32)(const float* x, std::size_t n, std::size_t dim, float* acc);
  // scratch holds kPoolRows * dim floats (float16 rows are converted there first).
  void (*sum_f16)(const std::uint16_t* x, std::size_t n, std::size_t dim, float* acc,
                  float* scratch);
};

constexpr std::size_t kPoolRows = 4;

// Defined in pooling.cpp (generic) and pooling_isa_avx2.cpp.
const PoolingKernels* pooling_kernels_generic();
const PoolingKernels* pooling_kernels_avx2();

}  // namespace fastrag
