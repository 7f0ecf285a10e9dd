// Approximate learned-sparse index (see fastrag/sparse_approx.hpp): build, search, files.
#include "fastrag/sparse_approx.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "fastrag/error.hpp"
#include "fastrag/io.hpp"
#include "fastrag/parallel.hpp"
#include "fastrag/topk.hpp"
#include "cpu_features.hpp"
#include "sparse_approx_internal.hpp"

namespace fastrag {
namespace {

// Version 2: blocks made per list, each with its own summary (version 1: blocks were runs of
// global document groups sharing the group's summary; no longer read).
constexpr std::uint32_t kVersion = 2;
constexpr std::uint32_t kNoGroup = ~std::uint32_t{0};
constexpr std::size_t kSummaryHeads = 24;
constexpr std::uint64_t kMaxTerms = std::uint64_t{1} << 30;
enum Section : std::uint32_t {
  kMeta = 1, kDocOffsets, kFwdTerms, kFwdLevels, kDocScales, kFwdWeights, kTermBlocks,
  kBlockFirst, kListDocs, kSumOffsets, kSumTerms, kSumLevels, kBlockScales, kExtra = 99
};

struct Entry {
  std::uint32_t term;
  float weight;
};

// Reads the bits of a float as a uint64 meta word and back (the file stores only integers).
std::uint64_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(std::uint64_t v) {
  auto u = static_cast<std::uint32_t>(v);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A level whose weight (level x scale) is >= w: the smallest, or one more when the product
// rounds under w; at most 255 (w <= 255 x scale).
inline std::uint8_t level_up(float w, float scale) {
  if (scale <= 0) return 0;
  float l = std::ceil(w * (1.0f / scale));
  if (l * scale < w) l += 1.0f;
  return static_cast<std::uint8_t>(std::min(255.0f, l));
}


// Per term the largest weight of the documents docs[0..n) into m (zero elsewhere), the terms
// set listed in tt.
template <class TermT, class WeightT>
void block_maxima(const TermT* terms, const WeightT* w, const float* scales,
                  const std::uint64_t* off, const std::uint32_t* docs, std::size_t n, float* m,
                  std::vector<std::uint32_t>& tt) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t d = docs[i];
    const float scale = scales ? scales[d] : 1.0f;
    for (auto e = off[d]; e < off[d + 1]; ++e) {
      const std::uint32_t term = terms[e];
      const float v = static_cast<float>(w[e]) * scale;
      if (v <= 0.0f) continue;
      if (m[term] == 0.0f) tt.push_back(term);
      m[term] = std::max(m[term], v);
    }
  }
}

// The gather kernels: the best the CPU has, or those FASTRAG_KERNELS names.
const ApproxKernels* pick_kernels() {
  return pick_isa(approx_kernels_generic(), approx_kernels_avx2(), approx_kernels_avx512());
}

// Prefetches the cache lines of [p, p + bytes).
inline void prefetch_range(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
}

}  // namespace

struct ApproxSparseIndex::Scratch {
  std::vector<float> query;  // dense query weights over the vocabulary
  std::vector<std::uint32_t> qterms;
  std::vector<std::uint64_t> seen;  // documents scored for this query
  std::vector<std::uint32_t> seen_docs;
  std::vector<std::pair<float, std::uint32_t>> blocks;  // (summary bound, block)
  std::vector<std::uint32_t> batch;                     // a block's documents to score
  const ApproxKernels* kernels = nullptr;
  TopK top;
};

namespace {
// sum of q[terms[i]] x w[i]: a document's or a summary's dot product with the dense query.
template <class TermT, class WeightT>
inline float gather_dot(const float* q, const TermT* terms, const WeightT* w, std::size_t n) {
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += q[terms[i]] * static_cast<float>(w[i]);
    a1 += q[terms[i + 1]] * static_cast<float>(w[i + 1]);
    a2 += q[terms[i + 2]] * static_cast<float>(w[i + 2]);
    a3 += q[terms[i + 3]] * static_cast<float>(w[i + 3]);
  }
  for (; i < n; ++i) a0 += q[terms[i]] * static_cast<float>(w[i]);
  return (a0 + a1) + (a2 + a3);
}
}  // namespace

