// Posting-list codec of SparseIndex (format version 2) and the BM25 impact formula shared by
// commit and search. Internal to sparse_index.cpp and sparse_search.cpp.
//
// Each term's list is cut into blocks of SparseIndex::kBlockSize postings. A block's bytes
// start at block_data[blk] in the packed array: first the document-id gaps, n values of
// doc_bits bits each, then, for BM25, the term frequencies minus one, n values of tf_bits
// bits, starting on the next byte. A full block packs its values in the vertical layout
// (pack_vertical), the last, partial block of a list one after another, LSB first (pack). A gap is doc - previous doc - 1, the previous doc of
// a term's first block being "-1" (so the first gap is the document id itself) and that of a
// later block the last document of the block before, kept uncompressed in block_last.
// The packed array ends with kPad zero bytes, so that every value is read with one unaligned
// 8-byte load.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "fastrag/bm25.hpp"

namespace fastrag::codec {

constexpr std::size_t kPad = 8;

inline unsigned bits_for(std::uint32_t max_value) {
  unsigned b = 0;
  while (b < 32 && (max_value >> b) != 0) ++b;
  return b;
}

inline std::size_t packed_bytes(std::size_t n, unsigned bits) { return (n * bits + 7) / 8; }

inline std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

// Writes n values of `bits` bits at out, which must hold packed_bytes(n, bits) + kPad zero
// bytes (values must fit in `bits`).
inline void pack(const std::uint32_t* in, std::size_t n, unsigned bits, std::uint8_t* out) {
  if (bits == 0) return;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t bit = i * bits;
    std::uint64_t w = load64(out + bit / 8);
    w |= std::uint64_t{in[i]} << (bit % 8);
    std::memcpy(out + bit / 8, &w, 8);
  }
}

// Eight values of B bits take exactly B bytes: groups of eight are unpacked with constant
// offsets and shifts (fully unrolled), the tail value by value.
template <unsigned B>
void unpack_fixed(const std::uint8_t* in, std::size_t n, std::uint32_t* out) {
  if constexpr (B == 0) {
    std::fill(out, out + n, 0u);
  } else {
    constexpr std::uint64_t mask = (std::uint64_t{1} << B) - 1;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8, in += B) {
      for (unsigned j = 0; j < 8; ++j)
        out[i + j] = static_cast<std::uint32_t>((load64(in + j * B / 8) >> (j * B % 8)) & mask);
    }
    for (unsigned j = 0; i < n; ++i, ++j)
      out[i] = static_cast<std::uint32_t>((load64(in + j * B / 8) >> (j * B % 8)) & mask);
  }
}

using UnpackFn = void (*)(const std::uint8_t*, std::size_t, std::uint32_t*);

template <unsigned... B>
constexpr auto make_unpackers(std::integer_sequence<unsigned, B...>) {
  return std::array<UnpackFn, sizeof...(B)>{&unpack_fixed<B>...};
}

// Reads n values of `bits` (0..32) bits.
inline void unpack(const std::uint8_t* in, std::size_t n, unsigned bits, std::uint32_t* out) {
  static constexpr auto table = make_unpackers(std::make_integer_sequence<unsigned, 33>{});
  table[bits](in, n, out);
}

// Full blocks (128 values) use a vertical layout (four interleaved lanes, as in Lemire and
// Boytsov's SIMD-BP128): 32-bit word w of lane l is stored at word w * 4 + l, and value i goes
// to lane i % 4 at bit (i / 4) * bits of that lane. Unpacking then does the same constant
// shifts on four lanes at once, which compilers turn into SIMD code (SSE2 on x86-64). It
// takes 16 * bits bytes, as the horizontal layout does.
constexpr std::size_t kVertical = 128;

inline void pack_vertical(const std::uint32_t* in, unsigned bits, std::uint8_t* out) {
  if (bits == 0) return;
  std::uint32_t words[4 * 32] = {};
  for (std::size_t i = 0; i < kVertical; ++i) {
    const std::size_t lane = i % 4, bit = (i / 4) * bits, w = bit / 32, sh = bit % 32;
    words[w * 4 + lane] |= in[i] << sh;
    if (sh + bits > 32) words[(w + 1) * 4 + lane] |= in[i] >> (32 - sh);
  }
  std::memcpy(out, words, 16 * bits);
}

