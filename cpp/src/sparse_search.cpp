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
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fastrag/parallel.hpp"
#include "fastrag/sparse_index.hpp"
#include "fastrag/topk.hpp"
#include "sparse_codec.hpp"

namespace fastrag {
namespace {

constexpr std::uint32_t kEnd = std::numeric_limits<std::uint32_t>::max();

struct QueryTerm {
  std::uint32_t term;
  float weight;
};

// A posting list being walked. Blocks are decoded one at a time into the cursor's buffers
// (document ids, and tfs for BM25); a BM25 impact is computed only when a posting is scored.
struct Cursor {
  static constexpr std::uint32_t B = SparseIndex::kBlockSize;
  // This term's block arrays (first block at index 0).
  const std::uint8_t* packed;
  const std::uint64_t* block_data;
  const std::uint16_t* block_bits;
  const std::uint32_t* block_last;
  const std::uint32_t* block_first;
  const float* block_max;
  const float* values;  // impact scoring: this term's weights; null for BM25
  const std::uint32_t* raw_docs;  // this term's documents, decoded (small indexes) or null
  const codec::Bm25View* bm25;  // BM25: lengths and tables
  // BM25, long lists in exhaustive search: this term's impacts by tf and length (the same
  // layout as bm25->tfc), filled for the query; null otherwise.
  const float* ftable;
  float (*impact)(const Cursor&, std::size_t);  // impact of posting i of the decoded block
  // BM25 without the cache: impacts of postings [i, j) of the decoded block into imps.
  void (*impacts)(Cursor&, std::size_t, std::size_t);
  double idf, base;
  std::uint64_t len;              // postings
  std::uint64_t block, n_blocks;  // block for bounds (moved by shallow_seek)
  std::uint64_t dblock;           // decoded block (<= block)
  std::uint32_t pos, n;           // position in the decoded block, its length
  bool tfs_ready;                 // tfs of the decoded block decoded
  std::uint32_t imp_lo;           // imps[imp_lo, n) hold the decoded block's impacts
  float weight, upper;
  std::uint32_t rank;  // position in the query's term order: scores are summed in this order
  std::uint32_t docs[B];
  std::uint32_t tfs[B];
  float imps[B];

