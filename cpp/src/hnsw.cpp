// HNSW index: storage, insertion, deletion, compaction, search driver and files. The distance
// kernels and graph walks are in hnsw_kernels.inl, compiled per instruction set.
#include "fastrag/hnsw.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <utility>

#include "fastrag/error.hpp"
#include "fastrag/io.hpp"
#include "fastrag/parallel.hpp"
#include "cpu_features.hpp"
#include "hnsw_internal.hpp"

namespace fastrag {
namespace {

constexpr int kMaxLevel = 30;

enum Section : std::uint32_t {
  kMeta = 1,
  kBlock0,
  kF32,
  kQLow,
  kQStep,
  kQNorm,
  kLevel,
  kUpperOff,
  kUpper,
  kDeleted,
  kRLow,  // format version 2: int4 storage's int8 rows for rescoring
  kRStep,
  kRNorm,
  kR8,
  kExtra = 100,
};

std::uint64_t words_for(std::uint64_t n) { return (n + 63) / 64; }

const HnswIndex::Ops* pick_ops() {
  const HnswIndex::Ops* avx512 = hnsw_ops_avx512();
  const HnswIndex::Ops* picked = pick_isa(hnsw_ops_generic(), hnsw_ops_avx2(), avx512);
#if defined(FASTRAG_X86_DISPATCH)
  // The AVX-512 set with VNNI kernels, where AVX-512 was picked without being named.
  if (picked == avx512 && cpu_has_avx512vnni() && forced_kernels() != "avx512")
    return hnsw_ops_avx512vnni();
#endif
  return picked;
}

}  // namespace

// ---------------------------------------------------------------------------- half floats
float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  std::uint32_t man = x & 0x7fffffu;
  if (exp >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (exp <= 0) {                                                   // subnormal or zero
    if (exp < -10) return static_cast<std::uint16_t>(sign);
    man |= 0x800000u;
    const int shift = 14 - exp;
    std::uint32_t h = man >> shift;
    const std::uint32_t rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;  // round half to even
    return static_cast<std::uint16_t>(sign | h);
  }
  std::uint32_t h = sign | (static_cast<std::uint32_t>(exp) << 10) | (man >> 13);
  const std::uint32_t rest = man & 0x1fffu;  // round half to even, as F16C does
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry bumps the exponent
  return static_cast<std::uint16_t>(h);
}

// ---------------------------------------------------------------------------- basics
HnswIndex::HnswIndex(const HnswParams& p) : p_(p), pdim_((p.dim + 15) / 16 * 16) {
  const std::uint32_t row_bytes = p.storage == Storage::F32   ? pdim_ * 4
                                  : p.storage == Storage::I8  ? pdim_
                                  : p.storage == Storage::I4  ? pdim_ / 2
                                                              : pdim_ * 2;
  links_words_ = (1 + 2 * p.M + 15) / 16 * 16;
  stride_ = links_words_ + row_bytes / 4;
  if (p.dim == 0 || p.dim > 65536) throw std::invalid_argument("dim must be in [1, 65536]");
  if (p.M < 2 || p.M > 256) throw std::invalid_argument("M must be in [2, 256]");
  if (p.ef_construction < 1) throw std::invalid_argument("ef_construction must be >= 1");
  if (static_cast<std::uint32_t>(p.metric) > 2) throw std::invalid_argument("unknown metric");
  if (static_cast<std::uint32_t>(p.storage) > 3) throw std::invalid_argument("unknown storage");
  if (p.storage == Storage::F32) p_.keep_float = false;
  ops_ = pick_ops();
  // Walks over indexes of up to 2^21 ids mark visited ids in a bitset, larger ones in a hash
  // table (see VisitedSet); FASTRAG_VISITED_BITS_MAX (read here, as FASTRAG_KERNELS) moves the
  // limit, so that tests can walk small indexes with the hash table.
  // A value that is not a whole number is ignored.
  const char* bits_max = std::getenv("FASTRAG_VISITED_BITS_MAX");
  char* end = nullptr;
  const unsigned long long forced = bits_max ? std::strtoull(bits_max, &end, 10) : 0;
  visited_bits_max_ = bits_max && *bits_max && *end == '\0' ? forced : std::size_t{1} << 21;
  level_mult_ = 1.0 / std::log(static_cast<double>(p.M));
  rng_state_ = p.seed;
  upper_off_.assign({0});
}

HnswIndex::~HnswIndex() = default;

const char* HnswIndex::kernels() const { return ops_->name; }

void HnswIndex::lock_links(std::uint32_t id) const {
  auto& l = node_locks_[id % kStripes];
  for (int spins = 0; l.exchange(true, std::memory_order_acquire); ++spins)
    if (spins > 64) std::this_thread::yield();
}
void HnswIndex::unlock_links(std::uint32_t id) const {
  node_locks_[id % kStripes].store(false, std::memory_order_release);
}

const std::uint32_t* HnswIndex::links(std::uint32_t id, int level) const {
  if (level == 0) return record(id);
  return upper_.data() + upper_off_[id] + std::size_t(level - 1) * (1 + p_.M);
}
std::uint32_t* HnswIndex::links_mut(std::uint32_t id, int level) {
  if (level == 0) return block0_.owned_data() + std::size_t(id) * stride_;
  return upper_.owned_data() + upper_off_[id] + std::size_t(level - 1) * (1 + p_.M);
}

std::size_t HnswIndex::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return n_;
}
std::size_t HnswIndex::live() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return n_live_;
}
bool HnswIndex::is_live(std::uint32_t id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return id < n_ && !((deleted_[id / 64] >> (id % 64)) & 1);
}

std::size_t HnswIndex::memory_bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return block0_.size() * 4 + f32_.size() * 4 + (qlow_.size() + qstep_.size()) * 4 +
         qnorm_.size() * 4 + level_.size() + upper_off_.size() * 8 +
         upper_.size() * 4 + deleted_.size() * 8 + r8_.size() +
         (rlow_.size() + rstep_.size() + rnorm_.size()) * 4;
}