std::unique_ptr<ApproxSparseIndex> ApproxSparseIndex::build(const std::int64_t* indptr,
                                                            std::size_t n_docs,
                                                            const std::uint32_t* terms,
                                                            const float* weights,
                                                            const ApproxBuildParams& p) {
  if (!(p.summary_energy > 0.0f && p.summary_energy <= 1.0f))
    throw std::invalid_argument("summary_energy must be in (0, 1]");
  if (p.doc_cut < 1) throw std::invalid_argument("doc_cut must be >= 1");
  if (p.cluster_size < 1) throw std::invalid_argument("cluster_size must be >= 1");
  if (n_docs >= (std::size_t{1} << 32) - 1)
    throw std::invalid_argument("too many documents for one approximate index (2**32 - 1)");
  if (indptr[0] != 0) throw std::invalid_argument("indptr[0] must be 0");
  std::uint64_t n_terms = 0;
  for (std::size_t d = 0; d < n_docs; ++d) {
    if (indptr[d + 1] < indptr[d]) throw std::invalid_argument("indptr must not decrease");
    for (auto j = indptr[d]; j < indptr[d + 1]; ++j) {
      if (terms[j] >= kMaxTerms)
        throw std::invalid_argument("term id " + std::to_string(terms[j]) +
                                    " is past the largest allowed (2**30 - 1)");
      if (!std::isfinite(weights[j]) || weights[j] < 0)
        throw std::invalid_argument("document " + std::to_string(d) +
                                    " has a weight that is negative, NaN or infinite");
      n_terms = std::max<std::uint64_t>(n_terms, terms[j] + 1);
    }
  }
  std::unique_ptr<ApproxSparseIndex> ix(new ApproxSparseIndex);
  ix->params_ = p;
  ix->n_docs_ = n_docs;
  ix->n_terms_ = n_terms;
  ix->wide_ = n_terms > 65536;
  const std::size_t threads = resolve_threads(p.threads, n_docs);

  // 1. Forward vectors: terms ascending, a repeated term keeping its largest weight, no zeros.
  const auto nnz = static_cast<std::size_t>(indptr[n_docs]);
  std::vector<Entry> rows(nnz);
  std::vector<std::uint64_t> lengths(n_docs + 1, 0);
  parallel_for(n_docs, threads, [&](std::size_t d, std::size_t) {
    Entry* r = rows.data() + indptr[d];
    std::size_t n = 0;
    for (auto j = indptr[d]; j < indptr[d + 1]; ++j)
      if (weights[j] > 0) r[n++] = {terms[j], weights[j]};
    std::sort(r, r + n, [](const Entry& a, const Entry& b) {
      return a.term < b.term || (a.term == b.term && a.weight > b.weight);
    });
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (m == 0 || r[m - 1].term != r[i].term) r[m++] = r[i];
    lengths[d + 1] = m;
  });
  // 2. Each document's heaviest `doc_cut` terms (for clustering).
  const std::size_t cut = p.doc_cut;
  // Light summaries (summary_energy < 1) are taken over each document's kSummaryHeads
  // heaviest terms: the others are too light to reach a summary's heaviest share, and the
  // build reads a quarter of the entries.
  const std::size_t hw = p.summary_energy < 1.0f ? std::max(cut, kSummaryHeads) : cut;
  std::vector<Entry> heads(n_docs * hw, Entry{0, 0.0f});
  parallel_for(n_docs, threads, [&](std::size_t d, std::size_t) {
    const std::size_t n = std::min<std::size_t>(hw, lengths[d + 1]);
    Entry* h = heads.data() + d * hw;
    const Entry* r = rows.data() + indptr[d];
    std::partial_sort_copy(r, r + lengths[d + 1], h, h + n,
                           [](const Entry& x, const Entry& y) { return x.weight > y.weight; });
  });
  auto& off = ix->doc_offsets_;
  off.assign(n_docs + 1, 0);
  for (std::size_t d = 0; d < n_docs; ++d) off[d + 1] = off[d] + lengths[d + 1];
  const std::size_t entries = off[n_docs];
  if (ix->wide_)
    ix->fwd_terms32_.resize(entries);
  else
    ix->fwd_terms16_.resize(entries);
  if (p.quantize) {
    ix->fwd_levels_.resize(entries);
    ix->doc_scales_.resize(n_docs);
  } else {
    ix->fwd_weights_.resize(entries);
  }
  parallel_for(n_docs, threads, [&](std::size_t d, std::size_t) {
    const Entry* r = rows.data() + indptr[d];
    const std::size_t n = lengths[d + 1], o = off[d];
    float top = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (ix->wide_)
        ix->fwd_terms32_[o + i] = r[i].term;
      else
        ix->fwd_terms16_[o + i] = static_cast<std::uint16_t>(r[i].term);
      top = std::max(top, r[i].weight);
    }
    if (p.quantize) {
      const float scale = top / 255.0f;
      ix->doc_scales_[d] = scale;
      for (std::size_t i = 0; i < n; ++i)
        ix->fwd_levels_[o + i] = static_cast<std::uint8_t>(
            std::min(255.0f, std::nearbyint(r[i].weight / scale)));
    } else {
      for (std::size_t i = 0; i < n; ++i) ix->fwd_weights_[o + i] = r[i].weight;
    }
  });
  rows = std::vector<Entry>();
  auto term_of = [&](std::size_t e) -> std::uint32_t {
    return ix->wide_ ? ix->fwd_terms32_[e] : ix->fwd_terms16_[e];
  };
  auto weight_of = [&](std::size_t d, std::size_t e) -> float {
    return p.quantize ? ix->fwd_levels_[e] * ix->doc_scales_[d] : ix->fwd_weights_[e];
  };

  // 3. Posting lists (doc, weight) by term, each pruned to its list_size heaviest entries and
  // ordered by weight (heaviest first).
  std::vector<std::uint64_t> list_off(n_terms + 1, 0);
  for (std::size_t e = 0; e < entries; ++e) ++list_off[term_of(e) + 1];
  for (std::size_t t = 0; t < n_terms; ++t) list_off[t + 1] += list_off[t];
  std::vector<Entry> postings(entries);  // Entry.term holds the document here
  {
    std::vector<std::uint64_t> fill(list_off.begin(), list_off.end() - 1);
    for (std::size_t d = 0; d < n_docs; ++d)
      for (auto e = off[d]; e < off[d + 1]; ++e)
        postings[fill[term_of(e)]++] = {static_cast<std::uint32_t>(d), weight_of(d, e)};
  }
  auto heavier = [](const Entry& x, const Entry& y) {
    return x.weight > y.weight || (x.weight == y.weight && x.term < y.term);
  };
  // As in Seismic, list_size is an average: the lists keep the collection's heaviest
  // list_size x n_terms entries (one weight threshold for all), then at most 1.5 x list_size
  // each (the heaviest).
  std::vector<std::uint64_t> kept(n_terms + 1, 0);
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    Entry* b = postings.data() + list_off[t];
    std::sort(b, b + (list_off[t + 1] - list_off[t]), heavier);
    kept[t + 1] = list_off[t + 1] - list_off[t];
  });
  if (p.list_size) {
    const std::uint64_t budget = std::uint64_t{p.list_size} * n_terms;
    auto heavy = [&](std::size_t t, float theta) {  // entries of list t weighing >= theta
      const Entry* b = postings.data() + list_off[t];
      return static_cast<std::uint64_t>(
          std::partition_point(b, b + kept[t + 1],
                               [&](const Entry& e) { return e.weight >= theta; }) - b);
    };
    auto at_least = [&](float theta) {
      std::uint64_t total = 0;
      for (std::size_t t = 0; t < n_terms; ++t) total += heavy(t, theta);
      return total;
    };
    float theta = 0.0f;
    if (at_least(0.0f) > budget) {
      float lo = 0.0f, hi = 0.0f;
      for (std::size_t t = 0; t < n_terms; ++t)
        if (kept[t + 1]) hi = std::max(hi, postings[list_off[t]].weight);
      for (int it = 0; it < 64; ++it) {
        const float mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi) break;
        (at_least(mid) > budget ? lo : hi) = mid;
      }
      theta = hi;
    }
    const std::uint64_t cap = p.list_size + p.list_size / 2;
    for (std::size_t t = 0; t < n_terms; ++t) kept[t + 1] = std::min(heavy(t, theta), cap);
  }
  for (std::size_t t = 0; t < n_terms; ++t) kept[t + 1] += kept[t];
  if (kept[n_terms] >= (std::uint64_t{1} << 32))
    throw std::invalid_argument("the lists would hold 2**32 postings or more; pass a smaller "
                                "list_size");

  // 4. Blocks. A list is cut into chunks of at most kChunk entries (in weight order); in a
  // chunk, about one document in cluster_size is drawn as a seed and every other document
  // joins the seed it shares the most weight with over their heaviest terms other than the
  // list's own (documents sharing none with any seed make blocks of their own, in weight
  // order). A block's summary:
  // its documents' largest weight of each term, the heaviest terms up to summary_energy of
  // their sum (whole 8-bit levels: a level is kept or dropped whole), rounded up to 8 bits.
  struct ListOut {
    std::vector<std::uint32_t> sizes;  // documents per block
    std::vector<float> scales;
    std::vector<std::uint32_t> lengths;  // summary entries per block
    std::vector<std::uint32_t> terms;
    std::vector<std::uint8_t> levels;
  };
  constexpr std::size_t kChunk = 1024;
  struct Work {
    std::vector<float> maxw;                  // by term
    std::vector<std::uint32_t> seed_begin;    // by term: the seeds' head entries of a term
    std::vector<std::uint32_t> seed_end;
    std::vector<std::uint32_t> touched;
    struct SeedHead {  // a head entry of a seed document
      std::uint32_t term, seed;
      float weight;
      bool operator<(const SeedHead& o) const {
        return term < o.term || (term == o.term && seed < o.seed);
      }
    };
    std::vector<SeedHead> seed_heads;
    std::vector<float> acc;
    std::vector<std::uint32_t> order, assign, bucket;
    std::vector<std::uint32_t> docs;
    std::vector<std::pair<std::uint32_t, std::uint8_t>> keep;
    std::vector<std::uint8_t> levels;
  };
  std::vector<Work> work(threads);
  std::vector<ListOut> lists(n_terms);
  const std::size_t cs = p.cluster_size;
  auto summarize = [&](Work& w, const std::uint32_t* docs, std::size_t n, ListOut& out) {
    auto& m = w.maxw;
    auto& tt = w.touched;
    tt.clear();
    if (hw > cut) {
      for (std::size_t i = 0; i < n; ++i) {
        const Entry* h = heads.data() + std::size_t{docs[i]} * hw;
        for (std::size_t j = 0; j < hw && h[j].weight > 0; ++j) {
          if (m[h[j].term] == 0.0f) tt.push_back(h[j].term);
          m[h[j].term] = std::max(m[h[j].term], h[j].weight);
        }
      }
    } else if (ix->wide_ && p.quantize)
      block_maxima(ix->fwd_terms32_.data(), ix->fwd_levels_.data(), ix->doc_scales_.data(),
                   off.data(), docs, n, m.data(), tt);
    else if (ix->wide_)
      block_maxima(ix->fwd_terms32_.data(), ix->fwd_weights_.data(), nullptr, off.data(),
                   docs, n, m.data(), tt);
    else if (p.quantize)
      block_maxima(ix->fwd_terms16_.data(), ix->fwd_levels_.data(), ix->doc_scales_.data(),
                   off.data(), docs, n, m.data(), tt);
    else
      block_maxima(ix->fwd_terms16_.data(), ix->fwd_weights_.data(), nullptr, off.data(),
                   docs, n, m.data(), tt);
    float top = 0;
    for (auto term : tt) top = std::max(top, m[term]);
    // one ulp up: the heaviest term's level (255) then weighs at least its weight
    const float scale = std::nextafter(top / 255.0f, std::numeric_limits<float>::infinity());
    auto& lv = w.levels;
    lv.resize(tt.size());
    for (std::size_t i = 0; i < tt.size(); ++i) lv[i] = level_up(m[tt[i]], scale);
    std::uint8_t floor_level = 1;  // the smallest level kept
    if (p.summary_energy < 1.0f && !tt.empty()) {
      double mass[256] = {0};
      double total = 0;
      for (std::size_t i = 0; i < tt.size(); ++i) {
        mass[lv[i]] += m[tt[i]];
        total += m[tt[i]];
      }
      double acc = 0;
      int l = 255;
      for (; l > 1; --l) {
        acc += mass[l];
        if (acc >= p.summary_energy * total) break;
      }
      floor_level = static_cast<std::uint8_t>(l);
    }
    auto& keep = w.keep;
    keep.clear();
    for (std::size_t i = 0; i < tt.size(); ++i) {
      m[tt[i]] = 0.0f;
      if (lv[i] >= floor_level) keep.push_back({tt[i], lv[i]});
    }
    std::sort(keep.begin(), keep.end());
    for (const auto& [term, l] : keep) {
      out.terms.push_back(term);
      out.levels.push_back(l);
    }
    const auto len = static_cast<std::uint32_t>(keep.size());
    out.sizes.push_back(static_cast<std::uint32_t>(n));
    out.scales.push_back(scale);
    out.lengths.push_back(len);
  };
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t tid) {
    Work& w = work[tid];
    if (w.maxw.empty()) {
      w.maxw.assign(n_terms, 0.0f);
      w.seed_begin.assign(n_terms, 0);
      w.seed_end.assign(n_terms, 0);
    }
    Entry* list = postings.data() + list_off[t];
    const std::size_t n = kept[t + 1] - kept[t];
    ListOut& out = lists[t];
    std::mt19937_64 rng(p.seed * 0x9E3779B97F4A7C15ull + t);
    for (std::size_t start = 0; start < n; start += kChunk) {
      const std::size_t m = std::min(kChunk, n - start);
      const Entry* chunk = list + start;
      const std::size_t c = std::max<std::size_t>(1, (m + cs / 2) / cs);
      // The chunk's documents are scattered over the forward vectors: their lines are
      // requested up front (the chunk's vectors fit the L2 cache).
      for (std::size_t i = 0; i < m; ++i) {
        __builtin_prefetch(off.data() + chunk[i].term);
        prefetch_range(heads.data() + std::size_t{chunk[i].term} * hw, hw * sizeof(Entry));
      }
      for (std::size_t i = 0; i < m && hw == cut; ++i) {
        const std::uint32_t d = chunk[i].term;
        const std::size_t len = off[d + 1] - off[d];
        if (ix->wide_)
          prefetch_range(ix->fwd_terms32_.data() + off[d], len * 4);
        else
          prefetch_range(ix->fwd_terms16_.data() + off[d], len * 2);
        if (p.quantize)
          prefetch_range(ix->fwd_levels_.data() + off[d], len);
        else
          prefetch_range(ix->fwd_weights_.data() + off[d], len * 4);
      }
      auto& docs = w.docs;
      if (c == 1) {
        docs.clear();
        for (std::size_t i = 0; i < m; ++i) docs.push_back(chunk[i].term);
        std::sort(docs.begin(), docs.end());
        summarize(w, docs.data(), m, out);
        for (std::size_t i = 0; i < m; ++i) list[start + i].term = docs[i];
        continue;
      }
      // Seeds: c distinct positions of the chunk.
      auto& order = w.order;
      order.resize(m);
      std::iota(order.begin(), order.end(), 0u);
      for (std::size_t i = 0; i < c; ++i) {
        std::uniform_int_distribution<std::size_t> pick(i, m - 1);
        std::swap(order[i], order[pick(rng)]);
      }
      auto& assign = w.assign;
      assign.assign(m, kNoGroup);
      auto& sh = w.seed_heads;
      sh.clear();
      for (std::size_t s = 0; s < c; ++s) {
        const std::uint32_t d = chunk[order[s]].term;
        assign[order[s]] = static_cast<std::uint32_t>(s);
        for (std::size_t i = 0; i < cut && heads[d * hw + i].weight > 0; ++i)
          if (heads[d * hw + i].term != t)  // every document of the list has t
            sh.push_back({heads[d * hw + i].term, static_cast<std::uint32_t>(s),
                          heads[d * hw + i].weight});
      }
      std::sort(sh.begin(), sh.end());  // by term, then seed (a seed's head terms differ)
      for (std::size_t i = 0; i < sh.size(); ++i) {
        if (i == 0 || sh[i - 1].term != sh[i].term) w.seed_begin[sh[i].term] = i;
        w.seed_end[sh[i].term] = i + 1;
      }
      auto& acc = w.acc;
      acc.assign(c, 0.0f);
      auto& tt = w.touched;
      for (std::size_t i = 0; i < m; ++i) {
        if (assign[i] != kNoGroup) continue;  // a seed
        const std::uint32_t d = chunk[i].term;
        tt.clear();
        for (std::size_t j = 0; j < cut && heads[d * hw + j].weight > 0; ++j) {
          const Entry& e = heads[d * hw + j];
          for (auto x = w.seed_begin[e.term]; x < w.seed_end[e.term]; ++x) {
            const std::uint32_t s = sh[x].seed;
            if (acc[s] == 0.0f) tt.push_back(s);
            acc[s] += e.weight * sh[x].weight;
          }
        }
        std::uint32_t best = kNoGroup;
        float best_score = 0.0f;
        for (auto s : tt) {
          if (acc[s] > best_score || (acc[s] == best_score && s < best))
            best_score = acc[s], best = s;
          acc[s] = 0.0f;
        }
        assign[i] = best;
      }
      for (const auto& h : sh) w.seed_begin[h.term] = w.seed_end[h.term] = 0;
      tt.clear();
      // Blocks: the seeds' (in seed order), then the unassigned in weight order.
      auto& bucket = w.bucket;
      bucket.assign(c + 3, 0);
      for (std::size_t i = 0; i < m; ++i)
        ++bucket[(assign[i] == kNoGroup ? c : assign[i]) + 2];
      for (std::size_t s = 0; s <= c; ++s) bucket[s + 2] += bucket[s + 1];
      docs.resize(m);
      for (std::size_t i = 0; i < m; ++i)
        docs[bucket[(assign[i] == kNoGroup ? c : assign[i]) + 1]++] = chunk[i].term;
      // bucket[s + 1] is now the end of seed s's run (bucket[s] its start).
      for (std::size_t s = 0; s < c; ++s) {
        std::uint32_t* b = docs.data() + bucket[s];
        const std::size_t len = bucket[s + 1] - bucket[s];
        std::sort(b, b + len);
        summarize(w, b, len, out);
      }
      for (std::size_t a = bucket[c]; a < m; a += cs) {
        std::uint32_t* b = docs.data() + a;
        const std::size_t len = std::min(cs, m - a);
        std::sort(b, b + len);
        summarize(w, b, len, out);
      }
      // The list's documents in block order, over the chunk.
      for (std::size_t i = 0; i < m; ++i) list[start + i].term = docs[i];
    }
  });
  work = {};
  heads = std::vector<Entry>();
  // 5. Concatenated: blocks, their documents and summaries.
  std::uint64_t n_blocks = 0, n_summary = 0;
  ix->term_blocks_.assign(n_terms + 1, 0);
  for (std::size_t t = 0; t < n_terms; ++t) {
    n_blocks += lists[t].sizes.size();
    n_summary += lists[t].terms.size();
    ix->term_blocks_[t + 1] = static_cast<std::uint32_t>(n_blocks);
    if (n_blocks >= (std::uint64_t{1} << 32))
      throw std::invalid_argument("too many blocks (2**32); pass a larger cluster_size");
  }
  ix->block_first_.assign(n_blocks + 1, 0);
  ix->block_scales_.resize(n_blocks);
  ix->sum_offsets_.assign(n_blocks + 1, 0);
  ix->list_docs_.resize(kept[n_terms]);
  if (ix->wide_)
    ix->sum_terms32_.resize(n_summary);
  else
    ix->sum_terms16_.resize(n_summary);
  ix->sum_levels_.resize(n_summary);
  {
    std::size_t b = 0, e = 0;
    std::uint32_t pos = 0;
    for (std::size_t t = 0; t < n_terms; ++t) {
      const ListOut& l = lists[t];
      for (std::size_t i = 0; i < l.sizes.size(); ++i, ++b) {
        pos += l.sizes[i];
        ix->block_first_[b + 1] = pos;
        ix->block_scales_[b] = l.scales[i];
        ix->sum_offsets_[b + 1] = ix->sum_offsets_[b] + l.lengths[i];
      }
      for (std::size_t i = 0; i < l.terms.size(); ++i, ++e) {
        if (ix->wide_)
          ix->sum_terms32_[e] = l.terms[i];
        else
          ix->sum_terms16_[e] = static_cast<std::uint16_t>(l.terms[i]);
        ix->sum_levels_[e] = l.levels[i];
      }
      const Entry* src = postings.data() + list_off[t];
      for (std::size_t i = 0; i < kept[t + 1] - kept[t]; ++i)
        ix->list_docs_[kept[t] + i] = src[i].term;
      lists[t] = ListOut();
    }
  }
  return ix;
}

