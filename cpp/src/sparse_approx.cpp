// Approximate learned-sparse index (see fastrag/sparse_approx.hpp): build, search, files.
#include "fastrag/sparse_approx.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include "fastrag/error.hpp"
#include "fastrag/io.hpp"
#include "fastrag/parallel.hpp"
#include "fastrag/topk.hpp"

namespace fastrag {
namespace {

constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kNoGroup = ~std::uint32_t{0};
constexpr std::uint64_t kMaxTerms = std::uint64_t{1} << 30;
enum Section : std::uint32_t {
  kMeta = 1, kDocOffsets, kFwdTerms, kFwdLevels, kDocScales, kFwdWeights, kTermSummary,
  kSumGroups, kSumLevels, kGroupScales, kTermLists, kDocGroup, kListDocs,
  kDenseTerms, kDenseLevels, kExtra = 99
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

std::uint8_t level_up(float w, float scale) {  // the smallest level whose weight is >= w
  if (scale <= 0) return 0;
  return static_cast<std::uint8_t>(std::min(255.0f, std::ceil(w / scale)));
}

struct Block {
  float bound;
  std::uint32_t start, end;  // positions in list_docs_
  std::uint32_t group;
};

}  // namespace

struct ApproxSparseIndex::Scratch {
  std::vector<float> query;         // dense query weights over the vocabulary
  std::vector<std::uint32_t> qterms;
  std::vector<std::uint64_t> seen;  // documents scored for this query
  std::vector<std::uint32_t> seen_docs;
  std::vector<float> bound;            // summary dot product per group
  std::vector<std::uint32_t> groups;   // candidate groups (in a visited list)
  std::vector<std::uint8_t> candidate;
  std::vector<std::pair<float, std::uint32_t>> dense;  // (query weight, dense row)
  std::vector<Block> blocks;
  TopK top;
};

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
  auto term_of = [&](std::size_t e) -> std::uint32_t {
    return ix->wide_ ? ix->fwd_terms32_[e] : ix->fwd_terms16_[e];
  };
  auto weight_of = [&](std::size_t d, std::size_t e) -> float {
    return p.quantize ? ix->fwd_levels_[e] * ix->doc_scales_[d] : ix->fwd_weights_[e];
  };

  // 2. Groups of similar documents: each document joins the random seed document its
  // heaviest `doc_cut` terms score highest with (through an inverted index over the seeds'
  // heaviest terms); documents sharing no such term with any seed join the group of their
  // heaviest term's first such document.
  const std::size_t cut = p.doc_cut;
  std::vector<Entry> heads(n_docs * cut, Entry{0, 0.0f});
  parallel_for(n_docs, threads, [&](std::size_t d, std::size_t) {
    const std::size_t n = std::min<std::size_t>(cut, lengths[d + 1]);
    Entry* h = heads.data() + d * cut;
    const Entry* r = rows.data() + indptr[d];
    std::partial_sort_copy(r, r + lengths[d + 1], h, h + n,
                           [](const Entry& x, const Entry& y) { return x.weight > y.weight; });
  });
  rows = std::vector<Entry>();
  const std::size_t n_seeds =
      std::min(n_docs, std::max<std::size_t>(1, (n_docs + p.cluster_size - 1) / p.cluster_size));
  std::vector<std::uint32_t> seeds(n_docs);
  std::iota(seeds.begin(), seeds.end(), 0u);
  std::mt19937_64 rng(p.seed);
  for (std::size_t i = 0; i < n_seeds; ++i) {
    std::uniform_int_distribution<std::size_t> pick(i, n_docs - 1);
    std::swap(seeds[i], seeds[pick(rng)]);
  }
  seeds.resize(n_seeds);
  std::vector<std::uint64_t> seed_off(n_terms + 1, 0);
  for (auto d : seeds)
    for (std::size_t i = 0; i < cut && heads[d * cut + i].weight > 0; ++i)
      ++seed_off[heads[d * cut + i].term + 1];
  for (std::size_t t = 0; t < n_terms; ++t) seed_off[t + 1] += seed_off[t];
  std::vector<std::pair<std::uint32_t, float>> seed_lists(seed_off[n_terms]);
  {
    std::vector<std::uint64_t> fill(seed_off.begin(), seed_off.end() - 1);
    for (std::size_t s = 0; s < n_seeds; ++s)
      for (std::size_t i = 0; i < cut && heads[seeds[s] * cut + i].weight > 0; ++i) {
        const Entry& e = heads[seeds[s] * cut + i];
        seed_lists[fill[e.term]++] = {static_cast<std::uint32_t>(s), e.weight};
      }
  }
  std::vector<std::uint32_t> group(n_docs);
  std::vector<std::vector<float>> acc(threads);
  std::vector<std::vector<std::uint32_t>> touched(threads);
  parallel_for(n_docs, threads, [&](std::size_t d, std::size_t tid) {
    auto& a = acc[tid];
    auto& tt = touched[tid];
    if (a.empty()) a.assign(n_seeds, 0.0f);
    for (std::size_t i = 0; i < cut && heads[d * cut + i].weight > 0; ++i) {
      const Entry& e = heads[d * cut + i];
      for (auto j = seed_off[e.term]; j < seed_off[e.term + 1]; ++j) {
        auto [sd, w] = seed_lists[j];
        if (a[sd] == 0.0f) tt.push_back(sd);
        a[sd] += e.weight * w;
      }
    }
    std::uint32_t best = kNoGroup;
    float best_score = 0.0f;
    for (auto sd : tt) {
      if (a[sd] > best_score || (a[sd] == best_score && sd < best)) best_score = a[sd], best = sd;
      a[sd] = 0.0f;
    }
    tt.clear();
    group[d] = best;
  });
  {
    // Loners: grouped by their heaviest term (one extra group per such term).
    std::vector<std::uint32_t> by_term(n_terms, kNoGroup);
    std::uint32_t next = static_cast<std::uint32_t>(n_seeds);
    for (std::size_t d = 0; d < n_docs; ++d) {
      if (group[d] != kNoGroup) continue;
      const std::uint32_t t = heads[d * cut].term;
      if (by_term[t] == kNoGroup) by_term[t] = next++;
      group[d] = by_term[t];
    }
    ix->n_groups_ = next;
  }
  heads = std::vector<Entry>();
  seed_lists = {};
  const std::size_t n_groups = ix->n_groups_;

