// HNSW search kernels, compiled once per instruction set: hnsw_isa_generic.cpp (no flags),
// hnsw_isa_avx2.cpp (-mavx2 -mfma -mf16c) and hnsw_isa_avx512.cpp (-mavx512f -mavx512bw ...),
// each inside its own namespace. hnsw.cpp picks one at run time from the CPU's features, so
// the wheel never needs -march=native. Rows are padded to a multiple of 16 values.
//
// Included inside `namespace fastrag { namespace <isa> {`, after <immintrin.h>.

using Cand = HnswIndex::Cand;

// ---------------------------------------------------------------------------- distances
#if defined(__AVX512F__)
inline float dot_f32(const float* a, const float* b, std::size_t n) {
  // Four accumulators hide the FMA latency; n is a multiple of 16.
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i < n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
inline float l2_f32(const float* a, const float* b, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  if (i < n) {
    __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
inline float dot_i8(const std::int8_t* c, const float* q, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i));
    __m512 x0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));
    __m512 x1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1)));
    s0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(q + i), s0);
    s1 = _mm512_fmadd_ps(x1, _mm512_loadu_ps(q + i + 16), s1);
  }
  if (i < n) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
    s0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), _mm512_loadu_ps(q + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#if defined(__AVX512VNNI__)
// Bytes times bytes with VNNI: the stored signed codes become unsigned (x ^ 0x80 = x + 128),
// so sum(code_u8 * t) = sum(code * t) + 128 * sum(t). n is a multiple of 16.
inline std::int32_t dot_u8s8(const std::int8_t* c, const std::int8_t* t, std::size_t n) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc = _mm512_setzero_si512();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i u = _mm512_xor_si512(_mm512_loadu_si512(c + i), flip);
    acc = _mm512_dpbusd_epi32(acc, u, _mm512_loadu_si512(t + i));
  }
  if (i < n) {
    const __mmask64 m = (n - i) >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (n - i)) - 1);
    const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, c + i), flip);
    acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_mov_epi8(m, u), _mm512_maskz_loadu_epi8(m, t + i));
  }
  return _mm512_reduce_add_epi32(acc);
}
#endif
// int4 codes (two per byte, see HnswIndex::i4_row) times an int8 query split into its even
// (te) and odd (to) dimensions; nb bytes (a multiple of 8). te and to may be read past nb.
inline std::int32_t dot_u4s8(const std::uint8_t* c, const std::int8_t* te, const std::int8_t* to,
                             std::size_t nb) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512i acc = _mm512_setzero_si512();
  auto step = [&](__m512i x, std::size_t i) {
    const __m512i lo = _mm512_and_si512(x, low);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
    const __m512i e = _mm512_loadu_si512(te + i), o = _mm512_loadu_si512(to + i);
#if defined(__AVX512VNNI__)
    acc = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc, lo, e), hi, o);
#else
    // Pairs of products (at most 2 x 15 x 128) fit int16; then pairs of those into int32.
    const __m512i ones = _mm512_set1_epi16(1);
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(lo, e), ones));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(hi, o), ones));
#endif
  };
  std::size_t i = 0;
  for (; i + 64 <= nb; i += 64) step(_mm512_loadu_si512(c + i), i);
  if (i < nb) step(_mm512_maskz_loadu_epi8((__mmask64{1} << (nb - i)) - 1, c + i), i);
  return _mm512_reduce_add_epi32(acc);
}
// Four int4 rows against one query (dot_u4s8 each): the query's chunks are loaded once for
// the four rows, and the four sums are reduced together. Exact integers, as dot_u4s8's.
inline void dot_u4s8_x4(const std::uint8_t* const r[4], const std::int8_t* te,
                        const std::int8_t* to, std::size_t nb, std::int32_t* out) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  auto step = [&](__m512i& a, __m512i x, __m512i e, __m512i o) {
    const __m512i lo = _mm512_and_si512(x, low);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
#if defined(__AVX512VNNI__)
    a = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(a, lo, e), hi, o);