// ------------------------------------------------------------------------------ search
template <class TermT, class WeightT>
void ApproxSparseIndex::search_one(const std::uint32_t* terms, const float* weights,
                                   std::size_t n, const ApproxSearchParams& p, Scratch& s,
                                   std::int64_t* ids, float* scores) const {
  const TermT* fwd_terms;
  if constexpr (sizeof(TermT) == 2)
    fwd_terms = fwd_terms16_.data();
  else
    fwd_terms = fwd_terms32_.data();
  const WeightT* fwd_w;
  if constexpr (sizeof(WeightT) == 1)
    fwd_w = fwd_levels_.data();
  else
    fwd_w = fwd_weights_.data();
  const TermT* sum_terms;
  if constexpr (sizeof(TermT) == 2)
    sum_terms = sum_terms16_.data();
  else
    sum_terms = sum_terms32_.data();
  // q[terms[i]] x w[i] summed: the kernel for 8-bit weights, a scalar loop for float32.
  auto gather = [k = s.kernels](const float* qv, const TermT* t, const auto* w, std::size_t m) {
    if constexpr (!std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(w)>>,
                                  std::uint8_t>)
      return gather_dot(qv, t, w, m);
    else if constexpr (sizeof(TermT) == 2)
      return k->dot16(qv, t, w, m);
    else
      return k->dot32(qv, t, w, m);
  };
  float* q = s.query.data();
  s.qterms.clear();
  for (std::size_t i = 0; i < n; ++i) {
    if (terms[i] >= n_terms_ || weights[i] <= 0) continue;  // no document holds the term
    if (q[terms[i]] == 0.0f) s.qterms.push_back(terms[i]);
    q[terms[i]] += weights[i];
  }
  std::sort(s.qterms.begin(), s.qterms.end(), [&](std::uint32_t a, std::uint32_t b) {
    return q[a] > q[b] || (q[a] == q[b] && a < b);
  });
  const std::size_t visit =
      p.query_cut ? std::min(p.query_cut, s.qterms.size()) : s.qterms.size();
  // Every block of the visited lists with its summary's dot product with the whole query.
  s.blocks.clear();
  for (std::size_t qi = 0; qi < visit; ++qi) {
    const std::uint32_t t = s.qterms[qi];
    for (auto b = term_blocks_[t]; b < term_blocks_[t + 1]; ++b) {
      const auto e = sum_offsets_[b];
      const float dot = gather(q, sum_terms + e, sum_levels_.data() + e,
                               sum_offsets_[b + 1] - e);
      s.blocks.push_back({dot * block_scales_[b], b});
    }
  }
  // Best summary first, across the visited lists (a heap: most queries stop early); stop at
  // the first block whose summary dot product x heap_factor is under the k-th score (the
  // rest are no better). heap_factor is Seismic's: 1 skips only what the summaries rule out,
  // < 1 more, infinity nothing.
  auto worse = [](const std::pair<float, std::uint32_t>& x,
                  const std::pair<float, std::uint32_t>& y) {
    return x.first < y.first || (x.first == y.first && x.second > y.second);
  };
  std::make_heap(s.blocks.begin(), s.blocks.end(), worse);
  s.top.reset(p.k);
  for (auto end = s.blocks.end(); end != s.blocks.begin(); --end) {
    std::pop_heap(s.blocks.begin(), end, worse);
    const auto [bound, b] = *(end - 1);
    if (s.top.full() && bound * p.heap_factor < s.top.threshold()) break;
    // The next candidate block's documents and offsets requested now (they are scattered).
    if (end - 1 != s.blocks.begin()) {
      const std::uint32_t nb = s.blocks.front().second;
      for (auto i = block_first_[nb]; i < block_first_[nb + 1]; i += 16)
        __builtin_prefetch(list_docs_.data() + i);
    }
    // The block's unseen (and allowed) documents, their vectors prefetched, then scored.
    s.batch.clear();
    for (auto i = block_first_[b]; i < block_first_[b + 1]; ++i) {
      const std::uint32_t d = list_docs_[i];
      std::uint64_t& word = s.seen[d >> 6];
      const std::uint64_t bit = std::uint64_t{1} << (d & 63);
      if (word & bit) continue;
      word |= bit;
      s.seen_docs.push_back(d);
      if (p.allow && ((d >> 6) >= p.allow_words || !((p.allow[d >> 6] >> (d & 63)) & 1)))
        continue;
      s.batch.push_back(d);
      __builtin_prefetch(doc_offsets_.data() + d);
    }
    for (auto d : s.batch) {
      const auto e = doc_offsets_[d], len = doc_offsets_[d + 1] - e;
      prefetch_range(fwd_terms + e, len * sizeof(TermT));
      prefetch_range(fwd_w + e, len * sizeof(WeightT));
      if constexpr (sizeof(WeightT) == 1) __builtin_prefetch(doc_scales_.data() + d);
    }
    for (auto d : s.batch) {
      const auto e = doc_offsets_[d];
      float dot = gather(q, fwd_terms + e, fwd_w + e, doc_offsets_[d + 1] - e);
      if constexpr (sizeof(WeightT) == 1) dot *= doc_scales_[d];
      s.top.push(dot, d);
    }
  }
  s.top.drain(ids, scores);
  for (auto t : s.qterms) q[t] = 0.0f;
  for (auto d : s.seen_docs) s.seen[d >> 6] = 0;
  s.seen_docs.clear();
}