  // 3. Group summaries: per group the largest weight of each term, the heaviest terms up to
  // summary_energy of their sum, quantised up to 8 bits; then transposed to term -> groups.
  std::vector<std::uint64_t> group_off(n_groups + 1, 0);
  for (std::size_t d = 0; d < n_docs; ++d) ++group_off[group[d] + 1];
  for (std::size_t g = 0; g < n_groups; ++g) group_off[g + 1] += group_off[g];
  std::vector<std::uint32_t> members(n_docs);
  {
    std::vector<std::uint64_t> fill(group_off.begin(), group_off.end() - 1);
    for (std::size_t d = 0; d < n_docs; ++d) members[fill[group[d]]++] = static_cast<std::uint32_t>(d);
  }
  std::vector<std::vector<std::pair<std::uint32_t, std::uint8_t>>> summaries(n_groups);
  ix->group_scales_.assign(n_groups, 0.0f);
  std::vector<std::vector<float>> maxima(threads);
  std::vector<std::vector<std::pair<float, std::uint32_t>>> cands(threads);
  parallel_for(n_groups, resolve_threads(p.threads, n_groups), [&](std::size_t g, std::size_t tid) {
    auto& m = maxima[tid];
    if (m.empty()) m.assign(n_terms, 0.0f);
    auto& c = cands[tid];
    c.clear();
    double total = 0;
    for (auto i = group_off[g]; i < group_off[g + 1]; ++i) {
      const std::uint32_t d = members[i];
      for (auto e = off[d]; e < off[d + 1]; ++e) {
        const std::uint32_t term = term_of(e);
        const float w = weight_of(d, e);
        if (m[term] == 0.0f && w > 0.0f) c.push_back({0.0f, term});
        m[term] = std::max(m[term], w);
      }
    }
    for (auto& [v, term] : c) {
      v = m[term];
      m[term] = 0.0f;
      total += v;
    }
    std::size_t keep = c.size();
    if (p.summary_energy < 1.0f) {
      std::sort(c.begin(), c.end(), [](const auto& x, const auto& y) {
        return x.first > y.first || (x.first == y.first && x.second < y.second);
      });
      keep = 0;
      double kept = 0;
      while (keep < c.size() && (keep == 0 || kept < p.summary_energy * total))
        kept += c[keep++].first;
    }
    float top = 0;
    for (std::size_t i = 0; i < keep; ++i) top = std::max(top, c[i].first);
    const float scale = top / 255.0f;
    ix->group_scales_[g] = scale;
    auto& out = summaries[g];
    out.reserve(keep);
    for (std::size_t i = 0; i < keep; ++i) out.push_back({c[i].second, level_up(c[i].first, scale)});
  });
  // Terms in more than a quarter of the groups (a collection's most frequent ones) go to a
  // dense matrix, a row of levels per term: a query reads them for its candidate groups
  // only instead of their (long) summary lists. The others are stored by term.
  {
    std::vector<std::uint64_t> count(n_terms + 1, 0);
    for (const auto& sm : summaries)
      for (const auto& [t, l] : sm) ++count[t + 1];
    constexpr std::uint32_t kNotDense = ~std::uint32_t{0};
    std::vector<std::uint32_t> row(n_terms, kNotDense);
    for (std::size_t t = 0; t < n_terms; ++t)
      if (n_groups >= 8 && count[t + 1] * 4 > n_groups) {
        row[t] = static_cast<std::uint32_t>(ix->dense_terms_.size());
        ix->dense_terms_.push_back(static_cast<std::uint32_t>(t));
        count[t + 1] = 0;
      }
    ix->dense_levels_.assign(ix->dense_terms_.size() * n_groups, 0);
    for (std::size_t t = 0; t < n_terms; ++t) count[t + 1] += count[t];
    if (count[n_terms] >= (std::uint64_t{1} << 32))
      throw std::invalid_argument("too many summary entries (2**32); pass a larger cluster_size");
    ix->term_summary_.assign(count.begin(), count.end());
    ix->sum_groups_.resize(count[n_terms]);
    ix->sum_levels_.resize(count[n_terms]);
    for (std::size_t g = 0; g < n_groups; ++g) {
      for (const auto& [t, l] : summaries[g]) {
        if (row[t] != kNotDense) {
          ix->dense_levels_[std::size_t{row[t]} * n_groups + g] = l;
        } else {
          ix->sum_groups_[count[t]] = static_cast<std::uint32_t>(g);
          ix->sum_levels_[count[t]++] = l;
        }
      }
      summaries[g] = {};
    }
  }
  ix->index_dense_terms();