std::size_t HnswIndex::allocated_bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  // Allocations with their spare capacity (views of a loaded or mapped file: their size).
  return block0_.bytes() + f32_.bytes() + qlow_.bytes() + qstep_.bytes() + qnorm_.bytes() +
         level_.bytes() + upper_off_.bytes() + upper_.bytes() + deleted_.bytes() + r8_.bytes() +
         rlow_.bytes() + rstep_.bytes() + rnorm_.bytes() +
         ready_.capacity() + indeg_.capacity() * sizeof(std::uint32_t);
}

std::size_t HnswIndex::capacity() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return capacity_;
}

int HnswIndex::draw_level() {
  // splitmix64: a seeded, portable generator, so a build is reproducible for a seed.
  std::uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  const double u = (static_cast<double>(z >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  return std::min(kMaxLevel, static_cast<int>(-std::log(u) * level_mult_));
}

// ---------------------------------------------------------------------------- rows
void HnswIndex::check_rows(const float* rows, std::size_t n) const {
  const std::size_t total = n * p_.dim;
  // A non-finite float has every exponent bit set: an integer OR over the bits vectorises,
  // where std::isfinite per value does not (a search call checks all its queries).
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < total; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, rows + i, 4);
    bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (!bad) return;
  for (std::size_t i = 0; i < total; ++i)
    if (!std::isfinite(rows[i]))
      throw std::invalid_argument("vector " + std::to_string(i / p_.dim) +
                                  " has a NaN or infinite value at dimension " +
                                  std::to_string(i % p_.dim));
}

void HnswIndex::check_half(const float* rows, std::size_t n) const {
  // float16 holds magnitudes up to 65504; a larger value would be stored as inf, and a row
  // with an infinite value has no finite distance to anything. Cosine rows are normalised
  // first (every value in [-1, 1]), so only ip and l2 rows can overflow.
  if (p_.storage != Storage::F16 || p_.metric == Metric::Cosine) return;
  constexpr float kMaxHalf = 65504.0f;
  for (std::size_t i = 0; i < n * p_.dim; ++i)
    if (std::fabs(rows[i]) > kMaxHalf)
      throw std::invalid_argument(
          "vector " + std::to_string(i / p_.dim) + " has the value " + std::to_string(rows[i]) +
          " at dimension " + std::to_string(i % p_.dim) +
          ": float16 storage holds magnitudes up to 65504 (scale the vectors, or use "
          "storage='float32' or 'int8')");
}

std::vector<float> HnswIndex::normalised_copy(const float* rows, std::size_t n) const {
  std::vector<float> out(rows, rows + n * p_.dim);
  for (std::size_t i = 0; i < n; ++i) {
    float* r = out.data() + i * p_.dim;
    double s = 0;
    for (std::uint32_t d = 0; d < p_.dim; ++d) s += double(r[d]) * r[d];
    if (!(s > 0))
      throw std::invalid_argument("vector " + std::to_string(i) +
                                  " is all zeros: it has no direction for the cosine metric");
    const float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (std::uint32_t d = 0; d < p_.dim; ++d) r[d] *= inv;
  }
  return out;
}

void HnswIndex::train_i8(const float* rows, std::size_t n) {
  std::vector<float> lo(pdim_, 0.0f), step(pdim_, 1.0f);
  for (std::uint32_t d = 0; d < p_.dim; ++d) {
    float a = std::numeric_limits<float>::infinity(), b = -a;
    for (std::size_t i = 0; i < n; ++i) {
      a = std::min(a, rows[i * p_.dim + d]);
      b = std::max(b, rows[i * p_.dim + d]);
    }
    lo[d] = a;
    step[d] = b > a ? (b - a) / 255.0f : 1.0f;
  }
  qlow_.assign(std::move(lo));
  qstep_.assign(std::move(step));
  trained_ = true;
}

void HnswIndex::train_i4(const float* rows, std::size_t n) {
  // The int8 rows (rescoring) take the full range of each dimension, as int8 storage does.
  train_i8(rows, n);
  rlow_ = std::move(qlow_);
  rstep_ = std::move(qstep_);
  // Sixteen levels spread over the full range would spend most of them on a few outliers:
  // the int4 grid is the uniform quantiser that suits a Gaussian of the dimension's mean and
  // deviation (step 0.3352 sigma, 16 levels at +-2.51 sigma; Max, "Quantizing for minimum
  // distortion", IRE Trans. Inf. Theory 1960), clipped to the values seen.
  std::vector<float> lo(pdim_, 0.0f), step(pdim_, 1.0f);
  for (std::uint32_t d = 0; d < p_.dim; ++d) {
    double sum = 0, sq = 0;
    float a = std::numeric_limits<float>::infinity(), b = -a;
    for (std::size_t i = 0; i < n; ++i) {
      const float x = rows[i * p_.dim + d];
      sum += x;
      sq += double(x) * x;
      a = std::min(a, x);
      b = std::max(b, x);
    }
    const double mean = sum / double(n);
    const double sd = std::sqrt(std::max(0.0, sq / double(n) - mean * mean));
    const double low = std::max<double>(a, mean - 7.5 * 0.3352 * sd);
    const double high = std::min<double>(b, mean + 7.5 * 0.3352 * sd);
    lo[d] = static_cast<float>(low);
    step[d] = high > low ? static_cast<float>((high - low) / 15.0) : 1.0f;
  }
  qlow_.assign(std::move(lo));
  qstep_.assign(std::move(step));
  trained_ = true;
}

void HnswIndex::store_row(std::uint32_t id, const float* row) {
  void* slot = block0_.owned_data() + std::size_t(id) * stride_ + links_words_;
  if (has_f32()) {
    float* dst = p_.storage == Storage::F32 ? static_cast<float*>(slot)
                                            : f32_.owned_data() + std::size_t(id) * pdim_;
    std::copy(row, row + p_.dim, dst);
    std::fill(dst + p_.dim, dst + pdim_, 0.0f);
  }
  if (p_.storage == Storage::I8) {
    auto* dst = static_cast<std::int8_t*>(slot);
    double norm = 0;
    for (std::uint32_t d = 0; d < pdim_; ++d) {
      const float x = d < p_.dim ? row[d] : 0.0f;
      const float c = std::nearbyint((x - qlow_[d]) / qstep_[d]) - 128.0f;
      const auto code = static_cast<std::int8_t>(std::clamp(c, -128.0f, 127.0f));
      dst[d] = code;
      const double v = qlow_[d] + (double(code) + 128.0) * qstep_[d];
      if (d < p_.dim) norm += v * v;
    }
    qnorm_.owned_data()[id] = static_cast<float>(norm);
  } else if (p_.storage == Storage::I4) {
    auto* dst = static_cast<std::uint8_t*>(slot);
    std::int8_t* r8 = r8_.owned_data() + std::size_t(id) * pdim_;
    double norm4 = 0, norm8 = 0;
    for (std::uint32_t d = 0; d < pdim_; ++d) {
      const float x = d < p_.dim ? row[d] : 0.0f;
      const float c4 = std::clamp(std::nearbyint((x - qlow_[d]) / qstep_[d]), 0.0f, 15.0f);
      const auto nib = static_cast<std::uint8_t>(c4);
      if (d % 2 == 0) dst[d / 2] = nib;
      else dst[d / 2] = static_cast<std::uint8_t>(dst[d / 2] | (nib << 4));
      const float c8 = std::clamp(std::nearbyint((x - rlow_[d]) / rstep_[d]) - 128.0f, -128.0f, 127.0f);
      r8[d] = static_cast<std::int8_t>(c8);
      const double v4 = qlow_[d] + double(c4) * qstep_[d];
      const double v8 = rlow_[d] + (double(c8) + 128.0) * rstep_[d];
      if (d < p_.dim) {
        norm4 += v4 * v4;
        norm8 += v8 * v8;
      }
    }
    qnorm_.owned_data()[id] = static_cast<float>(norm4);
    rnorm_.owned_data()[id] = static_cast<float>(norm8);
  } else if (p_.storage == Storage::F16) {
    auto* dst = static_cast<std::uint16_t*>(slot);
    for (std::uint32_t d = 0; d < pdim_; ++d) dst[d] = float_to_half(d < p_.dim ? row[d] : 0.0f);
  }
}

void HnswIndex::float_row(std::uint32_t id, float* out) const {
  if (has_f32()) {
    const float* r = f32_row(id);
    std::copy(r, r + pdim_, out);
  } else if (p_.storage == Storage::I8) {
    const std::int8_t* c = i8_row(id);
    for (std::uint32_t d = 0; d < pdim_; ++d)
      out[d] = d < p_.dim ? qlow_[d] + (float(c[d]) + 128.0f) * qstep_[d] : 0.0f;
  } else if (p_.storage == Storage::I4) {
    const std::int8_t* c = r8_row(id);
    for (std::uint32_t d = 0; d < pdim_; ++d)
      out[d] = d < p_.dim ? rlow_[d] + (float(c[d]) + 128.0f) * rstep_[d] : 0.0f;
  } else {
    const std::uint16_t* h = f16_row(id);
    for (std::uint32_t d = 0; d < pdim_; ++d) out[d] = half_to_float(h[d]);
  }
}

void HnswIndex::get_row(std::uint32_t id, float* out) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (id >= n_) throw std::out_of_range("id " + std::to_string(id) + " is not in the index");
  std::vector<float> row(pdim_);
  float_row(id, row.data());
  std::copy(row.begin(), row.begin() + p_.dim, out);
}