void ApproxSparseIndex::search(const std::int64_t* indptr, std::size_t n_queries,
                               const std::uint32_t* terms, const float* weights,
                               const ApproxSearchParams& p, std::int64_t* ids,
                               float* scores) const {
  if (!(p.heap_factor > 0.0f))
    throw std::invalid_argument("heap_factor must be > 0 (infinity reads every block)");
  if (p.k == 0) return;  // nothing to find (the heap would never fill: every block read)
  for (std::size_t i = 0; i < n_queries; ++i) {
    if (indptr[i + 1] < indptr[i]) throw std::invalid_argument("indptr must not decrease");
    for (auto j = indptr[i]; j < indptr[i + 1]; ++j)
      if (!std::isfinite(weights[j]) || weights[j] < 0)
        throw std::invalid_argument("query " + std::to_string(i) +
                                    " has a weight that is negative, NaN or infinite");
  }
  const std::size_t threads = resolve_threads(p.threads, n_queries);
  std::vector<Scratch> scratch(threads);
  parallel_for(n_queries, threads, [&](std::size_t i, std::size_t tid) {
    Scratch& s = scratch[tid];
    if (s.query.empty()) {
      s.query.assign(n_terms_ + 1, 0.0f);
      s.kernels = pick_kernels();
      s.seen.assign(n_docs_ / 64 + 1, 0);
    }
    const auto a = indptr[i];
    const auto n = static_cast<std::size_t>(indptr[i + 1] - a);
    auto* out_ids = ids + i * p.k;
    auto* out_scores = scores + i * p.k;
    if (wide_ && params_.quantize)
      search_one<std::uint32_t, std::uint8_t>(terms + a, weights + a, n, p, s, out_ids, out_scores);
    else if (wide_)
      search_one<std::uint32_t, float>(terms + a, weights + a, n, p, s, out_ids, out_scores);
    else if (params_.quantize)
      search_one<std::uint16_t, std::uint8_t>(terms + a, weights + a, n, p, s, out_ids, out_scores);
    else
      search_one<std::uint16_t, float>(terms + a, weights + a, n, p, s, out_ids, out_scores);
  });
}