#else
    // Each product pair is at most 2 x 15 x 128 = 3,840: the two pairs' sum fits int16.
    const __m512i t = _mm512_add_epi16(_mm512_maddubs_epi16(lo, e), _mm512_maddubs_epi16(hi, o));
    a = _mm512_add_epi32(a, _mm512_madd_epi16(t, _mm512_set1_epi16(1)));
#endif
  };
  std::size_t i = 0;
  for (; i + 64 <= nb; i += 64) {
    const __m512i e = _mm512_loadu_si512(te + i), o = _mm512_loadu_si512(to + i);
    for (int k = 0; k < 4; ++k) step(acc[k], _mm512_loadu_si512(r[k] + i), e, o);
  }
  if (i < nb) {
    const __mmask64 m = (__mmask64{1} << (nb - i)) - 1;
    const __m512i e = _mm512_loadu_si512(te + i), o = _mm512_loadu_si512(to + i);
    for (int k = 0; k < 4; ++k) step(acc[k], _mm512_maskz_loadu_epi8(m, r[k] + i), e, o);
  }
  __m256i b[4];
  for (int k = 0; k < 4; ++k)
    b[k] = _mm256_add_epi32(_mm512_castsi512_si256(acc[k]), _mm512_extracti64x4_epi64(acc[k], 1));
  // hadd(hadd(b0, b1), hadd(b2, b3)): row k's partial sums in lane k of each 128-bit half.
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(b[0], b[1]), _mm256_hadd_epi32(b[2], b[3]));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
}
inline float dot_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i));
    s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(b), _mm512_loadu_ps(q + i), s0);
  }
  return _mm512_reduce_add_ps(s0);
}
inline float l2_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i));
    __m512 d = _mm512_sub_ps(_mm512_cvtph_ps(b), _mm512_loadu_ps(q + i));
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  return _mm512_reduce_add_ps(s0);
}
#elif defined(__AVX2__) && defined(__FMA__)
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
inline float dot_f32(const float* a, const float* b, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  return hsum256(_mm256_add_ps(s0, s1));
}
inline float l2_f32(const float* a, const float* b, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  return hsum256(_mm256_add_ps(s0, s1));
}
inline float dot_i8(const std::int8_t* c, const float* q, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i));
    __m256 x0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    __m256 x1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
    s0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q + i), s0);
    s1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q + i + 8), s1);
  }
  return hsum256(_mm256_add_ps(s0, s1));
}
inline std::int32_t dot_u4s8(const std::uint8_t* c, const std::int8_t* te, const std::int8_t* to,
                             std::size_t nb) {
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 32 <= nb; i += 32) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i));
    const __m256i lo = _mm256_and_si256(x, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(te + i));
    const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(to + i));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, e), ones));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, o), ones));
  }
  const __m256i a = _mm256_add_epi32(a0, a1);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  std::int32_t t = _mm_cvtsi128_si32(s);
  for (; i < nb; ++i) t += (c[i] & 0x0f) * te[i] + (c[i] >> 4) * to[i];
  return t;
}
inline void dot_u4s8_x4(const std::uint8_t* const r[4], const std::int8_t* te,
                        const std::int8_t* to, std::size_t nb, std::int32_t* out) {
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
  std::size_t i = 0;
  for (; i + 32 <= nb; i += 32) {
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(te + i));
    const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(to + i));
    for (int k = 0; k < 4; ++k) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r[k] + i));
      const __m256i lo = _mm256_and_si256(x, low);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
      // Each product pair is at most 2 x 15 x 128 = 3,840: the two pairs' sum fits int16.
      const __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(lo, e), _mm256_maddubs_epi16(hi, o));
      acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(t, ones));
    }
  }
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0], acc[1]),
                                      _mm256_hadd_epi32(acc[2], acc[3]));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
  for (; i < nb; ++i)
    for (int k = 0; k < 4; ++k) out[k] += (r[k][i] & 0x0f) * te[i] + (r[k][i] >> 4) * to[i];
}
inline float dot_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) {
    __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
    __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i + 8));
    s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(b0), _mm256_loadu_ps(q + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(b1), _mm256_loadu_ps(q + i + 8), s1);
  }
  return hsum256(_mm256_add_ps(s0, s1));
}
inline float l2_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  __m256 s0 = _mm256_setzero_ps();
  for (std::size_t i = 0; i < n; i += 8) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
    __m256 d = _mm256_sub_ps(_mm256_cvtph_ps(b), _mm256_loadu_ps(q + i));
    s0 = _mm256_fmadd_ps(d, d, s0);
  }
  return hsum256(s0);
}
#else
// Plain loops with 16 partial sums (the compiler vectorises them with the base ISA).
inline float dot_f32(const float* a, const float* b, std::size_t n) {
  float s[16] = {};
  for (std::size_t i = 0; i < n; i += 16)
    for (int j = 0; j < 16; ++j) s[j] += a[i + j] * b[i + j];
  float t = 0;
  for (float x : s) t += x;
  return t;
}
inline float l2_f32(const float* a, const float* b, std::size_t n) {
  float s[16] = {};
  for (std::size_t i = 0; i < n; i += 16)
    for (int j = 0; j < 16; ++j) {
      const float d = a[i + j] - b[i + j];
      s[j] += d * d;
    }
  float t = 0;
  for (float x : s) t += x;
  return t;
}
inline float dot_i8(const std::int8_t* c, const float* q, std::size_t n) {
  float s[16] = {};
  for (std::size_t i = 0; i < n; i += 16)
    for (int j = 0; j < 16; ++j) s[j] += static_cast<float>(c[i + j]) * q[i + j];
  float t = 0;
  for (float x : s) t += x;
  return t;
}
inline std::int32_t dot_u4s8(const std::uint8_t* c, const std::int8_t* te, const std::int8_t* to,
                             std::size_t nb) {
  std::int32_t t = 0;
  for (std::size_t i = 0; i < nb; ++i) t += (c[i] & 0x0f) * te[i] + (c[i] >> 4) * to[i];
  return t;
}
inline void dot_u4s8_x4(const std::uint8_t* const r[4], const std::int8_t* te,
                        const std::int8_t* to, std::size_t nb, std::int32_t* out) {
  for (int k = 0; k < 4; ++k) out[k] = dot_u4s8(r[k], te, to, nb);
}
inline float dot_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  float t = 0;
  for (std::size_t i = 0; i < n; ++i) t += half_to_float(h[i]) * q[i];
  return t;
}
inline float l2_f16(const std::uint16_t* h, const float* q, std::size_t n) {
  float t = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float d = half_to_float(h[i]) - q[i];
    t += d * d;
  }
  return t;
}
#endif

