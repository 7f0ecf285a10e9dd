// Recursive graph bisection (see fastrag/reorder.hpp).
//
// Each part of the documents is split in two halves; a few rounds move documents across so
// that each term's documents gather on one side. The cost of a term with d_l documents on the
// left (n_l documents) and d_r on the right is the log-gap estimate of its list's size,
//   d_l * log2(n_l / (d_l + 1)) + d_r * log2(n_r / (d_r + 1)),
// and a document's gain from moving is what its terms' costs would drop by. Each round sorts
// both halves by gain and swaps the best pairs while their summed gain is positive. Halves
// are split again, level by level, until parts hold at most min_size documents; the parts of a
// level are independent and run on several threads.
#include "fastrag/reorder.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "fastrag/parallel.hpp"

namespace fastrag {
namespace {

struct Scratch {
  std::vector<std::int32_t> deg_l, deg_r;  // per term: documents on each side
  std::vector<float> move_l, move_r;       // per term: the cost saved by moving one of its
                                           // documents left -> right / right -> left
  std::vector<std::uint32_t> stamp;        // per term: the round its moves were computed in
  std::uint32_t round = 0;
  std::vector<std::pair<float, std::uint32_t>> side_l, side_r;  // (gain, document)

  explicit Scratch(std::size_t n_terms)
      : deg_l(n_terms), deg_r(n_terms), move_l(n_terms), move_r(n_terms), stamp(n_terms, 0) {}
};

inline double cost(double d_l, double d_r, double log_l, double log_r) {
  return d_l * (log_l - std::log2(d_l + 1.0)) + d_r * (log_r - std::log2(d_r + 1.0));
}

class Bisection {
 public:
  Bisection(const std::uint64_t* offsets, const std::uint32_t* terms, int iterations)
      : offsets_(offsets), terms_(terms), iterations_(iterations) {}

  // Splits docs[0, n) into halves [0, n / 2) and [n / 2, n), in place.
  void split(std::uint32_t* docs, std::size_t n, Scratch& s) const {
    const std::size_t nl = n / 2, nr = n - nl;
    std::uint32_t* left = docs;
    std::uint32_t* right = docs + nl;
    const double log_l = std::log2(static_cast<double>(nl));
    const double log_r = std::log2(static_cast<double>(nr));
    s.side_l.resize(nl);
    s.side_r.resize(nr);
    for (int it = 0; it < iterations_; ++it) {
      for (std::size_t i = 0; i < n; ++i)
        for (std::uint64_t j = offsets_[docs[i]]; j < offsets_[docs[i] + 1]; ++j)
          s.deg_l[terms_[j]] = s.deg_r[terms_[j]] = 0;
      for (std::size_t i = 0; i < nl; ++i)
        for (std::uint64_t j = offsets_[left[i]]; j < offsets_[left[i] + 1]; ++j)
          ++s.deg_l[terms_[j]];
      for (std::size_t i = 0; i < nr; ++i)
        for (std::uint64_t j = offsets_[right[i]]; j < offsets_[right[i] + 1]; ++j)
          ++s.deg_r[terms_[j]];
      if (++s.round == 0) {  // the stamps wrapped around: clear them
        std::fill(s.stamp.begin(), s.stamp.end(), 0);
        s.round = 1;
      }
      auto gain = [&](std::uint32_t d, const std::vector<float>& move) {
        double g = 0;
        for (std::uint64_t j = offsets_[d]; j < offsets_[d + 1]; ++j) {
          const std::uint32_t t = terms_[j];
          if (s.stamp[t] != s.round) {
            s.stamp[t] = s.round;
            const double dl = s.deg_l[t], dr = s.deg_r[t], now = cost(dl, dr, log_l, log_r);
            s.move_l[t] = dl > 0 ? static_cast<float>(now - cost(dl - 1, dr + 1, log_l, log_r)) : 0.f;
            s.move_r[t] = dr > 0 ? static_cast<float>(now - cost(dl + 1, dr - 1, log_l, log_r)) : 0.f;
          }
          g += move[t];
        }
        return static_cast<float>(g);
      };
      for (std::size_t i = 0; i < nl; ++i) s.side_l[i] = {gain(left[i], s.move_l), left[i]};
      for (std::size_t i = 0; i < nr; ++i) s.side_r[i] = {gain(right[i], s.move_r), right[i]};
      // Best gain first; equal gains by document id, so that the result is deterministic.
      auto better = [](const std::pair<float, std::uint32_t>& a,
                       const std::pair<float, std::uint32_t>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      };
      std::sort(s.side_l.begin(), s.side_l.end(), better);
      std::sort(s.side_r.begin(), s.side_r.end(), better);
      std::size_t swaps = 0;
      while (swaps < nl && swaps < nr && s.side_l[swaps].first + s.side_r[swaps].first > 0) {
        std::swap(s.side_l[swaps].second, s.side_r[swaps].second);
        ++swaps;
      }
      for (std::size_t i = 0; i < nl; ++i) left[i] = s.side_l[i].second;
      for (std::size_t i = 0; i < nr; ++i) right[i] = s.side_r[i].second;
      if (swaps == 0) break;
    }
  }

 private:
  const std::uint64_t* offsets_;
  const std::uint32_t* terms_;
  int iterations_;
};

}  // namespace

std::vector<std::uint32_t> bp_order(std::size_t n_docs, const std::uint64_t* offsets,
                                    const std::uint32_t* terms, std::size_t n_terms,
                                    const ReorderParams& p) {
  if (p.iterations < 1) throw std::invalid_argument("iterations must be >= 1");
  if (p.min_size < 2) throw std::invalid_argument("min_size must be >= 2");
  for (std::size_t d = 0; d < n_docs; ++d) {
    if (offsets[d + 1] < offsets[d]) throw std::invalid_argument("offsets must be non-decreasing");
    for (std::uint64_t j = offsets[d]; j < offsets[d + 1]; ++j)
      if (terms[j] >= n_terms) throw std::invalid_argument("a term id is >= n_terms");
  }
  std::vector<std::uint32_t> order(n_docs);
  std::iota(order.begin(), order.end(), 0u);
  const Bisection bisection(offsets, terms, p.iterations);
  // Parts of the current level as [begin, end) into order.
  std::vector<std::pair<std::size_t, std::size_t>> parts, next;
  if (n_docs > p.min_size) parts.emplace_back(0, n_docs);
  std::vector<std::unique_ptr<Scratch>> scratch;
  while (!parts.empty()) {
    const std::size_t threads = resolve_threads(p.threads, parts.size());
    while (scratch.size() < threads) scratch.push_back(std::make_unique<Scratch>(n_terms));
    parallel_for(parts.size(), threads, [&](std::size_t i, std::size_t tid) {
      bisection.split(order.data() + parts[i].first, parts[i].second - parts[i].first,
                      *scratch[tid]);
    });
    next.clear();
    for (const auto& [b, e] : parts) {
      const std::size_t mid = b + (e - b) / 2;
      if (mid - b > p.min_size) next.emplace_back(b, mid);
      if (e - mid > p.min_size) next.emplace_back(mid, e);
    }
    std::swap(parts, next);
  }
  return order;
}

}  // namespace fastrag
