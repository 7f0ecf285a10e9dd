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

}  // namespace

SparseIndex::SparseIndex(Scoring scoring, BM25Params params) : scoring_(scoring), params_(params) {
  if (scoring != Scoring::BM25 && scoring != Scoring::Impact)
    throw std::invalid_argument("unknown scoring mode");
  validate(params_);
  offsets_.assign({0});
  block_offsets_.assign({0});
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
        std::copy(docs_.data() + a, docs_.data() + b, docs.begin() + w);
        std::copy(values_.data() + a, values_.data() + b, vals.begin() + w);
        w += b - a;
      }
      std::copy(pdoc.begin() + cnt[t], pdoc.begin() + cnt[t] + merged[t], docs.begin() + w);
      std::copy(pval.begin() + cnt[t], pval.begin() + cnt[t] + merged[t], vals.begin() + w);
    }
    offsets_.assign(std::move(off));
    docs_.assign(std::move(docs));
    values_.assign(std::move(vals));
    n_terms_ = new_terms;
    pending_indptr_.assign(1, 0);
    pending_terms_.clear();
    pending_terms_.shrink_to_fit();
    pending_values_.clear();
    pending_values_.shrink_to_fit();
  }

  // Statistics, impacts and block maxima, term by term in parallel.
  const std::uint64_t n_terms = n_terms_;
  const bool all_live = n_live_ == n_docs_;
  // A shard of a larger collection scores with the collection's statistics (set_global_stats)
  const double n = static_cast<double>(global_ ? global_n_ : n_live_);
  const double avgdl = n > 0 ? (global_ ? global_total_len_ : total_len_) / n : 0.0;
  const bool has_nonocc = bm25 && (params_.method == BM25Method::BM25L ||
                                   params_.method == BM25Method::BM25Plus);
  std::vector<double> norm;  // k1-scaled length normalisation per document
  if (bm25) {
    norm.resize(n_docs_);
    for (std::uint64_t d = 0; d < n_docs_; ++d)
      norm[d] = avgdl > 0 ? 1.0 - params_.b + params_.b * doc_len_[d] / avgdl : 1.0;
  }
  std::vector<std::uint64_t> boff(n_terms + 1, 0);
  for (std::uint64_t t = 0; t < n_terms; ++t)
    boff[t + 1] = boff[t] + (offsets_[t + 1] - offsets_[t] + kBlockSize - 1) / kBlockSize;
  std::vector<float> impacts(bm25 ? docs_.size() : 0);
  std::vector<float> bmax(boff[n_terms]), tmax(n_terms), nonocc(has_nonocc ? n_terms : 0);
  std::vector<std::uint32_t> blast(boff[n_terms]), df(n_terms);
  const std::uint32_t* docs = docs_.data();
  const float* vals = values_.data();
  const std::uint64_t* live = live_.data();
  auto is_live = [&](std::uint32_t d) { return (live[d / 64] >> (d % 64)) & 1; };
  const std::size_t threads = resolve_threads(0, n_terms / 1024 + 1);
  parallel_for(n_terms, threads, [&](std::size_t t, std::size_t) {
    const std::uint64_t a = offsets_[t], b = offsets_[t + 1];
    std::uint64_t count = b - a;
    if (!all_live) {
      count = 0;
      for (std::uint64_t j = a; j < b; ++j) count += is_live(docs[j]);
    }
    df[t] = static_cast<std::uint32_t>(count);
    const float* imp = vals;
    if (bm25) {
      const std::uint64_t gdf = global_ && t < global_df_.size() ? global_df_[t] : count;
      const double idf = count > 0 ? bm25_idf(params_, gdf, n) : 0.0;
      const double base = count > 0 && has_nonocc ? bm25_nonoccurrence(params_, gdf, n, avgdl)
                                                  : 0.0;
      if (has_nonocc) nonocc[t] = static_cast<float>(base);
      const double k1 = params_.k1, delta = params_.delta;
      for (std::uint64_t j = a; j < b; ++j) {
        const std::uint32_t d = docs[j];
        if (!is_live(d)) {
          impacts[j] = 0.0f;
          continue;
        }
        const double tf = vals[j];
        double tfc;
        switch (params_.method) {
          case BM25Method::Lucene:
          case BM25Method::Robertson: tfc = tf / (k1 * norm[d] + tf); break;
          case BM25Method::Atire: tfc = tf * (k1 + 1.0) / (tf + k1 * norm[d]); break;
          case BM25Method::BM25L: {
            const double c = tf / norm[d];
            tfc = (k1 + 1.0) * (c + delta) / (k1 + c + delta);
            break;
          }
          default: tfc = (k1 + 1.0) * tf / (k1 * norm[d] + tf) + delta; break;
        }
        impacts[j] = static_cast<float>(std::max(0.0, idf * tfc - base));
      }
      imp = impacts.data();
    }
    float best = 0.0f;
    for (std::uint64_t blk = boff[t]; blk < boff[t + 1]; ++blk) {
      const std::uint64_t s = a + (blk - boff[t]) * kBlockSize;
      const std::uint64_t e = std::min<std::uint64_t>(b, s + kBlockSize);
      float m = 0.0f;
      for (std::uint64_t j = s; j < e; ++j) m = std::max(m, imp[j]);
      bmax[blk] = m;
      blast[blk] = docs[e - 1];
      best = std::max(best, m);
    }
    tmax[t] = best;
  });
  impacts_.assign(std::move(impacts));
  block_offsets_.assign(std::move(boff));
  block_max_.assign(std::move(bmax));
  block_last_.assign(std::move(blast));
  term_max_.assign(std::move(tmax));
  nonocc_.assign(std::move(nonocc));
  df_.assign(std::move(df));
  dirty_.store(false);
}