  // 4. Posting lists (doc, weight) by term, each pruned to its list_size heaviest entries,
  // ordered by group; a block is the run of one group's documents.
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
  std::vector<std::uint64_t> kept(n_terms + 1, 0);
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    Entry* b = postings.data() + list_off[t];
    std::size_t n = list_off[t + 1] - list_off[t];
    if (p.list_size && n > p.list_size) {
      std::nth_element(b, b + p.list_size, b + n, [](const Entry& x, const Entry& y) {
        return x.weight > y.weight || (x.weight == y.weight && x.term < y.term);
      });
      n = p.list_size;
    }
    std::sort(b, b + n, [&](const Entry& x, const Entry& y) {
      return group[x.term] < group[y.term] || (group[x.term] == group[y.term] && x.term < y.term);
    });
    kept[t + 1] = n;
  });
  for (std::size_t t = 0; t < n_terms; ++t) kept[t + 1] += kept[t];
  if (kept[n_terms] >= (std::uint64_t{1} << 32))
    throw std::invalid_argument("the lists would hold 2**32 postings or more; pass a smaller "
                                "list_size");
  ix->term_lists_.assign(kept.begin(), kept.end());
  ix->list_docs_.resize(kept[n_terms]);
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    const Entry* b = postings.data() + list_off[t];
    for (std::size_t i = 0; i < kept[t + 1] - kept[t]; ++i) ix->list_docs_[kept[t] + i] = b[i].term;
  });
  ix->doc_group_ = std::move(group);
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
  float* q = s.query.data();
  float* bound = s.bound.data();
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
  // A block: the run of one group's documents in a visited list (the lists are ordered by
  // group). Its group is marked as a candidate.
  s.blocks.clear();
  for (std::size_t qi = 0; qi < visit; ++qi) {
    const std::uint32_t t = s.qterms[qi];
    const std::uint32_t end = term_lists_[t + 1];
    std::uint32_t last = kNoGroup;
    for (auto i = term_lists_[t]; i < end; ++i) {
      const std::uint32_t g = doc_group_[list_docs_[i]];
      if (g != last) {
        if (last != kNoGroup) s.blocks.back().end = i;
        s.blocks.push_back({0.0f, i, end, g});
        if (!s.candidate[g]) {
          s.candidate[g] = 1;
          s.groups.push_back(g);
        }
      }
      last = g;
    }
  }
  // The summaries' dot products of the candidate groups with the whole query: the sparse
  // part by term, the dense rows (frequent terms) by candidate group.
  s.dense.clear();
  for (auto t : s.qterms) {
    const float w = q[t];
    if (dense_row_[t] != kNoGroup) {
      s.dense.push_back({w, dense_row_[t]});
      continue;
    }
    for (auto e = term_summary_[t]; e < term_summary_[t + 1]; ++e) {
      const std::uint32_t g = sum_groups_[e];
      if (s.candidate[g]) bound[g] += w * static_cast<float>(sum_levels_[e]);
    }
  }
  if (!s.dense.empty()) {
    for (auto g : s.groups) {
      float extra = 0;
      for (const auto& [w, r] : s.dense)
        extra += w * static_cast<float>(dense_levels_[std::size_t{r} * n_groups_ + g]);
      bound[g] += extra;
    }
  }
  for (auto& blk : s.blocks) blk.bound = bound[blk.group] * group_scales_[blk.group];
  // Best summary first, across the visited lists (a heap: most queries stop early); stop at
  // the first block whose summary dot product x heap_factor is under the k-th score (the
  // rest are no better). heap_factor is Seismic's: 1 skips only what the summaries rule out,
  // < 1 more, infinity nothing.
  auto worse = [](const Block& x, const Block& y) {
    return x.bound < y.bound || (x.bound == y.bound && x.start > y.start);
  };
  std::make_heap(s.blocks.begin(), s.blocks.end(), worse);
  s.top.reset(p.k);
  for (auto end = s.blocks.end(); end != s.blocks.begin(); --end) {
    std::pop_heap(s.blocks.begin(), end, worse);
    const Block& blk = *(end - 1);
    if (s.top.full() && blk.bound * p.heap_factor < s.top.threshold()) break;
    for (auto i = blk.start; i < blk.end; ++i) {
      const std::uint32_t d = list_docs_[i];
      std::uint64_t& word = s.seen[d >> 6];
      const std::uint64_t bit = std::uint64_t{1} << (d & 63);
      if (word & bit) continue;
      word |= bit;
      s.seen_docs.push_back(d);
      if (p.allow && ((d >> 6) >= p.allow_words || !((p.allow[d >> 6] >> (d & 63)) & 1)))
        continue;
      float dot = 0;
      for (auto e = doc_offsets_[d]; e < doc_offsets_[d + 1]; ++e)
        dot += q[fwd_terms[e]] * static_cast<float>(fwd_w[e]);
      if constexpr (sizeof(WeightT) == 1) dot *= doc_scales_[d];
      s.top.push(dot, d);
    }
  }
  s.top.drain(ids, scores);
  for (auto t : s.qterms) q[t] = 0.0f;
  for (auto g : s.groups) bound[g] = 0.0f, s.candidate[g] = 0;
  s.groups.clear();
  for (auto d : s.seen_docs) s.seen[d >> 6] = 0;
  s.seen_docs.clear();
}

