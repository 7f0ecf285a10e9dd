// Span pooling kernels, compiled once per instruction set: pooling.cpp (no flags, namespace
// pooling_generic) and pooling_isa_avx2.cpp (-mavx2 -mf16c, namespace pooling_avx2). Plain loops
// the compiler vectorises; only the float16 conversion differs (F16C against a branch-free bit
// conversion). Both conversions are exact, and the additions are element-wise in one fixed
// order, so both kernels give bit-identical sums.
//
// Included inside `namespace fastrag { namespace pooling_<isa> {`, after <immintrin.h> where
// needed.

// ---------------------------------------------------------------------------- float16
#if defined(__F16C__) && defined(__AVX__)
inline void f16_to_f32(const std::uint16_t* h, float* f, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(f + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) f[i] = _cvtsh_ss(h[i]);
}
#else
inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// IEEE binary16 -> binary32, exact for every bit pattern (a NaN stays a NaN), without branches
// so that the loop vectorises: exponent and mantissa shifted into place and the exponent
// rebased; infinities and NaNs get the largest exponent, subnormals are normalised by a float
// subtraction of 2^-14 (exact), and a mask picks the case.
inline void f16_to_f32(const std::uint16_t* __restrict h, float* __restrict f, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t x = h[i];
    const std::uint32_t u = (x & 0x7fffu) << 13;
    const std::uint32_t e = u & 0x0f800000u;
    const std::uint32_t inf_nan = 0u - static_cast<std::uint32_t>(e == 0x0f800000u);
    const std::uint32_t subnormal = 0u - static_cast<std::uint32_t>(e == 0u);
    const std::uint32_t normal = u + 0x38000000u + (inf_nan & 0x38000000u);
    const std::uint32_t small = float_to_bits(bits_to_float(u + 0x38800000u) - 6.103515625e-05f);
    f[i] = bits_to_float((subnormal & small) | (~subnormal & normal) | ((x & 0x8000u) << 16));
  }
}
#endif

// ---------------------------------------------------------------------------- sums
// acc += (a + b) + (c + e), element-wise.
inline void add4(const float* __restrict a, const float* __restrict b, const float* __restrict c,
                 const float* __restrict e, std::size_t dim, float* __restrict acc) {
  for (std::size_t k = 0; k < dim; ++k) acc[k] += (a[k] + b[k]) + (c[k] + e[k]);
}

inline void add1(const float* __restrict a, std::size_t dim, float* __restrict acc) {
  for (std::size_t k = 0; k < dim; ++k) acc[k] += a[k];
}

void sum_f32(const float* x, std::size_t n, std::size_t dim, float* acc) {
  std::size_t r = 0;
  for (; r + kPoolRows <= n; r += kPoolRows) {
    const float* a = x + r * dim;
    add4(a, a + dim, a + 2 * dim, a + 3 * dim, dim, acc);
  }
  for (; r < n; ++r) add1(x + r * dim, dim, acc);
}

void sum_f16(const std::uint16_t* x, std::size_t n, std::size_t dim, float* acc, float* s) {
  std::size_t r = 0;
  for (; r + kPoolRows <= n; r += kPoolRows) {
    f16_to_f32(x + r * dim, s, kPoolRows * dim);
    add4(s, s + dim, s + 2 * dim, s + 3 * dim, dim, acc);
  }
  for (; r < n; ++r) {
    f16_to_f32(x + r * dim, s, dim);
    add1(s, dim, acc);
  }
}

const PoolingKernels* make_kernels(const char* name) {
  static const PoolingKernels k{name, &sum_f32, &sum_f16};
  return &k;
}