// Squared norm of the first n dequantised values of an int8 row with ranges (lo, step) (the
// stored norm covers the whole row; a Matryoshka prefix under l2 needs its own): the int8 rows
// of int8 storage and the rescoring rows of int4 storage.
inline float i8_prefix_norm(const std::int8_t* c, const float* lo, const float* st,
                            std::uint32_t n) {
  float s = 0;
  for (std::uint32_t d = 0; d < n; ++d) {
    const float v = lo[d] + (float(c[d]) + 128.0f) * st[d];
    s += v * v;
  }
  return s;
}
// The same for int4 codes.
inline float i4_prefix_norm(const HnswIndex& ix, std::uint32_t id, std::uint32_t n) {
  const std::uint8_t* c = ix.i4_row(id);
  const float* lo = ix.i8_low();
  const float* st = ix.i8_step();
  float s = 0;
  for (std::uint32_t d = 0; d < n; ++d) {
    const float v = lo[d] + float((c[d / 2] >> (4 * (d % 2))) & 0x0f) * st[d];
    s += v * v;
  }
  return s;
}

// int4 walks: the distance as a function of one id, and of a batch of ids (four rows a
// kernel call, dot_u4s8_x4), which the walks use when a distance object has `batch`. The
// same integer sums and float expression for both: the same distances, bit for bit.
// The query's fields are copied in: the compiler cannot keep them in registers through a
// reference (the walk's stores might alias them).
template <bool L2>
struct I4Dist {
  const HnswIndex* ix;
  const std::uint8_t* base;  // the int4 row of id 0; rows are `stride` bytes apart
  std::size_t stride;
  const std::int8_t* t;
  std::size_t half;
  float qs, c, qnorm;
  std::uint32_t n;
  bool full;  // all dimensions: the stored norm (else a Matryoshka prefix's own)