  std::size_t block_len(std::uint64_t b) const {
    return static_cast<std::size_t>(std::min<std::uint64_t>(B, len - b * B));
  }
  // Decodes block b (< n_blocks) into d (documents) and t (tfs - 1; BM25 only).
  std::size_t decode(std::uint64_t b, std::uint32_t* d, std::uint32_t* t) const {
    const std::size_t m = block_len(b);
    const std::uint8_t* p = packed + block_data[b];
    const unsigned db = codec::doc_bits(block_bits[b]);
    codec::unpack_block(p, m, db, d);
    codec::gaps_to_docs(d, m, b == 0 ? 0xffffffffu : block_last[b - 1]);
    if (!values) codec::unpack_block(p + codec::packed_bytes(m, db), m, codec::tf_bits(block_bits[b]), t);
    return m;
  }
  // Decodes block b's documents; its tfs wait for the first posting scored (see score()).
  void load(std::uint64_t b) {
    dblock = b;
    pos = 0;
    tfs_ready = values != nullptr;
    if (b >= n_blocks) {
      n = imp_lo = 0;
      return;
    }
    n = static_cast<std::uint32_t>(block_len(b));
    imp_lo = n;
    const unsigned db = codec::doc_bits(block_bits[b]);
    codec::unpack_block(packed + block_data[b], n, db, docs);
    codec::gaps_to_docs(docs, n, b == 0 ? 0xffffffffu : block_last[b - 1]);
  }
  void load_tfs() {
    const unsigned db = codec::doc_bits(block_bits[dblock]);
    codec::unpack_block(packed + block_data[dblock] + codec::packed_bytes(n, db), n,
                  codec::tf_bits(block_bits[dblock]), tfs);
    tfs_ready = true;
  }
  void start() {
    block = 0;
    load(0);
  }
  std::uint32_t doc() const { return pos < n ? docs[pos] : kEnd; }
  // The current posting's score (a probe: a BM25 impact is computed for it alone unless the
  // block's impacts are at hand).
  float score() {
    if (!tfs_ready) load_tfs();
    if (pos >= imp_lo) return weight * imps[pos];
    return weight * impact(*this, pos);
  }
  // The same for a list walked posting by posting: without the cache, the impacts of the rest
  // of the block are computed at once (their documents' length codes gathered together).
  float score_run() {
    if (values) return weight * values[dblock * B + pos];
    if (!tfs_ready) load_tfs();
    if (pos < imp_lo) {
      impacts(*this, pos, imp_lo);
      imp_lo = pos;
    }
    return weight * imps[pos];
  }
  void next() {
    if (++pos == n) load(dblock + 1);
    if (block < dblock) block = dblock;
  }
  // Moves the block to the first one whose last doc is >= d (without decoding postings).
  void shallow_seek(std::uint32_t d) {
    while (block < n_blocks && block_last[block] < d) ++block;
  }
  float block_bound() const { return block < n_blocks ? weight * block_max[block] : 0.0f; }
  std::uint32_t block_end_doc() const { return block < n_blocks ? block_last[block] : kEnd; }
  // First document of the bounds block.
  std::uint32_t block_first_doc() const { return block_first[block]; }
  // Moves to the first posting with doc >= d.
  void seek(std::uint32_t d) {
    if (doc() >= d) return;
    shallow_seek(d);
    if (block >= n_blocks) {
      load(n_blocks);
      return;
    }
    if (block != dblock) load(block);
    pos = static_cast<std::uint32_t>(std::lower_bound(docs + pos, docs + n, d) - docs);
  }
};

// Length codes of the view: std::uint8_t or std::uint16_t.
template <class C>
const C* codes_of(const codec::Bm25View& v) {
  if constexpr (std::is_same_v<C, std::uint8_t>)
    return v.code8;
  else
    return v.code16;
}

template <BM25Method M, class C>
float bm25_at(const Cursor& c, std::size_t i) {
  return codec::bm25_impact_coded<M>(*c.bm25, codes_of<C>(*c.bm25), c.idf, c.base, c.tfs[i],
                                     c.docs[i]);
}
float value_at(const Cursor& c, std::size_t i) { return c.values[c.dblock * Cursor::B + i]; }

template <BM25Method M, class C>
void bm25_run(Cursor& c, std::size_t i, std::size_t j) {
  codec::bm25_impacts_coded<M>(*c.bm25, codes_of<C>(*c.bm25), c.idf, c.base, c.docs + i,
                               c.tfs + i, j - i, c.imps + i);
}

// Calls f(C{}) with the view's length-code type.
template <class F>
decltype(auto) with_codes(const codec::Bm25View& v, F&& f) {
  if (v.code8) return f(std::uint8_t{});
  return f(std::uint16_t{});
}

// Every posting of a list, in order: sink(doc, weight * impact), decoded block by block with
// the impact computed in the same pass (BM25: looked up in the list's table when it has one).
// One fused loop: on collections searched exhaustively the lengths mostly sit in cache, and
// separate gather, score and sink passes measured slower there (0.7x at 100k documents).
// On larger ones, the short lists searched exhaustively there (auto) touch one document
// every few hundred: their length codes and what the sink touches for them (prefetch(doc))
// are prefetched kAhead postings ahead. Dense lists are not (their documents share cache
// lines; prefetching measured slower).
struct NoPrefetch {
  void operator()(std::uint32_t) const {}
};

template <BM25Method M, class C, class Sink, class Prefetch>
void walk_bm25(const Cursor& c, Sink&& sink, Prefetch&& prefetch, std::uint64_t n_docs) {
  constexpr bool kPrefetch = !std::is_same_v<std::decay_t<Prefetch>, NoPrefetch>;
  if constexpr (kPrefetch) {
    if (c.len * 64 >= n_docs) {
      walk_bm25<M, C>(c, sink, NoPrefetch{}, n_docs);
      return;
    }
  }
  constexpr std::size_t kAhead = 8;
  std::uint32_t gaps[Cursor::B], tfs[Cursor::B];
  const codec::Bm25View& v = *c.bm25;
  const C* code = codes_of<C>(v);
  const std::uint32_t nt = v.n_table, lim = v.code_lim;
  const float* ft = c.ftable;
  const float w = c.weight;
  const double idf = c.idf, base = c.base;
  for (std::uint64_t b = 0; b < c.n_blocks; ++b) {
    const std::size_t m = c.block_len(b);
    const std::uint8_t* p = c.packed + c.block_data[b];
    const unsigned db = codec::doc_bits(c.block_bits[b]);
    codec::unpack_block(p, m, db, gaps);
    codec::unpack_block(p + codec::packed_bytes(m, db), m, codec::tf_bits(c.block_bits[b]), tfs);
    std::uint32_t d = b == 0 ? 0xffffffffu : c.block_last[b - 1];
    std::uint32_t ahead = d;  // the document kAhead postings past d
    const std::size_t lead = std::min(kAhead, m);
    for (std::size_t i = 0; kPrefetch && i < lead; ++i) {
      ahead += gaps[i] + 1;
      prefetch(ahead);
      __builtin_prefetch(code + ahead);
    }
    const auto look_ahead = [&](std::size_t i) {  // keeps `ahead` kAhead postings past d
      if (kPrefetch && i + kAhead < m) {
        ahead += gaps[i + kAhead] + 1;
        prefetch(ahead);
        __builtin_prefetch(code + ahead);
      }
    };
    if (ft) {
      for (std::size_t i = 0; i < m; ++i) {
        d += gaps[i] + 1;
        look_ahead(i);
        const std::uint32_t cd = code[d], t = tfs[i];
        const float imp = cd < lim && t < codec::kTableTf
                              ? ft[t * nt + cd]
                              : codec::bm25_impact<M>(v, idf, base, t, d);
        sink(d, w * imp);
      }
    } else {
      for (std::size_t i = 0; i < m; ++i) {
        d += gaps[i] + 1;
        look_ahead(i);
        sink(d, w * codec::bm25_impact_coded<M>(v, code, idf, base, tfs[i], d));
      }
    }
  }
}

template <class Sink>
void walk_values(const Cursor& c, Sink&& sink) {
  const float w = c.weight;
  const float* val = c.values;
  if (const std::uint32_t* docs = c.raw_docs) {
    for (std::uint64_t i = 0; i < c.len; ++i) sink(docs[i], w * val[i]);
    return;
  }
  std::uint32_t gaps[Cursor::B];
  for (std::uint64_t b = 0; b < c.n_blocks; ++b, val += Cursor::B) {
    const std::size_t m = c.block_len(b);
    codec::unpack_block(c.packed + c.block_data[b], m, codec::doc_bits(c.block_bits[b]), gaps);
    std::uint32_t d = b == 0 ? 0xffffffffu : c.block_last[b - 1];
    for (std::size_t i = 0; i < m; ++i) {
      d += gaps[i] + 1;
      sink(d, w * val[i]);
    }
  }
}

}  // namespace

struct SparseIndex::Scratch {
  TopK heap;
  std::vector<QueryTerm> terms;
  std::vector<Cursor> cursors;  // the first n_cursors are this query's
  std::size_t n_cursors = 0;
  std::vector<std::uint32_t> order;
  std::vector<Cursor*> sorted;
  codec::Bm25View bm25{};
  std::vector<float> ftables;
  std::vector<double> prefix;
  std::vector<std::uint32_t> by_rank;  // cursor index of each query term
  std::vector<float> acc;  // dense accumulation: a score per document
  // Sparse accumulation: a stamp and a score per document side by side (one cache line).
  struct Slot {
    std::uint32_t stamp;
    float score;
  };
  std::vector<Slot> slots;
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

