// Mean pooling of token vectors over spans, the last step of late chunking (Günther et al.,
// "Late Chunking: Contextual Chunk Embeddings Using Long-Context Embedding Models", 2024): a
// document goes through the encoder once, and every chunk's vector is the mean of the token
// vectors its [start, end) token span covers, so that it carries its neighbours' context.
//
// Documents are given as token rows (n_tokens x dim, float32 or float16, row-major), and spans
// as int64 [start, end) pairs of token indices relative to their document, grouped by document:
// the spans of document k are spans[span_offsets[k]:span_offsets[k + 1]] (n_docs + 1 offsets,
// like the token store's). Every span gives one output row.
//
// Clipping and skipping: an end beyond the document's last token is clipped to the document's
// length (what the reference implementation does with the model's max length); a span that is
// empty after clipping (start >= end: zero-length, or starting at or beyond the end of the
// document) is skipped: its output row is all zeros and valid[i] is false. A negative start or
// an end before the start is an error.
//
// Sums are float32, in row order, four rows at a time as (r0 + r1) + (r2 + r3) added to the
// running sum, then divided by the row count. The same order in every kernel (generic, avx2)
// and for any thread count, so results are bit-identical between them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastrag/maxsim.hpp"  // TokenType and TokenStoreView, shared with MaxSim

namespace fastrag {

// One document's token vectors: n_tokens rows of `dim` values (the type given beside it).
struct TokenRows {
  const void* data = nullptr;
  std::size_t n_tokens = 0;
};

// Pools the spans of n_docs documents (docs[k], each n_tokens x dim of `type`) in one call.
// spans: n_spans x 2 int64, row-major; span_offsets: n_docs + 1 values. out: n_spans x dim
// float32, row-major; valid: n_spans flags. threads <= 0: all hardware threads; results do not
// depend on it.
//
// Checks its inputs first and throws std::invalid_argument: dim 0; span_offsets not starting
// at 0, decreasing, or not ending at n_spans; a negative start or an end before its start
// (the message names the span: its row in `spans`, and its document and place there).
// The token values are not checked: a NaN or infinity reaches the means it is part of.
void span_mean_pool(const TokenRows* docs, std::size_t n_docs, TokenType type, std::size_t dim,
                    const std::int64_t* spans, const std::uint64_t* span_offsets,
                    std::size_t n_spans, int threads, float* out, bool* valid);

// The same over a packed token store (document k owns rows [offsets[k], offsets[k + 1])).
// span_offsets has store.n_docs + 1 values. Also throws std::invalid_argument when the store's
// offsets do not start at 0, decrease, or do not end at n_tokens.
void span_mean_pool(const TokenStoreView& store, const std::int64_t* spans,
                    const std::uint64_t* span_offsets, std::size_t n_spans, int threads,
                    float* out, bool* valid);

// Name of the kernels span_mean_pool() would use now ("generic" or "avx2"): avx2 when the CPU
// has AVX2 and F16C unless FASTRAG_KERNELS=generic.
const char* pooling_kernels();

}  // namespace fastrag
