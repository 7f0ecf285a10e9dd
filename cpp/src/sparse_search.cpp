// Exact top-k over the inverted index.
//
// Two algorithms give the same results (up to floating-point ties):
// - exhaustive: term-at-a-time accumulation into a per-thread score array, then top-k over
//   the touched documents; best for small collections and short lists;
// - block-max MaxScore (Turtle & Flood 1995; Ding & Suel 2011; Mallia et al. 2019): documents
//   at a time in id order; terms whose summed upper bounds cannot beat the current k-th score
//   are "non-essential" and only probed for candidates found in the essential lists; block
//   maxima bound a candidate before it is scored and let whole runs of documents be skipped.
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fastrag/parallel.hpp"
#include "fastrag/sparse_index.hpp"
#include "fastrag/topk.hpp"

namespace fastrag {
namespace {

constexpr std::uint32_t kEnd = std::numeric_limits<std::uint32_t>::max();

struct QueryTerm {
  std::uint32_t term;
  float weight;
};

// A posting list being walked; positions are absolute offsets into the posting arrays.
struct Cursor {
  const std::uint32_t* docs;
  const float* impacts;
  const float* block_max;    // of this term's first block
  const std::uint32_t* block_last;
  std::uint64_t begin, pos, end;
  std::uint64_t block, n_blocks;  // current block (relative)
  float weight, upper;
  std::uint32_t rank;  // position in the query's term order: scores are summed in this order

