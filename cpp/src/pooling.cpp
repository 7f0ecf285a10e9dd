// Span mean pooling driver: checks the spans, maps each to its document, picks the kernels and
// pools the spans in parallel, one span per work item. The generic kernels are compiled here;
// the AVX2 + F16C ones in pooling_isa_avx2.cpp.
#include "fastrag/pooling.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastrag/parallel.hpp"
#include "pooling_internal.hpp"

namespace fastrag {

namespace pooling_generic {
#include "pooling_kernels.inl"
}  // namespace pooling_generic

const PoolingKernels* pooling_kernels_generic() {
  return pooling_generic::make_kernels("generic");
}

namespace {

const PoolingKernels* pick_kernels() {
  const char* forced = std::getenv("FASTRAG_KERNELS");
  const std::string want = forced ? forced : "";
#if defined(FASTRAG_X86_DISPATCH)
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  if (want != "generic" && avx2) return pooling_kernels_avx2();
#endif
  return pooling_kernels_generic();
}

void check_offsets(const std::uint64_t* off, std::size_t n, std::size_t total, const char* name,
                   const char* what) {
  if (off[0] != 0)
    throw std::invalid_argument(std::string(name) + "[0] must be 0, got " +
                                std::to_string(off[0]));
  for (std::size_t k = 0; k < n; ++k)
    if (off[k + 1] < off[k])
      throw std::invalid_argument(std::string(name) + " must be non-decreasing: " + name + "[" +
                                  std::to_string(k + 1) + "] = " + std::to_string(off[k + 1]) +
                                  " < " + name + "[" + std::to_string(k) +
                                  "] = " + std::to_string(off[k]));
  if (off[n] != total)
    throw std::invalid_argument(std::string(name) + "[-1] must equal the number of " + what +
                                " (" + std::to_string(total) + "), got " +
                                std::to_string(off[n]));
}

// Checks the spans and returns the document of each.
std::vector<std::size_t> span_documents(std::size_t n_docs, const std::int64_t* spans,
                                        const std::uint64_t* span_offsets, std::size_t n_spans) {
  check_offsets(span_offsets, n_docs, n_spans, "span_offsets", "spans");
  std::vector<std::size_t> doc(n_spans);
  for (std::size_t k = 0; k < n_docs; ++k)
    for (std::uint64_t i = span_offsets[k]; i < span_offsets[k + 1]; ++i) {
      const std::int64_t start = spans[2 * i], end = spans[2 * i + 1];
      const char* problem = start < 0 ? "start must be >= 0" : end < start ? "end < start" : "";
      if (*problem)
        throw std::invalid_argument(
            "spans[" + std::to_string(i) + "] = (" + std::to_string(start) + ", " +
            std::to_string(end) + ") (span " + std::to_string(i - span_offsets[k]) +
            " of document " + std::to_string(k) + "): " + problem +
            "; spans are [start, end) token indices with 0 <= start <= end");
      doc[i] = k;
    }
  return doc;
}

}  // namespace

const char* pooling_kernels() { return pick_kernels()->name; }

void span_mean_pool(const TokenRows* docs, std::size_t n_docs, TokenType type, std::size_t dim,
                    const std::int64_t* spans, const std::uint64_t* span_offsets,
                    std::size_t n_spans, int threads, float* out, bool* valid) {
  if (dim == 0) throw std::invalid_argument("token vectors have 0 dimensions");
  const std::vector<std::size_t> doc = span_documents(n_docs, spans, span_offsets, n_spans);
  if (n_spans == 0) return;
  const PoolingKernels* kern = pick_kernels();

  const std::size_t n_threads = resolve_threads(threads, n_spans);
  // Per-thread scratch for converted float16 rows, 64-byte apart.
  const std::size_t per = (kPoolRows * dim + 15) / 16 * 16;
  std::vector<float> scratch(type == TokenType::F16 ? n_threads * per : 0);
  parallel_for(n_spans, n_threads, [&](std::size_t i, std::size_t tid) {
    const TokenRows& d = docs[doc[i]];
    // Clipped to the document; start <= end and start >= 0 were checked.
    const std::uint64_t end = std::min<std::uint64_t>(static_cast<std::uint64_t>(spans[2 * i + 1]),
                                                      d.n_tokens);
    const std::uint64_t start = static_cast<std::uint64_t>(spans[2 * i]);
    float* o = out + i * dim;
    std::fill(o, o + dim, 0.f);
    valid[i] = start < end;
    if (!valid[i]) return;  // documented: skipped spans give a zero row
    const std::size_t n = static_cast<std::size_t>(end - start);
    if (type == TokenType::F16)
      kern->sum_f16(static_cast<const std::uint16_t*>(d.data) + start * dim, n, dim, o,
                    scratch.data() + tid * per);
    else
      kern->sum_f32(static_cast<const float*>(d.data) + start * dim, n, dim, o);
    const float count = static_cast<float>(n);
    for (std::size_t k = 0; k < dim; ++k) o[k] /= count;
  });
}

void span_mean_pool(const TokenStoreView& store, const std::int64_t* spans,
                    const std::uint64_t* span_offsets, std::size_t n_spans, int threads,
                    float* out, bool* valid) {
  check_offsets(store.offsets, store.n_docs, store.n_tokens, "offsets", "token rows");
  const std::size_t row_bytes = store.dim * (store.type == TokenType::F16 ? 2 : 4);
  std::vector<TokenRows> docs(store.n_docs);
  for (std::size_t k = 0; k < store.n_docs; ++k) {
    docs[k].data = static_cast<const char*>(store.data) + store.offsets[k] * row_bytes;
    docs[k].n_tokens = static_cast<std::size_t>(store.offsets[k + 1] - store.offsets[k]);
  }
  span_mean_pool(docs.data(), docs.size(), store.type, store.dim, spans, span_offsets, n_spans,
                 threads, out, valid);
}

}  // namespace fastrag
