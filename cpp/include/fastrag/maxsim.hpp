// Late-interaction scoring (MaxSim, as in ColBERT: Khattab & Zaharia, SIGIR 2020; PyLate's
// colbert_scores): score(q, D) = sum over query tokens i of max over the document's tokens j
// of dot(q_i, t_j).
//
// The documents' token vectors live in one contiguous store (total_tokens x dim, float32 or
// float16) with offsets: document k owns rows [offsets[k], offsets[k + 1]). A document with no
// tokens scores 0 (the sum of nothing), not -inf, so that an empty document ranks below any
// document with a positive score and the result stays finite.
//
// The kernels are compiled once per instruction set (maxsim_isa_*.cpp) and picked at run time
// on every call: the best one the CPU has, or the one named by FASTRAG_KERNELS ("generic",
// "avx2", "avx512") when the CPU has it. Results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastrag {

enum class TokenType : std::uint32_t { F32 = 0, F16 = 1 };

// A read-only view of a packed token store. `data` points to n_tokens x dim values of `type`
// (float16 as IEEE binary16 bit patterns), row-major; `offsets` to n_docs + 1 values.
struct TokenStoreView {
  const void* data = nullptr;
  TokenType type = TokenType::F32;
  std::size_t n_tokens = 0;
  std::size_t dim = 0;
  const std::uint64_t* offsets = nullptr;
  std::size_t n_docs = 0;
};

// out[c] = MaxSim of the query (m x store.dim float32, row-major) against document
// candidates[c], for c in [0, n_candidates). threads <= 0: all hardware threads.
//
// Checks its inputs first and throws std::invalid_argument (m or dim zero, a NaN in the query,
// offsets not starting at 0, decreasing, or not ending at n_tokens) or std::out_of_range (a
// candidate >= n_docs). The token values themselves are not checked: a NaN or infinity in a
// document's tokens gives that document an unspecified score.
void maxsim(const float* query, std::size_t m, const TokenStoreView& store,
            const std::uint32_t* candidates, std::size_t n_candidates, int threads, float* out);

// Name of the kernels maxsim() would use now ("generic", "avx2" or "avx512").
const char* maxsim_kernels();

}  // namespace fastrag
