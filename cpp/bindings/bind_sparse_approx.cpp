// Python bindings of the approximate learned-sparse index (fastrag._core.ApproxSparseIndex).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "arrays.hpp"
#include "fastrag/sparse_approx.hpp"
#include "sizes.hpp"

namespace py = pybind11;
using fastrag::ApproxSparseIndex;
using fastrag::bindings::checked;
using fastrag::bindings::Count;

namespace {

// Rows of a CSR triple (int64 indptr starting at 0, uint32 terms, float32 weights).
struct Rows {
  const std::int64_t* indptr;
  std::size_t n;
  const std::uint32_t* terms;
  const float* weights;
};

Rows rows_of(const py::array& indptr, const py::array& terms, const py::array& weights) {
  Rows r{checked<std::int64_t>(indptr, "indptr"), 0, checked<std::uint32_t>(terms, "terms"),
         checked<float>(weights, "weights")};
  if (indptr.size() < 1 || r.indptr[0] != 0)
    throw std::invalid_argument("indptr must start with 0");
  r.n = static_cast<std::size_t>(indptr.size() - 1);
  if (r.indptr[r.n] != terms.size() || weights.size() != terms.size())
    throw std::invalid_argument("indptr[-1], len(terms) and len(weights) must be equal");
  for (std::size_t i = 0; i < r.n; ++i)
    if (r.indptr[i + 1] < r.indptr[i]) throw std::invalid_argument("indptr must not decrease");
  return r;
}

}  // namespace

void register_sparse_approx(py::module_& m) {
  py::class_<ApproxSparseIndex> cls(m, "ApproxSparseIndex");
  cls.def(py::init([](const py::array& indptr, const py::array& terms, const py::array& weights,
            Count list_size, float summary_energy, Count doc_cut,
            Count cluster_size, bool quantize, Count seed, Count threads) {
           const Rows r = rows_of(indptr, terms, weights);
           fastrag::ApproxBuildParams p;
           p.list_size = fastrag::bindings::at_least(list_size, "list_size", 0, 1u << 31);
           p.summary_energy = summary_energy;
           p.doc_cut = fastrag::bindings::at_least(doc_cut, "doc_cut", 1, 1u << 16);
           p.cluster_size = fastrag::bindings::at_least(cluster_size, "cluster_size", 1, 1u << 31);
           p.quantize = quantize;
           p.seed = static_cast<std::uint64_t>(seed.value);
           p.threads = fastrag::bindings::thread_count(threads);
           std::unique_ptr<ApproxSparseIndex> ix;
           {
             // Safe without the GIL: raw pointers into arrays the caller holds.
             py::gil_scoped_release release;
             ix = ApproxSparseIndex::build(r.indptr, r.n, r.terms, r.weights, p);
           }
           return ix;
         }),
         py::arg("indptr"), py::arg("terms"), py::arg("weights"), py::kw_only(),
         py::arg("list_size") = Count{0}, py::arg("summary_energy") = 1.0f, py::arg("doc_cut") = Count{12},
         py::arg("cluster_size") = Count{16}, py::arg("quantize") = true,
         py::arg("seed") = Count{0}, py::arg("threads") = Count{0})
      .def(
          "search",
          [](const ApproxSparseIndex& self, const py::array& indptr, const py::array& terms,
             const py::array& weights, Count k_arg, Count query_cut, float heap_factor,
             Count threads, const py::object& allow) {
            const Rows r = rows_of(indptr, terms, weights);
            fastrag::ApproxSearchParams p;
            p.k = fastrag::bindings::result_width(k_arg, r.n, self.size());
            p.query_cut = fastrag::bindings::at_least(query_cut, "query_cut", 0, 1u << 30);
            p.heap_factor = heap_factor;
            p.threads = fastrag::bindings::thread_count(threads);
            if (!allow.is_none()) {
              auto aa = allow.cast<py::array>();
              p.allow = checked<std::uint64_t>(aa, "allow");
              p.allow_words = static_cast<std::size_t>(aa.size());
            }
            py::array_t<std::int64_t> ids({r.n, p.k});
            py::array_t<float> scores({r.n, p.k});
            std::int64_t* ip = ids.mutable_data();
            float* sp = scores.mutable_data();
            {
              // Safe without the GIL: the inputs are held by the caller, the outputs are ours.
              py::gil_scoped_release release;
              self.search(r.indptr, r.n, r.terms, r.weights, p, ip, sp);
            }
            return py::make_tuple(ids, scores);
          },
          py::arg("indptr"), py::arg("terms"), py::arg("weights"), py::kw_only(),
          py::arg("k") = Count{10}, py::arg("query_cut") = Count{0},
          py::arg("heap_factor") = 1.0f, py::arg("threads") = Count{1},
          py::arg("allow") = py::none())
      .def("save",
           [](const ApproxSparseIndex& self, const std::string& path, const py::bytes& extra) {
             std::string e = extra;
             py::gil_scoped_release release;  // only C++ objects from here on
             self.save(path, e);
           },
           py::arg("path"), py::arg("extra") = py::bytes())
      .def_static("load",
                  [](const std::string& path) {
                    std::string extra;
                    std::unique_ptr<ApproxSparseIndex> ix;
                    {
                      py::gil_scoped_release release;
                      ix = ApproxSparseIndex::load(path, &extra);
                    }
                    return py::make_tuple(py::cast(std::move(ix)), py::bytes(extra));
                  },
                  py::arg("path"))
      .def("__len__", &ApproxSparseIndex::size)
      .def("params",
           [](const ApproxSparseIndex& self) {
             const auto& p = self.params();
             py::dict d;
             d["list_size"] = p.list_size;
             d["summary_energy"] = p.summary_energy;
             d["doc_cut"] = p.doc_cut;
             d["cluster_size"] = p.cluster_size;
             d["quantize"] = p.quantize;
             d["seed"] = p.seed;
             return d;
           })
      .def("stats", [](const ApproxSparseIndex& self) {
        auto s = self.stats();
        py::dict d;
        d["n_docs"] = s.n_docs;
        d["n_terms"] = s.n_terms;
        d["n_entries"] = s.n_entries;
        d["n_postings"] = s.n_postings;
        d["n_blocks"] = s.n_blocks;
        d["n_summary_entries"] = s.n_summary_entries;
        d["memory_bytes"] = s.memory_bytes;
        return d;
      });
}
