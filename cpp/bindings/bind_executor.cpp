// Python binding of the query executor (fastrag._core.execute): legs given as dicts of the core
// index objects and numpy arrays, checked without copies, run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "fastrag/executor.hpp"

namespace py = pybind11;
using fastrag::HnswIndex;
using fastrag::SparseIndex;
using fastrag::bindings::checked;

namespace {

// An argument's name for error messages ("legs[0]" + "['depth']"), put together only when a
// message is made: a query reads a dozen arguments, and building each name cost allocations.
struct Name {
  const std::string& prefix;
  const char* key;
  std::string str() const { return prefix + key; }
};
const std::string kNoPrefix;
Name top(const char* key) { return {kNoPrefix, key}; }

// An int argument (numpy integers too; not bool or float), saturated to int64, >= lo.
std::int64_t int_arg(py::handle h, const Name& name, std::int64_t lo) {
  if (!h || PyBool_Check(h.ptr()) || PyFloat_Check(h.ptr()) || !PyIndex_Check(h.ptr()))
    throw std::invalid_argument(name.str() + " must be an integer >= " + std::to_string(lo) +
                                ", got " + std::string(py::repr(h)));
  auto index = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow) v = overflow > 0 ? std::numeric_limits<long long>::max()
                                 : std::numeric_limits<long long>::min();
  if (v < lo)
    throw std::invalid_argument(name.str() + " must be >= " + std::to_string(lo) + ", got " +
                                std::string(py::repr(h)));
  return static_cast<std::int64_t>(v);
}