  std::uint32_t doc() const { return pos < end ? docs[pos] : kEnd; }
  float score() const { return weight * impacts[pos]; }
  void next() {
    ++pos;
    if (pos < end && docs[pos - 1] == block_last[block]) ++block;
  }
  // Moves the block to the first one whose last doc is >= d (without touching postings).
  void shallow_seek(std::uint32_t d) {
    while (block < n_blocks && block_last[block] < d) ++block;
  }
  float block_bound() const { return block < n_blocks ? weight * block_max[block] : 0.0f; }
  std::uint32_t block_end_doc() const { return block < n_blocks ? block_last[block] : kEnd; }
  // Moves to the first posting with doc >= d.
  void seek(std::uint32_t d) {
    if (doc() >= d) return;
    shallow_seek(d);
    if (block >= n_blocks) {
      pos = end;
      return;
    }
    const std::uint64_t bs = begin + block * SparseIndex::kBlockSize;
    const std::uint64_t be = std::min<std::uint64_t>(end, bs + SparseIndex::kBlockSize);
    pos = static_cast<std::uint64_t>(
        std::lower_bound(docs + std::max(pos, bs), docs + be, d) - docs);
  }
};

}  // namespace

struct SparseIndex::Scratch {
  TopK heap;
  std::vector<QueryTerm> terms;
  std::vector<Cursor> cursors;
  std::vector<double> prefix;
  std::vector<std::uint32_t> by_rank;  // cursor index of each query term
  std::vector<float> acc;
  std::vector<std::uint32_t> stamp;
  std::vector<std::uint32_t> touched;
  std::uint32_t epoch = 0;
  const std::uint64_t* live = nullptr;
};

SearchAlgorithm parse_algorithm(const std::string& s) {
  if (s == "auto") return SearchAlgorithm::Auto;
  if (s == "exhaustive") return SearchAlgorithm::Exhaustive;
  if (s == "maxscore") return SearchAlgorithm::MaxScore;
  throw std::invalid_argument("algorithm must be 'auto', 'exhaustive' or 'maxscore', got '" + s +
                              "'");
}

void SparseIndex::search(const QueryBatch& q, const SearchOptions& opt, std::int64_t* out_ids,
                         float* out_scores) const {
  for (std::size_t i = 0; i < q.n_queries; ++i)
    if (q.indptr[i + 1] < q.indptr[i]) throw std::invalid_argument("indptr must be non-decreasing");
  if (q.weights)
    for (std::int64_t j = q.indptr[0]; j < q.indptr[q.n_queries]; ++j)
      if (!(std::isfinite(q.weights[j]) && q.weights[j] >= 0))
        throw std::invalid_argument("query term weights must be finite and >= 0");
  ensure_committed();
  std::shared_lock<std::shared_mutex> lock(mutex_);
  // Threads start per call: only worth it when the batch has enough postings to walk
  // (about 64k postings, some tens of microseconds, per extra thread).
  std::uint64_t work = 0;
  for (std::int64_t j = q.indptr[0]; j < q.indptr[q.n_queries]; ++j)
    if (q.terms[j] < n_terms_) work += offsets_[q.terms[j] + 1] - offsets_[q.terms[j]];
  const std::size_t threads =
      std::min(resolve_threads(opt.threads, q.n_queries), std::size_t(work / 65536 + 1));
  parallel_for(q.n_queries, threads, [&](std::size_t qi, std::size_t) {
    // Per-thread scratch kept across calls: the caller's thread reuses its score array, so a
    // single query does not pay for allocating one per call.
    thread_local Scratch scratch;
    search_one(q, qi, opt, scratch, out_ids + qi * opt.k, out_scores + qi * opt.k);
  });
}

void SparseIndex::search_one(const QueryBatch& q, std::size_t qi, const SearchOptions& opt,
                             Scratch& s, std::int64_t* ids, float* scores) const {
  // Gather the query's known terms with positive weight; fold repeats.
  s.terms.clear();
  for (std::int64_t j = q.indptr[qi]; j < q.indptr[qi + 1]; ++j) {
    const float w = q.weights ? q.weights[j] : 1.0f;
    if (q.terms[j] < n_terms_ && w > 0) s.terms.push_back({q.terms[j], w});
  }
  std::sort(s.terms.begin(), s.terms.end(),
            [](const QueryTerm& a, const QueryTerm& b) { return a.term < b.term; });
  std::size_t m = 0;
  double constant = 0;  // BM25L / BM25+: what every document gets for absent terms
  for (std::size_t i = 0; i < s.terms.size(); ++i) {
    if (!nonocc_.empty()) constant += double(s.terms[i].weight) * nonocc_[s.terms[i].term];
    if (m > 0 && s.terms[m - 1].term == s.terms[i].term)
      s.terms[m - 1].weight += s.terms[i].weight;
    else
      s.terms[m++] = s.terms[i];
  }
  s.terms.resize(m);

  const float* imp = scoring_ == Scoring::BM25 ? impacts_.data() : values_.data();
  s.cursors.clear();
  std::uint64_t total = 0;
  for (const auto& qt : s.terms) {
    const std::uint64_t a = offsets_[qt.term], b = offsets_[qt.term + 1];
    if (a == b) continue;
    const std::uint64_t b0 = block_offsets_[qt.term];
    s.cursors.push_back({docs_.data(), imp, block_max_.data() + b0, block_last_.data() + b0, a, a,
                         b, 0, block_offsets_[qt.term + 1] - b0, qt.weight,
                         qt.weight * term_max_[qt.term],
                         static_cast<std::uint32_t>(s.cursors.size())});
    total += b - a;
  }
  s.heap.reset(opt.k);
  s.live = live_.data();
  if (!s.cursors.empty() && opt.k > 0) {
    SearchAlgorithm algo = opt.algorithm;
    if (algo == SearchAlgorithm::Auto)
      // Accumulating is cheaper on collections up to a few hundred thousand documents (the
      // score array stays in cache), for short lists, and for deep k, where the threshold
      // rises too slowly to prune much. Measured on Zipfian corpora of 0.1M, 0.3M and 1M
      // documents: MaxScore wins by 2x at 1M for lists over 20k postings, loses below 0.3M.
      // Learned impacts (SPLADE-like, 1M documents, 20-term queries) leave MaxScore almost
      // nothing to skip: accumulating ran 308 q/s against 13, so impact scoring accumulates.
      algo = (scoring_ == Scoring::Impact || n_docs_ <= 400000 ||
              total <= 20000 || (total + 999) / 1000 <= opt.k)  // total <= 1000 k
                 ? SearchAlgorithm::Exhaustive
                 : SearchAlgorithm::MaxScore;
    if (algo == SearchAlgorithm::Exhaustive)
      search_exhaustive(s, opt);
    else
      search_maxscore(s, opt);
  }
  s.heap.drain(ids, scores);
  if (constant != 0)
    for (std::size_t i = 0; i < opt.k && ids[i] >= 0; ++i)
      scores[i] = static_cast<float>(scores[i] + constant);
}

namespace {
// Whether any of 16 scores is >= floor: four SSE compares on x86-64 (SSE2 is part of the
// base instruction set), a plain loop elsewhere.
inline bool any_at_least(const float* x, float floor) {
#if defined(__SSE2__)
  const __m128 f = _mm_set1_ps(floor);
  const __m128 m = _mm_or_ps(
      _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(x), f), _mm_cmpge_ps(_mm_loadu_ps(x + 4), f)),
      _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(x + 8), f), _mm_cmpge_ps(_mm_loadu_ps(x + 12), f)));
  return _mm_movemask_ps(m) != 0;