void HnswIndex::prepare(const float* row, std::uint32_t dims, QueryPrep& q, bool bytes) const {
  q.n = dims ? dims : pdim_;
  q.f32 = false;
  q.bytes = bytes && (p_.storage == Storage::I8 || p_.storage == Storage::I4);
  q.v.assign(row, row + pdim_);
  q.c = 0;
  if (p_.storage == Storage::I4) {
    // The int8 rows' form (rescoring, exact search, building) and the walks' int4 form: loops
    // over the dimensions, compiled with the kernels' instruction set.
    ops_->prep_i4(*this, row, q);
    return;
  }
  double norm = 0;
  for (std::uint32_t d = 0; d < q.n; ++d) norm += double(row[d]) * row[d];
  q.qnorm = static_cast<float>(norm);
  if (p_.storage == Storage::I8) {
    double c = 0;
    float peak = 0;
    for (std::uint32_t d = 0; d < q.n; ++d) {
      c += (double(qlow_[d]) + 128.0 * qstep_[d]) * row[d];
      q.v[d] = row[d] * qstep_[d];
      peak = std::max(peak, std::fabs(q.v[d]));
    }
    q.c = static_cast<float>(c);
    if (!q.bytes) return;
    q.t.assign(pdim_, 0);
    q.qs = peak > 0 ? peak / 127.0f : 1.0f;
    std::int32_t sum = 0;
    for (std::uint32_t d = 0; d < q.n; ++d) {
      q.t[d] = static_cast<std::int8_t>(std::nearbyint(q.v[d] / q.qs));
      sum += q.t[d];
    }
    q.tsum128 = 128 * sum;
  }
}

// ---------------------------------------------------------------------------- building
void HnswIndex::own_columns_locked() {
  // A loaded index views its file: the first write copies every column, each at its size.
  // All of them, empty ones and ones this storage never writes included: a column left a view
  // would make every later call look like the first (and grow the arrays each time).
  auto own = [](auto& col) {
    if (!col.is_view()) return;
    col.mut();
    col.refresh();
  };
  own(block0_);
  own(f32_);
  own(qlow_);
  own(qstep_);
  own(qnorm_);
  own(level_);
  own(upper_off_);
  own(upper_);
  own(deleted_);
  own(r8_);
  own(rlow_);
  own(rstep_);
  own(rnorm_);
}