  const bool bm25 = scoring_ == Scoring::BM25;
  const bool cached = bm25 && !impacts_.empty();  // BM25 impacts read, not computed
  const float* stored = bm25 ? impacts_.data() : values_.data();
  s.bm25 = {doc_len_.data(), len_tfc_.data(), n_table_, params_.k1, params_.delta, avgdl_,
            params_.b, len_code8_.empty() ? nullptr : len_code8_.data(),
            len_code16_.empty() ? nullptr : len_code16_.data(), code_lim_};
  float (*impact)(const Cursor&, std::size_t) = value_at;
  void (*impacts)(Cursor&, std::size_t, std::size_t) = nullptr;
  if (bm25 && !cached)
    codec::with_method(params_.method, [&](auto tag) {
      constexpr BM25Method M = decltype(tag)::value;
      with_codes(s.bm25, [&](auto code) {
        using C = decltype(code);
        impact = bm25_at<M, C>;
        impacts = bm25_run<M, C>;
      });
    });
  if (s.cursors.size() < s.terms.size()) s.cursors.resize(s.terms.size());
  std::size_t nc = 0;
  std::uint64_t total = 0;
  for (const auto& qt : s.terms) {
    const std::uint64_t a = offsets_[qt.term], b = offsets_[qt.term + 1];
    if (a == b) continue;
    const std::uint64_t b0 = block_offsets_[qt.term];
    Cursor& c = s.cursors[nc];
    c.packed = packed_.data();
    c.block_data = block_data_.data() + b0;
    c.block_bits = block_bits_.data() + b0;
    c.block_last = block_last_.data() + b0;
    c.block_first = block_first_.data() + b0;
    c.block_max = block_max_.data() + b0;
    c.values = bm25 && !cached ? nullptr : stored + a;
    c.raw_docs = c.values && !doc_cache_.empty() ? doc_cache_.data() + a : nullptr;
    c.bm25 = &s.bm25;
    c.ftable = nullptr;
    c.impact = impact;
    c.impacts = impacts;
    c.idf = bm25 ? idf_[qt.term] : 0.0;
    c.base = base_.empty() ? 0.0 : base_[qt.term];
    c.len = b - a;
    c.n_blocks = block_offsets_[qt.term + 1] - b0;
    c.weight = qt.weight;
    c.upper = qt.weight * term_max_[qt.term];
    c.rank = static_cast<std::uint32_t>(nc);
    ++nc;
    total += b - a;
  }
  s.n_cursors = nc;
  s.heap.reset(opt.k);
  s.live = live_.data();
  if (nc > 0 && opt.k > 0) {
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
  const std::uint64_t* live = s.live;
  TopK& heap = s.heap;
  const Cursor* cursors = s.cursors.data();
  const std::size_t nc = s.n_cursors;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < nc; ++i) total += cursors[i].len;
  // The query's lists in its term order, each posting handed to a sink.
  auto walk_all = [&](Scratch& sc, auto&& sink, auto&& prefetch) {
    if (scoring_ != Scoring::BM25 || cursors[0].values) {
      for (std::size_t ci = 0; ci < nc; ++ci) walk_values(sc.cursors[ci], sink);
      return;
    }
    codec::with_method(params_.method, [&](auto tag) {
      constexpr BM25Method M = decltype(tag)::value;
      with_codes(sc.bm25, [&](auto code) {
        for (std::size_t ci = 0; ci < nc; ++ci)
          walk_bm25<M, decltype(code)>(sc.cursors[ci], sink, prefetch, n_docs_);
      });
    });
  };
  if (scoring_ == Scoring::BM25 && !cursors[0].values) {
    // A list much longer than the table of its impacts by tf and length: fill that table once
    // (the same expression per entry as per posting, so the same bits) and look impacts up.
    const std::size_t entries = std::size_t{codec::kTableTf} * n_table_;
    std::size_t need = 0;
    for (std::size_t i = 0; i < nc; ++i)
      if (cursors[i].len >= 4 * entries) need += entries;
    s.ftables.resize(std::max(s.ftables.size(), need));
    float* ft = s.ftables.data();
    for (std::size_t i = 0; i < nc; ++i) {
      Cursor& c = s.cursors[i];
      c.ftable = nullptr;
      if (c.len < 4 * entries) continue;
      for (std::size_t e = 0; e < entries; ++e) ft[e] = codec::bm25_from_tfc(c.idf, c.base, len_tfc_[e]);
      c.ftable = ft;
      ft += entries;
    }
  }

