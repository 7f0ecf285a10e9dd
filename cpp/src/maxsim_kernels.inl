// MaxSim kernels, compiled once per instruction set: maxsim_isa_generic.cpp (no flags),
// maxsim_isa_avx2.cpp (-mavx2 -mfma -mf16c) and maxsim_isa_avx512.cpp (-mavx512f ...), each
// inside its own namespace; maxsim.cpp picks one at run time.
//
// The query is transposed (dim x lanes), so one vector holds a dimension of W query tokens.
// A tile of R document tokens x QB vectors of query lanes is accumulated in registers over
// all dimensions: per dimension, QB loads of the query, R broadcasts of a token value and
// R * QB multiply-adds. The maximum over document tokens is then an element-wise max of the
// R accumulators into the running maxima of those lanes: no horizontal reduction until the
// final sum over query tokens. Documents are walked in blocks of kR tokens (float16 blocks are
// converted into scratch first), and every group of lanes scores a block while it is in L1.
//
// Included inside `namespace fastrag { namespace maxsim_<isa> {`, after <immintrin.h> where
// needed. The namespaces differ from the HNSW kernels' (isa_<isa>): an inline function of the
// same name there would break the one-definition rule.

// ---------------------------------------------------------------------------- vectors
#if defined(__AVX512F__)
constexpr std::size_t kW = 16;  // floats per vector
constexpr int kR = 12;          // tokens per tile: 2 x 12 accumulators of 32 registers
using V = __m512;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline V vset1(float x) { return _mm512_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
// Masked forms here: _mm512_max_ps and _mm512_cvtph_ps start from _mm512_undefined_ps(), which
// GCC 12 reports as used uninitialised (a false positive); with an all-ones mask the
// instruction is the same.
inline V vmax(V a, V b) { return _mm512_mask_max_ps(a, 0xffff, a, b); }
inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline void f16_to_f32(const std::uint16_t* h, float* f, std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i));
    _mm512_storeu_ps(f + i, _mm512_maskz_cvtph_ps(0xffff, x));
  }
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(f + i, k, _mm512_maskz_cvtph_ps(k, _mm256_maskz_loadu_epi16(k, h + i)));
  }
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
constexpr std::size_t kW = 8;
constexpr int kR = 6;  // 2 x 6 accumulators of 16 registers
using V = __m256;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline V vset1(float x) { return _mm256_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline void f16_to_f32(const std::uint16_t* h, float* f, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(f + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) f[i] = _cvtsh_ss(h[i]);
}
#else
// Portable: four floats, as a GCC/Clang vector (SSE2 on x86-64, NEON on ARM) or a plain array.
constexpr std::size_t kW = 4;
constexpr int kR = 6;  // 2 x 6 accumulators of 16 registers
#if defined(__GNUC__)
typedef float V __attribute__((vector_size(16)));
inline V vzero() { return V{0.f, 0.f, 0.f, 0.f}; }
inline V vload(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline V vset1(float a) { return V{a, a, a, a}; }
inline V vfma(V a, V b, V c) { return a * b + c; }  // not fused: -ffp-contract=off
typedef std::int32_t VI __attribute__((vector_size(16)));
inline V vmax(V a, V b) {
  // Bitwise select (portable between GCC and Clang): b when either is NaN, as _mm*_max_ps.
  const VI gt = a > b;
  return (V)(((VI)a & gt) | ((VI)b & ~gt));
}
inline void vstore(float* p, V v) { std::memcpy(p, &v, sizeof v); }
#else
struct V {
  float x[kW];
};
inline V vzero() { return V{{0.f, 0.f, 0.f, 0.f}}; }
inline V vload(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
inline V vset1(float a) { return V{{a, a, a, a}}; }
inline V vfma(V a, V b, V c) {
  for (std::size_t i = 0; i < kW; ++i) c.x[i] += a.x[i] * b.x[i];
  return c;
}
inline V vmax(V a, V b) {
  for (std::size_t i = 0; i < kW; ++i) a.x[i] = a.x[i] > b.x[i] ? a.x[i] : b.x[i];
  return a;
}
inline void vstore(float* p, V v) {
  for (std::size_t i = 0; i < kW; ++i) p[i] = v.x[i];
}
#endif
inline void f16_to_f32(const std::uint16_t* h, float* f, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) f[i] = half_to_float(h[i]);
}
#endif

// ---------------------------------------------------------------------------- tiles
// Maxima of R tokens (rows of t, stride d) against QB * kW query lanes (qt: the first lane of
// the group in the transposed query, stride `lanes` per dimension) folded into mx.
template <int QB, int R>
inline void tile(const float* qt, std::size_t lanes, const float* t, std::size_t d, float* mx) {
  V acc[R][QB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < QB; ++b) acc[r][b] = vzero();
  for (std::size_t k = 0; k < d; ++k, qt += lanes) {
    V q[QB];
#pragma GCC unroll 4
    for (int b = 0; b < QB; ++b) q[b] = vload(qt + b * kW);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V x = vset1(t[static_cast<std::size_t>(r) * d + k]);
#pragma GCC unroll 4
      for (int b = 0; b < QB; ++b) acc[r][b] = vfma(x, q[b], acc[r][b]);
    }
  }
#pragma GCC unroll 4
  for (int b = 0; b < QB; ++b) {
    V m = vload(mx + b * kW);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) m = vmax(m, acc[r][b]);
    vstore(mx + b * kW, m);
  }
}