template <unsigned B>
void unpack_vertical_fixed(const std::uint8_t* in, std::uint32_t* out) {
  if constexpr (B == 0) {
    std::fill(out, out + kVertical, 0u);
  } else {
    std::uint32_t words[4 * B];
    std::memcpy(words, in, sizeof words);
    constexpr std::uint32_t mask = B == 32 ? 0xffffffffu : (std::uint32_t{1} << B) - 1;
#pragma GCC unroll 32
    for (unsigned k = 0; k < 32; ++k) {
      const unsigned bit = k * B, w = bit / 32, sh = bit % 32;
      for (unsigned lane = 0; lane < 4; ++lane) {
        std::uint32_t v = words[w * 4 + lane] >> sh;
        if (sh + B > 32) v |= words[(w + 1) * 4 + lane] << (32 - sh);
        out[k * 4 + lane] = v & mask;
      }
    }
  }
}

using UnpackVerticalFn = void (*)(const std::uint8_t*, std::uint32_t*);

template <unsigned... B>
constexpr auto make_vertical_unpackers(std::integer_sequence<unsigned, B...>) {
  return std::array<UnpackVerticalFn, sizeof...(B)>{&unpack_vertical_fixed<B>...};
}

// A block's n values of `bits` bits: vertical layout when n is a full block, else horizontal.
inline void pack_block(const std::uint32_t* in, std::size_t n, unsigned bits, std::uint8_t* out) {
  if (n == kVertical)
    pack_vertical(in, bits, out);
  else
    pack(in, n, bits, out);
}

inline void unpack_block(const std::uint8_t* in, std::size_t n, unsigned bits,
                         std::uint32_t* out) {
  if (n == kVertical) {
    static constexpr auto table =
        make_vertical_unpackers(std::make_integer_sequence<unsigned, 33>{});
    table[bits](in, out);
  } else {
    unpack(in, n, bits, out);
  }
}

// The first value only (bit 0 of lane 0 in both layouts).
inline std::uint32_t first(const std::uint8_t* in, unsigned bits) {
  return bits == 0 ? 0u
                   : static_cast<std::uint32_t>(load64(in) & ((std::uint64_t{1} << bits) - 1));
}

// Gaps to document ids, in place: prev is the document before the block (0xffffffff for none).
inline void gaps_to_docs(std::uint32_t* v, std::size_t n, std::uint32_t prev) {
  for (std::size_t i = 0; i < n; ++i) v[i] = prev = prev + v[i] + 1;
}

inline unsigned doc_bits(std::uint16_t packed_bits) { return packed_bits & 0xffu; }
inline unsigned tf_bits(std::uint16_t packed_bits) { return packed_bits >> 8; }

// BM25 term-frequency component and impact of a posting: exactly the expressions commit()
// used to store per posting (same operations in the same order, in double, rounded once to
// float), so that impacts computed at decode time have the same bits.
template <BM25Method M>
inline double bm25_tfc(double k1, double delta, double tf, double norm) {
  if constexpr (M == BM25Method::Lucene || M == BM25Method::Robertson) {
    return tf / (k1 * norm + tf);
  } else if constexpr (M == BM25Method::Atire) {
    return tf * (k1 + 1.0) / (tf + k1 * norm);
  } else if constexpr (M == BM25Method::BM25L) {
    const double c = tf / norm;
    return (k1 + 1.0) * (c + delta) / (k1 + c + delta);
  } else {
    return (k1 + 1.0) * tf / (k1 * norm + tf) + delta;
  }
}

inline float bm25_from_tfc(double idf, double base, double tfc) {
  return static_cast<float>(std::max(0.0, idf * tfc - base));
}

// Length normalisation of a document of dl tokens (b is the float parameter, as stored).
inline double length_norm(float b, std::uint32_t dl, double avgdl) {
  return avgdl > 0 ? 1.0 - b + b * dl / avgdl : 1.0;
}