  I4Dist(const HnswIndex& index, const QueryPrep& q)
      : ix(&index), base(index.i4_row(0)), stride(std::size_t{4} * index.record_words()),
        t(q.t4.data()), half(q.half), qs(q.qs4), c(q.c4), qnorm(q.qnorm), n(q.n),
        full(q.n == index.padded_dim()) {}
  const std::uint8_t* row(std::uint32_t id) const { return base + id * stride; }
  float finish(std::uint32_t id, std::int32_t sum) const;
  float operator()(std::uint32_t id) const {
    return finish(id, dot_u4s8(row(id), t, t + half, n / 2));
  }
  void batch(const std::uint32_t* ids, std::size_t m, float* out) const {
    std::int32_t sums[4];
    const std::uint8_t* rows[4];
    for (std::size_t j = 0; j < m; j += 4) {
      const std::size_t take = std::min<std::size_t>(4, m - j);
      // A short last group repeats its first row (cheaper than rows one at a time).
      for (std::size_t k = 0; k < 4; ++k) rows[k] = row(ids[j + (k < take ? k : 0)]);
      dot_u4s8_x4(rows, t, t + half, n / 2, sums);
      for (std::size_t k = 0; k < take; ++k) out[j + k] = finish(ids[j + k], sums[k]);
    }
  }
  void prefetch(std::uint32_t id) const;  // the row (at most 512 bytes of it)
};

template <bool L2>
inline float I4Dist<L2>::finish(std::uint32_t id, std::int32_t sum) const {
  const float dot = qs * float(sum) + c;
  if constexpr (!L2) return -dot;
  return (full ? ix->i8_norm(id) : i4_prefix_norm(*ix, id, n)) - 2.0f * dot + qnorm;
}

// Distance of a prepared query to a stored row: -dot for ip / cosine, squared L2 for l2.
inline float distance(const HnswIndex& ix, const QueryPrep& q, std::uint32_t id) {
  const HnswParams& p = ix.params();
  const bool l2 = p.metric == Metric::L2;
  if (q.f32) return l2 ? l2_f32(ix.f32_row(id), q.v.data(), q.n) : -dot_f32(ix.f32_row(id), q.v.data(), q.n);
  switch (p.storage) {
    case Storage::F32:
      return l2 ? l2_f32(ix.f32_row(id), q.v.data(), q.n) : -dot_f32(ix.f32_row(id), q.v.data(), q.n);
    case Storage::I8: {
#if defined(__AVX512VNNI__)
      const float dot =
          q.bytes ? q.qs * float(dot_u8s8(ix.i8_row(id), q.t.data(), q.n) - q.tsum128) + q.c
                  : dot_i8(ix.i8_row(id), q.v.data(), q.n) + q.c;
#else
      const float dot = dot_i8(ix.i8_row(id), q.v.data(), q.n) + q.c;
#endif
      if (!l2) return -dot;
      return (q.n == ix.padded_dim() ? ix.i8_norm(id)
                                      : i8_prefix_norm(ix.i8_row(id), ix.i8_low(), ix.i8_step(), q.n)) -
             2.0f * dot + q.qnorm;
    }
    case Storage::F16:
      return l2 ? l2_f16(ix.f16_row(id), q.v.data(), q.n) : -dot_f16(ix.f16_row(id), q.v.data(), q.n);
    case Storage::I4: {
      if (q.bytes) return l2 ? I4Dist<true>(ix, q)(id) : I4Dist<false>(ix, q)(id);
      const float dot = dot_i8(ix.r8_row(id), q.v.data(), q.n) + q.c;
      if (!l2) return -dot;
      return (q.n == ix.padded_dim() ? ix.r8_norm(id)
                                      : i8_prefix_norm(ix.r8_row(id), ix.r8_low(), ix.r8_step(), q.n)) -
             2.0f * dot + q.qnorm;
    }
  }
  return 0.0f;
}