  if (total * 4 >= n_docs_) {
    // Dense: the lists cover a good part of the collection, so clearing and scanning the
    // whole score array costs less than tracking which documents were touched.
    if (s.acc.size() < n_docs_) s.acc.resize(n_docs_);
    float* acc = s.acc.data();
    std::fill(acc, acc + n_docs_, 0.0f);
    walk_all(
        s, [acc](std::uint32_t d, float v) { acc[d] += v; }, NoPrefetch{});
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
  if (s.slots.size() < n_docs_) {
    s.slots.assign(n_docs_, {0, 0.0f});
    s.epoch = 0;
  }
  if (++s.epoch == 0) {  // stamps wrapped around: clear them
    std::fill(s.slots.begin(), s.slots.end(), Scratch::Slot{0, 0.0f});
    s.epoch = 1;
  }
  s.touched.clear();
  Scratch::Slot* slots = s.slots.data();
  const std::uint32_t epoch = s.epoch;
  std::vector<std::uint32_t>& touched = s.touched;
  walk_all(s, [&](std::uint32_t d, float v) {
    Scratch::Slot& sl = slots[d];
    if (sl.stamp != epoch) {
      sl.stamp = epoch;
      sl.score = v;
      touched.push_back(d);
    } else {
      sl.score += v;
    }
  }, [slots](std::uint32_t d) { __builtin_prefetch(slots + d, 1); });
  float floor = std::numeric_limits<float>::denorm_min();
  for (std::uint32_t d : s.touched) {
    const float sc = slots[d].score;
    if (sc >= floor && allowed(live, opt, d)) {
      heap.push(sc, d);
      if (heap.full()) floor = std::max(floor, heap.threshold());
    }
  }
}

void SparseIndex::search_maxscore(Scratch& s, const SearchOptions& opt) const {
  const std::size_t n = s.n_cursors;
  // Ascending upper bounds; prefix[i] = sum of the bounds of cursors 0..i. Cursors are large
  // (their block buffers): sorted through their order.
  s.order.resize(n);
  for (std::size_t i = 0; i < n; ++i) s.order[i] = static_cast<std::uint32_t>(i);
  std::stable_sort(s.order.begin(), s.order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return s.cursors[a].upper < s.cursors[b].upper;
  });
  s.sorted.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    s.sorted[i] = &s.cursors[s.order[i]];
    s.sorted[i]->start();
  }
  Cursor* const* cur_ptrs = s.sorted.data();
  struct Ref {
    Cursor* const* p;
    Cursor& operator[](std::size_t i) const { return *p[i]; }
  } cur{cur_ptrs};
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
  // The essential lists' block-max bound holds for every document up to region_end (the
  // nearest end of their current blocks): computed once per region, not per candidate.
  // region_first: the first_ess it was computed for (n + 1: none).
  double region_bound = 0;
  std::uint32_t region_end = 0;
  std::size_t region_first = n + 1;

