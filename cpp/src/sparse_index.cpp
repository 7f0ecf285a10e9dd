// Building, updating, saving and loading the inverted index. Search lives in sparse_search.cpp.
#include "fastrag/sparse_index.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>

#include "fastrag/error.hpp"
#include "fastrag/io.hpp"
#include "fastrag/parallel.hpp"
#include "sparse_codec.hpp"

namespace fastrag {
namespace {

constexpr std::uint64_t kMaxTerms = std::uint64_t{1} << 30;
constexpr std::uint64_t kMaxDocs = std::numeric_limits<std::uint32_t>::max() - 1;

enum Section : std::uint32_t {
  kMeta = 1,
  kDocLen,
  kLive,
  kOffsets,
  kDocs,
  kValues,
  kImpacts,
  kBlockOffsets,
  kBlockMax,
  kBlockLast,
  kTermMax,
  kNonocc,
  kDf,
  // Version 2 (kDocs, kImpacts, kBlockMax, kTermMax, kNonocc and kDf are not written: the
  // derived tables are recomputed on load; kValues is empty for BM25).
  kPacked,
  kBlockData,
  kBlockBits,
  kExtra = 100,
};

std::uint64_t words_for(std::uint64_t n) { return (n + 63) / 64; }

std::uint64_t double_bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}
double bits_double(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

void check_policy(ImpactCache p) {
  if (p != ImpactCache::Off && p != ImpactCache::On && p != ImpactCache::Auto)
    throw std::invalid_argument("unknown impact cache policy");
}

}  // namespace

SparseIndex::SparseIndex(Scoring scoring, BM25Params params, ImpactCache impact_cache)
    : scoring_(scoring), params_(params), cache_policy_(impact_cache) {
  if (scoring != Scoring::BM25 && scoring != Scoring::Impact)
    throw std::invalid_argument("unknown scoring mode");
  check_policy(impact_cache);
  validate(params_);
  offsets_.assign({0});
  block_offsets_.assign({0});
  packed_.assign(std::vector<std::uint8_t>(codec::kPad, 0));
}

std::uint32_t SparseIndex::add(const std::int64_t* indptr, std::size_t n_docs,
                               const std::uint32_t* terms, const float* values) {
  const bool bm25 = scoring_ == Scoring::BM25;
  if (bm25 && values) throw std::invalid_argument("BM25 documents take term ids only, no values");
  if (!bm25 && !values && indptr[n_docs] > indptr[0])
    throw std::invalid_argument("impact scoring needs one weight per term");
  if (indptr[0] < 0) throw std::invalid_argument("indptr[0] must be >= 0");
  for (std::size_t i = 0; i < n_docs; ++i)
    if (indptr[i + 1] < indptr[i]) throw std::invalid_argument("indptr must be non-decreasing");
  const std::int64_t begin = indptr[0], end = indptr[n_docs];
  for (std::int64_t j = begin; j < end; ++j) {
    if (terms[j] >= kMaxTerms)
      throw std::invalid_argument("term id " + std::to_string(terms[j]) + " is too large (max " +
                                  std::to_string(kMaxTerms - 1) + ")");
    if (values && !(std::isfinite(values[j]) && values[j] >= 0))
      throw std::invalid_argument("term weights must be finite and >= 0 (document " +
                                  std::to_string(std::upper_bound(indptr, indptr + n_docs + 1, j) -
                                                 indptr - 1) +
                                  " has " + std::to_string(values[j]) + ")");
  }

  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (n_docs_ + n_docs > kMaxDocs)
    throw std::invalid_argument("an index holds at most 4,294,967,294 documents");
  const auto first = static_cast<std::uint32_t>(n_docs_);
  auto& len = doc_len_.mut();
  auto& live = live_.mut();
  live.resize(words_for(n_docs_ + n_docs), 0);
  for (std::size_t i = 0; i < n_docs; ++i) {
    const std::int64_t a = indptr[i], b = indptr[i + 1];
    std::uint32_t l;
    if (bm25) {
      l = static_cast<std::uint32_t>(std::min<std::int64_t>(b - a, 0xffffffffLL));
    } else {  // number of distinct terms
      std::vector<std::uint32_t> t(terms + a, terms + b);
      std::sort(t.begin(), t.end());
      l = static_cast<std::uint32_t>(std::unique(t.begin(), t.end()) - t.begin());
    }
    const std::uint64_t id = n_docs_ + i;
    len.push_back(l);
    live[id / 64] |= std::uint64_t{1} << (id % 64);
    total_len_ += l;
    pending_indptr_.push_back(pending_indptr_.back() + (b - a));
  }
  doc_len_.refresh();
  live_.refresh();
  pending_terms_.insert(pending_terms_.end(), terms + begin, terms + end);
  if (values) pending_values_.insert(pending_values_.end(), values + begin, values + end);
  n_docs_ += n_docs;
  n_live_ += n_docs;
  dirty_.store(true);
  return first;
}

std::size_t SparseIndex::remove(const std::uint32_t* ids, std::size_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] >= n_docs_)
      throw std::out_of_range("document id " + std::to_string(ids[i]) +
                              " is not in the index (" + std::to_string(n_docs_) + " documents)");
  std::size_t removed = 0;
  auto& live = live_.mut();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t id = ids[i];
    std::uint64_t& w = live[id / 64];
    const std::uint64_t bit = std::uint64_t{1} << (id % 64);
    if (!(w & bit)) continue;
    w &= ~bit;
    ++removed;
    --n_live_;
    total_len_ -= doc_len_[id];
  }
  live_.refresh();
  if (removed) dirty_.store(true);
  return removed;
}