// Asks for `bytes` from p on (64-byte lines) ahead of their use. The empty volatile asm keeps
// the loop: GCC 12 deletes a loop whose body is only __builtin_prefetch, which had silently
// taken the row prefetches out of search_layer and scan.
inline void prefetch_bytes(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < bytes; off += 64) {
    __builtin_prefetch(c + off);
    __asm__ __volatile__("");
  }
}


// The row of an id that distance() scores, and its size in bytes (a 64-byte multiple).
inline std::pair<const char*, std::size_t> stored_row(const HnswIndex& ix, std::uint32_t id) {
  const HnswParams& p = ix.params();
  const std::size_t dims = ix.padded_dim();
  switch (p.storage) {
    case Storage::F32: return {reinterpret_cast<const char*>(ix.f32_row(id)), dims * 4};
    case Storage::I8: return {reinterpret_cast<const char*>(ix.i8_row(id)), dims};
    // the walks that prefetch through this score int4 storage on its int8 rows (the int4
    // walk prefetches its codes itself: I4Dist::prefetch)
    case Storage::I4: return {reinterpret_cast<const char*>(ix.r8_row(id)), dims};
    case Storage::F16: break;
  }
  return {reinterpret_cast<const char*>(ix.f16_row(id)), dims * 2};
}

// Rows are asked for in two parts. The head (at most 512 bytes: the whole of an int8 row of up
// to 512 dims) for every unvisited neighbour at once, when a node is expanded; the tail of a
// longer row a few neighbours before its distance is computed. Asking for whole float32 rows
// at once (1.5 KB at 384 dims) measured slower, in cache (prefetch instructions take issue
// slots) and out of it (a queue of misses longer than the core can track).
constexpr std::size_t kRowHead = 512;
constexpr std::size_t kTailAhead = 3;  // neighbours; 3-4 measured best, 0 (no tail) 5% slower

template <bool L2>
inline void I4Dist<L2>::prefetch(std::uint32_t id) const {
  // Straight-line prefetches for rows of up to four lines (int4 rows of up to 512 dims; a loop
  // of them costs more than the prefetches). Rows of indexes past 4 MiB start on a line (see
  // HugePageAllocator; sections of files are 64-byte aligned).
  const char* r = reinterpret_cast<const char*>(row(id));
  switch ((n + 127) / 128) {  // 64-byte lines of the n / 2 bytes walked
    case 4: __builtin_prefetch(r + 192); [[fallthrough]];
    case 3: __builtin_prefetch(r + 128); [[fallthrough]];
    case 2: __builtin_prefetch(r + 64); [[fallthrough]];
    case 1: __builtin_prefetch(r); break;
    default: prefetch_bytes(r, std::min<std::size_t>(n / 2, kRowHead));
  }
}

inline void prefetch_row(const HnswIndex& ix, std::uint32_t id) {
  const auto [row, bytes] = stored_row(ix, id);
  prefetch_bytes(row, std::min(bytes, kRowHead));
}
inline void prefetch_tail(const HnswIndex& ix, std::uint32_t id) {
  const auto [row, bytes] = stored_row(ix, id);
  if (bytes > kRowHead) prefetch_bytes(row + kRowHead, bytes - kRowHead);
}

// ---------------------------------------------------------------------------- graph walks
// Calls fn with the distance to the prepared query as a function object of the id, made for
// the storage, metric and query form at hand, so that the walks below inline it.
template <class Fn>
inline void with_distance(const HnswIndex& ix, const QueryPrep& q, Fn&& fn) {
  const HnswParams& p = ix.params();
  const bool l2 = p.metric == Metric::L2;
  const float* v = q.v.data();
  const std::size_t n = q.n;
  if (q.f32 || p.storage == Storage::F32) {
    if (l2) fn([&ix, v, n](std::uint32_t id) { return l2_f32(ix.f32_row(id), v, n); });
    else fn([&ix, v, n](std::uint32_t id) { return -dot_f32(ix.f32_row(id), v, n); });
  } else if (p.storage == Storage::F16) {
    if (l2) fn([&ix, v, n](std::uint32_t id) { return l2_f16(ix.f16_row(id), v, n); });
    else fn([&ix, v, n](std::uint32_t id) { return -dot_f16(ix.f16_row(id), v, n); });
  } else if (p.storage == Storage::I4 && q.bytes) {
    if (l2) fn(I4Dist<true>(ix, q));
    else fn(I4Dist<false>(ix, q));
#if defined(__AVX512VNNI__)
  } else if (!l2 && q.bytes) {
    const std::int8_t* t = q.t.data();
    const float qs = q.qs, c = q.c;
    const std::int32_t t128 = q.tsum128;
    fn([&ix, t, n, qs, c, t128](std::uint32_t id) {
      return -(qs * float(dot_u8s8(ix.i8_row(id), t, n) - t128) + c);
    });
#endif
  } else {
    fn([&ix, &q](std::uint32_t id) { return distance(ix, q, id); });
  }
}