void HnswIndex::reserve_locked(std::size_t n) {
  own_columns_locked();
  if (n <= capacity_) return;
  const std::size_t cap = std::max<std::size_t>({n, capacity_ + capacity_ / 2, 64});
  auto grow = [&](auto& col, std::size_t count) {
    auto& v = col.mut();
    v.resize(count);
    col.refresh();
  };
  grow(block0_, cap * stride_);
  if (p_.keep_float) grow(f32_, cap * pdim_);
  if (p_.storage == Storage::I8 || p_.storage == Storage::I4) grow(qnorm_, cap);
  if (p_.storage == Storage::I4) {
    grow(r8_, cap * pdim_);
    grow(rnorm_, cap);
  }
  grow(level_, cap);
  grow(deleted_, words_for(cap));
  ready_.resize(cap, 1);
  indeg_.resize(cap, 0);
  capacity_ = cap;
}

std::uint32_t HnswIndex::prepare_batch_locked(std::size_t n, const float* rows) {
  if (n_ + n > std::numeric_limits<std::uint32_t>::max() - 1)
    throw std::invalid_argument("an index holds at most 4,294,967,294 vectors");
  reserve_locked(n_ + n);
  const auto first = static_cast<std::uint32_t>(n_);
  auto& upper = upper_.mut();
  auto& uoff = upper_off_.mut();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t id = first + static_cast<std::uint32_t>(i);
    const int level = draw_level();
    level_.owned_data()[id] = static_cast<std::uint8_t>(level);
    std::fill_n(links_mut(id, 0), 1 + 2 * p_.M, 0u);
    upper.resize(upper.size() + std::size_t(level) * (1 + p_.M), 0u);
    uoff.push_back(upper.size());
    store_row(id, rows + i * p_.dim);
    deleted_.owned_data()[id / 64] &= ~(std::uint64_t{1} << (id % 64));
    ready_[id] = 0;
  }
  upper_.refresh();
  upper_off_.refresh();
  n_ += n;
  n_live_ += n;
  if (entry_.load() < 0 && n > 0) {  // the first node of an empty index is the entry point
    entry_.store(first);
    max_level_.store(level_[first]);
    ready_[first] = 1;
  }
  return first;
}

std::uint32_t HnswIndex::add(const float* rows, std::size_t n, int threads) {
  check_rows(rows, n);
  check_half(rows, n);
  std::vector<float> normalised;
  if (p_.metric == Metric::Cosine) {
    normalised = normalised_copy(rows, n);
    rows = normalised.data();
  }
  std::uint32_t first;
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    if ((p_.storage == Storage::I8 || p_.storage == Storage::I4) && !trained_) {
      if (n == 0) return static_cast<std::uint32_t>(n_);
      if (p_.storage == Storage::I8) train_i8(rows, n);
      else train_i4(rows, n);
    }
    first = prepare_batch_locked(n, rows);
  }
  std::shared_lock<std::shared_mutex> lock(mutex_);
  parallel_for(n, resolve_threads(threads, n), [&](std::size_t i, std::size_t) {
    thread_local Scratch scratch;
    insert(first + static_cast<std::uint32_t>(i), scratch, false);
  });
  return first;
}

void HnswIndex::replace(const std::uint32_t* ids, const float* rows, std::size_t n, int threads) {
  check_rows(rows, n);
  check_half(rows, n);
  std::vector<float> normalised;
  if (p_.metric == Metric::Cosine) {
    normalised = normalised_copy(rows, n);
    rows = normalised.data();
  }
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    for (std::size_t i = 0; i < n; ++i)
      if (ids[i] >= n_)
        throw std::out_of_range("id " + std::to_string(ids[i]) + " is not in the index");
    reserve_locked(n_);  // own every column
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t& w = deleted_.owned_data()[ids[i] / 64];
      const std::uint64_t bit = std::uint64_t{1} << (ids[i] % 64);
      if (w & bit) ++n_live_;
      w &= ~bit;
      store_row(ids[i], rows + i * p_.dim);
    }
  }
  std::shared_lock<std::shared_mutex> lock(mutex_);
  parallel_for(n, resolve_threads(threads, n), [&](std::size_t i, std::size_t) {
    thread_local Scratch scratch;
    insert(ids[i], scratch, true);
  });
}

void HnswIndex::select(const std::vector<Cand>& cands, std::size_t m, std::uint32_t self,
                       Scratch& s, std::vector<Cand>& out) const {
  // The heuristic of the paper (algorithm 4): keep a candidate only if it is closer to the
  // base than to every candidate kept so far, which spreads the links over directions.
  out.clear();
  std::vector<float>& row = s.row;
  row.resize(pdim_);
  const bool rows = has_f32();  // compare float32 rows directly
  const bool l2 = p_.metric == Metric::L2;
  for (const Cand& c : cands) {
    if (out.size() >= m) break;
    if (c.id == self) continue;
    bool good = true;
    if (!out.empty() && !rows) {
      float_row(c.id, row.data());
      prepare(row.data(), 0, s.q3, false);
    }
    for (const Cand& k : out) {
      const float d = !rows ? ops_->dist(*this, s.q3, k.id)
                      : l2  ? ops_->l2(f32_row(c.id), f32_row(k.id), pdim_)
                            : -ops_->dot(f32_row(c.id), f32_row(k.id), pdim_);
      if (d < c.dist) {
        good = false;
        break;
      }
    }
    if (good) out.push_back(c);
  }
}

void HnswIndex::count_in_links() {
  indeg_.assign(std::max(capacity_, n_), 0);
  for (std::uint32_t id = 0; id < n_; ++id) {
    const std::uint32_t* l = links(id, 0);
    for (std::uint32_t j = 1; j <= l[0]; ++j) ++indeg_[l[j]];
  }
}