  while (true) {
    // Smallest document in the essential lists.
    std::uint32_t d = kEnd;
    for (std::size_t i = first_ess; i < n; ++i) d = std::min(d, cur[i].doc());
    if (d == kEnd) break;

    if (heap.full()) {
      // Block-max bound of every document from d up to the nearest block end. Within a
      // region no essential cursor's bounds block moves, except one whose postings all lie
      // past the region (its current block's bound stays a valid bound there).
      if (region_first != first_ess || d > region_end) {
        double bound = first_ess > 0 ? s.prefix[first_ess - 1] : 0.0;
        std::uint32_t skip_to = kEnd;
        for (std::size_t i = first_ess; i < n; ++i) {
          cur[i].shallow_seek(d);
          bound += cur[i].block_bound();
          skip_to = std::min(skip_to, cur[i].block_end_doc());
        }
        region_bound = bound;
        region_end = skip_to;
        region_first = first_ess;
      }
      const double bound = region_bound;
      const std::uint32_t skip_to = region_end;
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
      if (cur[i].doc() == d) score += cur[i].score_run();
    bool survives = true;
    if (first_ess > 0 && heap.full()) {
      // Non-essential lists: first a bound from their blocks (a block that starts after d
      // cannot hold it), then probes, largest first, while they can still lift d above theta.
      double bound = score;
      for (std::size_t i = 0; i < first_ess; ++i) {
        cur[i].shallow_seek(d);
        if (cur[i].block < cur[i].n_blocks && cur[i].block_first_doc() <= d)
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
        Cursor& c = cur[by_rank[r]];
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
