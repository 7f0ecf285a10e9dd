// Python binding of late-interaction scoring (fastrag._core.maxsim).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "arrays.hpp"
#include "sizes.hpp"
#include "fastrag/maxsim.hpp"

namespace py = pybind11;
using fastrag::bindings::checked;
using fastrag::bindings::Count;
using fastrag::bindings::thread_count;
using fastrag::bindings::token_type;

void register_maxsim(py::module_& m) {
  m.def(
      "maxsim",
      [](const py::array& query, const py::array& tokens, const py::array& offsets,
         const py::array& candidates, Count threads_arg) {
        fastrag::TokenStoreView store;
        store.type = token_type(tokens, "tokens");
        store.data = tokens.data();
        store.n_tokens = static_cast<std::size_t>(tokens.shape(0));
        store.dim = static_cast<std::size_t>(tokens.shape(1));
        const float* q = checked<float>(query, "query", 2);
        if (static_cast<std::size_t>(query.shape(1)) != store.dim)
          throw std::invalid_argument("query: expected " + std::to_string(store.dim) +
                                      " dimensions (tokens.shape[1]), got " +
                                      std::to_string(query.shape(1)));
        store.offsets = checked<std::uint64_t>(offsets, "offsets");
        if (offsets.size() == 0)
          throw std::invalid_argument(
              "offsets must have n_docs + 1 entries (at least [0]), got an empty array");
        store.n_docs = static_cast<std::size_t>(offsets.size()) - 1;
        const std::uint32_t* cand = checked<std::uint32_t>(candidates, "candidates");
        const std::size_t n_cand = static_cast<std::size_t>(candidates.size());
        const std::size_t n_query = static_cast<std::size_t>(query.shape(0));
        py::array_t<float> out(n_cand);
        float* o = out.mutable_data();
        {
          // Safe without the GIL: raw pointers into arrays the caller keeps alive and into
          // `out`, owned here; the core checks offsets, candidates and the query first.
          py::gil_scoped_release release;
          fastrag::maxsim(q, n_query, store, cand, n_cand, thread_count(threads_arg), o);
        }
        return out;
      },
      py::arg("query"), py::arg("tokens"), py::arg("offsets"), py::arg("candidates"),
      py::kw_only(), py::arg("threads") = Count{0},
      "MaxSim of a query (m, dim) against candidate documents of a packed token store.");
}