// What BM25 scoring needs beside the postings: the document lengths and, for lengths under
// n_table and term frequencies up to kTableTf, the term-frequency component, computed once per
// commit (tfc[(tf - 1) * n_table + length]). Without the impact cache, each document's length
// is also kept as a one- or two-byte code (code8 or code16, the other null): the length itself
// when it is under code_lim (<= n_table, and under the code's largest value), else an escape
// that sends the posting to the exact length in doc_len. Search reads the codes: at 1M
// documents one byte each fits the core's cache where four bytes did not.
constexpr std::uint32_t kTableTf = 16;

struct Bm25View {
  const std::uint32_t* doc_len;
  const double* tfc;
  std::uint32_t n_table;
  double k1, delta, avgdl;
  float b;
  const std::uint8_t* code8 = nullptr;
  const std::uint16_t* code16 = nullptr;
  std::uint32_t code_lim = 0;
};

// Impact of a posting of document d with term frequency tf_minus1 + 1.
template <BM25Method M>
inline float bm25_impact(const Bm25View& v, double idf, double base, std::uint32_t tf_minus1,
                         std::uint32_t d) {
  const std::uint32_t dl = v.doc_len[d];
  if (dl < v.n_table && tf_minus1 < kTableTf)
    return bm25_from_tfc(idf, base, v.tfc[tf_minus1 * v.n_table + dl]);
  return bm25_from_tfc(
      idf, base, bm25_tfc<M>(v.k1, v.delta, tf_minus1 + 1.0, length_norm(v.b, dl, v.avgdl)));
}

// The same impact from document d's length code c (see Bm25View): the same table entry or
// the same fallback, so the same bits.
template <BM25Method M>
inline float bm25_impact_of_code(const Bm25View& v, std::uint32_t c, double idf, double base,
                                 std::uint32_t tf_minus1, std::uint32_t d) {
  if (c < v.code_lim && tf_minus1 < kTableTf)
    return bm25_from_tfc(idf, base, v.tfc[tf_minus1 * v.n_table + c]);
  return bm25_impact<M>(v, idf, base, tf_minus1, d);
}

// The same through the length codes C (std::uint8_t or std::uint16_t).
template <BM25Method M, class C>
inline float bm25_impact_coded(const Bm25View& v, const C* code, double idf, double base,
                               std::uint32_t tf_minus1, std::uint32_t d) {
  return bm25_impact_of_code<M>(v, code[d], idf, base, tf_minus1, d);
}

// Impacts of m <= 128 postings (one block: documents docs, tfs - 1 tfm1) into out: the codes
// are gathered first, in a loop of independent loads whose cache misses overlap, then scored.
template <BM25Method M, class C>
inline void bm25_impacts_coded(const Bm25View& v, const C* code, double idf, double base,
                               const std::uint32_t* docs, const std::uint32_t* tfm1,
                               std::size_t m, float* out) {
  std::uint32_t c[128];
  for (std::size_t i = 0; i < m; ++i) c[i] = code[docs[i]];
  for (std::size_t i = 0; i < m; ++i)
    out[i] = bm25_impact_of_code<M>(v, c[i], idf, base, tfm1[i], docs[i]);
}

template <BM25Method M>
using MethodTag = std::integral_constant<BM25Method, M>;

// Calls f(MethodTag<M>{}) with the method as a compile-time constant (decltype(tag)::value).
template <class F>
decltype(auto) with_method(BM25Method m, F&& f) {
  switch (m) {
    case BM25Method::Lucene: return f(MethodTag<BM25Method::Lucene>{});
    case BM25Method::Robertson: return f(MethodTag<BM25Method::Robertson>{});
    case BM25Method::Atire: return f(MethodTag<BM25Method::Atire>{});
    case BM25Method::BM25L: return f(MethodTag<BM25Method::BM25L>{});
    default: return f(MethodTag<BM25Method::BM25Plus>{});
  }
}

}  // namespace fastrag::codec
