// The one parallel loop of the core: an atomic work counter shared by a few std::threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fastrag {

// Number of worker threads to use for `requested` (0 or negative = all hardware threads)
// and `n_items` units of work. Never more threads than items, nor more than 4 per hardware
// thread (at least 64): a huge request must not start a thread per item.
inline std::size_t resolve_threads(int requested, std::size_t n_items) {
  // hardware_concurrency() reads /sys on every call (tens of microseconds): ask once.
  static const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  static const std::size_t most = std::max<std::size_t>(64, 4 * std::size_t{hardware});
  std::size_t t = requested > 0 ? static_cast<std::size_t>(requested) : hardware;
  return std::max<std::size_t>(1, std::min({t, n_items, most}));
}

// Calls fn(i, thread_id) for every i in [0, n). thread_id is in [0, threads) and indexes
// per-thread scratch space. Work is handed out one item at a time, so results do not
// depend on the thread count as long as fn(i, .) writes only to the i-th output.
// The first exception thrown by a worker stops the hand-out and is rethrown here.
template <class Fn>
void parallel_for(std::size_t n, std::size_t threads, Fn&& fn) {
  if (n == 0) return;
  threads = std::max<std::size_t>(1, std::min(threads, n));
  if (threads == 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i, std::size_t{0});
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](std::size_t tid) {
    while (!failed.load(std::memory_order_relaxed)) {
      std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) break;
      try {
        fn(i, tid);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace fastrag
