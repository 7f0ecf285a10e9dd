// MaxSim driver: checks the inputs, transposes the query once, picks the kernels and scores the
// candidates in parallel. The kernels are in maxsim_kernels.inl, compiled per instruction set.
#include "fastrag/maxsim.hpp"

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_features.hpp"
#include "fastrag/parallel.hpp"
#include "maxsim_internal.hpp"

namespace fastrag {
namespace {

const MaxsimKernels* pick_kernels() {
  return pick_isa(maxsim_kernels_generic(), maxsim_kernels_avx2(), maxsim_kernels_avx512());
}

void check(const float* query, std::size_t m, const TokenStoreView& s,
           const std::uint32_t* candidates, std::size_t n_candidates) {
  if (m == 0) throw std::invalid_argument("query has no token vectors (0 rows)");
  if (s.dim == 0) throw std::invalid_argument("token vectors have 0 dimensions");
  for (std::size_t i = 0; i < m * s.dim; ++i)
    if (std::isnan(query[i]))
      throw std::invalid_argument("query contains NaN (token " + std::to_string(i / s.dim) +
                                  ", dimension " + std::to_string(i % s.dim) + ")");
  const std::uint64_t* off = s.offsets;
  if (off[0] != 0)
    throw std::invalid_argument("offsets[0] must be 0, got " + std::to_string(off[0]));
  for (std::size_t k = 0; k < s.n_docs; ++k)
    if (off[k + 1] < off[k])
      throw std::invalid_argument("offsets must be non-decreasing: offsets[" +
                                  std::to_string(k + 1) + "] = " + std::to_string(off[k + 1]) +
                                  " < offsets[" + std::to_string(k) + "] = " +
                                  std::to_string(off[k]));
  if (off[s.n_docs] != s.n_tokens)
    throw std::invalid_argument("offsets[-1] must equal the number of token rows (" +
                                std::to_string(s.n_tokens) + "), got " +
                                std::to_string(off[s.n_docs]));
  for (std::size_t c = 0; c < n_candidates; ++c)
    if (candidates[c] >= s.n_docs)
      throw std::out_of_range("candidates[" + std::to_string(c) + "] = " +
                              std::to_string(candidates[c]) + " is not a document of the store (" +
                              std::to_string(s.n_docs) + " documents)");
}

}  // namespace

const char* maxsim_kernels() { return pick_kernels()->name; }

void maxsim(const float* query, std::size_t m, const TokenStoreView& store,
            const std::uint32_t* candidates, std::size_t n_candidates, int threads, float* out) {
  check(query, m, store, candidates, n_candidates);
  if (n_candidates == 0) return;
  const MaxsimKernels* kern = pick_kernels();
  const std::size_t d = store.dim;

  // The query transposed (dim x lanes), padded with zero lanes to the kernels' width.
  const std::size_t lanes = (m + kern->width - 1) / kern->width * kern->width;
  std::vector<float> qt(d * lanes, 0.f);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t k = 0; k < d; ++k) qt[k * lanes + i] = query[i * d + k];
  const MaxsimQuery q{qt.data(), m, lanes, d};

  const std::size_t n_threads = resolve_threads(threads, n_candidates);
  // Per-thread scratch: a converted block of tokens and the running maxima, 64-byte apart.
  const std::size_t per = (kern->block * d + lanes + 15) / 16 * 16;
  std::vector<float> scratch(n_threads * per);
  parallel_for(n_candidates, n_threads, [&](std::size_t c, std::size_t tid) {
    const std::uint64_t begin = store.offsets[candidates[c]];
    const std::uint64_t n = store.offsets[candidates[c] + 1] - begin;
    float* s = scratch.data() + tid * per;
    if (n == 0) {
      out[c] = 0.f;  // documented: an empty document scores 0
    } else if (store.type == TokenType::F16) {
      out[c] = kern->score_f16(q, static_cast<const std::uint16_t*>(store.data) + begin * d, n, s);
    } else {
      out[c] = kern->score_f32(q, static_cast<const float*>(store.data) + begin * d, n, s);
    }
  });
}

}  // namespace fastrag