bool SparseIndex::impact_cache() const {
  ensure_committed();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return impact_cache_;
}

ImpactCache SparseIndex::impact_cache_policy() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return cache_policy_;
}

void SparseIndex::set_impact_cache(ImpactCache policy) {
  check_policy(policy);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (policy == cache_policy_) return;
  cache_policy_ = policy;
  if (dirty_.load())
    commit_locked();
  else
    compute_stats();
}

bool SparseIndex::is_live(std::uint32_t id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return id < n_docs_ && ((live_[id / 64] >> (id % 64)) & 1);
}

std::size_t SparseIndex::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return n_docs_;
}

void SparseIndex::ensure_committed() const {
  if (!dirty_.load()) return;
  // Deferred work of add()/remove(): done once, by the first reader that needs it.
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (dirty_.load()) const_cast<SparseIndex*>(this)->commit_locked();
}

void SparseIndex::commit_locked() {
  const bool bm25 = scoring_ == Scoring::BM25;
  const std::size_t n_pending = pending_indptr_.size() - 1;
  if (n_pending > 0) {
    // Merge the pending documents: counting sort of their entries by term (stable, so doc ids
    // stay ascending), repeated terms of one document folded, then appended to each list.
    std::vector<std::uint32_t> odocs;
    std::vector<float> ovals;
    decode_postings(odocs, ovals);
    const std::uint64_t first_doc = n_docs_ - n_pending;
    std::uint64_t new_terms = n_terms_;
    for (std::uint32_t t : pending_terms_) new_terms = std::max<std::uint64_t>(new_terms, t + 1ULL);
    std::vector<std::uint64_t> cnt(new_terms + 1, 0);
    for (std::uint32_t t : pending_terms_) ++cnt[t + 1];
    for (std::uint64_t t = 0; t < new_terms; ++t) cnt[t + 1] += cnt[t];
    std::vector<std::uint32_t> pdoc(pending_terms_.size());
    std::vector<float> pval(pending_terms_.size());
    {
      std::vector<std::uint64_t> head(cnt.begin(), cnt.end() - 1);
      for (std::size_t d = 0; d < n_pending; ++d)
        for (std::int64_t j = pending_indptr_[d]; j < pending_indptr_[d + 1]; ++j) {
          const std::uint64_t pos = head[pending_terms_[j]]++;
          pdoc[pos] = static_cast<std::uint32_t>(first_doc + d);
          pval[pos] = bm25 ? 1.0f : pending_values_[j];
        }
    }
    std::vector<std::uint64_t> merged(new_terms, 0);  // folded pending count per term
    for (std::uint64_t t = 0; t < new_terms; ++t) {
      std::uint64_t w = cnt[t];
      for (std::uint64_t r = cnt[t]; r < cnt[t + 1]; ++r) {
        if (w > cnt[t] && pdoc[w - 1] == pdoc[r]) {
          pval[w - 1] = bm25 ? pval[w - 1] + pval[r] : std::max(pval[w - 1], pval[r]);
        } else {
          pdoc[w] = pdoc[r];
          pval[w] = pval[r];
          ++w;
        }
      }
      merged[t] = w - cnt[t];
    }
    std::vector<std::uint64_t> off(new_terms + 1, 0);
    for (std::uint64_t t = 0; t < new_terms; ++t) {
      const std::uint64_t old = t < n_terms_ ? offsets_[t + 1] - offsets_[t] : 0;
      off[t + 1] = off[t] + old + merged[t];
    }
    std::vector<std::uint32_t> docs(off[new_terms]);
    std::vector<float> vals(off[new_terms]);
    for (std::uint64_t t = 0; t < new_terms; ++t) {
      std::uint64_t w = off[t];
      if (t < n_terms_) {
        const std::uint64_t a = offsets_[t], b = offsets_[t + 1];
        std::copy(odocs.begin() + a, odocs.begin() + b, docs.begin() + w);
        std::copy(ovals.begin() + a, ovals.begin() + b, vals.begin() + w);
        w += b - a;
      }
      std::copy(pdoc.begin() + cnt[t], pdoc.begin() + cnt[t] + merged[t], docs.begin() + w);
      std::copy(pval.begin() + cnt[t], pval.begin() + cnt[t] + merged[t], vals.begin() + w);
    }
    odocs = {};
    ovals = {};
    n_terms_ = new_terms;
    encode_postings(std::move(off), docs, std::move(vals));
    pending_indptr_.assign(1, 0);
    pending_terms_.clear();
    pending_terms_.shrink_to_fit();
    pending_values_.clear();
    pending_values_.shrink_to_fit();
  }
  compute_stats();
  dirty_.store(false);
}

