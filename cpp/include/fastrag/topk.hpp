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
    heap_.clear();
    // k may be far past what a search can find (the output is padded): the heap grows on
    // demand past the first few thousand.
    heap_.reserve(std::min<std::size_t>(k, 4096));
  }

  std::size_t size() const { return heap_.size(); }
  bool full() const { return heap_.size() >= k_; }

  // The score a new candidate must beat once the heap is full (-inf before).
  float threshold() const {
    return full() && k_ > 0 ? heap_.front().score : -std::numeric_limits<float>::infinity();
  }

  // Offers a candidate; keeps it if it ranks before the current k-th.
  void push(float score, std::uint32_t id) {
    if (k_ == 0) return;
    ScoredId c{score, id};
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
    std::sort_heap(heap_.begin(), heap_.end(), ranks_before);
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
  std::size_t k_ = 0;
  std::vector<ScoredId> heap_;  // a heap whose front is the worst kept candidate
};

}  // namespace fastrag