std::vector<std::int64_t> SparseIndex::compact() {
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
  if (len.size() == n_docs_) return remap;  // nothing deleted
  std::vector<std::uint64_t> off(n_terms_ + 1, 0);
  std::vector<std::uint32_t> docs;
  std::vector<float> vals;
  docs.reserve(docs_.size());
  vals.reserve(docs_.size());
  for (std::uint64_t t = 0; t < n_terms_; ++t) {
    for (std::uint64_t j = offsets_[t]; j < offsets_[t + 1]; ++j) {
      const std::int64_t nd = remap[docs_[j]];
      if (nd < 0) continue;
      docs.push_back(static_cast<std::uint32_t>(nd));
      vals.push_back(values_[j]);
    }
    off[t + 1] = docs.size();
  }
  n_docs_ = len.size();
  std::vector<std::uint64_t> live(words_for(n_docs_), ~std::uint64_t{0});
  if (n_docs_ % 64) live.back() = (std::uint64_t{1} << (n_docs_ % 64)) - 1;
  doc_len_.assign(std::move(len));
  live_.assign(std::move(live));
  offsets_.assign(std::move(off));
  docs_.assign(std::move(docs));
  values_.assign(std::move(vals));
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
  s.n_postings = docs_.size();
  s.avgdl = n_live_ ? total_len_ / static_cast<double>(n_live_) : 0.0;
  s.total_len = total_len_;
  // Resident bytes of the arrays (views of a mapped file count as their size too).
  s.memory_bytes = doc_len_.size() * 4 + live_.size() * 8 + offsets_.size() * 8 +
                   docs_.size() * 4 + values_.size() * 4 + impacts_.size() * 4 +
                   block_offsets_.size() * 8 + block_max_.size() * 4 + block_last_.size() * 4 +
                   term_max_.size() * 4 + nonocc_.size() * 4 + df_.size() * 4;
  // The same with spare capacity.
  s.allocated_bytes = doc_len_.bytes() + live_.bytes() + offsets_.bytes() + docs_.bytes() +
                      values_.bytes() + impacts_.bytes() + block_offsets_.bytes() +
                      block_max_.bytes() + block_last_.bytes() + term_max_.bytes() +
                      nonocc_.bytes() + df_.bytes();
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
      {kMeta, 8, meta, sizeof meta},  sec(kDocLen, doc_len_),
      sec(kLive, live_),              sec(kOffsets, offsets_),
      sec(kDocs, docs_),              sec(kValues, values_),
      sec(kImpacts, impacts_),        sec(kBlockOffsets, block_offsets_),
      sec(kBlockMax, block_max_),     sec(kBlockLast, block_last_),
      sec(kTermMax, term_max_),       sec(kNonocc, nonocc_),
      sec(kDf, df_),                  {kExtra, 1, extra.data(), extra.size()}};
  write_sections(path, FileKind::SparseIndex, kFormatVersion, s);
}