std::size_t SparseIndex::decode_block(std::uint64_t t, std::uint64_t blk, std::uint32_t* docs,
                                      std::uint32_t* tfs) const {
  const std::uint64_t b0 = block_offsets_[t];
  const std::uint64_t len = offsets_[t + 1] - offsets_[t];
  const std::size_t n = static_cast<std::size_t>(
      std::min<std::uint64_t>(kBlockSize, len - (blk - b0) * kBlockSize));
  const std::uint8_t* p = packed_.data() + block_data_[blk];
  const std::uint16_t bits = block_bits_[blk];
  const unsigned db = codec::doc_bits(bits);
  codec::unpack_block(p, n, db, docs);
  codec::gaps_to_docs(docs, n, blk == b0 ? 0xffffffffu : block_last_[blk - 1]);
  if (tfs) codec::unpack_block(p + codec::packed_bytes(n, db), n, codec::tf_bits(bits), tfs);
  return n;
}

void SparseIndex::decode_postings(std::vector<std::uint32_t>& docs,
                                  std::vector<float>& vals) const {
  const bool bm25 = scoring_ == Scoring::BM25;
  const std::uint64_t P = n_terms_ ? offsets_[n_terms_] : 0;
  docs.resize(P);
  if (bm25) {
    vals.resize(P);
  } else {
    vals.assign(values_.begin(), values_.end());
  }
  const std::size_t threads = resolve_threads(0, n_terms_ / 1024 + 1);
  parallel_for(n_terms_, threads, [&](std::size_t t, std::size_t) {
    std::uint32_t tf[kBlockSize];
    std::uint64_t j = offsets_[t];
    for (std::uint64_t blk = block_offsets_[t]; blk < block_offsets_[t + 1]; ++blk) {
      const std::size_t n = decode_block(t, blk, docs.data() + j, bm25 ? tf : nullptr);
      if (bm25)
        for (std::size_t i = 0; i < n; ++i) vals[j + i] = static_cast<float>(tf[i] + 1.0);
      j += n;
    }
  });
}

void SparseIndex::encode_postings(std::vector<std::uint64_t> off,
                                  const std::vector<std::uint32_t>& docs,
                                  std::vector<float> vals) {
  const bool bm25 = scoring_ == Scoring::BM25;
  const std::uint64_t n_terms = off.size() - 1;
  std::vector<std::uint64_t> boff(n_terms + 1, 0);
  for (std::uint64_t t = 0; t < n_terms; ++t)
    boff[t + 1] = boff[t] + (off[t + 1] - off[t] + kBlockSize - 1) / kBlockSize;
  const std::uint64_t nb = boff[n_terms];
  std::vector<std::uint16_t> bits(nb);
  std::vector<std::uint32_t> blast(nb);
  std::vector<std::uint64_t> bdata(nb + 1, 0);
  const std::size_t threads = resolve_threads(0, n_terms / 1024 + 1);
  // Pass 1: bit widths and sizes of every block.
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    std::uint32_t prev = 0xffffffffu;
    for (std::uint64_t blk = boff[t]; blk < boff[t + 1]; ++blk) {
      const std::uint64_t s = off[t] + (blk - boff[t]) * kBlockSize;
      const std::uint64_t e = std::min<std::uint64_t>(off[t + 1], s + kBlockSize);
      std::uint32_t gmax = 0, tmax = 0;
      for (std::uint64_t j = s; j < e; ++j) {
        gmax = std::max(gmax, docs[j] - prev - 1);
        prev = docs[j];
        if (bm25) tmax = std::max(tmax, static_cast<std::uint32_t>(vals[j]) - 1);
      }
      const unsigned db = codec::bits_for(gmax), tb = bm25 ? codec::bits_for(tmax) : 0;
      bits[blk] = static_cast<std::uint16_t>(db | (tb << 8));
      blast[blk] = docs[e - 1];
      bdata[blk + 1] = codec::packed_bytes(e - s, db) + codec::packed_bytes(e - s, tb);
    }
  });
  for (std::uint64_t blk = 0; blk < nb; ++blk) bdata[blk + 1] += bdata[blk];
  std::vector<std::uint8_t> packed(bdata[nb] + codec::kPad, 0);
  // Pass 2: the bytes. Each block is packed into a local buffer and copied, so that no write
  // reaches past its own bytes (blocks of other terms are written by other threads).
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    std::uint32_t v[kBlockSize];
    std::uint8_t buf[2 * 4 * kBlockSize + 2 * codec::kPad];
    std::uint32_t prev = 0xffffffffu;
    for (std::uint64_t blk = boff[t]; blk < boff[t + 1]; ++blk) {
      const std::uint64_t s = off[t] + (blk - boff[t]) * kBlockSize;
      const std::size_t n = static_cast<std::size_t>(
          std::min<std::uint64_t>(off[t + 1], s + kBlockSize) - s);
      const unsigned db = codec::doc_bits(bits[blk]), tb = codec::tf_bits(bits[blk]);
      std::memset(buf, 0, sizeof buf);
      for (std::size_t i = 0; i < n; ++i) {
        v[i] = docs[s + i] - prev - 1;
        prev = docs[s + i];
      }
      codec::pack_block(v, n, db, buf);
      const std::size_t dbytes = codec::packed_bytes(n, db);
      if (bm25) {
        for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint32_t>(vals[s + i]) - 1;
        codec::pack_block(v, n, tb, buf + dbytes);
      }
      std::memcpy(packed.data() + bdata[blk], buf, dbytes + codec::packed_bytes(n, tb));
    }
  });
  bdata.pop_back();
  offsets_.assign(std::move(off));
  if (bm25) vals = {};
  values_.assign(std::move(vals));
  packed_.assign(std::move(packed));
  block_offsets_.assign(std::move(boff));
  block_data_.assign(std::move(bdata));
  block_bits_.assign(std::move(bits));
  block_last_.assign(std::move(blast));
}