#else
  bool any = false;
  for (int i = 0; i < 16; ++i) any |= x[i] >= floor;
  return any;
#endif
}

inline bool allowed(const std::uint64_t* live, const SearchOptions& opt, std::uint32_t d) {
  const std::uint64_t bit = std::uint64_t{1} << (d % 64);
  if (!(live[d / 64] & bit)) return false;
  return !opt.allow || (d / 64 < opt.allow_words && (opt.allow[d / 64] & bit));
}
}  // namespace

void SparseIndex::search_exhaustive(Scratch& s, const SearchOptions& opt) const {
  if (s.acc.size() < n_docs_) {
    s.acc.assign(n_docs_, 0.0f);
    s.stamp.assign(n_docs_, 0);
    s.epoch = 0;
  }
  float* acc = s.acc.data();
  const std::uint64_t* live = s.live;
  TopK& heap = s.heap;
  std::uint64_t total = 0;
  for (const Cursor& c : s.cursors) total += c.end - c.begin;

  if (total * 4 >= n_docs_) {
    // Dense: the lists cover a good part of the collection, so clearing and scanning the
    // whole score array costs less than tracking which documents were touched.
    std::fill(acc, acc + n_docs_, 0.0f);
    for (const Cursor& c : s.cursors) {
      const float w = c.weight;
      for (std::uint64_t j = c.begin; j < c.end; ++j) acc[c.docs[j]] += w * c.impacts[j];
    }
    // Scan 16 scores at a time: one vectorised test finds the rare blocks that hold a
    // candidate. Only positive scores enter; ties are left to the heap's order.
    float floor = std::numeric_limits<float>::denorm_min();
    constexpr std::uint32_t kChunk = 16;
    const auto n = static_cast<std::uint32_t>(n_docs_);
    for (std::uint32_t d0 = 0; d0 < n; d0 += kChunk) {
      const std::uint32_t d1 = std::min(n, d0 + kChunk);
      if (d1 - d0 == kChunk && !any_at_least(acc + d0, floor)) continue;
      for (std::uint32_t d = d0; d < d1; ++d) {
        if (acc[d] >= floor && allowed(live, opt, d)) {
          heap.push(acc[d], d);
          if (heap.full()) floor = std::max(floor, heap.threshold());
        }
      }
    }
    return;
  }

  // Sparse: stamps mark the documents this query touched.
  if (++s.epoch == 0) {  // stamps wrapped around: clear them
    std::fill(s.stamp.begin(), s.stamp.end(), 0);
    s.epoch = 1;
  }
  s.touched.clear();
  std::uint32_t* stamp = s.stamp.data();
  const std::uint32_t epoch = s.epoch;
  for (const Cursor& c : s.cursors) {
    for (std::uint64_t j = c.begin; j < c.end; ++j) {
      const std::uint32_t d = c.docs[j];
      const float v = c.weight * c.impacts[j];
      if (stamp[d] != epoch) {
        stamp[d] = epoch;
        acc[d] = v;
        s.touched.push_back(d);
      } else {
        acc[d] += v;
      }
    }
  }
  float floor = std::numeric_limits<float>::denorm_min();
  for (std::uint32_t d : s.touched) {
    if (acc[d] >= floor && allowed(live, opt, d)) {
      heap.push(acc[d], d);
      if (heap.full()) floor = std::max(floor, heap.threshold());
    }
  }
}