void ApproxSparseIndex::search(const std::int64_t* indptr, std::size_t n_queries,
                               const std::uint32_t* terms, const float* weights,
                               const ApproxSearchParams& p, std::int64_t* ids,
                               float* scores) const {
  if (!(p.heap_factor > 0.0f))
    throw std::invalid_argument("heap_factor must be > 0 (infinity reads every block)");
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
      s.bound.assign(n_groups_ + 1, 0.0f);
      s.candidate.assign(n_groups_ + 1, 0);
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
  st.n_groups = n_groups_;
  st.n_summary_entries = sum_levels_.size();
  auto bytes = [](const auto& v) { return v.size() * sizeof(v[0]); };
  st.memory_bytes = bytes(doc_offsets_) + bytes(fwd_terms16_) + bytes(fwd_terms32_) +
                    bytes(fwd_levels_) + bytes(doc_scales_) + bytes(fwd_weights_) +
                    bytes(term_summary_) + bytes(sum_groups_) + bytes(sum_levels_) +
                    bytes(group_scales_) + bytes(dense_terms_) + bytes(dense_levels_) +
                    bytes(dense_row_) + bytes(term_lists_) + bytes(doc_group_) +
                    bytes(list_docs_);
  return st;
}

void ApproxSparseIndex::save(const std::string& path, const std::string& extra) const {
  const ApproxBuildParams& p = params_;
  const std::vector<std::uint64_t> meta = {
      n_docs_, n_terms_, n_groups_, wide_ ? 1u : 0u, p.quantize ? 1u : 0u, p.list_size,
      float_bits(p.summary_energy), p.doc_cut, p.cluster_size, p.seed};
  auto sec = [](std::uint32_t id, const auto& v) {
    return SectionData{id, static_cast<std::uint32_t>(sizeof(v[0])), v.data(),
                       v.size() * sizeof(v[0])};
  };
  std::vector<SectionData> s = {
      sec(kMeta, meta), sec(kDocOffsets, doc_offsets_), sec(kTermSummary, term_summary_),
      sec(kSumGroups, sum_groups_), sec(kSumLevels, sum_levels_),
      sec(kGroupScales, group_scales_), sec(kDenseTerms, dense_terms_),
      sec(kDenseLevels, dense_levels_), sec(kTermLists, term_lists_),
      sec(kDocGroup, doc_group_), sec(kListDocs, list_docs_),
      {kExtra, 1, extra.data(), extra.size()}};
  s.push_back(wide_ ? sec(kFwdTerms, fwd_terms32_) : sec(kFwdTerms, fwd_terms16_));
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
  std::vector<std::uint64_t> meta;
  read_section(*file, kMeta, &meta);
  if (meta.size() != 10) throw FormatError(path + ": unexpected approximate index header");
  std::unique_ptr<ApproxSparseIndex> ix(new ApproxSparseIndex);
  ix->n_docs_ = meta[0];
  ix->n_terms_ = meta[1];
  ix->n_groups_ = meta[2];
  ix->wide_ = meta[3] != 0;
  ApproxBuildParams& p = ix->params_;
  p.quantize = meta[4] != 0;
  p.list_size = meta[5];
  p.summary_energy = bits_float(meta[6]);
  p.doc_cut = meta[7];
  p.cluster_size = meta[8];
  p.seed = meta[9];
  if (ix->n_terms_ > kMaxTerms || (!ix->wide_ && ix->n_terms_ > 65536) ||
      ix->n_docs_ >= (std::uint64_t{1} << 32) - 1 || ix->n_groups_ > ix->n_docs_ + kMaxTerms)
    throw FormatError(path + ": unexpected approximate index header");
  read_section(*file, kDocOffsets, &ix->doc_offsets_);
  read_section(*file, kTermSummary, &ix->term_summary_);
  read_section(*file, kSumGroups, &ix->sum_groups_);
  read_section(*file, kSumLevels, &ix->sum_levels_);
  read_section(*file, kGroupScales, &ix->group_scales_);
  read_section(*file, kDenseTerms, &ix->dense_terms_);
  read_section(*file, kDenseLevels, &ix->dense_levels_);
  read_section(*file, kTermLists, &ix->term_lists_);
  read_section(*file, kDocGroup, &ix->doc_group_);
  read_section(*file, kListDocs, &ix->list_docs_);
  if (ix->wide_)
    read_section(*file, kFwdTerms, &ix->fwd_terms32_);
  else
    read_section(*file, kFwdTerms, &ix->fwd_terms16_);
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
    ix->check();
    ix->index_dense_terms();
  } catch (const std::exception& e) {
    throw FormatError(path + " is not a consistent approximate index (" + e.what() + ")");
  }
  return ix;
}