// Whether a distance object scores batches of ids (`batch(ids, n, out)` and `prefetch(id)`).
template <class D, class = void>
struct HasBatch : std::false_type {};
template <class D>
struct HasBatch<D, std::void_t<decltype(&D::batch)>> : std::true_type {};

template <class Dist>
inline std::uint32_t greedy_with(const HnswIndex& ix, const Dist& dist, std::uint32_t entry,
                                 int level, bool building) {
  std::uint32_t cur = entry;
  float best = dist(cur);
  if constexpr (HasBatch<Dist>::value) {
    if (!building) {  // a search: every node is ready
      std::uint32_t ids[256];  // M <= 256 at upper levels
      float ds[256];
      for (bool moved = true; moved;) {
        moved = false;
        const std::uint32_t* l = ix.links(cur, level);
        const std::uint32_t cnt = l[0];
        for (std::uint32_t j = 0; j < cnt; ++j) dist.prefetch(ids[j] = l[j + 1]);
        dist.batch(ids, cnt, ds);
        for (std::uint32_t j = 0; j < cnt; ++j)
          if (ds[j] < best) {
            best = ds[j];
            cur = ids[j];
            moved = true;
          }
      }
      return cur;
    }
  }
  for (bool moved = true; moved;) {
    moved = false;
    const std::uint32_t* l = ix.links(cur, level);
    const std::uint32_t cnt = l[0];
    for (std::uint32_t j = 1; j <= cnt; ++j) prefetch_row(ix, l[j]);
    for (std::uint32_t j = 1; j <= cnt; ++j) {
      if (building && !ix.ready(l[j])) continue;
      const float d = dist(l[j]);
      if (d < best) {
        best = d;
        cur = l[j];
        moved = true;
      }
    }
  }
  return cur;
}

inline std::uint32_t greedy(const HnswIndex& ix, const QueryPrep& q, std::uint32_t entry,
                            int level, bool building) {
  std::uint32_t out = entry;
  with_distance(ix, q, [&](const auto& dist) {
    out = greedy_with(ix, dist, entry, level, building);
  });
  return out;
}

// Heap orders as function objects, so that the heap operations inline them.
struct Closer {  // min-heap on distance
  bool operator()(const Cand& a, const Cand& b) const { return a.dist > b.dist; }
};
struct Farther {  // max-heap on distance
  bool operator()(const Cand& a, const Cand& b) const { return a.dist < b.dist; }
};
constexpr Closer closer{};
constexpr Farther farther{};