void HnswIndex::write_links(std::uint32_t node, int level, std::vector<Cand>& kept,
                            const std::vector<std::uint32_t>& old) {
  auto in = [&](const std::vector<Cand>& v, std::uint32_t x) {
    return std::any_of(v.begin(), v.end(), [x](const Cand& c) { return c.id == x; });
  };
  std::uint32_t* l = links_mut(node, level);
  if (level == 0) {
    // A dropped node whose only in-link is this one takes the place of the farthest kept
    // node that other nodes also link to (and that this list did not just gain).
    for (std::uint32_t d : old) {
      if (in(kept, d) || __atomic_load_n(&indeg_[d], __ATOMIC_RELAXED) > 1) continue;
      for (std::size_t j = kept.size(); j-- > 0;) {
        const std::uint32_t k = kept[j].id;
        const bool existing = std::find(old.begin(), old.end(), k) != old.end();
        if (existing && __atomic_load_n(&indeg_[k], __ATOMIC_RELAXED) > 1) {
          kept[j].id = d;
          break;
        }
      }
    }
    for (std::uint32_t d : old)
      if (!in(kept, d)) __atomic_fetch_sub(&indeg_[d], 1u, __ATOMIC_RELAXED);
    for (const Cand& c : kept)
      if (std::find(old.begin(), old.end(), c.id) == old.end())
        __atomic_fetch_add(&indeg_[c.id], 1u, __ATOMIC_RELAXED);
  }
  for (std::size_t j = 0; j < kept.size(); ++j) l[1 + j] = kept[j].id;
  l[0] = static_cast<std::uint32_t>(kept.size());
}

bool HnswIndex::connect(std::uint32_t node, std::uint32_t id, int level, Scratch& s, bool force) {
  const std::uint32_t maxd = max_degree(level);
  lock_links(node);
  std::uint32_t* l = links_mut(node, level);
  const std::uint32_t cnt = l[0];
  for (std::uint32_t j = 1; j <= cnt; ++j)
    if (l[j] == id) {  // already linked (a replaced row)
      unlock_links(node);
      return true;
    }
  if (cnt < maxd) {
    l[1 + cnt] = id;
    l[0] = cnt + 1;
    if (level == 0) __atomic_fetch_add(&indeg_[id], 1u, __ATOMIC_RELAXED);
    unlock_links(node);
    return true;
  }
  // Full: choose again among the old links and the new one, seen from `node`. With float32
  // rows the distances are taken between the rows themselves (no prepared query to make).
  std::vector<Cand>& cands = s.relink;
  cands.clear();
  const bool rows = has_f32();
  const bool l2 = p_.metric == Metric::L2;
  if (!rows) {
    std::vector<float>& row = s.row2;
    row.resize(pdim_);
    float_row(node, row.data());
    prepare(row.data(), 0, s.q2, false);
  }
  auto dist = [&](std::uint32_t v) {
    if (!rows) return ops_->dist(*this, s.q2, v);
    return l2 ? ops_->l2(f32_row(node), f32_row(v), pdim_)
              : -ops_->dot(f32_row(node), f32_row(v), pdim_);
  };
  for (std::uint32_t j = 1; j <= cnt; ++j) cands.push_back({dist(l[j]), l[j]});
  const Cand fresh{dist(id), id};
  cands.push_back(fresh);
  std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
  });
  std::vector<Cand> kept;
  select(cands, maxd, node, s, kept);
  bool linked = std::any_of(kept.begin(), kept.end(), [id](const Cand& c) { return c.id == id; });
  if (!linked && force) {  // the new node must be reachable: it takes the farthest slot
    if (kept.size() >= maxd) kept.pop_back();
    kept.push_back(fresh);
    linked = true;
  }
  const std::vector<std::uint32_t> old(l + 1, l + 1 + cnt);
  write_links(node, level, kept, old);
  linked = std::any_of(kept.begin(), kept.end(), [id](const Cand& c) { return c.id == id; });
  unlock_links(node);
  return linked;
}

void HnswIndex::insert(std::uint32_t id, Scratch& s, bool relink) {
  const int level = level_[id];
  std::vector<float> row(pdim_);
  float_row(id, row.data());
  // int4: the graph is built on the int8 rows (the walks of searches use the int4 codes).
  prepare(row.data(), 0, s.q, p_.storage != Storage::I4);
  const std::int64_t ep = entry_.load();
  // The first node has nothing to link to; a replaced entry point is relinked from itself.
  if (ep < 0 || (static_cast<std::uint32_t>(ep) == id && (!relink || n_ == 1))) {
    __atomic_store_n(ready_.data() + id, std::uint8_t{1}, __ATOMIC_RELEASE);
    return;
  }
  const int top = max_level_.load();
  std::uint32_t cur = static_cast<std::uint32_t>(ep);
  for (int lc = top; lc > level; --lc) cur = ops_->greedy(*this, s.q, cur, lc, true);
  std::vector<Cand> chosen, merged;
  for (int lc = std::min(level, top); lc >= 0; --lc) {
    ops_->search_layer(*this, s.q, cur, lc, p_.ef_construction, nullptr, true, s, s.result);
    select(s.result, p_.M, id, s, chosen);
    lock_links(id);
    std::uint32_t* l = links_mut(id, lc);
    // Other inserts may already have linked to this node at this level (a replaced row, or
    // a node reached through its upper levels): keep those links next to the chosen ones.
    merged = chosen;
    for (std::uint32_t j = 1; j <= l[0]; ++j) {
      const std::uint32_t v = l[j];
      if (v == id || std::any_of(merged.begin(), merged.end(),
                                 [v](const Cand& c) { return c.id == v; }))
        continue;
      merged.push_back({ops_->dist(*this, s.q, v), v});
    }
    if (merged.size() > max_degree(lc)) {
      std::sort(merged.begin(), merged.end(), [](const Cand& a, const Cand& b) {
        return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
      });
      std::vector<Cand> kept;
      select(merged, max_degree(lc), id, s, kept);
      merged.swap(kept);
    }
    const std::vector<std::uint32_t> old(l + 1, l + 1 + l[0]);
    write_links(id, lc, merged, old);
    unlock_links(id);
    bool linked = false;
    for (const Cand& c : chosen) linked |= connect(c.id, id, lc, s, false);
    // Every neighbour's heuristic may have dropped the new node (common for inner product,
    // where short vectors are rarely anyone's nearest): then the nearest keeps it anyway, or
    // no search could ever reach it.
    if (!linked && !chosen.empty()) connect(chosen[0].id, id, lc, s, true);
    if (!s.result.empty()) cur = s.result[0].id == id && s.result.size() > 1 ? s.result[1].id
                                                                             : s.result[0].id;
  }
  __atomic_store_n(ready_.data() + id, std::uint8_t{1}, __ATOMIC_RELEASE);
  if (level > top) {
    std::lock_guard<std::mutex> g(entry_mutex_);
    if (level > max_level_.load()) {
      max_level_.store(level);
      entry_.store(id);
    }
  }
}