// ------------------------------------------------------------------------------ stats, files
ApproxStats ApproxSparseIndex::stats() const {
  ApproxStats st;
  st.n_docs = n_docs_;
  st.n_terms = n_terms_;
  st.n_entries = doc_offsets_.empty() ? 0 : doc_offsets_.back();
  st.n_postings = list_docs_.size();
  st.n_blocks = block_scales_.size();
  st.n_summary_entries = sum_levels_.size();
  auto bytes = [](const auto& v) { return v.size() * sizeof(v[0]); };
  st.memory_bytes = bytes(doc_offsets_) + bytes(fwd_terms16_) + bytes(fwd_terms32_) +
                    bytes(fwd_levels_) + bytes(doc_scales_) + bytes(fwd_weights_) +
                    bytes(term_blocks_) + bytes(block_first_) + bytes(list_docs_) +
                    bytes(sum_offsets_) + bytes(sum_terms16_) + bytes(sum_terms32_) +
                    bytes(sum_levels_) + bytes(block_scales_);
  return st;
}

void ApproxSparseIndex::save(const std::string& path, const std::string& extra) const {
  const ApproxBuildParams& p = params_;
  const std::vector<std::uint64_t> meta = {
      n_docs_, n_terms_, block_scales_.size(), wide_ ? 1u : 0u, p.quantize ? 1u : 0u,
      p.list_size, float_bits(p.summary_energy), p.doc_cut, p.cluster_size, p.seed};
  auto sec = [](std::uint32_t id, const auto& v) {
    return SectionData{id, static_cast<std::uint32_t>(sizeof(v[0])), v.data(),
                       v.size() * sizeof(v[0])};
  };
  std::vector<SectionData> s = {
      sec(kMeta, meta), sec(kDocOffsets, doc_offsets_), sec(kTermBlocks, term_blocks_),
      sec(kBlockFirst, block_first_), sec(kListDocs, list_docs_),
      sec(kSumOffsets, sum_offsets_), sec(kSumLevels, sum_levels_),
      sec(kBlockScales, block_scales_), {kExtra, 1, extra.data(), extra.size()}};
  s.push_back(wide_ ? sec(kFwdTerms, fwd_terms32_) : sec(kFwdTerms, fwd_terms16_));
  s.push_back(wide_ ? sec(kSumTerms, sum_terms32_) : sec(kSumTerms, sum_terms16_));
  if (p.quantize) {
    s.push_back(sec(kFwdLevels, fwd_levels_));
    s.push_back(sec(kDocScales, doc_scales_));
  } else {
    s.push_back(sec(kFwdWeights, fwd_weights_));
  }
  write_sections(path, FileKind::ApproxSparseIndex, kVersion, s);
}