// dense_row_ from dense_terms_ (each term once).
void ApproxSparseIndex::index_dense_terms() {
  dense_row_.assign(n_terms_, kNoGroup);
  for (std::size_t r = 0; r < dense_terms_.size(); ++r) {
    if (dense_row_[dense_terms_[r]] != kNoGroup)
      throw std::runtime_error("a dense summary term is repeated");
    dense_row_[dense_terms_[r]] = static_cast<std::uint32_t>(r);
  }
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
  offsets(doc_offsets_, n_docs_, entries, "document offsets");
  offsets(term_summary_, n_terms_, sum_groups_.size(), "summary offsets");
  offsets(term_lists_, n_terms_, list_docs_.size(), "list offsets");
  if (doc_group_.size() != n_docs_) throw std::runtime_error("groups have the wrong size");
  if (sum_levels_.size() != sum_groups_.size() || group_scales_.size() != n_groups_)
    throw std::runtime_error("summaries have the wrong size");
  if (params_.quantize ? (fwd_levels_.size() != entries || doc_scales_.size() != n_docs_)
                       : fwd_weights_.size() != entries)
    throw std::runtime_error("document weights have the wrong size");
  auto below = [](const auto& v, std::uint64_t n, const char* what) {
    for (auto x : v)
      if (x >= n) throw std::runtime_error(std::string(what) + " out of range");
  };
  below(list_docs_, n_docs_, "a posting's document is");
  below(sum_groups_, n_groups_, "a summary's group is");
  below(doc_group_, n_groups_, "a document's group is");
  below(dense_terms_, n_terms_, "a dense summary term is");
  if (dense_levels_.size() != dense_terms_.size() * n_groups_)
    throw std::runtime_error("dense summaries have the wrong size");
  below(fwd_terms16_, n_terms_, "a term id is");
  below(fwd_terms32_, n_terms_, "a term id is");
}

}  // namespace fastrag