void SparseIndex::compute_stats() {
  // Statistics and block maxima, term by term in parallel.
  const bool bm25 = scoring_ == Scoring::BM25;
  const std::uint64_t n_terms = n_terms_;
  const bool all_live = n_live_ == n_docs_;
  // A shard of a larger collection scores with the collection's statistics (set_global_stats)
  const double n = static_cast<double>(global_ ? global_n_ : n_live_);
  const double avgdl = n > 0 ? (global_ ? global_total_len_ : total_len_) / n : 0.0;
  const bool has_nonocc = bm25 && (params_.method == BM25Method::BM25L ||
                                   params_.method == BM25Method::BM25Plus);
  impact_cache_ = cache_policy_ == ImpactCache::On ||
                  (cache_policy_ == ImpactCache::Auto && offsets_[n_terms] <= kAutoCacheMax);
  // Term-frequency components by tf and document length, up to the longest document (at most
  // kLengthTable lengths).
  constexpr std::uint32_t kLengthTable = 2048;
  std::vector<double> ltfc;
  std::uint32_t n_table = 0;
  if (bm25) {
    std::uint32_t longest = 0;
    for (std::uint64_t d = 0; d < n_docs_; ++d) longest = std::max(longest, doc_len_[d]);
    n_table = std::min<std::uint32_t>(kLengthTable, longest + 1);
    ltfc.resize(std::size_t{codec::kTableTf} * n_table);
    codec::with_method(params_.method, [&](auto tag) {
      constexpr BM25Method M = decltype(tag)::value;
      for (std::uint32_t dl = 0; dl < n_table; ++dl) {
        const double norm = codec::length_norm(params_.b, dl, avgdl);
        for (std::uint32_t tf = 1; tf <= codec::kTableTf; ++tf)
          ltfc[(tf - 1) * n_table + dl] = codec::bm25_tfc<M>(params_.k1, params_.delta, tf, norm);
      }
    });
  }
  const codec::Bm25View view{doc_len_.data(), ltfc.data(), n_table, params_.k1, params_.delta,
                             avgdl, params_.b};
  const std::uint64_t nb = block_offsets_[n_terms];
  std::vector<float> bmax(nb), tmax(n_terms), nonocc(has_nonocc ? n_terms : 0);
  std::vector<std::uint32_t> bfirst(nb);
  std::vector<std::uint32_t> df(n_terms);
  std::vector<double> idfs(bm25 ? n_terms : 0), bases(has_nonocc ? n_terms : 0);
  const bool cache = bm25 && impact_cache_;
  std::vector<float> cached(cache ? offsets_[n_terms] : 0);
  // Small indexes with the cache: every posting's document id, kept decoded.
  const bool keep_docs = impact_cache_ && offsets_[n_terms] <= kDocCacheMax;
  std::vector<std::uint32_t> doc_ids(keep_docs ? offsets_[n_terms] : 0);
  const float* vals = values_.data();
  const std::uint64_t* live = live_.data();
  auto is_live = [&](std::uint32_t d) { return (live[d / 64] >> (d % 64)) & 1; };
  const std::size_t threads = resolve_threads(0, n_terms / 1024 + 1);
  codec::with_method(params_.method, [&](auto tag) {
    constexpr BM25Method M = decltype(tag)::value;
    parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
      std::uint32_t docs[kBlockSize], tf[kBlockSize];
      const std::uint64_t a = offsets_[t], b = offsets_[t + 1];
      std::uint64_t count = b - a;
      if (!all_live) {
        count = 0;
        for (std::uint64_t blk = block_offsets_[t]; blk < block_offsets_[t + 1]; ++blk) {
          const std::size_t m = decode_block(t, blk, docs, nullptr);
          for (std::size_t i = 0; i < m; ++i) count += is_live(docs[i]);
        }
      }
      df[t] = static_cast<std::uint32_t>(count);
      double idf = 0, base = 0;
      if (bm25) {
        // A shard scores with the whole collection's document frequency (set_global_stats).
        const std::uint64_t gdf = global_ && t < global_df_.size() ? global_df_[t] : count;
        idf = count > 0 ? bm25_idf(params_, gdf, n) : 0.0;
        base = count > 0 && has_nonocc ? bm25_nonoccurrence(params_, gdf, n, avgdl) : 0.0;
        if (has_nonocc) {
          nonocc[t] = static_cast<float>(base);
          bases[t] = base;
        }
        idfs[t] = idf;
      }
      for (std::uint64_t blk = block_offsets_[t]; blk < block_offsets_[t + 1]; ++blk)
        bfirst[blk] = (blk == block_offsets_[t] ? 0xffffffffu : block_last_[blk - 1]) + 1 +
                      codec::first(packed_.data() + block_data_[blk],
                                   codec::doc_bits(block_bits_[blk]));
      float best = 0.0f;
      std::uint64_t j = a;
      for (std::uint64_t blk = block_offsets_[t]; blk < block_offsets_[t + 1]; ++blk) {
        float m = 0.0f;
        if (bm25) {
          std::uint32_t* d = keep_docs ? doc_ids.data() + j : docs;
          const std::size_t len = decode_block(t, blk, d, tf);
          for (std::size_t i = 0; i < len; ++i) {
            // Deleted documents count as impact 0.
            const float imp =
                is_live(d[i]) ? codec::bm25_impact<M>(view, idf, base, tf[i], d[i]) : 0.0f;
            if (cache) cached[j + i] = imp;
            m = std::max(m, imp);
          }
          j += len;
        } else {
          if (keep_docs) decode_block(t, blk, doc_ids.data() + j, nullptr);
          const std::uint64_t e = std::min<std::uint64_t>(b, j + kBlockSize);
          for (; j < e; ++j) m = std::max(m, vals[j]);
        }
        bmax[blk] = m;
        best = std::max(best, m);
      }
      tmax[t] = best;
    });
  });
  doc_cache_.assign(std::move(doc_ids));
  // Length codes for search without the cache.
  std::vector<std::uint8_t> code8;
  std::vector<std::uint16_t> code16;
  std::uint32_t code_lim = 0;
  if (bm25 && !cache) {
    std::uint64_t wide = 0;  // lengths in the table that one byte cannot code
    for (std::uint64_t d = 0; d < n_docs_; ++d) wide += doc_len_[d] >= 0xff && doc_len_[d] < n_table;
    if (wide <= n_docs_ / 64) {
      code_lim = std::min<std::uint32_t>(n_table, 0xff);
      code8.resize(n_docs_);
      for (std::uint64_t d = 0; d < n_docs_; ++d)
        code8[d] = static_cast<std::uint8_t>(std::min<std::uint32_t>(doc_len_[d], 0xff));
    } else {
      code_lim = n_table;  // <= 2048
      code16.resize(n_docs_);
      for (std::uint64_t d = 0; d < n_docs_; ++d)
        code16[d] = static_cast<std::uint16_t>(std::min<std::uint32_t>(doc_len_[d], 0xffff));
    }
  }
  len_code8_ = std::move(code8);
  len_code16_ = std::move(code16);
  code_lim_ = code_lim;
  len_tfc_ = std::move(ltfc);
  impacts_.assign(std::move(cached));
  n_table_ = n_table;
  avgdl_ = avgdl;
  idf_ = std::move(idfs);
  base_ = std::move(bases);
  block_max_.assign(std::move(bmax));
  block_first_.assign(std::move(bfirst));
  term_max_.assign(std::move(tmax));
  nonocc_.assign(std::move(nonocc));
  df_.assign(std::move(df));
}

