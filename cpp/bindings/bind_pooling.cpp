// Python binding of span mean pooling (fastrag._core.span_mean_pool*), the pooling step of late
// chunking. Every function returns (pooled (n_spans, dim) float32, valid (n_spans,) bool).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "arrays.hpp"
#include "sizes.hpp"
#include "fastrag/pooling.hpp"

namespace py = pybind11;
using fastrag::bindings::checked;
using fastrag::bindings::Count;
using fastrag::bindings::thread_count;
using fastrag::bindings::token_type;

namespace {

const std::int64_t* checked_spans(const py::array& spans) {
  const std::int64_t* p = checked<std::int64_t>(spans, "spans", 2);
  if (spans.shape(1) != 2)
    throw std::invalid_argument(
        "spans must have shape (n_spans, 2), one [start, end) pair per row, got (" +
        std::to_string(spans.shape(0)) + ", " + std::to_string(spans.shape(1)) + ")");
  return p;
}

const std::uint64_t* checked_span_offsets(const py::array& a, std::size_t n_docs,
                                          const char* docs) {
  const std::uint64_t* p = checked<std::uint64_t>(a, "span_offsets");
  if (static_cast<std::size_t>(a.size()) != n_docs + 1)
    throw std::invalid_argument("span_offsets must have n_docs + 1 = " +
                                std::to_string(n_docs + 1) + " entries (" + docs + "), got " +
                                std::to_string(a.size()));
  return p;
}

// Allocates the outputs, then pools without the GIL. `call` runs the core on (out, valid).
template <class Call>
py::tuple pool(std::size_t n_spans, std::size_t dim, Call&& call) {
  py::array_t<float> out({n_spans, dim});
  py::array_t<bool> valid(n_spans);
  float* o = out.mutable_data();
  bool* v = valid.mutable_data();
  {
    // Safe without the GIL: `call` reads only raw pointers into arrays that the caller keeps
    // alive (and the py::array handles of the caller's frame hold), and writes into `out` and
    // `valid`, owned here; the core checks offsets and spans before reading any token.
    py::gil_scoped_release release;
    call(o, v);
  }
  return py::make_tuple(std::move(out), std::move(valid));
}

}  // namespace

void register_pooling(py::module_& m) {
  m.def(
      "span_mean_pool",
      [](const py::array& tokens, const py::array& spans, Count threads_arg) {
        const fastrag::TokenType type = token_type(tokens, "tokens");
        const fastrag::TokenRows doc{tokens.data(), static_cast<std::size_t>(tokens.shape(0))};
        const std::size_t dim = static_cast<std::size_t>(tokens.shape(1));
        const std::int64_t* s = checked_spans(spans);
        const std::size_t n_spans = static_cast<std::size_t>(spans.shape(0));
        const std::uint64_t span_offsets[2] = {0, n_spans};
        return pool(n_spans, dim, [&](float* o, bool* v) {
          fastrag::span_mean_pool(&doc, 1, type, dim, s, span_offsets, n_spans,
                                  thread_count(threads_arg), o, v);
        });
      },
      py::arg("tokens"), py::arg("spans"), py::kw_only(), py::arg("threads") = Count{0},
      "Means of one document's token vectors (n_tokens, dim) over [start, end) spans "
      "(n_spans, 2) int64 -> (pooled, valid).");

  m.def(
      "span_mean_pool_batch",
      [](const py::array& tokens, const py::array& offsets, const py::array& spans,
         const py::array& span_offsets, Count threads_arg) {
        fastrag::TokenStoreView store;
        store.type = token_type(tokens, "tokens");
        store.data = tokens.data();
        store.n_tokens = static_cast<std::size_t>(tokens.shape(0));
        store.dim = static_cast<std::size_t>(tokens.shape(1));
        store.offsets = checked<std::uint64_t>(offsets, "offsets");
        if (offsets.size() == 0)
          throw std::invalid_argument(
              "offsets must have n_docs + 1 entries (at least [0]), got an empty array");
        store.n_docs = static_cast<std::size_t>(offsets.size()) - 1;
        const std::int64_t* s = checked_spans(spans);
        const std::size_t n_spans = static_cast<std::size_t>(spans.shape(0));
        const std::uint64_t* so =
            checked_span_offsets(span_offsets, store.n_docs, "as many documents as offsets");
        return pool(n_spans, store.dim, [&](float* o, bool* v) {
          fastrag::span_mean_pool(store, s, so, n_spans, thread_count(threads_arg), o, v);
        });
      },
      py::arg("tokens"), py::arg("offsets"), py::arg("spans"), py::arg("span_offsets"),
      py::kw_only(), py::arg("threads") = Count{0},
      "Span means over a packed token store (document k owns tokens[offsets[k]:offsets[k+1]]; "
      "its spans are spans[span_offsets[k]:span_offsets[k+1]]) -> (pooled, valid).");

  m.def(
      "span_mean_pool_list",
      [](const py::sequence& documents, const py::array& spans, const py::array& span_offsets,
         Count threads_arg) {
        const std::size_t n_docs = documents.size();
        if (n_docs == 0)
          throw std::invalid_argument("documents is empty: there is nothing to pool");
        std::vector<py::array> arrays;  // holds the documents while the GIL is released
        std::vector<fastrag::TokenRows> docs(n_docs);
        arrays.reserve(n_docs);
        fastrag::TokenType type = fastrag::TokenType::F32;
        std::size_t dim = 0;
        for (std::size_t k = 0; k < n_docs; ++k) {
          const std::string name = "documents[" + std::to_string(k) + "]";
          py::object item = documents[k];
          if (!py::isinstance<py::array>(item))
            throw std::invalid_argument(name + " must be a numpy array, got " +
                                        std::string(py::str(py::type::of(item).attr("__name__"))));
          arrays.push_back(py::reinterpret_borrow<py::array>(item));
          const py::array& a = arrays.back();
          const fastrag::TokenType t = token_type(a, name);
          const std::size_t d = static_cast<std::size_t>(a.shape(1));
          if (k == 0) {
            type = t;
            dim = d;
          } else if (t != type) {
            throw std::invalid_argument(
                name + " is " + std::string(py::str(a.dtype())) + " but documents[0] is " +
                (type == fastrag::TokenType::F16 ? "float16" : "float32") +
                ": give every document the same dtype");
          } else if (d != dim) {
            throw std::invalid_argument(name + ": expected " + std::to_string(dim) +
                                        " dimensions (documents[0].shape[1]), got " +
                                        std::to_string(d));
          }
          docs[k] = fastrag::TokenRows{a.data(), static_cast<std::size_t>(a.shape(0))};
        }
        const std::int64_t* s = checked_spans(spans);
        const std::size_t n_spans = static_cast<std::size_t>(spans.shape(0));
        const std::uint64_t* so =
            checked_span_offsets(span_offsets, n_docs, "one more than len(documents)");
        return pool(n_spans, dim, [&](float* o, bool* v) {
          fastrag::span_mean_pool(docs.data(), n_docs, type, dim, s, so, n_spans,
                                  thread_count(threads_arg), o, v);
        });
      },
      py::arg("documents"), py::arg("spans"), py::arg("span_offsets"), py::kw_only(),
      py::arg("threads") = Count{0},
      "Span means over a list of (n_tokens_k, dim) arrays, without packing them (the spans of "
      "document k are spans[span_offsets[k]:span_offsets[k+1]]) -> (pooled, valid).");

  m.def("pooling_kernels", &fastrag::pooling_kernels,
        "Kernels span_mean_pool uses now: 'avx2' or 'generic' (FASTRAG_KERNELS=generic).");
}