namespace {
template <class T>
void read_section(const FileView& f, std::uint32_t id, std::vector<T>* out) {
  std::uint64_t n = 0;
  const T* d = static_cast<const T*>(f.section(id, sizeof(T), &n));
  out->assign(d, d + n);
}
}  // namespace

std::unique_ptr<ApproxSparseIndex> ApproxSparseIndex::load(const std::string& path,
                                                           std::string* extra) {
  auto file = FileView::open(path, FileKind::ApproxSparseIndex, kVersion, /*use_mmap=*/true);
  if (file->version() < kVersion)
    throw FormatError(path + " has approximate index format version " +
                      std::to_string(file->version()) +
                      " (blocks of global document groups), which this fastrag no longer "
                      "reads: build the index again from its vectors");
  std::vector<std::uint64_t> meta;
  read_section(*file, kMeta, &meta);
  if (meta.size() != 10) throw FormatError(path + ": unexpected approximate index header");
  std::unique_ptr<ApproxSparseIndex> ix(new ApproxSparseIndex);
  ix->n_docs_ = meta[0];
  ix->n_terms_ = meta[1];
  const std::uint64_t n_blocks = meta[2];
  ix->wide_ = meta[3] != 0;
  ApproxBuildParams& p = ix->params_;
  p.quantize = meta[4] != 0;
  p.list_size = meta[5];
  p.summary_energy = bits_float(meta[6]);
  p.doc_cut = meta[7];
  p.cluster_size = meta[8];
  p.seed = meta[9];
  if (ix->n_terms_ > kMaxTerms || (!ix->wide_ && ix->n_terms_ > 65536) ||
      ix->n_docs_ >= (std::uint64_t{1} << 32) - 1 || n_blocks >= (std::uint64_t{1} << 32))
    throw FormatError(path + ": unexpected approximate index header");
  read_section(*file, kDocOffsets, &ix->doc_offsets_);
  read_section(*file, kTermBlocks, &ix->term_blocks_);
  read_section(*file, kBlockFirst, &ix->block_first_);
  read_section(*file, kListDocs, &ix->list_docs_);
  read_section(*file, kSumOffsets, &ix->sum_offsets_);
  read_section(*file, kSumLevels, &ix->sum_levels_);
  read_section(*file, kBlockScales, &ix->block_scales_);
  if (ix->wide_) {
    read_section(*file, kFwdTerms, &ix->fwd_terms32_);
    read_section(*file, kSumTerms, &ix->sum_terms32_);
  } else {
    read_section(*file, kFwdTerms, &ix->fwd_terms16_);
    read_section(*file, kSumTerms, &ix->sum_terms16_);
  }
  if (p.quantize) {
    read_section(*file, kFwdLevels, &ix->fwd_levels_);
    read_section(*file, kDocScales, &ix->doc_scales_);
  } else {
    read_section(*file, kFwdWeights, &ix->fwd_weights_);
  }
  if (extra) {
    std::uint64_t n = 0;
    const char* e = static_cast<const char*>(file->section(kExtra, 1, &n));
    extra->assign(e, n);
  }
  try {
    if (ix->block_scales_.size() != n_blocks) throw std::runtime_error("blocks have the wrong size");
    ix->check();
  } catch (const std::exception& e) {
    throw FormatError(path + " is not a consistent approximate index (" + e.what() + ")");
  }
  return ix;
}