std::unique_ptr<SparseIndex> SparseIndex::load(const std::string& path, bool use_mmap,
                                               std::string* extra) {
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
    ix = std::make_unique<SparseIndex>(static_cast<Scoring>(meta[0]), p);
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
  col(kDocs, ix->docs_);
  col(kValues, ix->values_);
  col(kImpacts, ix->impacts_);
  col(kBlockOffsets, ix->block_offsets_);
  col(kBlockMax, ix->block_max_);
  col(kBlockLast, ix->block_last_);
  col(kTermMax, ix->term_max_);
  col(kNonocc, ix->nonocc_);
  col(kDf, ix->df_);
  ix->check_invariants(path);
  if (extra) {
    std::uint64_t n = 0;
    const char* e = static_cast<const char*>(file->section(kExtra, 1, &n));
    extra->assign(e, n);
  }
  return ix;
}

// Structural checks of a loaded file, so that a damaged file whose checksum still matches
// can never make search read out of bounds.
void SparseIndex::check_invariants(const std::string& path) const {
  auto fail = [&](const std::string& what) {
    throw FormatError(path + " is corrupted (" + what + "); rebuild or restore the index");
  };
  const bool bm25 = scoring_ == Scoring::BM25;
  if (n_docs_ > kMaxDocs || n_terms_ > kMaxTerms || n_live_ > n_docs_) fail("bad counts");
  if (doc_len_.size() != n_docs_ || live_.size() != words_for(n_docs_)) fail("document arrays");
  if (offsets_.size() != n_terms_ + 1 || block_offsets_.size() != n_terms_ + 1 ||
      term_max_.size() != n_terms_ || df_.size() != n_terms_)
    fail("term arrays");
  if (offsets_[0] != 0 || block_offsets_[0] != 0) fail("offsets");
  const std::uint64_t P = docs_.size();
  if (values_.size() != P || impacts_.size() != (bm25 ? P : 0)) fail("posting arrays");
  const bool has_nonocc = bm25 && (params_.method == BM25Method::BM25L ||
                                   params_.method == BM25Method::BM25Plus);
  if (nonocc_.size() != (has_nonocc ? n_terms_ : 0)) fail("non-occurrence scores");
  std::uint64_t live = 0;
  for (std::uint64_t d = 0; d < n_docs_; ++d) live += (live_[d / 64] >> (d % 64)) & 1;
  if (live != n_live_) fail("live count");
  for (std::uint64_t t = 0; t < n_terms_; ++t) {
    const std::uint64_t a = offsets_[t], b = offsets_[t + 1];
    if (b < a || b > P) fail("posting offsets");
    if (block_offsets_[t + 1] - block_offsets_[t] != (b - a + kBlockSize - 1) / kBlockSize)
      fail("block offsets");
    for (std::uint64_t j = a; j < b; ++j)
      if (docs_[j] >= n_docs_ || (j > a && docs_[j] <= docs_[j - 1])) fail("posting order");
  }
  if (offsets_[n_terms_] != P) fail("posting count");
  const std::uint64_t nb = block_offsets_[n_terms_];
  if (block_max_.size() != nb || block_last_.size() != nb) fail("block arrays");
  // Block summaries must describe their postings exactly: search trusts them to skip.
  const float* imp = bm25 ? impacts_.data() : values_.data();
  for (std::uint64_t t = 0; t < n_terms_; ++t) {
    const std::uint64_t a = offsets_[t], b = offsets_[t + 1];
    float best = 0.0f;
    for (std::uint64_t blk = block_offsets_[t]; blk < block_offsets_[t + 1]; ++blk) {
      const std::uint64_t s = a + (blk - block_offsets_[t]) * kBlockSize;
      const std::uint64_t e = std::min<std::uint64_t>(b, s + kBlockSize);
      float m = 0.0f;
      for (std::uint64_t j = s; j < e; ++j) {
        if (!(imp[j] >= 0.0f && imp[j] <= std::numeric_limits<float>::max())) fail("impacts");
        m = std::max(m, imp[j]);
      }
      if (block_last_[blk] != docs_[e - 1] || block_max_[blk] != m) fail("block summaries");
      best = std::max(best, m);
    }
    if (term_max_[t] != best) fail("term maxima");
  }
}

}  // namespace fastrag