std::vector<std::int64_t> SparseIndex::compact(const ReorderParams* reorder) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (dirty_.load()) commit_locked();
  std::vector<std::int64_t> remap(n_docs_, -1);
  std::vector<std::uint32_t> len;
  len.reserve(n_live_);
  for (std::uint64_t d = 0; d < n_docs_; ++d)
    if ((live_[d / 64] >> (d % 64)) & 1) {
      remap[d] = static_cast<std::int64_t>(len.size());
      len.push_back(doc_len_[d]);
    }
  if (len.size() == n_docs_ && !reorder) return remap;  // nothing deleted
  std::vector<std::uint32_t> odocs;
  std::vector<float> ovals;
  decode_postings(odocs, ovals);
  if (reorder) {
    // The live documents' terms (a forward index), their BP order, and ids in that order.
    std::vector<std::uint64_t> fwd_off(len.size() + 1, 0);
    for (std::uint64_t j = 0; j < odocs.size(); ++j)
      if (remap[odocs[j]] >= 0) ++fwd_off[static_cast<std::size_t>(remap[odocs[j]]) + 1];
    for (std::size_t d = 0; d < len.size(); ++d) fwd_off[d + 1] += fwd_off[d];
    std::vector<std::uint32_t> fwd(fwd_off.back());
    std::vector<std::uint64_t> fill(fwd_off.begin(), fwd_off.end() - 1);
    for (std::uint64_t t = 0; t < n_terms_; ++t)
      for (std::uint64_t j = offsets_[t]; j < offsets_[t + 1]; ++j)
        if (remap[odocs[j]] >= 0) fwd[fill[static_cast<std::size_t>(remap[odocs[j]])]++] = t;
    const std::vector<std::uint32_t> order =
        bp_order(len.size(), fwd_off.data(), fwd.data(), n_terms_, *reorder);
    fwd = {};
    std::vector<std::int64_t> position(len.size());
    std::vector<std::uint32_t> by_position(len.size());
    for (std::size_t i = 0; i < order.size(); ++i) {
      position[order[i]] = static_cast<std::int64_t>(i);
      by_position[i] = len[order[i]];
    }
    len = std::move(by_position);
    for (auto& r : remap)
      if (r >= 0) r = position[static_cast<std::size_t>(r)];
  }
  std::vector<std::uint64_t> off(n_terms_ + 1, 0);
  std::vector<std::uint32_t> docs;
  std::vector<float> vals;
  docs.reserve(odocs.size());
  vals.reserve(odocs.size());
  std::vector<std::pair<std::uint32_t, float>> list;  // one term's postings, reordered
  for (std::uint64_t t = 0; t < n_terms_; ++t) {
    list.clear();
    for (std::uint64_t j = offsets_[t]; j < offsets_[t + 1]; ++j) {
      const std::int64_t nd = remap[odocs[j]];
      if (nd >= 0) list.emplace_back(static_cast<std::uint32_t>(nd), ovals[j]);
    }
    if (reorder) std::sort(list.begin(), list.end());  // ids are distinct in a list
    for (const auto& [d, v] : list) {
      docs.push_back(d);
      vals.push_back(v);
    }
    off[t + 1] = docs.size();
  }
  odocs = {};
  ovals = {};
  n_docs_ = len.size();
  std::vector<std::uint64_t> live(words_for(n_docs_), ~std::uint64_t{0});
  if (n_docs_ % 64) live.back() = (std::uint64_t{1} << (n_docs_ % 64)) - 1;
  doc_len_.assign(std::move(len));
  live_.assign(std::move(live));
  encode_postings(std::move(off), docs, std::move(vals));
  commit_locked();
  return remap;
}

