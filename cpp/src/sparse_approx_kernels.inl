// The approximate index's gather kernels (see sparse_approx_internal.hpp), included inside a
// namespace by each sparse_approx_isa_*.cpp: AVX-512 or AVX2 gathers when the file is compiled
// for them, four scalar accumulators otherwise.

template <class TermT>
float dot_scalar(const float* q, const TermT* terms, const std::uint8_t* levels, std::size_t n) {
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += q[terms[i]] * static_cast<float>(levels[i]);
    a1 += q[terms[i + 1]] * static_cast<float>(levels[i + 1]);
    a2 += q[terms[i + 2]] * static_cast<float>(levels[i + 2]);
    a3 += q[terms[i + 3]] * static_cast<float>(levels[i + 3]);
  }
  for (; i < n; ++i) a0 += q[terms[i]] * static_cast<float>(levels[i]);
  return (a0 + a1) + (a2 + a3);
}

#if defined(__AVX512F__)
// 16 lanes a step; the last step masked (no scalar tail).
template <class TermT>
float dot(const float* q, const TermT* terms, const std::uint8_t* levels, std::size_t n) {
  __m512 acc = _mm512_setzero_ps();
  std::size_t i = 0;
  auto step = [&](__m512i idx, __m128i lv, __mmask16 m) {
    const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lv));
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, q, 4);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(g, w));
  };
  for (; i + 16 <= n; i += 16) {
    __m512i idx;
    if constexpr (sizeof(TermT) == 2)
      idx = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(terms + i)));
    else
      idx = _mm512_loadu_si512(terms + i);
    step(idx, _mm_loadu_si128(reinterpret_cast<const __m128i*>(levels + i)), 0xFFFF);
  }
  if (i < n) {
    const auto m = static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512i idx;
    if constexpr (sizeof(TermT) == 2)
      idx = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, terms + i));
    else
      idx = _mm512_maskz_loadu_epi32(m, terms + i);
    step(idx, _mm_maskz_loadu_epi8(m, levels + i), m);
  }
  return _mm512_reduce_add_ps(acc);
}
#elif defined(__AVX2__)
// 8 lanes a step, a scalar tail.
template <class TermT>
float dot(const float* q, const TermT* terms, const std::uint8_t* levels, std::size_t n) {
  __m256 acc = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i idx;
    if constexpr (sizeof(TermT) == 2)
      idx = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(terms + i)));
    else
      idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(terms + i));
    std::uint64_t lv8;
    std::memcpy(&lv8, levels + i, 8);
    const __m256 w = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(
        static_cast<long long>(lv8))));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_i32gather_ps(q, idx, 4), w));
  }
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float total = _mm_cvtss_f32(s);
  for (; i < n; ++i) total += q[terms[i]] * static_cast<float>(levels[i]);
  return total;
}
#else
template <class TermT>
float dot(const float* q, const TermT* terms, const std::uint8_t* levels, std::size_t n) {
  return dot_scalar(q, terms, levels, n);
}
#endif

inline float dot16(const float* q, const std::uint16_t* t, const std::uint8_t* l, std::size_t n) {
  return dot(q, t, l, n);
}
inline float dot32(const float* q, const std::uint32_t* t, const std::uint8_t* l, std::size_t n) {
  return dot(q, t, l, n);
}

inline const ApproxKernels* make_kernels(const char* name) {
  static const ApproxKernels k{name, &dot16, &dot32};
  return &k;
}
