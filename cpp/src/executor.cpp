// The query executor (see executor.hpp): legs -> fusion -> documents -> top-k, deepening.
#include "fastrag/executor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "fastrag/parallel.hpp"

namespace fastrag {

Fusion parse_fusion(const std::string& name) {
  if (name == "rrf") return Fusion::RRF;
  if (name == "minmax" || name == "convex") return Fusion::MinMax;
  if (name == "zscore") return Fusion::ZScore;
  if (name == "dbsf") return Fusion::DBSF;
  throw std::invalid_argument("fusion must be 'rrf', 'minmax' ('convex'), 'zscore' or 'dbsf', got '" +
                              name + "'");
}

Aggregate parse_aggregate(const std::string& name) {
  if (name == "max") return Aggregate::Max;
  if (name == "sum") return Aggregate::Sum;
  throw std::invalid_argument("aggregate must be 'max' or 'sum', got '" + name + "'");
}

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
// A thread's kept working space holds at most about this many fused chunks (a few hundred KB).
constexpr std::size_t kKeepEntries = std::size_t{1} << 14;

// numpy's float64 add.reduce over a contiguous array (pairwise_sum in numpy's loops): eight
// accumulators up to 128 values, halves (rounded to a multiple of 8) above. Means and standard
// deviations summed this way equal numpy's to the bit, so that fused scores equal fusion.py's.
double pairwise_sum(const double* a, std::size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (std::size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    std::size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// numpy's mean and std (ddof as given) of s[0:n]; tmp is scratch.
void mean_std(const double* s, std::size_t n, int ddof, std::vector<double>& tmp, double* mean,
              double* std_out) {
  const double m = pairwise_sum(s, n) / static_cast<double>(n);
  tmp.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double x = s[i] - m;
    tmp[i] = x * x;
  }
  *mean = m;
  *std_out = std::sqrt(pairwise_sum(tmp.data(), n) / static_cast<double>(n - ddof));
}

// Open addressing from uint32 keys (never 0xFFFFFFFF) to uint32 values, sized up front.
class IdTable {
 public:
  void reset(std::size_t expected) {
    std::size_t cap = 16;
    shift_ = 60;
    while (cap < 2 * expected) {
      cap *= 2;
      --shift_;
    }
    keys_.assign(cap, kEmpty);
    values_.resize(cap);
    mask_ = cap - 1;
  }
  // The value of `key`, inserting `value` if absent (then *inserted is true).
  std::uint32_t get_or_insert(std::uint32_t key, std::uint32_t value, bool* inserted) {
    // Fibonacci hashing: the top bits of the product, so that strided keys spread too.
    std::size_t h = static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
    while (true) {
      if (keys_[h] == key) {
        *inserted = false;
        return values_[h];
      }
      if (keys_[h] == kEmpty) {
        keys_[h] = key;
        values_[h] = value;
        *inserted = true;
        return value;
      }
      h = (h + 1) & mask_;
    }
  }

 private:
  static constexpr std::uint32_t kEmpty = 0xFFFFFFFFu;
  std::vector<std::uint32_t> keys_, values_;
  std::size_t mask_ = 0;
  int shift_ = 60;
};

struct DocAgg {
  std::uint32_t doc;
  std::uint32_t best;  // fused entry of its best (first in fused order) chunk
  double best_score;
  double total;
  double score;  // the one ranked: best_score or total
};

// One thread's working space, reused across its queries.
struct Scratch {
  std::vector<std::vector<std::int64_t>> raw_ids;   // per leg: the search's output
  std::vector<std::vector<float>> raw_scores;
  std::vector<std::size_t> returned;                // per leg: results before padding
  std::vector<std::size_t> depth;
  std::vector<char> exhausted;
  // Per leg, its deduplicated ranking: fused entry and score of each position.
  std::vector<std::vector<std::uint32_t>> rank_entry;
  std::vector<std::vector<double>> rank_score;
  // Fused entries (one per chunk, in first-appearance order).
  IdTable chunk_table;
  std::vector<std::uint32_t> entry_chunk;
  std::vector<std::int32_t> entry_pos;  // entries x legs: position in the leg's ranking, -1
  std::vector<double> entry_score;
  std::vector<std::uint32_t> order;       // entries in fused order
  std::vector<std::uint32_t> fused_rank;  // entry -> 1-based rank in `order`
  std::vector<std::vector<double>> value;  // per leg: normalised value at each position
  std::vector<double> tmp;
  IdTable doc_table;
  std::vector<DocAgg> docs;
  std::vector<std::uint32_t> doc_order;
};

std::size_t leg_size(const Leg& leg) {
  return leg.sparse ? static_cast<std::size_t>(leg.sparse->stats().n_docs) : leg.dense->size();
}

class Runner {
 public:
  Runner(const std::vector<Leg>& legs, const ExecuteOptions& opt, const ExecuteOutput& out)
      : legs_(legs), opt_(opt), out_(out), L_(legs.size()) {
    sizes_.resize(L_);
    for (std::size_t l = 0; l < L_; ++l) {
      sizes_[l] = leg_size(legs[l]);
      if (legs[l].weight > 0) active_.push_back(l);
    }
    // One exact (sparse) leg ranked by its best chunk: the k documents are the first k
    // distinct ones of the leg's ranking, and a sparse top-d is a prefix of its top-2d (ties
    // go to the lower id), so chunks past the k-th are read only when the first k hold
    // fewer than k documents (the deepening below). A fusion needs the whole depth (ranks
    // and normalisation over it), a sum every chunk of a document, the rerank stages the
    // fused list, and an HNSW walk's top-d is not a prefix of its top-2d.
    prefix_ = active_.size() == 1 && legs[active_[0]].sparse && opt.aggregate == Aggregate::Max &&
              opt.fused_width == 0;
  }

  void run(std::size_t qi, Scratch& s) const {
    s.raw_ids.resize(L_);
    s.raw_scores.resize(L_);
    s.returned.assign(L_, 0);
    s.depth.assign(L_, 0);
    s.exhausted.assign(L_, 1);
    s.rank_entry.resize(L_);
    s.rank_score.resize(L_);
    s.value.resize(L_);
    for (std::size_t l : active_) {
      s.depth[l] = std::min(prefix_ ? std::min(legs_[l].depth, opt_.k) : legs_[l].depth,
                            sizes_[l]);
      search_leg(qi, l, s);
    }
    while (true) {
      fuse(s);
      aggregate(s);
      if (s.docs.size() >= opt_.k) break;
      bool grew = false;
      for (std::size_t l : active_) {
        if (s.exhausted[l]) continue;
        s.depth[l] = std::min(2 * s.depth[l], sizes_[l]);
        search_leg(qi, l, s);
        grew = true;
      }
      if (!grew) break;
    }
    write(qi, s);
  }

 private:
  // Runs leg l at s.depth[l]; a leg is exhausted when it returned fewer results than asked
  // or was asked for the whole index.
  void search_leg(std::size_t qi, std::size_t l, Scratch& s) const {
    const Leg& leg = legs_[l];
    const std::size_t d = s.depth[l];
    auto& ids = s.raw_ids[l];
    auto& scores = s.raw_scores[l];
    ids.resize(d);
    scores.resize(d);
    if (d > 0) {
      if (leg.sparse) {
        QueryBatch q = leg.sparse_queries;
        q.indptr += qi;  // offsets stay absolute into terms / weights
        q.n_queries = 1;
        SearchOptions o;
        o.k = d;
        o.threads = 1;
        o.algorithm = leg.algorithm;
        o.allow = leg.allow;
        o.allow_words = leg.allow_words;
        leg.sparse->search(q, o, ids.data(), scores.data());
      } else {
        DenseSearchOptions o;
        o.k = d;
        o.ef = leg.ef;
        o.threads = 1;
        o.exact = leg.exact;
        o.dims = leg.dims;
        if (leg.rescore_auto) {
          const std::size_t beam = std::max(leg.ef, d);
          o.rescore = leg.dims ? beam : leg.dense->params().keep_float ? std::min(beam, 2 * d) : 0;
        } else {
          o.rescore = leg.rescore;
        }
        o.allow = leg.allow;
        o.allow_words = leg.allow_words;
        o.exact_below = leg.exact_below;
        const float* row = leg.dense_queries + qi * leg.dense->params().dim;
        leg.dense->search(row, 1, o, ids.data(), scores.data());
      }
    }
    std::size_t n = 0;
    while (n < d && ids[n] >= 0) ++n;
    s.returned[l] = n;
    s.exhausted[l] = n < d || d >= sizes_[l];
  }

  // Builds the fused entries and their order from the legs' current results.
  void fuse(Scratch& s) const {
    std::size_t total = 0;
    for (std::size_t l : active_) total += s.returned[l];
    s.chunk_table.reset(total);
    s.entry_chunk.clear();
    s.entry_pos.clear();
    for (std::size_t l : active_) {
      const Leg& leg = legs_[l];
      auto& re = s.rank_entry[l];
      auto& rs = s.rank_score[l];
      re.clear();
      rs.clear();
      // The slot -> chunk table is read at random places after the searches left the cache
      // cold: ask for every row first so that the misses overlap (they dominated this loop).
      for (std::size_t j = 0; j < s.returned[l]; ++j) {
        const auto slot = static_cast<std::uint64_t>(s.raw_ids[l][j]);
        if (slot < leg.slot_chunk_size) __builtin_prefetch(leg.slot_chunk + slot);
      }
      for (std::size_t j = 0; j < s.returned[l]; ++j) {
        const auto slot = static_cast<std::uint64_t>(s.raw_ids[l][j]);
        const std::uint32_t c = slot < leg.slot_chunk_size ? leg.slot_chunk[slot] : kNoChunk;
        if (c == kNoChunk) continue;
        bool fresh = false;
        const auto e = s.chunk_table.get_or_insert(
            c, static_cast<std::uint32_t>(s.entry_chunk.size()), &fresh);
        if (fresh) {
          s.entry_chunk.push_back(c);
          s.entry_pos.resize(s.entry_pos.size() + L_, -1);
        }
        std::int32_t& pos = s.entry_pos[std::size_t(e) * L_ + l];
        if (pos >= 0) continue;  // the same chunk twice in one leg: its first (best) hit counts
        pos = static_cast<std::int32_t>(re.size());
        re.push_back(e);
        rs.push_back(static_cast<double>(s.raw_scores[l][j]));
      }
    }
    const std::size_t n = s.entry_chunk.size();
    s.entry_score.assign(n, 0.0);
    s.order.resize(n);
    for (std::size_t i = 0; i < n; ++i) s.order[i] = static_cast<std::uint32_t>(i);
    if (active_.size() == 1) {
      // One leg: no fusion, its own scores in its own order (entries are in that order).
      const std::size_t l = active_[0];
      for (std::size_t j = 0; j < s.rank_entry[l].size(); ++j)
        s.entry_score[s.rank_entry[l][j]] = s.rank_score[l][j];
    } else {
      combine(s);
      std::stable_sort(s.order.begin(), s.order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return s.entry_score[a] > s.entry_score[b];
      });
    }
    s.fused_rank.resize(n);
    for (std::size_t i = 0; i < n; ++i) s.fused_rank[s.order[i]] = static_cast<std::uint32_t>(i + 1);
  }

  // fusion.py's _combine over its normalised legs: per entry, legs in order, w * value (or
  // w * the leg's default for an entry the leg did not return, when the default is not 0).
  void combine(Scratch& s) const {
    struct Part {
      std::size_t leg;
      double weight;
      double missing;
    };
    std::vector<Part> parts;  // at most a few legs
    parts.reserve(active_.size());
    double total_weight = 0;  // minmax: sum of the non-empty legs' weights
    for (std::size_t l : active_)
      if (!s.rank_score[l].empty()) total_weight += legs_[l].weight;
    for (std::size_t l : active_) {
      const auto& sc = s.rank_score[l];
      const std::size_t m = sc.size();
      auto& v = s.value[l];
      v.resize(m);
      const double w = legs_[l].weight;
      if (opt_.fusion == Fusion::RRF) {
        for (std::size_t j = 0; j < m; ++j) v[j] = 1.0 / (opt_.rrf_k + static_cast<double>(j + 1));
        parts.push_back({l, w, 0.0});
        continue;
      }
      if (m == 0) continue;  // score-based methods: an empty leg takes no part
      for (std::size_t j = 0; j < m; ++j)
        if (!std::isfinite(sc[j]))
          throw std::invalid_argument(
              "leg " + std::to_string(l) +
              " returned an infinite score; score-based fusion needs finite scores (use "
              "fusion='rrf')");
      if (opt_.fusion == Fusion::MinMax) {
        const auto mm = std::minmax_element(sc.begin(), sc.end());
        const double lo = *mm.first, hi = *mm.second;
        for (std::size_t j = 0; j < m; ++j) v[j] = hi == lo ? 1.0 : (sc[j] - lo) / (hi - lo);
        parts.push_back({l, w * (1.0 / total_weight), 0.0});
      } else if (opt_.fusion == Fusion::ZScore) {
        double mean, sd;
        mean_std(sc.data(), m, 0, s.tmp, &mean, &sd);
        for (std::size_t j = 0; j < m; ++j) v[j] = sd == 0.0 ? 0.0 : (sc[j] - mean) / sd;
        parts.push_back({l, w, *std::min_element(v.begin(), v.end())});
      } else {  // DBSF
        double mean = 0, sd = 0;
        if (m > 1) mean_std(sc.data(), m, 1, s.tmp, &mean, &sd);
        if (sd == 0.0) {
          std::fill(v.begin(), v.end(), 0.5);
        } else {
          const double lo = mean - 3.0 * sd;
          for (std::size_t j = 0; j < m; ++j)
            v[j] = std::min(1.0, std::max(0.0, (sc[j] - lo) / (6.0 * sd)));
        }
        parts.push_back({l, w, 0.0});
      }
    }
    const std::size_t n = s.entry_chunk.size();
    for (std::size_t e = 0; e < n; ++e) {
      double sum = 0.0;
      const std::int32_t* pos = s.entry_pos.data() + e * L_;
      for (const Part& p : parts) {
        if (pos[p.leg] >= 0)
          sum += p.weight * s.value[p.leg][static_cast<std::size_t>(pos[p.leg])];
        else if (p.missing != 0.0)
          sum += p.weight * p.missing;
      }
      s.entry_score[e] = sum;
    }
  }

  // Groups the fused chunks into documents, in fused order (a document's first chunk is its
  // best), and ranks them (stable: equal scores keep first-appearance order).
  void aggregate(Scratch& s) const {
    s.doc_table.reset(s.order.size());
    s.docs.clear();
    for (std::uint32_t c : s.entry_chunk)  // as in fuse: the misses overlap
      if (c < opt_.n_chunks) __builtin_prefetch(opt_.chunk_doc + c);
    for (std::uint32_t e : s.order) {
      const std::uint32_t c = s.entry_chunk[e];
      const std::uint32_t d = c < opt_.n_chunks ? opt_.chunk_doc[c] : kNoDoc;
      if (d == kNoDoc) continue;
      const double sc = s.entry_score[e];
      bool fresh = false;
      const auto i = s.doc_table.get_or_insert(d, static_cast<std::uint32_t>(s.docs.size()), &fresh);
      if (fresh)
        s.docs.push_back({d, e, sc, 0.0 + sc, 0.0});
      else
        s.docs[i].total += sc;
    }
  }

  void write(std::size_t qi, Scratch& s) const {
    for (DocAgg& d : s.docs) d.score = opt_.aggregate == Aggregate::Sum ? d.total : d.best_score;
    const std::size_t nd = s.docs.size();
    s.doc_order.resize(nd);
    for (std::size_t i = 0; i < nd; ++i) s.doc_order[i] = static_cast<std::uint32_t>(i);
    const std::size_t k = opt_.k;
    const std::size_t keep = std::min(k, nd);
    auto by_score = [&](std::uint32_t a, std::uint32_t b) {
      return s.docs[a].score > s.docs[b].score;
    };
    std::stable_sort(s.doc_order.begin(), s.doc_order.end(), by_score);
    std::int64_t* docs = out_.docs + qi * k;
    float* scores = out_.scores + qi * k;
    std::int64_t* chunks = out_.chunks + qi * k;
    const std::size_t width = L_ + 1;
    float* xs = out_.explain_scores ? out_.explain_scores + qi * k * width : nullptr;
    std::int32_t* xr = out_.explain_ranks ? out_.explain_ranks + qi * k * width : nullptr;
    for (std::size_t j = 0; j < keep; ++j) {
      const DocAgg& d = s.docs[s.doc_order[j]];
      docs[j] = d.doc;
      scores[j] = static_cast<float>(d.score);
      chunks[j] = s.entry_chunk[d.best];
      if (xs) {
        const std::int32_t* pos = s.entry_pos.data() + std::size_t(d.best) * L_;
        for (std::size_t l = 0; l < L_; ++l) {
          const bool hit = pos[l] >= 0;
          xs[j * width + l] =
              hit ? static_cast<float>(s.rank_score[l][static_cast<std::size_t>(pos[l])]) : kNaN;
          xr[j * width + l] = hit ? pos[l] + 1 : 0;
        }
        xs[j * width + L_] = static_cast<float>(s.entry_score[d.best]);
        xr[j * width + L_] = static_cast<std::int32_t>(s.fused_rank[d.best]);
      }
    }
    for (std::size_t j = keep; j < k; ++j) {
      docs[j] = -1;
      scores[j] = -std::numeric_limits<float>::infinity();
      chunks[j] = -1;
      if (xs)
        for (std::size_t l = 0; l <= L_; ++l) {
          xs[j * width + l] = kNaN;
          xr[j * width + l] = 0;
        }
    }
    if (opt_.fused_width > 0) {
      const std::size_t m = opt_.fused_width;
      std::int64_t* fc = out_.fused_chunks + qi * m;
      float* fs = out_.fused_scores + qi * m;
      std::size_t j = 0;
      for (std::size_t i = 0; i < s.order.size() && j < m; ++i) {
        const std::uint32_t e = s.order[i];
        const std::uint32_t c = s.entry_chunk[e];
        if (c >= opt_.n_chunks || opt_.chunk_doc[c] == kNoDoc) continue;
        fc[j] = c;
        fs[j] = static_cast<float>(s.entry_score[e]);
        ++j;
      }
      for (; j < m; ++j) {
        fc[j] = -1;
        fs[j] = -std::numeric_limits<float>::infinity();
      }
    }
    if (out_.depths)
      for (std::size_t l = 0; l < L_; ++l)
        out_.depths[qi * L_ + l] = static_cast<std::int64_t>(s.depth[l]);
  }

  const std::vector<Leg>& legs_;
  const ExecuteOptions& opt_;
  const ExecuteOutput& out_;
  const std::size_t L_;
  std::vector<std::size_t> sizes_;   // each leg's index size, read once per call
  std::vector<std::size_t> active_;  // legs with a positive weight, in order
  bool prefix_ = false;              // start the one leg at depth k (see the constructor)
};

std::string leg_name(std::size_t l) { return "legs[" + std::to_string(l) + "]"; }

}  // namespace

