// Size arguments at the boundary (k, ef, dims, threads, M...): taken as whole Python ints and
// checked here, so that a negative value is a ValueError that names the argument (not a
// TypeError about overloads) and a huge one is clamped or refused before it reaches a size_t
// (2**64 - 1 wrapping around, 2**63 turning into a negative numpy dimension).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace fastrag::bindings {

// A Python int (or anything with __index__, numpy integers included; not bool or float),
// saturated to the int64 range.
struct Count {
  std::int64_t value = 0;
};

// The value as given (a saturated one as the bound it reached).
inline std::string shown(Count c) {
  if (c.value == std::numeric_limits<std::int64_t>::max()) return "2**63 - 1 or more";
  if (c.value == std::numeric_limits<std::int64_t>::min()) return "-2**63 or less";
  return std::to_string(c.value);
}

// `name` must be in [lo, hi]: ValueError otherwise, saying what was given.
inline std::int64_t in_range(Count c, const char* name, std::int64_t lo, std::int64_t hi) {
  if (c.value < lo || c.value > hi)
    throw std::invalid_argument(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got " + shown(c));
  return c.value;
}

// `name` must be >= lo; values past `clamp` are taken as `clamp` (where more cannot change
// the result, e.g. a beam wider than the index).
inline std::size_t at_least(Count c, const char* name, std::int64_t lo, std::uint64_t clamp) {
  if (c.value < lo)
    throw std::invalid_argument(std::string(name) + " must be >= " + std::to_string(lo) +
                                ", got " + shown(c));
  return static_cast<std::size_t>(std::min<std::uint64_t>(static_cast<std::uint64_t>(c.value),
                                                          clamp));
}

// Worker threads: <= 0 means every hardware thread (the core's rule); more than the core
// would ever start are clamped (parallel.hpp caps them again).
inline int thread_count(Count c) {
  constexpr std::int64_t kMax = 1 << 16;
  return static_cast<int>(c.value < 0 ? 0 : std::min(c.value, kMax));
}

// The width k of a (n_queries, k) result over an index of n_items: results past n_items are
// padding (id -1, score -inf), which is fine while it is small; a k past the index whose
// padding alone would be large (over 2**24 cells, 192 MiB of ids and scores) is refused.
inline std::size_t result_width(Count c, std::size_t n_queries, std::size_t n_items) {
  if (c.value < 0)
    throw std::invalid_argument("k must be >= 0, got " + shown(c));
  const auto k = static_cast<std::uint64_t>(c.value);
  constexpr std::uint64_t kMaxPadded = std::uint64_t{1} << 24;
  if (k > n_items && k > kMaxPadded / std::max<std::uint64_t>(n_queries, 1))
    throw std::invalid_argument(
        "k=" + shown(c) + " is larger than the index (" + std::to_string(n_items) +
        " items), and the padding of the (n_queries, k) results would be too large; at most " +
        std::to_string(n_items) + " results can come back: pass k <= " +
        std::to_string(std::max<std::size_t>(n_items, 1)));
  return static_cast<std::size_t>(k);
}

}  // namespace fastrag::bindings

namespace pybind11::detail {

template <>
struct type_caster<fastrag::bindings::Count> {
  PYBIND11_TYPE_CASTER(fastrag::bindings::Count, const_name("int"));

  bool load(handle src, bool) {
    if (!src || PyBool_Check(src.ptr()) || PyFloat_Check(src.ptr())) return false;
    object index = reinterpret_steal<object>(PyNumber_Index(src.ptr()));
    if (!index) {
      PyErr_Clear();
      return false;
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    value.value = overflow > 0   ? std::numeric_limits<std::int64_t>::max()
                  : overflow < 0 ? std::numeric_limits<std::int64_t>::min()
                                 : static_cast<std::int64_t>(v);
    return true;
  }

  static handle cast(fastrag::bindings::Count c, return_value_policy, handle) {
    return PyLong_FromLongLong(c.value);
  }
};

}  // namespace pybind11::detail