template <class Dist>
inline void search_layer_with(const HnswIndex& ix, const Dist& dist, std::uint32_t entry,
                              int level, std::size_t ef, const DenseSearchOptions* opt,
                              bool locked, HnswIndex::Scratch& s, std::vector<Cand>& out) {
  VisitedSet& visited = s.visited;
  // A walk visits at most every node: size the table for that at most (ef may be anything).
  visited.reset(std::min<std::size_t>(std::min<std::size_t>(ef, ix.count_locked()) *
                                          ix.max_degree(level),
                                      ix.count_locked()),
                ix.count_locked(), ix.visited_bits_max());
  auto& cands = s.cands;
  auto& top = s.top;
  cands.clear();
  top.clear();
  const float d0 = dist(entry);
  visited.insert(entry);
  cands.push_back({d0, entry});
  if (!opt || ix.allowed(entry, *opt)) top.push_back({d0, entry});
  float bound = top.empty() ? std::numeric_limits<float>::infinity() : d0;
  // A node's unvisited neighbours and their distances (at most 2 M <= 512 of them).
  std::uint32_t nb[512];
  float ds[HasBatch<Dist>::value ? 512 : 1];
  while (!cands.empty()) {
    const Cand c = cands.front();
    if (c.dist > bound && top.size() >= ef) break;
    std::pop_heap(cands.begin(), cands.end(), closer);
    cands.pop_back();
    // Unvisited neighbours first, so their rows can be prefetched before the distances.
    std::size_t nn = 0;
    if (locked) ix.lock_links(c.id);
    const std::uint32_t* l = ix.links(c.id, level);
    const std::uint32_t cnt = l[0];
    if (locked) {
      for (std::uint32_t j = 1; j <= cnt; ++j)
        if (ix.ready(l[j]) && visited.insert(l[j])) nb[nn++] = l[j];
    } else {
      nn = visited.gather(l + 1, cnt, nb);
    }
    if (locked) ix.unlock_links(c.id);
    if constexpr (HasBatch<Dist>::value) {
      // Rows small enough to ask for whole (int4 codes): all of them, then one batch.
      for (std::size_t j = 0; j < nn; ++j) dist.prefetch(nb[j]);
      dist.batch(nb, nn, ds);
    } else {
      // Ask for the head of every unvisited neighbour's row at once: their fetches overlap
      // instead of arriving one after the other (tails: see prefetch_tail).
      for (std::size_t j = 0; j < nn; ++j) prefetch_row(ix, nb[j]);
      for (std::size_t j = 0; j < std::min(kTailAhead, nn); ++j) prefetch_tail(ix, nb[j]);
    }
    for (std::size_t j = 0; j < nn; ++j) {
      const std::uint32_t v = nb[j];
      float d;
      if constexpr (HasBatch<Dist>::value) {
        d = ds[j];
      } else {
        if (j + kTailAhead < nn) prefetch_tail(ix, nb[j + kTailAhead]);
        d = dist(v);
      }
      if (top.size() < ef || d < bound) {
        // A candidate may be expanded soon: ask for its level-0 links (the head of its
        // record). Upper levels (builds only) are small and kept apart.
        if (level == 0) prefetch_bytes(ix.record(v), 4 * (1 + ix.max_degree(0)));
        cands.push_back({d, v});
        std::push_heap(cands.begin(), cands.end(), closer);
        if (!opt || ix.allowed(v, *opt)) {
          top.push_back({d, v});
          std::push_heap(top.begin(), top.end(), farther);
          if (top.size() > ef) {
            std::pop_heap(top.begin(), top.end(), farther);
            top.pop_back();
          }
          bound = top.front().dist;
        }
      }
    }
  }
  out.assign(top.begin(), top.end());
  std::sort(out.begin(), out.end(), [](const Cand& a, const Cand& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
  });
}

inline void search_layer(const HnswIndex& ix, const QueryPrep& q, std::uint32_t entry, int level,
                         std::size_t ef, const DenseSearchOptions* opt, bool locked,
                         HnswIndex::Scratch& s, std::vector<Cand>& out) {
  with_distance(ix, q, [&](const auto& dist) {
    search_layer_with(ix, dist, entry, level, ef, opt, locked, s, out);
  });
}

template <class Dist>
inline void scan_with(const HnswIndex& ix, const Dist& dist, const DenseSearchOptions& opt,
                      std::size_t n, std::size_t keep, HnswIndex::Scratch& s,
                      std::vector<Cand>& out) {
  auto& top = s.top;  // max-heap of the best `keep`
  top.clear();
  if (keep == 0) {
    out.clear();
    return;
  }
  for (std::uint32_t id = 0; id < n; ++id) {
    if (!ix.allowed(id, opt)) continue;
    if (id + 4 < n) prefetch_row(ix, id + 4);
    const float d = dist(id);
    if (top.size() < keep) {
      top.push_back({d, id});
      std::push_heap(top.begin(), top.end(), farther);
    } else if (d < top.front().dist) {
      std::pop_heap(top.begin(), top.end(), farther);
      top.back() = {d, id};
      std::push_heap(top.begin(), top.end(), farther);
    }
  }
  out.assign(top.begin(), top.end());
  std::sort(out.begin(), out.end(), [](const Cand& a, const Cand& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
  });
}