std::size_t HnswIndex::remove(const std::uint32_t* ids, std::size_t n) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] >= n_)
      throw std::out_of_range("id " + std::to_string(ids[i]) + " is not in the index (" +
                              std::to_string(n_) + " vectors)");
  reserve_locked(n_);
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t& w = deleted_.owned_data()[ids[i] / 64];
    const std::uint64_t bit = std::uint64_t{1} << (ids[i] % 64);
    if (w & bit) continue;
    w |= bit;
    ++removed;
  }
  n_live_ -= removed;
  return removed;
}

std::vector<std::int64_t> HnswIndex::compact(int threads) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  std::vector<std::int64_t> remap(n_, -1);
  std::vector<float> rows;
  rows.reserve(n_live_ * p_.dim);
  std::vector<float> row(pdim_);
  std::int64_t next = 0;
  for (std::uint32_t id = 0; id < n_; ++id) {
    if ((deleted_[id / 64] >> (id % 64)) & 1) continue;
    remap[id] = next++;
    float_row(id, row.data());
    rows.insert(rows.end(), row.begin(), row.begin() + p_.dim);
  }
  if (static_cast<std::size_t>(next) == n_) return remap;
  // Rebuild from the live rows (already normalised), keeping the int8 ranges.
  HnswParams p = p_;
  if (p.metric == Metric::Cosine) p.metric = Metric::IP;
  HnswIndex fresh(p);
  if (p_.storage == Storage::I8 || p_.storage == Storage::I4) {
    auto copy = [](auto& to, const auto& from) {
      to = from;
      to.mut();
      to.refresh();
    };
    copy(fresh.qlow_, qlow_);
    copy(fresh.qstep_, qstep_);
    if (p_.storage == Storage::I4) {
      copy(fresh.rlow_, rlow_);
      copy(fresh.rstep_, rstep_);
    }
    fresh.trained_ = true;
  }
  fresh.rng_state_ = rng_state_;
  fresh.add(rows.data(), static_cast<std::size_t>(next), threads);
  block0_ = std::move(fresh.block0_);
  f32_ = std::move(fresh.f32_);
  qnorm_ = std::move(fresh.qnorm_);
  r8_ = std::move(fresh.r8_);
  rnorm_ = std::move(fresh.rnorm_);
  level_ = std::move(fresh.level_);
  upper_off_ = std::move(fresh.upper_off_);
  upper_ = std::move(fresh.upper_);
  deleted_ = std::move(fresh.deleted_);
  ready_ = std::move(fresh.ready_);
  indeg_ = std::move(fresh.indeg_);
  n_ = fresh.n_;
  n_live_ = fresh.n_live_;
  capacity_ = fresh.capacity_;
  rng_state_ = fresh.rng_state_;
  entry_.store(fresh.entry_.load());
  max_level_.store(fresh.max_level_.load());
  return remap;
}

// ---------------------------------------------------------------------------- search
void HnswIndex::search(const float* queries, std::size_t n, const DenseSearchOptions& opt,
                       std::int64_t* out_ids, float* out_scores) const {
  check_rows(queries, n);
  if (opt.dims && (opt.dims % 16 != 0 || opt.dims > p_.dim))
    throw std::invalid_argument("dims must be a multiple of 16 and at most " +
                                std::to_string(p_.dim) + ", got " + std::to_string(opt.dims));
  if (opt.ef < 1) throw std::invalid_argument("ef must be >= 1");
  std::vector<float> normalised;
  if (p_.metric == Metric::Cosine) {
    normalised = normalised_copy(queries, n);
    queries = normalised.data();
  }
  std::shared_lock<std::shared_mutex> lock(mutex_);
  DenseSearchOptions o = opt;
  // No walk or scan can keep more ids than the index holds: a beam or rescoring depth past
  // that is the same search, and sizing scratch space by it could ask for any amount.
  o.ef = std::min(o.ef, std::max<std::size_t>(n_, 1));
  o.rescore = std::min(o.rescore, n_);
  if (o.allow && !o.exact) {
    // A filter that leaves few documents: scanning them beats walking a graph whose
    // neighbourhoods are mostly excluded.
    std::size_t allowed = 0;
    const std::size_t words = std::min<std::size_t>(o.allow_words, words_for(n_));
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t bits = o.allow[w] & ~deleted_[w];
      if (w == words_for(n_) - 1 && n_ % 64) bits &= (std::uint64_t{1} << (n_ % 64)) - 1;
      allowed += static_cast<std::size_t>(__builtin_popcountll(bits));
    }
    if (allowed <= o.exact_below) o.exact = true;
  }
  parallel_for(n, resolve_threads(o.threads, n), [&](std::size_t i, std::size_t) {
    thread_local Scratch scratch;
    search_one(queries + i * p_.dim, o, scratch, out_ids + i * o.k, out_scores + i * o.k);
  });
}

void HnswIndex::prefetch_r8(const std::vector<Cand>& cands) const {
  // The int8 rows that rescore live apart from the walk's records: ask for all of them
  // before the first is scored, so that their misses overlap. (The empty volatile asm keeps
  // GCC from deleting a loop of prefetches; see prefetch_bytes in hnsw_kernels.inl.)
  for (const Cand& c : cands)
    for (std::uint32_t off = 0; off < pdim_; off += 64) {
      __builtin_prefetch(r8_row(c.id) + off);
      __asm__ __volatile__("");
    }
}