double float_arg(py::handle h, const Name& name) {
  if (!h || PyBool_Check(h.ptr()) || !(PyFloat_Check(h.ptr()) || PyIndex_Check(h.ptr())))
    throw std::invalid_argument(name.str() + " must be a number, got " + std::string(py::repr(h)));
  const double v = PyFloat_AsDouble(h.ptr());
  if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

// A numpy array argument of element type T, C-contiguous, `ndim` dimensions: its data and
// the array (borrowed, for `keep`; no new array is made).
template <class T>
struct ArrayArg {
  const T* data;
  py::array array;
};
template <class T>
ArrayArg<T> array_arg(py::handle h, const Name& name, int ndim = 1) {
  if (!py::isinstance<py::array>(h))
    throw std::invalid_argument(name.str() + " must be a numpy array, got " +
                                std::string(py::str(py::type::handle_of(h).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(h);
  const bool ok = a.dtype().equal(py::dtype::of<T>()) && a.ndim() == ndim &&
                  (a.flags() & py::array::c_style);
  const T* data = ok ? static_cast<const T*>(a.data())
                     : checked<T>(a, name.str().c_str(), ndim);  // (raises the message)
  return {data, std::move(a)};
}

constexpr std::int64_t kAll = std::int64_t{1} << 32;  // past any index's size

// Every key a leg may hold: [kIndex, kIndptr) any leg, [kIndptr, kQueries) sparse legs,
// [kQueries, kNumKeys) dense legs.
enum Key : std::size_t {
  kIndex, kDepth, kWeight, kAllow, kSlotChunk,
  kIndptr, kTerms, kWeights, kAlgorithm,
  kQueries, kEf, kDims, kExact, kRescore, kExactBelow,
  kNumKeys
};
constexpr const char* kKeys[kNumKeys] = {
    "index",  "depth", "weight",  "allow",     "slot_chunk",
    "indptr", "terms", "weights", "algorithm",
    "queries", "ef",   "dims",    "exact",     "rescore", "exact_below"};

// A key as an interned str, made once (kept for the life of the process: a query reads a leg's
// dozen keys, and making each str from its C string every time cost more than the lookups).
// (Called with the GIL held, which guards the table.)
PyObject* interned(const char* key) {
  static std::unordered_map<std::string, PyObject*> table;
  auto it = table.find(key);
  if (it == table.end()) {
    PyObject* k = PyUnicode_InternFromString(key);
    if (!k) throw py::error_already_set();
    it = table.emplace(key, k).first;
  }
  return it->second;
}

// Reads one leg dict into `leg`; the arrays and the index go to `keep`. Returns the number of
// queries it holds (-1: none given, allowed for a leg of weight 0).
std::int64_t parse_leg(const py::handle& item, std::size_t l, fastrag::Leg& leg,
                       std::vector<py::object>& keep) {
  const std::string name = "legs[" + std::to_string(l) + "]";
  if (!py::isinstance<py::dict>(item))
    throw std::invalid_argument(name + " must be a dict (index=, depth=, weight=, ...)");
  const auto d = py::reinterpret_borrow<py::dict>(item);
  py::object values[kNumKeys];  // d[key], or None (a value of None counts as absent)
  bool present[kNumKeys] = {};
  for (std::size_t i = 0; i < kNumKeys; ++i) {
    PyObject* v = PyDict_GetItemWithError(d.ptr(), interned(kKeys[i]));
    if (!v && PyErr_Occurred()) throw py::error_already_set();
    present[i] = v != nullptr;
    values[i] = v ? py::reinterpret_borrow<py::object>(v) : py::none();
  }
  const py::object& index = values[kIndex];
  if (index.is_none())
    throw std::invalid_argument(name + ": 'index' is missing (a _core.SparseIndex or HnswIndex)");
  keep.push_back(index);
  const bool sparse = py::isinstance<SparseIndex>(index);
  if (!sparse && !py::isinstance<HnswIndex>(index))
    throw std::invalid_argument(name + "['index'] must be a fastrag._core.SparseIndex or "
                                "HnswIndex (the wrapper's ._core)");
  // d holds another key when fewer of the leg's keys are present than it has keys
  const std::size_t own_begin = sparse ? kIndptr : kQueries, own_end = sparse ? kQueries : kNumKeys;
  const auto own = [&](std::size_t i) { return i < kIndptr || (i >= own_begin && i < own_end); };
  std::size_t found = 0;
  for (std::size_t i = 0; i < kNumKeys; ++i) found += present[i] && own(i);
  if (found != static_cast<std::size_t>(PyDict_Size(d.ptr())))
    for (auto kv : d) {
      const auto key = py::cast<std::string>(py::str(kv.first));
      bool known = false;
      for (std::size_t i = 0; i < kNumKeys; ++i) known |= own(i) && key == kKeys[i];
      if (!known)
        throw std::invalid_argument(name + ": unknown key '" + key + "' for a " +
                                    (sparse ? "sparse" : "dense") + " leg");
    }
  if (!values[kDepth].is_none())
    leg.depth = static_cast<std::size_t>(
        std::min(int_arg(values[kDepth], {name, "['depth']"}, 1), kAll));
  if (!values[kWeight].is_none()) leg.weight = float_arg(values[kWeight], {name, "['weight']"});
  if (!values[kAllow].is_none()) {
    auto a = array_arg<std::uint64_t>(values[kAllow], {name, "['allow']"});
    leg.allow = a.data;
    leg.allow_words = static_cast<std::size_t>(a.array.size());
    keep.push_back(std::move(a.array));
  }
  if (!values[kSlotChunk].is_none()) {
    auto a = array_arg<std::uint32_t>(values[kSlotChunk], {name, "['slot_chunk']"});
    leg.slot_chunk = a.data;
    leg.slot_chunk_size = static_cast<std::size_t>(a.array.size());
    keep.push_back(std::move(a.array));
  }
  std::int64_t n = -1;
  if (sparse) {
    leg.sparse = index.cast<const SparseIndex*>();
    if (!values[kAlgorithm].is_none())
      leg.algorithm = fastrag::parse_algorithm(py::cast<std::string>(values[kAlgorithm]));
    if (!values[kIndptr].is_none() || !values[kTerms].is_none()) {
      auto [p, indptr] = array_arg<std::int64_t>(values[kIndptr], {name, "['indptr']"});
      auto [t, terms] = array_arg<std::uint32_t>(values[kTerms], {name, "['terms']"});
      leg.sparse_queries.terms = t;
      if (indptr.size() < 1)
        throw std::invalid_argument(name + "['indptr'] must hold n_queries + 1 entries");
      n = indptr.size() - 1;
      if (p[n] != terms.size())
        throw std::invalid_argument(name + ": indptr[-1] (" + std::to_string(p[n]) +
                                    ") must equal len(terms) (" + std::to_string(terms.size()) +
                                    ")");
      leg.sparse_queries.indptr = p;
      leg.sparse_queries.n_queries = static_cast<std::size_t>(n);
      keep.push_back(indptr);
      keep.push_back(terms);
      if (!values[kWeights].is_none()) {
        auto [weights, w] = array_arg<float>(values[kWeights], {name, "['weights']"});
        leg.sparse_queries.weights = weights;
        if (w.size() != terms.size())
          throw std::invalid_argument(name + ": weights must have one entry per query term");
        keep.push_back(w);
      }
    } else if (leg.weight > 0) {
      throw std::invalid_argument(name + ": a sparse leg needs 'indptr' and 'terms' (the "
                                  "queries as CSR term ids)");
    }
  } else {
    leg.dense = index.cast<const HnswIndex*>();
    const std::uint32_t dim = leg.dense->params().dim;
    if (!values[kQueries].is_none()) {
      auto [queries, q] = array_arg<float>(values[kQueries], {name, "['queries']"}, 2);
      leg.dense_queries = queries;
      if (q.shape(1) != static_cast<py::ssize_t>(dim))
        throw std::invalid_argument(name + "['queries']: expected " + std::to_string(dim) +
                                    " dimensions, got " + std::to_string(q.shape(1)));
      n = q.shape(0);
      keep.push_back(q);
    } else if (leg.weight > 0) {
      throw std::invalid_argument(name + ": a dense leg needs 'queries' (n_queries, dim)");
    }
    if (!values[kEf].is_none())
      leg.ef = static_cast<std::size_t>(std::min(int_arg(values[kEf], {name, "['ef']"}, 1), kAll));
    if (!values[kDims].is_none())
      leg.dims = static_cast<std::uint32_t>(
          std::min<std::int64_t>(int_arg(values[kDims], {name, "['dims']"}, 0), 0xFFFFFFFFLL));
    if (!values[kExact].is_none()) leg.exact = py::cast<bool>(values[kExact]);
    if (values[kRescore].is_none())
      leg.rescore_auto = true;  // DenseIndex.search's default for the depth searched
    else
      leg.rescore = static_cast<std::size_t>(
          std::min(int_arg(values[kRescore], {name, "['rescore']"}, 0), kAll));
    if (values[kExactBelow].is_none())  // DenseIndex.search's default
      leg.exact_below = leg.allow ? std::max<std::size_t>(1000, leg.dense->live() / 50) : 0;
    else
      leg.exact_below = static_cast<std::size_t>(
          std::min(int_arg(values[kExactBelow], {name, "['exact_below']"}, 0), kAll));
  }
  return n;
}

// A call's parsed arguments: the legs, the batch size and the options, checked; `keep` holds
// every object whose memory the core reads.
struct Call {
  std::vector<py::object> keep;
  std::vector<fastrag::Leg> legs;
  std::size_t nq = 0;
  fastrag::ExecuteOptions opt;
};

void parse_call(Call& call, const py::list& legs_arg, const py::object& chunk_doc_arg,
                const py::object& k_arg, const std::string& fusion, double rrf_k,
                const std::string& aggregate, const py::object& threads_arg,
                const py::object& fused_arg) {
  auto& keep = call.keep;
  auto& legs = call.legs;
  auto& opt = call.opt;
  legs.resize(legs_arg.size());
  std::int64_t n = -1;
  for (std::size_t l = 0; l < legs.size(); ++l) {
    const std::int64_t nl = parse_leg(legs_arg[l], l, legs[l], keep);
    if (nl < 0) continue;
    if (n >= 0 && nl != n)
      throw std::invalid_argument("legs[" + std::to_string(l) + "] holds " + std::to_string(nl) +
                                  " queries, legs before it " + std::to_string(n) +
                                  "; every leg must hold the same batch");
    n = nl;
  }
  if (legs.empty()) throw std::invalid_argument("give at least one leg");
  const std::size_t nq = call.nq = n < 0 ? 0 : static_cast<std::size_t>(n);
  opt.fusion = fastrag::parse_fusion(fusion);
  opt.aggregate = fastrag::parse_aggregate(aggregate);
  opt.rrf_k = rrf_k;
  const std::int64_t threads = int_arg(threads_arg, top("threads"), 0);
  opt.threads = static_cast<int>(std::min<std::int64_t>(threads, 1 << 16));
  auto chunk_doc = array_arg<std::uint32_t>(chunk_doc_arg, top("chunk_doc"));
  opt.chunk_doc = chunk_doc.data;
  opt.n_chunks = static_cast<std::size_t>(chunk_doc.array.size());
  keep.push_back(std::move(chunk_doc.array));
  // At most n_chunks documents (or chunks) can come back: a width past that is padding, fine
  // while small, refused when the padding alone would be large (over 2**24 cells).
  auto width = [&](const py::object& arg, const char* name, std::int64_t lo) {
    const std::int64_t w = int_arg(arg, top(name), lo);
    constexpr std::uint64_t kMaxPadded = std::uint64_t{1} << 24;
    if (static_cast<std::uint64_t>(w) > opt.n_chunks &&
        static_cast<std::uint64_t>(w) > kMaxPadded / std::max<std::size_t>(nq, 1))
      throw std::invalid_argument(
          std::string(name) + "=" + std::to_string(w) + " is larger than the number of chunks (" +
          std::to_string(opt.n_chunks) + ") and the padded (n_queries, " + name +
          ") results would be too large; pass " + name + " <= " +
          std::to_string(std::max<std::size_t>(opt.n_chunks, 1)));
    return static_cast<std::size_t>(w);
  };
  opt.k = width(k_arg, "k", 1);
  opt.fused_width = width(fused_arg, "fused", 0);
  fastrag::validate(legs, nq, opt);
}

py::dict execute(const py::list& legs_arg, const py::object& chunk_doc_arg, const py::object& k_arg,
                 const std::string& fusion, double rrf_k, const std::string& aggregate,
                 bool explain, const py::object& threads_arg, const py::object& fused_arg) {
  Call call;
  parse_call(call, legs_arg, chunk_doc_arg, k_arg, fusion, rrf_k, aggregate, threads_arg,
             fused_arg);
  const auto& legs = call.legs;
  const auto& opt = call.opt;
  const std::size_t nq = call.nq;
  const std::size_t k = opt.k, L = legs.size();
  py::array_t<std::int64_t> ids({nq, k});
  py::array_t<float> scores({nq, k});
  py::array_t<std::int64_t> chunks({nq, k});
  py::array_t<std::int64_t> depths({nq, L});
  fastrag::ExecuteOutput out;
  out.docs = ids.mutable_data();
  out.scores = scores.mutable_data();
  out.chunks = chunks.mutable_data();
  out.depths = depths.mutable_data();
  py::object xs = py::none(), xr = py::none();
  if (explain) {
    py::array_t<float> s({nq, k, L + 1});
    py::array_t<std::int32_t> r({nq, k, L + 1});
    out.explain_scores = s.mutable_data();
    out.explain_ranks = r.mutable_data();
    xs = s;
    xr = r;
  }
  py::object fc = py::none(), fs = py::none();
  if (opt.fused_width > 0) {
    py::array_t<std::int64_t> c({nq, opt.fused_width});
    py::array_t<float> sc({nq, opt.fused_width});
    out.fused_chunks = c.mutable_data();
    out.fused_scores = sc.mutable_data();
    fc = c;
    fs = sc;
  }
  {
    // Safe without the GIL: from here on only raw pointers into objects held by `keep` (the
    // index objects and every input array, so that a caller mutating its dicts meanwhile frees
    // nothing) and into the outputs created above; the indexes lock themselves.
    py::gil_scoped_release release;
    fastrag::execute(legs, nq, opt, out);
  }
  py::dict result;
  const std::pair<const char*, py::handle> items[] = {
      {"ids", ids}, {"scores", scores}, {"chunks", chunks}, {"depths", depths},
      {"explain_scores", xs}, {"explain_ranks", xr}, {"fused_chunks", fc}, {"fused_scores", fs}};
  for (const auto& [key, value] : items)
    if (PyDict_SetItem(result.ptr(), interned(key), value.ptr()) != 0)
      throw py::error_already_set();
  return result;
}

// One query's hits as (document id, score, (start, end)) tuples, best first: `execute` for the
// query path, without the (1, k) arrays that Python would turn into lists again.
py::list execute_one(const py::list& legs_arg, const py::object& chunk_doc_arg,
                     const py::list& doc_ids, const py::object& start_arg,
                     const py::object& end_arg, const py::object& k_arg,
                     const std::string& fusion, double rrf_k, const std::string& aggregate) {
  // No more documents than chunks can come back: k is capped at the table's size (a large k
  // on a small collection is no error here, as it is not for a search).
  const auto table_size = py::isinstance<py::array>(chunk_doc_arg)  // (checked in parse_call)
                              ? py::reinterpret_borrow<py::array>(chunk_doc_arg).size() : 0;
  const std::int64_t k_capped =
      std::min<std::int64_t>(int_arg(k_arg, top("k"), 1), std::max<py::ssize_t>(table_size, 1));
  Call call;
  parse_call(call, legs_arg, chunk_doc_arg, py::int_(k_capped), fusion, rrf_k, aggregate,
             py::int_(1), py::int_(0));
  if (call.nq != 1)
    throw std::invalid_argument("execute_one runs one query; the legs hold " +
                                std::to_string(call.nq));
  auto [start, starts] = array_arg<std::int64_t>(start_arg, top("chunk_start"));
  auto [end, ends] = array_arg<std::int64_t>(end_arg, top("chunk_end"));
  const std::size_t n_chunks = call.opt.n_chunks;
  if (static_cast<std::size_t>(starts.size()) < n_chunks ||
      static_cast<std::size_t>(ends.size()) < n_chunks)
    throw std::invalid_argument("chunk_start and chunk_end must hold a span per chunk of "
                                "chunk_doc (" + std::to_string(n_chunks) + ")");
  const std::size_t k = call.opt.k;
  std::vector<std::int64_t> docs(k), chunks(k);
  std::vector<float> scores(k);
  fastrag::ExecuteOutput out;
  out.docs = docs.data();
  out.scores = scores.data();
  out.chunks = chunks.data();
  {
    py::gil_scoped_release release;  // (as in execute: raw pointers into `call.keep`)
    fastrag::execute(call.legs, 1, call.opt, out);
  }
  const auto n_docs = static_cast<std::int64_t>(doc_ids.size());
  std::size_t n = 0;
  for (; n < k && docs[n] >= 0; ++n) {
    if (docs[n] >= n_docs)
      throw std::invalid_argument("chunk_doc names document " + std::to_string(docs[n]) +
                                  " but doc_ids holds " + std::to_string(n_docs));
    // the spans and the id strings are read at random places: ask for them all first so
    // that the cache misses overlap
    const std::int64_t c = chunks[n];  // a chunk of chunk_doc (the executor maps no other)
    __builtin_prefetch(start + c);
    __builtin_prefetch(end + c);
    __builtin_prefetch(PyList_GET_ITEM(doc_ids.ptr(), docs[n]));
  }
  auto rows = py::reinterpret_steal<py::list>(PyList_New(static_cast<py::ssize_t>(n)));
  if (!rows) throw py::error_already_set();
  for (std::size_t j = 0; j < n; ++j) {
    const std::int64_t c = chunks[j];
    auto id = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(doc_ids.ptr(), docs[j]));
    auto score = py::reinterpret_steal<py::object>(PyFloat_FromDouble(scores[j]));
    auto a = py::reinterpret_steal<py::object>(PyLong_FromLongLong(start[c]));
    auto b = py::reinterpret_steal<py::object>(PyLong_FromLongLong(end[c]));
    auto span = py::reinterpret_steal<py::object>(PyTuple_New(2));
    auto row = py::reinterpret_steal<py::object>(PyTuple_New(3));
    if (!score || !a || !b || !span || !row) throw py::error_already_set();
    PyTuple_SET_ITEM(span.ptr(), 0, a.release().ptr());
    PyTuple_SET_ITEM(span.ptr(), 1, b.release().ptr());
    PyTuple_SET_ITEM(row.ptr(), 0, id.release().ptr());
    PyTuple_SET_ITEM(row.ptr(), 1, score.release().ptr());
    PyTuple_SET_ITEM(row.ptr(), 2, span.release().ptr());
    PyList_SET_ITEM(rows.ptr(), static_cast<py::ssize_t>(j), row.release().ptr());
  }
  return rows;
}

}  // namespace

void register_executor(py::module_& m) {
  m.def("execute", &execute, py::arg("legs"), py::arg("chunk_doc"), py::kw_only(),
        py::arg("k") = 10, py::arg("fusion") = "rrf", py::arg("rrf_k") = 60.0,
        py::arg("aggregate") = "max", py::arg("explain") = false, py::arg("threads") = 1,
        py::arg("fused") = 0,
        R"doc(Runs a batch of queries end to end: every leg at its depth with its allow-list,
fusion over chunk ids, chunk -> document aggregation, deepening until k documents or every
leg is exhausted, top-k. The GIL is released; queries run across `threads` (0 = all cores).

legs: dicts with index (a _core.SparseIndex or _core.HnswIndex), depth, weight, allow (uint64
bitset or None), slot_chunk (uint32 per internal id -> chunk id, 0xFFFFFFFF = none); sparse:
indptr (int64), terms (uint32), weights (float32 or None), algorithm; dense: queries
(float32 (n, dim)), ef, dims, exact, rescore (None: DenseIndex.search's rule), exact_below
(None: DenseIndex.search's rule). chunk_doc: uint32 per chunk id -> document ordinal
(0xFFFFFFFF = deleted). Returns a dict of ids (n, k) int64 document ordinals (-1 padded),
scores (n, k) float32 (-inf padded), chunks (n, k) int64 best chunk, depths (n, n_legs) int64,
explain_scores (n, k, n_legs + 1) float32 and explain_ranks int32 (None unless explain),
fused_chunks (n, fused) int64 and fused_scores float32: the first `fused` fused chunks of known
documents, for rerank stages (None unless fused > 0).)doc");
  m.def("execute_one", &execute_one, py::arg("legs"), py::arg("chunk_doc"), py::arg("doc_ids"),
        py::arg("chunk_start"), py::arg("chunk_end"), py::arg("k") = 10,
        py::arg("fusion") = "rrf", py::arg("rrf_k") = 60.0, py::arg("aggregate") = "max",
        R"doc(`execute` for one query on one thread, its hits as a list of (doc_ids[ordinal],
score, (chunk_start[chunk], chunk_end[chunk])) tuples for the best chunk of each document,
best first (fewer than k when fewer documents match). chunk_start, chunk_end: int64 per chunk. k is capped at len(chunk_doc).)doc");
}