void validate(const std::vector<Leg>& legs, std::size_t n_queries, const ExecuteOptions& opt) {
  if (legs.empty()) throw std::invalid_argument("give at least one leg");
  if (opt.k < 1) throw std::invalid_argument("k must be >= 1, got " + std::to_string(opt.k));
  if (!(std::isfinite(opt.rrf_k) && opt.rrf_k > 0))
    throw std::invalid_argument("rrf_k must be finite and > 0, got " + std::to_string(opt.rrf_k));
  if (opt.n_chunks > 0 && !opt.chunk_doc) throw std::invalid_argument("chunk_doc is missing");
  bool any = false;
  for (std::size_t l = 0; l < legs.size(); ++l) {
    const Leg& leg = legs[l];
    const std::string name = leg_name(l);
    if (!leg.sparse == !leg.dense)
      throw std::invalid_argument(name + ": give exactly one index (sparse or dense)");
    if (!(std::isfinite(leg.weight) && leg.weight >= 0))
      throw std::invalid_argument(name + ": weight must be finite and >= 0, got " +
                                  std::to_string(leg.weight));
    if (leg.depth < 1) throw std::invalid_argument(name + ": depth must be >= 1");
    if (leg.weight == 0) continue;  // not run: its queries are not read
    any = true;
    if (leg.allow_words > 0 && !leg.allow) throw std::invalid_argument(name + ": allow is missing");
    const std::size_t size = leg_size(leg);
    if (leg.slot_chunk_size < size || (size > 0 && !leg.slot_chunk))
      throw std::invalid_argument(
          name + ": slot_chunk has " + std::to_string(leg.slot_chunk_size) +
          " entries but the index holds " + std::to_string(size) +
          " ids; give one chunk id (or 0xFFFFFFFF) per internal id of the index");
    if (leg.sparse) {
      const QueryBatch& q = leg.sparse_queries;
      if (q.n_queries != n_queries || !q.indptr)
        throw std::invalid_argument(name + ": the sparse queries hold " +
                                    std::to_string(q.n_queries) + " queries, expected " +
                                    std::to_string(n_queries));
      if (q.indptr[0] != 0) throw std::invalid_argument(name + ": indptr[0] must be 0");
      for (std::size_t i = 0; i < n_queries; ++i)
        if (q.indptr[i + 1] < q.indptr[i])
          throw std::invalid_argument(name + ": indptr must be non-decreasing");
      if (q.indptr[n_queries] > 0 && !q.terms)
        throw std::invalid_argument(name + ": terms are missing");
      if (q.weights)
        for (std::int64_t j = 0; j < q.indptr[n_queries]; ++j)
          if (!(std::isfinite(q.weights[j]) && q.weights[j] >= 0))
            throw std::invalid_argument(name + ": query term weights must be finite and >= 0");
    } else {
      const std::uint32_t dim = leg.dense->params().dim;
      if (n_queries > 0 && !leg.dense_queries)
        throw std::invalid_argument(name + ": the dense queries are missing");
      for (std::size_t i = 0; i < n_queries; ++i)
        for (std::uint32_t j = 0; j < dim; ++j)
          if (!std::isfinite(leg.dense_queries[i * dim + j]))
            throw std::invalid_argument(name + ": query " + std::to_string(i) +
                                        " has a NaN or infinite value");
      if (leg.ef < 1) throw std::invalid_argument(name + ": ef must be >= 1");
      if (leg.dims && (leg.dims % 16 != 0 || leg.dims > dim))
        throw std::invalid_argument(name + ": dims must be a multiple of 16 and at most " +
                                    std::to_string(dim) + ", got " + std::to_string(leg.dims));
    }
  }
  if (!any)
    throw std::invalid_argument("every leg has weight 0; at least one must have a positive weight");
}

void execute(const std::vector<Leg>& legs, std::size_t n_queries, const ExecuteOptions& opt,
             const ExecuteOutput& out) {
  validate(legs, n_queries, opt);
  if (!out.docs || !out.scores || !out.chunks || !out.explain_scores != !out.explain_ranks ||
      (opt.fused_width > 0 && (!out.fused_chunks || !out.fused_scores)))
    throw std::invalid_argument("execute: an output array is missing");
  const Runner runner(legs, opt, out);
  const std::size_t threads = resolve_threads(opt.threads, n_queries);
  if (threads <= 1) {
    // One thread (the query path: one query a call): its working space is kept between calls,
    // which saves the two dozen allocations a query's vectors and tables cost; a deep query's
    // large buffers are let go after it.
    thread_local Scratch kept;
    for (std::size_t qi = 0; qi < n_queries; ++qi) runner.run(qi, kept);
    if (kept.entry_chunk.capacity() > kKeepEntries) kept = Scratch();
    return;
  }
  std::vector<Scratch> scratch(threads);
  parallel_for(n_queries, threads,
               [&](std::size_t qi, std::size_t tid) { runner.run(qi, scratch[tid]); });
}

}  // namespace fastrag