void SparseIndex::set_global_stats(std::uint64_t n_docs, double total_len,
                                   const std::uint32_t* df, std::size_t n) {
  if (scoring_ != Scoring::BM25)
    throw std::invalid_argument("global statistics apply to BM25 scoring only");
  if (!(std::isfinite(total_len) && total_len >= 0))
    throw std::invalid_argument("total_len must be finite and >= 0");
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (dirty_.load()) commit_locked();
  if (n_docs < n_live_ || total_len < total_len_)
    throw std::invalid_argument("global statistics must cover this shard (" +
                                std::to_string(n_live_) + " live documents of total length " +
                                std::to_string(total_len_) + ", got " + std::to_string(n_docs) +
                                " and " + std::to_string(total_len) + ")");
  if (n > n_terms_)
    throw std::invalid_argument("df has " + std::to_string(n) + " entries but the index has " +
                                std::to_string(n_terms_) + " terms");
  for (std::size_t t = 0; t < n; ++t)
    if (df[t] < df_[t] || df[t] > n_docs)
      throw std::invalid_argument("global df of term " + std::to_string(t) + " is " +
                                  std::to_string(df[t]) + ", outside [" +
                                  std::to_string(df_[t]) + ", " + std::to_string(n_docs) + "]");
  global_ = true;
  global_n_ = n_docs;
  global_total_len_ = total_len;
  global_df_.assign(df, df + n);
  commit_locked();
}

void SparseIndex::clear_global_stats() {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (!global_) return;
  global_ = false;
  global_df_.clear();
  commit_locked();
}

bool SparseIndex::has_global_stats() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return global_;
}

std::vector<std::uint32_t> SparseIndex::document_frequencies() const {
  ensure_committed();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return std::vector<std::uint32_t>(df_.begin(), df_.end());
}

IndexStats SparseIndex::stats() const {
  ensure_committed();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  IndexStats s;
  s.n_docs = n_docs_;
  s.n_live = n_live_;
  s.n_terms = n_terms_;
  s.n_postings = offsets_[n_terms_];
  s.avgdl = n_live_ ? total_len_ / static_cast<double>(n_live_) : 0.0;
  s.total_len = total_len_;
  // Resident bytes of the arrays (views of a mapped file count as their size too).
  s.memory_bytes = doc_len_.size() * 4 + live_.size() * 8 + offsets_.size() * 8 +
                   values_.size() * 4 + packed_.size() + block_offsets_.size() * 8 +
                   block_data_.size() * 8 + block_bits_.size() * 2 + block_last_.size() * 4 + block_first_.size() * 4 +
                   block_max_.size() * 4 + term_max_.size() * 4 + nonocc_.size() * 4 +
                   df_.size() * 4 + impacts_.size() * 4 + doc_cache_.size() * 4 + len_code8_.size() + len_code16_.size() * 2 + (idf_.size() + base_.size() + len_tfc_.size()) * 8;
  // The same with spare capacity.
  s.allocated_bytes = doc_len_.bytes() + live_.bytes() + offsets_.bytes() + values_.bytes() +
                      packed_.bytes() + block_offsets_.bytes() + block_data_.bytes() +
                      block_bits_.bytes() + block_last_.bytes() + block_first_.bytes() + block_max_.bytes() +
                      term_max_.bytes() + nonocc_.bytes() + df_.bytes() + impacts_.bytes() +
                      doc_cache_.bytes() + len_code8_.capacity() + len_code16_.capacity() * 2 +
                      (idf_.capacity() + base_.capacity() + len_tfc_.capacity()) * 8;
  return s;
}