// tile<QB, r> for a run-time r in [1, R].
template <int QB, int R>
inline void tile_n(int r, const float* qt, std::size_t lanes, const float* t, std::size_t d,
                   float* mx) {
  if constexpr (R > 0) {
    if (r == R) return tile<QB, R>(qt, lanes, t, d, mx);
    tile_n<QB, R - 1>(r, qt, lanes, t, d, mx);
  }
}

// Folds n <= kR tokens (rows of t) into the maxima of every query lane.
inline void score_block(const MaxsimQuery& q, const float* t, std::size_t n, float* mx) {
  const int r = static_cast<int>(n);
  std::size_t lane = 0;
  for (; lane + 2 * kW <= q.lanes; lane += 2 * kW)
    tile_n<2, kR>(r, q.qt + lane, q.lanes, t, q.dim, mx + lane);
  if (lane < q.lanes) tile_n<1, kR>(r, q.qt + lane, q.lanes, t, q.dim, mx + lane);
}

inline float sum_maxima(const MaxsimQuery& q, const float* mx) {
  float s = 0;
  for (std::size_t i = 0; i < q.m; ++i) s += mx[i];
  return s;
}

float score_f32(const MaxsimQuery& q, const float* t, std::size_t n, float* scratch) {
  float* mx = scratch + kR * q.dim;
  std::fill(mx, mx + q.lanes, -std::numeric_limits<float>::infinity());
  for (std::size_t j = 0; j < n; j += kR)
    score_block(q, t + j * q.dim, std::min<std::size_t>(kR, n - j), mx);
  return sum_maxima(q, mx);
}

float score_f16(const MaxsimQuery& q, const std::uint16_t* t, std::size_t n, float* scratch) {
  float* mx = scratch + kR * q.dim;
  std::fill(mx, mx + q.lanes, -std::numeric_limits<float>::infinity());
  for (std::size_t j = 0; j < n; j += kR) {
    const std::size_t r = std::min<std::size_t>(kR, n - j);
    f16_to_f32(t + j * q.dim, scratch, r * q.dim);
    score_block(q, scratch, r, mx);
  }
  return sum_maxima(q, mx);
}

const MaxsimKernels* make_kernels(const char* name) {
  static const MaxsimKernels k{name, kW, static_cast<std::size_t>(kR), &score_f32, &score_f16};
  return &k;
}