void HnswIndex::search_one(const float* q, const DenseSearchOptions& opt, Scratch& s,
                           std::int64_t* ids, float* scores) const {
  std::vector<float>& row = s.row;
  row.assign(pdim_, 0.0f);
  std::copy(q, q + p_.dim, row.begin());
  const std::uint32_t dims = opt.dims && opt.dims < pdim_ ? opt.dims : 0;
  // k stays the output's width (padded); only n_ ids can be found.
  const std::size_t keep = std::min(std::max(opt.k, opt.rescore), n_);
  std::vector<Cand>& res = s.pool;
  res.clear();
  const std::int64_t ep = entry_.load();
  if (ep >= 0 && keep > 0) {
    prepare(row.data(), dims, s.q);
    if (opt.exact && p_.keep_float) {
      s.q.v.assign(row.begin(), row.end());  // exact search uses the kept float32 rows
      s.q.f32 = true;
    }
    if (opt.exact) {
      s.q.bytes = false;  // exact: the float query against the stored rows
      ops_->scan(*this, s.q, opt, n_, keep, s, res);
    } else {
      std::uint32_t cur = static_cast<std::uint32_t>(ep);
      for (int lc = max_level_.load(); lc > 0; --lc) cur = ops_->greedy(*this, s.q, cur, lc, false);
      ops_->search_layer(*this, s.q, cur, 0, std::max(opt.ef, keep), &opt, false, s, res);
    }
    if ((p_.storage == Storage::I8 || p_.storage == Storage::I4) && opt.rescore == 0 &&
        !opt.exact) {
      // The walk may have compared bytes with bytes (VNNI), or int4 codes: score the results
      // with the float query against the int8 rows, as exact search does.
      s.q.bytes = false;
      if (p_.storage == Storage::I4) prefetch_r8(res);
      for (Cand& c : res) c.dist = ops_->dist(*this, s.q, c.id);
      std::sort(res.begin(), res.end(), [](const Cand& a, const Cand& b) {
        return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
      });
    }
    if (opt.rescore > 0 && !res.empty()) {
      // Exact rescoring of the best candidates: float32 rows where kept, else the stored
      // rows at full dimension.
      const std::size_t r = std::min(res.size(), std::max(opt.rescore, opt.k));
      res.resize(r);
      const bool l2 = p_.metric == Metric::L2;
      if (has_f32()) {
        for (Cand& c : res)
          c.dist = l2 ? ops_->l2(f32_row(c.id), row.data(), pdim_)
                      : -ops_->dot(f32_row(c.id), row.data(), pdim_);
      } else {
        prepare(row.data(), 0, s.q2, false);
        if (p_.storage == Storage::I4) prefetch_r8(res);
        for (Cand& c : res) c.dist = ops_->dist(*this, s.q2, c.id);
      }
      std::sort(res.begin(), res.end(), [](const Cand& a, const Cand& b) {
        return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
      });
    }
  }
  const std::size_t m = std::min(res.size(), opt.k);
  for (std::size_t i = 0; i < m; ++i) {
    ids[i] = res[i].id;
    scores[i] = -res[i].dist;
  }
  for (std::size_t i = m; i < opt.k; ++i) {
    ids[i] = -1;
    scores[i] = -std::numeric_limits<float>::infinity();
  }
}

// ---------------------------------------------------------------------------- files
void HnswIndex::save(const std::string& path, const std::string& extra) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const std::uint64_t meta[] = {p_.dim,
                                static_cast<std::uint64_t>(p_.metric),
                                static_cast<std::uint64_t>(p_.storage),
                                p_.keep_float ? 1u : 0u,
                                p_.M,
                                p_.ef_construction,
                                p_.seed,
                                n_,
                                n_live_,
                                static_cast<std::uint64_t>(entry_.load()),
                                static_cast<std::uint64_t>(static_cast<std::int64_t>(max_level_.load())),
                                rng_state_,
                                trained_ ? 1u : 0u,
                                pdim_};
  auto part = [](std::uint32_t id, const auto* data, std::size_t count) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(data)>>;
    return SectionData{id, sizeof(T), data, count * sizeof(T)};
  };
  std::vector<SectionData> s = {
      {kMeta, 8, meta, sizeof meta},
      part(kBlock0, block0_.data(), n_ * stride_),
      part(kF32, f32_.data(), p_.keep_float ? n_ * pdim_ : 0),
      part(kQLow, qlow_.data(), qlow_.size()),
      part(kQStep, qstep_.data(), qstep_.size()),
      part(kQNorm, qnorm_.data(), qnorm_.empty() ? 0 : n_),
      part(kLevel, level_.data(), n_),
      part(kUpperOff, upper_off_.data(), n_ + 1),
      part(kUpper, upper_.data(), upper_off_[n_]),
      part(kDeleted, deleted_.data(), words_for(n_)),
      part(kRLow, rlow_.data(), rlow_.size()),
      part(kRStep, rstep_.data(), rstep_.size()),
      part(kRNorm, rnorm_.data(), rnorm_.empty() ? 0 : n_),
      part(kR8, r8_.data(), r8_.empty() ? 0 : n_ * pdim_),
      {kExtra, 1, extra.data(), extra.size()}};
  write_sections(path, FileKind::DenseIndex, kFormatVersion, s);
}