void SparseIndex::save(const std::string& path, const std::string& extra) const {
  ensure_committed();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const std::uint64_t meta[] = {
      static_cast<std::uint64_t>(scoring_), static_cast<std::uint64_t>(params_.method),
      n_docs_, n_live_, n_terms_, kBlockSize, double_bits(params_.k1), double_bits(params_.b),
      double_bits(params_.delta), double_bits(total_len_)};
  auto sec = [](std::uint32_t id, const auto& col) {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(col[0])>>;
    return SectionData{id, sizeof(T), col.data(), col.size() * sizeof(T)};
  };
  std::vector<SectionData> s = {
      {kMeta, 8, meta, sizeof meta},       sec(kDocLen, doc_len_),
      sec(kLive, live_),                   sec(kOffsets, offsets_),
      sec(kValues, values_),               sec(kPacked, packed_),
      sec(kBlockOffsets, block_offsets_),  sec(kBlockData, block_data_),
      sec(kBlockBits, block_bits_),        sec(kBlockLast, block_last_),
      {kExtra, 1, extra.data(), extra.size()}};
  write_sections(path, FileKind::SparseIndex, kFormatVersion, s);
}

std::unique_ptr<SparseIndex> SparseIndex::load(const std::string& path, bool use_mmap,
                                               std::string* extra, ImpactCache impact_cache) {
  // Version 1 files (uncompressed postings) are read and encoded in memory.
  auto file = FileView::open(path, FileKind::SparseIndex, kFormatVersion, use_mmap);
  std::uint64_t count = 0;
  const auto* meta = static_cast<const std::uint64_t*>(file->section(kMeta, 8, &count));
  if (count < 10) throw FormatError(path + ": metadata section is too short");
  if (meta[0] > 1 || meta[1] > 4 || meta[5] != kBlockSize)
    throw FormatError(path + ": unknown scoring mode, BM25 method or block size");
  BM25Params p;
  p.method = static_cast<BM25Method>(meta[1]);
  p.k1 = static_cast<float>(bits_double(meta[6]));
  p.b = static_cast<float>(bits_double(meta[7]));
  p.delta = static_cast<float>(bits_double(meta[8]));
  std::unique_ptr<SparseIndex> ix;
  try {
    ix = std::make_unique<SparseIndex>(static_cast<Scoring>(meta[0]), p, impact_cache);
  } catch (const std::invalid_argument& e) {
    throw FormatError(path + ": invalid parameters (" + e.what() + ")");
  }
  ix->n_docs_ = meta[2];
  ix->n_live_ = meta[3];
  ix->n_terms_ = meta[4];
  ix->total_len_ = bits_double(meta[9]);
  auto col = [&](std::uint32_t id, auto& c) {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(c[0])>>;
    std::uint64_t n = 0;
    const T* d = static_cast<const T*>(file->section(id, sizeof(T), &n));
    c = std::remove_reference_t<decltype(c)>::view(d, n, file);
  };
  col(kDocLen, ix->doc_len_);
  col(kLive, ix->live_);
  col(kOffsets, ix->offsets_);
  ix->check_invariants(path);
  auto fail = [&](const std::string& what) {
    throw FormatError(path + " is corrupted (" + what + "); rebuild or restore the index");
  };
  const bool bm25 = ix->scoring_ == Scoring::BM25;
  const std::uint64_t n_terms = ix->n_terms_, n_docs = ix->n_docs_;
  const std::uint64_t P = ix->offsets_[n_terms];
  if (file->version() == 1) {
    // Uncompressed postings: checked, then encoded (derived tables are recomputed below with
    // the formulas that wrote them, so scores keep their bits).
    Column<std::uint32_t> docs;
    Column<float> values;
    col(kDocs, docs);
    col(kValues, values);
    if (docs.size() != P || values.size() != P) fail("posting arrays");
    for (std::uint64_t t = 0; t < n_terms; ++t) {
      const std::uint64_t a = ix->offsets_[t], b = ix->offsets_[t + 1];
      for (std::uint64_t j = a; j < b; ++j)
        if (docs[j] >= n_docs || (j > a && docs[j] <= docs[j - 1])) fail("posting order");
    }
    for (std::uint64_t j = 0; j < P; ++j) {
      const float v = values[j];
      const bool ok = bm25 ? (v >= 1.0f && v <= 16777216.0f && v == std::floor(v))
                           : (v >= 0.0f && v <= std::numeric_limits<float>::max());
      if (!ok) fail(bm25 ? "term frequencies" : "impacts");
    }
    ix->encode_postings(std::vector<std::uint64_t>(ix->offsets_.begin(), ix->offsets_.end()),
                        std::vector<std::uint32_t>(docs.begin(), docs.end()),
                        std::vector<float>(values.begin(), values.end()));
  } else {
    col(kValues, ix->values_);
    col(kPacked, ix->packed_);
    col(kBlockOffsets, ix->block_offsets_);
    col(kBlockData, ix->block_data_);
    col(kBlockBits, ix->block_bits_);
    col(kBlockLast, ix->block_last_);
    if (ix->values_.size() != (bm25 ? 0 : P)) fail("posting arrays");
    if (!bm25)
      for (std::uint64_t j = 0; j < P; ++j)
        if (!(ix->values_[j] >= 0.0f && ix->values_[j] <= std::numeric_limits<float>::max()))
          fail("impacts");
    const auto& boff = ix->block_offsets_;
    if (boff.size() != n_terms + 1 || boff[0] != 0) fail("block offsets");
    for (std::uint64_t t = 0; t < n_terms; ++t)
      if (boff[t + 1] < boff[t] ||
          boff[t + 1] - boff[t] !=
              (ix->offsets_[t + 1] - ix->offsets_[t] + kBlockSize - 1) / kBlockSize)
        fail("block offsets");
    const std::uint64_t nb = boff[n_terms];
    if (ix->block_data_.size() != nb || ix->block_bits_.size() != nb ||
        ix->block_last_.size() != nb)
      fail("block arrays");
    // Block sizes and places, then every block decoded: search trusts them.
    std::uint64_t at = 0;
    for (std::uint64_t t = 0; t < n_terms; ++t) {
      const std::uint64_t len = ix->offsets_[t + 1] - ix->offsets_[t];
      for (std::uint64_t blk = boff[t]; blk < boff[t + 1]; ++blk) {
        const std::uint64_t n = std::min<std::uint64_t>(kBlockSize, len - (blk - boff[t]) * kBlockSize);
        const unsigned db = codec::doc_bits(ix->block_bits_[blk]);
        const unsigned tb = codec::tf_bits(ix->block_bits_[blk]);
        if (db > 32 || tb > (bm25 ? 24u : 0u)) fail("block bit widths");
        if (ix->block_data_[blk] != at) fail("block data offsets");
        at += codec::packed_bytes(n, db) + codec::packed_bytes(n, tb);
      }
    }
    if (ix->packed_.size() != at + codec::kPad) fail("packed postings size");
    std::uint32_t gaps[kBlockSize];
    for (std::uint64_t t = 0; t < n_terms; ++t) {
      const std::uint64_t len = ix->offsets_[t + 1] - ix->offsets_[t];
      std::uint64_t prev = ~std::uint64_t{0};
      for (std::uint64_t blk = boff[t]; blk < boff[t + 1]; ++blk) {
        const std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>(kBlockSize, len - (blk - boff[t]) * kBlockSize));
        codec::unpack_block(ix->packed_.data() + ix->block_data_[blk], n,
                      codec::doc_bits(ix->block_bits_[blk]), gaps);
        for (std::size_t i = 0; i < n; ++i) {
          prev = prev + gaps[i] + 1;
          if (prev >= n_docs) fail("posting order");
        }
        if (ix->block_last_[blk] != prev) fail("block summaries");
      }
    }
  }
  ix->compute_stats();
  if (extra) {
    std::uint64_t n = 0;
    const char* e = static_cast<const char*>(file->section(kExtra, 1, &n));
    extra->assign(e, n);
  }
  return ix;
}

// Structural checks of the arrays both versions share, so that a damaged file whose checksum
// still matches can never make search read out of bounds.
void SparseIndex::check_invariants(const std::string& path) const {
  auto fail = [&](const std::string& what) {
    throw FormatError(path + " is corrupted (" + what + "); rebuild or restore the index");
  };
  if (n_docs_ > kMaxDocs || n_terms_ > kMaxTerms || n_live_ > n_docs_) fail("bad counts");
  if (doc_len_.size() != n_docs_ || live_.size() != words_for(n_docs_)) fail("document arrays");
  if (offsets_.size() != n_terms_ + 1) fail("term arrays");
  if (offsets_[0] != 0) fail("offsets");
  for (std::uint64_t t = 0; t < n_terms_; ++t)
    if (offsets_[t + 1] < offsets_[t]) fail("posting offsets");
  std::uint64_t live = 0;
  for (std::uint64_t d = 0; d < n_docs_; ++d) live += (live_[d / 64] >> (d % 64)) & 1;
  if (live != n_live_) fail("live count");
  if (n_docs_ % 64 && (live_[n_docs_ / 64] >> (n_docs_ % 64)) != 0) fail("live bits");
}

}  // namespace fastrag