// Every offset within bounds and non-decreasing, every id in range: a loaded file can then
// be searched without reading past an array.
void ApproxSparseIndex::check() const {
  auto offsets = [](const auto& v, std::size_t count, std::uint64_t end, const char* what) {
    if (v.size() != count + 1 || v[0] != 0 || v.back() != end)
      throw std::runtime_error(std::string(what) + " have the wrong size");
    for (std::size_t i = 0; i < count; ++i)
      if (v[i + 1] < v[i]) throw std::runtime_error(std::string(what) + " decrease");
  };
  const std::size_t entries = wide_ ? fwd_terms32_.size() : fwd_terms16_.size();
  const std::size_t n_blocks = block_scales_.size();
  const std::size_t n_summary = wide_ ? sum_terms32_.size() : sum_terms16_.size();
  offsets(doc_offsets_, n_docs_, entries, "document offsets");
  offsets(term_blocks_, n_terms_, n_blocks, "list offsets");
  offsets(block_first_, n_blocks, list_docs_.size(), "block offsets");
  offsets(sum_offsets_, n_blocks, n_summary, "summary offsets");
  if (sum_levels_.size() != n_summary) throw std::runtime_error("summaries have the wrong size");
  for (const auto* col : {&block_scales_, &doc_scales_, &fwd_weights_})
    for (float x : *col)
      if (!std::isfinite(x) || x < 0)
        throw std::runtime_error("a block scale, document scale or weight is negative or not "
                                 "finite");
  if (params_.quantize ? (fwd_levels_.size() != entries || doc_scales_.size() != n_docs_)
                       : fwd_weights_.size() != entries)
    throw std::runtime_error("document weights have the wrong size");
  auto below = [](const auto& v, std::uint64_t n, const char* what) {
    for (auto x : v)
      if (x >= n) throw std::runtime_error(std::string(what) + " out of range");
  };
  below(list_docs_, n_docs_, "a posting's document is");
  below(fwd_terms16_, n_terms_, "a term id is");
  below(fwd_terms32_, n_terms_, "a term id is");
  below(sum_terms16_, n_terms_, "a summary term id is");
  below(sum_terms32_, n_terms_, "a summary term id is");
}

}  // namespace fastrag