inline void scan(const HnswIndex& ix, const QueryPrep& q, const DenseSearchOptions& opt,
                 std::size_t n, std::size_t keep, HnswIndex::Scratch& s, std::vector<Cand>& out) {
  with_distance(ix, q, [&](const auto& dist) { scan_with(ix, dist, opt, n, keep, s, out); });
}

// ---------------------------------------------------------------------------- int4 queries
// Sums over d < n (a multiple of 16) in double, eight partial sums: loops the compiler
// vectorises without reassociating (a single running sum cannot be).
template <class Term>
inline double sum8(std::uint32_t n, Term term) {
  double s[8] = {};
  for (std::uint32_t d = 0; d < n; d += 8)
    for (std::uint32_t j = 0; j < 8; ++j) s[j] += term(d + j);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
// Round to nearest, ties to even (std::nearbyint in the default mode) for |x| < 2^22, in a
// form the compiler vectorises.
inline float round_even(float x) { return (x + 0x1.8p23f) - 0x1.8p23f; }

// A query for int4 storage (q.n, q.v and q.bytes set by HnswIndex::prepare): the int8 rows'
// form in v and c (rescoring, exact search, building), and with q.bytes the walks' int4 form:
// the query times the int4 steps, quantised to int8 with scale qs4, even dimensions in
// t4[0, half) and odd ones in t4[half, 2 half) (see dot_u4s8), c4 the constant part.
inline void prep_i4(const HnswIndex& ix, const float* row, QueryPrep& q) {
  const std::uint32_t n = q.n;
  q.qnorm = static_cast<float>(sum8(n, [row](std::uint32_t d) { return double(row[d]) * row[d]; }));
  const float* rl = ix.r8_low();
  const float* rs = ix.r8_step();
  q.c = static_cast<float>(
      sum8(n, [=](std::uint32_t d) { return (double(rl[d]) + 128.0 * rs[d]) * row[d]; }));
  float* v = q.v.data();
  for (std::uint32_t d = 0; d < n; ++d) v[d] = row[d] * rs[d];
  if (!q.bytes) return;
  const std::size_t pdim = ix.padded_dim();
  q.half = (pdim / 2 + 63) / 64 * 64;  // padded so that kernels may load whole vectors
  q.t4.assign(2 * q.half, 0);
  const float* ql = ix.i8_low();
  const float* qs = ix.i8_step();
  q.c4 = static_cast<float>(sum8(n, [=](std::uint32_t d) { return double(ql[d]) * row[d]; }));
  float peak[16] = {};
  for (std::uint32_t d = 0; d < n; d += 16)
    for (std::uint32_t j = 0; j < 16; ++j) {
      const float a = std::fabs(row[d + j] * qs[d + j]);
      peak[j] = a > peak[j] ? a : peak[j];
    }
  float top = 0;
  for (float a : peak) top = std::max(top, a);
  q.qs4 = top > 0 ? top / 127.0f : 1.0f;
  std::int8_t* te = q.t4.data();
  std::int8_t* to = te + q.half;
  const float scale = q.qs4;
  for (std::uint32_t i = 0; i < n / 2; ++i) {  // |value| <= 127
    te[i] = static_cast<std::int8_t>(round_even(row[2 * i] * qs[2 * i] / scale));
    to[i] = static_cast<std::int8_t>(round_even(row[2 * i + 1] * qs[2 * i + 1] / scale));
  }
}

inline float dist_entry(const HnswIndex& ix, const QueryPrep& q, std::uint32_t id) {
  return distance(ix, q, id);
}
inline float dot_entry(const float* a, const float* b, std::size_t n) { return dot_f32(a, b, n); }
inline float l2_entry(const float* a, const float* b, std::size_t n) { return l2_f32(a, b, n); }

inline const HnswIndex::Ops* make_ops(const char* name) {
  static const HnswIndex::Ops ops{name,       &dist_entry, &greedy,   &search_layer, &scan,
                                  &dot_entry, &l2_entry,   &prep_i4};
  return &ops;
}