void SparseIndex::search_maxscore(Scratch& s, const SearchOptions& opt) const {
  auto& cur = s.cursors;
  const std::size_t n = cur.size();
  // Ascending upper bounds; prefix[i] = sum of the bounds of cursors 0..i.
  std::sort(cur.begin(), cur.end(),
            [](const Cursor& a, const Cursor& b) { return a.upper < b.upper; });
  s.prefix.resize(n);
  double run = 0;
  for (std::size_t i = 0; i < n; ++i) s.prefix[i] = run += cur[i].upper;
  s.by_rank.resize(n);
  for (std::size_t i = 0; i < n; ++i) s.by_rank[cur[i].rank] = static_cast<std::uint32_t>(i);
  const std::uint32_t* by_rank = s.by_rank.data();
  const std::uint64_t* live = s.live;
  TopK& heap = s.heap;
  // Bounds are summed in double, final scores in float in the query's term order; the slack
  // covers float rounding, so pruning never drops a document that would enter.
  const double slack = 1.0 + 2.5e-7 * static_cast<double>(n + 1);
  double theta = -std::numeric_limits<double>::infinity();
  auto hopeless = [&](double bound) { return bound * slack <= theta; };
  std::size_t first_ess = 0;  // cursors [first_ess, n) are essential

  while (true) {
    // Smallest document in the essential lists.
    std::uint32_t d = kEnd;
    for (std::size_t i = first_ess; i < n; ++i) d = std::min(d, cur[i].doc());
    if (d == kEnd) break;

    if (heap.full()) {
      // Block-max bound of every document from d up to the nearest block end.
      double bound = first_ess > 0 ? s.prefix[first_ess - 1] : 0.0;
      std::uint32_t skip_to = kEnd;
      for (std::size_t i = first_ess; i < n; ++i) {
        cur[i].shallow_seek(d);
        bound += cur[i].block_bound();
        skip_to = std::min(skip_to, cur[i].block_end_doc());
      }
      if (hopeless(bound)) {
        if (skip_to == kEnd) break;
        for (std::size_t i = first_ess; i < n; ++i) cur[i].seek(skip_to + 1);
        continue;
      }
    }
    if (!allowed(live, opt, d)) {
      for (std::size_t i = first_ess; i < n; ++i)
        if (cur[i].doc() == d) cur[i].next();
      continue;
    }
    double score = 0;
    for (std::size_t i = first_ess; i < n; ++i)
      if (cur[i].doc() == d) score += cur[i].score();
    bool survives = true;
    if (first_ess > 0 && heap.full()) {
      // Non-essential lists: first a bound from their blocks (a block that starts after d
      // cannot hold it), then probes, largest first, while they can still lift d above theta.
      double bound = score;
      for (std::size_t i = 0; i < first_ess; ++i) {
        cur[i].shallow_seek(d);
        if (cur[i].block < cur[i].n_blocks &&
            cur[i].docs[cur[i].begin + cur[i].block * kBlockSize] <= d)
          bound += cur[i].block_bound();
      }
      survives = !hopeless(bound);
    }
    for (std::size_t i = first_ess; survives && i-- > 0;) {
      if (heap.full() && hopeless(score + s.prefix[i])) {
        survives = false;
        break;
      }
      cur[i].seek(d);
      if (cur[i].doc() == d) score += cur[i].score();
    }
    if (survives) {
      // Every list now stands at d or past it: the final score is summed in the query's
      // term order, exactly as the exhaustive accumulation does.
      float fs = 0.0f;
      for (std::size_t r = 0; r < n; ++r) {
        const Cursor& c = cur[by_rank[r]];
        if (c.doc() == d) fs += c.score();
      }
      if (fs > 0.0f) {
        heap.push(fs, d);
        if (heap.full()) {
          theta = heap.threshold();
          while (first_ess < n && hopeless(s.prefix[first_ess])) ++first_ess;
        }
      }
    }
    for (std::size_t i = first_ess; i < n; ++i)
      if (cur[i].doc() == d) cur[i].next();
  }
}

}  // namespace fastrag