std::unique_ptr<HnswIndex> HnswIndex::load(const std::string& path, bool use_mmap,
                                           std::string* extra) {
  auto file = FileView::open(path, FileKind::DenseIndex, kFormatVersion, use_mmap);
  std::uint64_t count = 0;
  const auto* meta = static_cast<const std::uint64_t*>(file->section(kMeta, 8, &count));
  if (count < 14) throw FormatError(path + ": metadata section is too short");
  HnswParams p;
  p.dim = static_cast<std::uint32_t>(meta[0]);
  p.metric = static_cast<Metric>(meta[1]);
  p.storage = static_cast<Storage>(meta[2]);
  p.keep_float = meta[3] != 0;
  p.M = static_cast<std::uint32_t>(meta[4]);
  p.ef_construction = static_cast<std::uint32_t>(meta[5]);
  p.seed = meta[6];
  if (meta[0] > 65536 || meta[4] > 256 || meta[5] > 0xffffffffULL)
    throw FormatError(path + ": invalid parameters");
  std::unique_ptr<HnswIndex> ix;
  try {
    ix = std::make_unique<HnswIndex>(p);
  } catch (const std::invalid_argument& e) {
    throw FormatError(path + ": invalid parameters (" + e.what() + ")");
  }
  ix->n_ = meta[7];
  ix->n_live_ = meta[8];
  ix->entry_.store(static_cast<std::int64_t>(meta[9]));
  ix->max_level_.store(static_cast<int>(static_cast<std::int64_t>(meta[10])));
  ix->rng_state_ = meta[11];
  ix->trained_ = meta[12] != 0;
  if (meta[13] != ix->pdim_) throw FormatError(path + ": padded dimension mismatch");
  if (ix->n_ >= std::numeric_limits<std::uint32_t>::max()) throw FormatError(path + ": bad count");
  ix->capacity_ = ix->n_;
  auto col = [&](std::uint32_t id, auto& c) {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(c[0])>>;
    std::uint64_t k = 0;
    const T* d = static_cast<const T*>(file->section(id, sizeof(T), &k));
    c = std::remove_reference_t<decltype(c)>::view(d, k, file);
  };
  col(kBlock0, ix->block0_);
  col(kF32, ix->f32_);
  col(kQLow, ix->qlow_);
  col(kQStep, ix->qstep_);
  col(kQNorm, ix->qnorm_);
  col(kLevel, ix->level_);
  col(kUpperOff, ix->upper_off_);
  col(kUpper, ix->upper_);
  col(kDeleted, ix->deleted_);
  if (file->version() >= 2) {
    col(kRLow, ix->rlow_);
    col(kRStep, ix->rstep_);
    col(kRNorm, ix->rnorm_);
    col(kR8, ix->r8_);
  }
  ix->check_invariants(path);  // before sizing anything by the file's count
  ix->ready_.assign(ix->n_, 1);
  ix->count_in_links();
  if (extra) {
    std::uint64_t k = 0;
    const char* e = static_cast<const char*>(file->section(kExtra, 1, &k));
    extra->assign(e, k);
  }
  return ix;
}

void HnswIndex::check_invariants(const std::string& path) const {
  auto fail = [&](const std::string& what) {
    throw FormatError(path + " is corrupted (" + what + "); rebuild or restore the index");
  };
  if (block0_.size() != n_ * stride_) fail("level-0 records");
  if (f32_.size() != (p_.keep_float ? n_ * pdim_ : 0)) fail("float32 rows");
  const bool codes = p_.storage == Storage::I8 || p_.storage == Storage::I4;
  const bool q = codes && trained_;
  const bool i4 = p_.storage == Storage::I4;
  if (qlow_.size() != (q ? pdim_ : 0) || qstep_.size() != (q ? pdim_ : 0)) fail("int8 ranges");
  if (qnorm_.size() != (codes ? n_ : 0)) fail("int8 norms");
  if (codes && n_ > 0 && !trained_) fail("untrained int8 rows");
  if (rlow_.size() != (q && i4 ? pdim_ : 0) || rstep_.size() != (q && i4 ? pdim_ : 0))
    fail("int4 storage's int8 ranges");
  if (r8_.size() != (i4 ? n_ * pdim_ : 0) || rnorm_.size() != (i4 ? n_ : 0))
    fail("int4 storage's int8 rows");
  for (const auto* col : {&qstep_, &rstep_})
    for (float s : *col)
      if (!(s > 0) || !std::isfinite(s)) fail("int8 steps");
  for (const auto* col : {&qlow_, &rlow_})
    for (float v : *col)
      if (!std::isfinite(v)) fail("int8 ranges");
  // and every code's value, low + (code + 128) x step, is a finite float (a huge finite step
  // made compact() re-add infinite rows)
  for (const auto& [low, step] : {std::pair{&qlow_, &qstep_}, std::pair{&rlow_, &rstep_}})
    for (std::size_t d = 0; d < low->size(); ++d)
      if (!std::isfinite((*low)[d] + 255.0f * (*step)[d])) fail("int8 ranges");
  for (const auto* col : {&qnorm_, &rnorm_})
    for (float v : *col)
      if (!std::isfinite(v)) fail("int8 norms");
  // Rows of a cosine index are unit vectors; rows kept next to float16 codes fit float16.
  const float limit = p_.metric == Metric::Cosine ? 1.0001f
                      : p_.storage == Storage::F16 ? 65504.0f
                                                   : std::numeric_limits<float>::infinity();
  auto bad = [limit](float v) { return !std::isfinite(v) || std::fabs(v) > limit; };
  for (float v : f32_)
    if (bad(v)) fail("float32 rows");
  if (p_.storage == Storage::F32)
    for (std::size_t id = 0; id < n_; ++id)
      for (std::uint32_t d = 0; d < pdim_; ++d)
        if (bad(f32_row(static_cast<std::uint32_t>(id))[d])) fail("float32 rows");
  if (level_.size() != n_ ||
      upper_off_.size() != n_ + 1 || deleted_.size() != words_for(n_))
    fail("graph arrays");
  if (upper_off_[0] != 0 || upper_off_[n_] != upper_.size()) fail("upper offsets");
  std::size_t dead = 0;
  for (std::uint32_t id = 0; id < n_; ++id) {
    dead += (deleted_[id / 64] >> (id % 64)) & 1;
    const int lv = level_[id];
    if (lv > kMaxLevel) fail("levels");
    if (upper_off_[id + 1] < upper_off_[id] ||
        upper_off_[id + 1] - upper_off_[id] != std::size_t(lv) * (1 + p_.M))
      fail("upper offsets");
    for (int l = 0; l <= lv; ++l) {
      const std::uint32_t* ls = links(id, l);
      if (ls[0] > max_degree(l)) fail("link counts");
      for (std::uint32_t j = 1; j <= ls[0]; ++j)
        if (ls[j] >= n_ || level_[ls[j]] < l) fail("links");
    }
  }
  if (n_ - dead != n_live_) fail("live count");
  const std::int64_t ep = entry_.load();
  if (n_ == 0 ? ep != -1 : (ep < 0 || std::uint64_t(ep) >= n_ || level_[ep] != max_level_.load()))
    fail("entry point");
}

}  // namespace fastrag
