// Python binding of the ASCII word cache (fastrag._core.AsciiWordCache): BM25.add's fast path
// from ASCII strings to term ids for the English analyzer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <string_view>
#include <vector>

#include "arrays.hpp"
#include "sizes.hpp"
#include "fastrag/ascii_words.hpp"

namespace py = pybind11;
using fastrag::AsciiWordCache;
using fastrag::bindings::at_least;
using fastrag::bindings::checked;
using fastrag::bindings::Count;
using fastrag::bindings::to_numpy;

namespace {

// The ASCII bytes of a str, or false for anything else (non-str, non-ASCII str).
bool ascii_view(PyObject* o, std::string_view* out) {
  if (!PyUnicode_Check(o)) return false;
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(o) != 0) throw py::error_already_set();
#endif
  if (!PyUnicode_IS_ASCII(o)) return false;
  *out = std::string_view(static_cast<const char*>(PyUnicode_DATA(o)),
                          static_cast<std::size_t>(PyUnicode_GET_LENGTH(o)));
  return true;
}

py::tuple encode(const AsciiWordCache& self, const py::list& texts, Count start_arg) {
  const std::size_t n = static_cast<std::size_t>(PyList_GET_SIZE(texts.ptr()));
  const std::size_t start = at_least(start_arg, "start", 0, n);
  // The documents from `start` up to the first that is not an ASCII str. Each str is held
  // here (the list could drop it while the GIL is released), and a str's bytes never move.
  std::vector<py::object> held;
  std::vector<std::string_view> docs;
  std::size_t stop = start;
  for (; stop < n; ++stop) {
    PyObject* o = PyList_GET_ITEM(texts.ptr(), static_cast<Py_ssize_t>(stop));
    std::string_view v;
    if (!ascii_view(o, &v)) break;
    held.push_back(py::reinterpret_borrow<py::object>(o));
    docs.push_back(v);
  }
  std::vector<std::int64_t> indptr;
  std::vector<std::uint32_t> ids;
  std::vector<std::string> new_words;
  {
    // Safe without the GIL: encode reads only the bytes of the strs held above and C++
    // objects (the cache locks itself).
    py::gil_scoped_release release;
    self.encode(docs, indptr, ids, new_words);
  }
  py::list words(new_words.size());
  for (std::size_t k = 0; k < new_words.size(); ++k) {
    PyObject* s = PyUnicode_DecodeASCII(new_words[k].data(),
                                        static_cast<Py_ssize_t>(new_words[k].size()), nullptr);
    if (!s) throw py::error_already_set();
    PyList_SET_ITEM(words.ptr(), static_cast<Py_ssize_t>(k), s);
  }
  return py::make_tuple(stop, to_numpy(indptr), to_numpy(ids), std::move(words));
}

void resolve(AsciiWordCache& self, py::array& ids, const std::vector<std::string>& new_words,
             const py::array& new_ids) {
  checked<std::uint32_t>(ids, "ids");
  if (!ids.writeable()) throw std::invalid_argument("ids must be a writable array");
  const std::uint32_t* nid = checked<std::uint32_t>(new_ids, "new_ids");
  if (static_cast<std::size_t>(new_ids.size()) != new_words.size())
    throw std::invalid_argument("new_ids must hold one id per new word: " +
                                std::to_string(new_words.size()) + " expected, got " +
                                std::to_string(new_ids.size()));
  std::uint32_t* p = static_cast<std::uint32_t*>(ids.mutable_data());
  const std::size_t n = static_cast<std::size_t>(ids.size());
  // Safe without the GIL: the arrays are held by this call's handles and the words are C++
  // copies; the cache locks itself.
  py::gil_scoped_release release;
  self.resolve(p, n, new_words, nid);
}

}  // namespace

void register_text(py::module_& m) {
  py::class_<AsciiWordCache>(m, "AsciiWordCache",
                             "ASCII text -> term ids for the English analyzer's rules, with a "
                             "cache of each word's term id (BM25.add's fast path).")
      .def(py::init([](Count min_length, bool lowercase, const std::vector<std::string>& stopwords,
                       Count max_words) {
             return new AsciiWordCache(
                 at_least(min_length, "min_length", 1, std::uint64_t{1} << 32), lowercase,
                 stopwords, at_least(max_words, "max_words", 1, std::uint64_t{1} << 40));
           }),
           py::kw_only(), py::arg("min_length"), py::arg("lowercase"), py::arg("stopwords"),
           py::arg("max_words") = Count{static_cast<std::int64_t>(AsciiWordCache::kDefaultMaxWords)})
      .def("encode", &encode, py::arg("texts"), py::arg("start") = Count{0},
           "Words of texts[start:stop] as term ids, stop being the first item that is not an "
           "ASCII str -> (stop, indptr int64, ids uint32, new_words); a word not cached has "
           "the id 2**31 + its index in new_words until resolve().")
      .def("resolve", &resolve, py::arg("ids"), py::arg("new_words"), py::arg("new_ids"),
           "Replaces the pending ids in ids (in place) by new_ids and caches the new words.")
      .def_property_readonly("size", &AsciiWordCache::size, "Cached words.")
      .def_property_readonly("memory_bytes", &AsciiWordCache::memory_bytes)
      .def_property_readonly("min_length", &AsciiWordCache::min_length)
      .def_property_readonly("lowercase", &AsciiWordCache::lowercase);
}
