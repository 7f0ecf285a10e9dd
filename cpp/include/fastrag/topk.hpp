// Fixed-capacity top-k selection. Order: higher score first; equal scores -> lower id first,
// so that every search algorithm returns the same list for the same scores.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace fastrag {

struct ScoredId {
  float score;
  std::uint32_t id;
};

// true when a ranks before b (a function object, so that the heap calls inline).
struct RanksBefore {
  bool operator()(const ScoredId& a, const ScoredId& b) const {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  }
};
inline constexpr RanksBefore ranks_before{};

class TopK {
 public:
  explicit TopK(std::size_t k = 0) { reset(k); }

  void reset(std::size_t k) {
    k_ = k;
    buffered_ = false;
    compacted_ = false;
    heap_.clear();
    // k may be far past what a search can find (the output is padded): the heap grows on
    // demand past the first few thousand.
    heap_.reserve(std::min<std::size_t>(k, 4096));
  }

  // Switches this search (until the next reset) from the heap to a buffer of candidates
  // cut to the best k by nth_element each time it holds 2k (at least 64): O(1) per candidate
  // kept instead of the heap's O(log k), for scans that offer many candidates in no order
  // (score arrays). threshold() is then the k-th score of the last cut: it only rises and
  // never passes the true k-th, so pruning by it stays exact but prunes later than the heap's.
  // drain() returns the same list as the heap.
  void buffered() {
    buffered_ = true;
    cap_ = std::max<std::size_t>(2 * k_, 64);
  }

  bool full() const { return buffered_ ? compacted_ : heap_.size() >= k_; }

  // The score a new candidate must beat once the heap is full (-inf before).
  float threshold() const {
    if (buffered_) return compacted_ ? kth_.score : -std::numeric_limits<float>::infinity();
    return full() && k_ > 0 ? heap_.front().score : -std::numeric_limits<float>::infinity();
  }

  // Offers a candidate; keeps it if it ranks before the current k-th.
  void push(float score, std::uint32_t id) {
    if (k_ == 0) return;
    ScoredId c{score, id};
    if (buffered_) {
      if (compacted_ && !ranks_before(c, kth_)) return;
      heap_.push_back(c);
      if (heap_.size() >= cap_) cut();
      return;
    }
    if (heap_.size() < k_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    } else if (ranks_before(c, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
      heap_.back() = c;
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    }
  }

  // Writes the kept candidates best-first to ids/scores (k slots; the rest padded with
  // id -1 and score -inf) and empties the heap.
  void drain(std::int64_t* ids, float* scores) {
    if (buffered_) {
      if (heap_.size() > k_) cut();
      std::sort(heap_.begin(), heap_.end(), ranks_before);
    } else {
      std::sort_heap(heap_.begin(), heap_.end(), ranks_before);
    }
    std::size_t n = heap_.size();
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = heap_[i].id;
      scores[i] = heap_[i].score;
    }
    for (std::size_t i = n; i < k_; ++i) {
      ids[i] = -1;
      scores[i] = -std::numeric_limits<float>::infinity();
    }
    heap_.clear();
  }

 private:
  // Buffered mode: keeps the best k of the buffer (k >= 1, buffer longer than k).
  void cut() {
    std::nth_element(heap_.begin(), heap_.begin() + static_cast<std::ptrdiff_t>(k_ - 1),
                     heap_.end(), ranks_before);
    heap_.resize(k_);
    kth_ = heap_[k_ - 1];
    compacted_ = true;
  }

  std::size_t k_ = 0;
  std::vector<ScoredId> heap_;  // a heap whose front is the worst kept candidate (or the buffer)
  bool buffered_ = false;
  bool compacted_ = false;  // buffered: a cut happened, kth_ is set
  std::size_t cap_ = 0;
  ScoredId kth_{0.0f, 0};
};

}  // namespace fastrag
