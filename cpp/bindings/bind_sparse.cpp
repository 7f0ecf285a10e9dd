// Python bindings of the inverted index (fastrag._core.SparseIndex).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "arrays.hpp"
#include "fastrag/sparse_index.hpp"
#include "sizes.hpp"

namespace py = pybind11;
using fastrag::bindings::checked;
using fastrag::bindings::Count;
using fastrag::bindings::to_numpy;
using fastrag::SparseIndex;

namespace {

// Checks a CSR pair (indptr with n+1 entries starting at 0, entries of length indptr[n]).
std::size_t csr_rows(const py::array& indptr, const py::array& entries, const char* what) {
  const auto* p = checked<std::int64_t>(indptr, "indptr");
  checked<std::uint32_t>(entries, what);
  if (indptr.size() < 1) throw std::invalid_argument("indptr must hold at least one entry (0)");
  const auto n = static_cast<std::size_t>(indptr.size() - 1);
  if (p[0] != 0) throw std::invalid_argument("indptr[0] must be 0");
  if (p[n] != entries.size())
    throw std::invalid_argument("indptr[-1] (" + std::to_string(p[n]) + ") must equal len(" +
                                what + ") (" + std::to_string(entries.size()) + ")");
  return n;
}


// impact_cache: True, False or "auto".
fastrag::ImpactCache cache_policy(const py::object& v) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>() ? fastrag::ImpactCache::On
                                                          : fastrag::ImpactCache::Off;
  if (py::isinstance<py::str>(v) && v.cast<std::string>() == "auto")
    return fastrag::ImpactCache::Auto;
  throw std::invalid_argument("impact_cache must be True, False or 'auto', got " +
                              py::repr(v).cast<std::string>());
}

py::object cache_policy_object(fastrag::ImpactCache p) {
  if (p == fastrag::ImpactCache::Auto) return py::str("auto");
  return py::bool_(p == fastrag::ImpactCache::On);
}

}  // namespace

void register_sparse(py::module_& m) {
  py::class_<SparseIndex> cls(m, "SparseIndex");
  cls      .def(py::init([](const std::string& scoring, const std::string& method, float k1, float b,
                       float delta, const py::object& impact_cache) {
             const fastrag::ImpactCache policy = cache_policy(impact_cache);
             fastrag::BM25Params p;
             p.method = fastrag::parse_bm25_method(method);
             p.k1 = k1;
             p.b = b;
             p.delta = delta;
             if (scoring == "bm25")
               return std::make_unique<SparseIndex>(fastrag::Scoring::BM25, p, policy);
             if (scoring == "impact")
               return std::make_unique<SparseIndex>(fastrag::Scoring::Impact, p, policy);
             throw std::invalid_argument("scoring must be 'bm25' or 'impact', got '" + scoring +
                                         "'");
           }),
           py::kw_only(), py::arg("scoring") = "bm25", py::arg("method") = "lucene",
           py::arg("k1") = 1.5f, py::arg("b") = 0.75f, py::arg("delta") = 0.5f,
           py::arg("impact_cache") = py::str("auto"))
      .def(
          "add",
          [](SparseIndex& self, const py::array& indptr, const py::array& terms,
             const py::object& values) {
            const std::size_t n = csr_rows(indptr, terms, "terms");
            const float* v = nullptr;
            if (!values.is_none()) {
              auto va = values.cast<py::array>();
              v = checked<float>(va, "values");
              if (va.size() != terms.size())
                throw std::invalid_argument("values must have one weight per term");
            }
            const auto* p = static_cast<const std::int64_t*>(indptr.data());
            const auto* t = static_cast<const std::uint32_t*>(terms.data());
            // Safe without the GIL: only raw pointers into the arrays, kept alive by the caller.
            py::gil_scoped_release release;
            return self.add(p, n, t, v);
          },
          py::arg("indptr"), py::arg("terms"), py::arg("values") = py::none())
      .def(
          "remove",
          [](SparseIndex& self, const py::array& ids) {
            const auto* p = checked<std::uint32_t>(ids, "ids");
            return self.remove(p, static_cast<std::size_t>(ids.size()));
          },
          py::arg("ids"))
      .def(
          "compact",
          [](SparseIndex& self, bool reorder, Count iterations, Count min_size, Count threads) {
            fastrag::ReorderParams params;
            params.iterations = static_cast<int>(in_range(iterations, "iterations", 1, 1000));
            params.min_size = at_least(min_size, "min_size", 2, std::uint64_t{1} << 32);
            params.threads = thread_count(threads);
            std::vector<std::int64_t> remap;
            {
              py::gil_scoped_release release;
              remap = self.compact(reorder ? &params : nullptr);
            }
            return to_numpy(remap);
          },
          py::kw_only(), py::arg("reorder") = false, py::arg("iterations") = Count{20},
          py::arg("min_size") = Count{32}, py::arg("threads") = Count{0})
      .def(
          "search",
          [](const SparseIndex& self, const py::array& indptr, const py::array& terms,
             const py::object& weights, Count k_arg, Count threads, const py::object& allow,
             const std::string& algorithm) {
            const std::size_t n = csr_rows(indptr, terms, "terms");
            const std::size_t k =
                fastrag::bindings::result_width(k_arg, n, self.size());
            fastrag::QueryBatch q;
            q.indptr = static_cast<const std::int64_t*>(indptr.data());
            q.n_queries = n;
            q.terms = static_cast<const std::uint32_t*>(terms.data());
            if (!weights.is_none()) {
              auto wa = weights.cast<py::array>();
              q.weights = checked<float>(wa, "weights");
              if (wa.size() != terms.size())
                throw std::invalid_argument("weights must have one entry per query term");
            }
            fastrag::SearchOptions opt;
            opt.k = k;
            opt.threads = fastrag::bindings::thread_count(threads);
            opt.algorithm = fastrag::parse_algorithm(algorithm);
            if (!allow.is_none()) {
              auto aa = allow.cast<py::array>();
              opt.allow = checked<std::uint64_t>(aa, "allow");
              opt.allow_words = static_cast<std::size_t>(aa.size());
            }
            py::array_t<std::int64_t> ids({n, k});
            py::array_t<float> scores({n, k});
            std::int64_t* ip = ids.mutable_data();
            float* sp = scores.mutable_data();
            {
              // Safe without the GIL: the inputs are held by the caller, the outputs are ours.
              py::gil_scoped_release release;
              self.search(q, opt, ip, sp);
            }
            return py::make_tuple(ids, scores);
          },
          py::arg("indptr"), py::arg("terms"), py::arg("weights") = py::none(), py::kw_only(),
          py::arg("k") = Count{10}, py::arg("threads") = Count{1}, py::arg("allow") = py::none(),
          py::arg("algorithm") = "auto")
      .def("document_frequencies",
           [](const SparseIndex& self) {
             return to_numpy(self.document_frequencies());
           })
      .def(
          "set_global_stats",
          [](SparseIndex& self, std::uint64_t n_docs, double total_len, const py::array& df) {
            const auto* d = checked<std::uint32_t>(df, "df");
            const auto n = static_cast<std::size_t>(df.size());
            py::gil_scoped_release release;  // df is held by the caller for the call's duration
            self.set_global_stats(n_docs, total_len, d, n);
          },
          py::arg("n_docs"), py::arg("total_len"), py::arg("df"))
      .def("clear_global_stats", &SparseIndex::clear_global_stats)
      .def_property_readonly("has_global_stats", &SparseIndex::has_global_stats)
      .def("is_live", &SparseIndex::is_live, py::arg("id"))
      .def("stats",
           [](const SparseIndex& self) {
             auto s = self.stats();
             py::dict d;
             d["n_docs"] = s.n_docs;
             d["n_live"] = s.n_live;
             d["n_terms"] = s.n_terms;
             d["n_postings"] = s.n_postings;
             d["avgdl"] = s.avgdl;
             d["total_len"] = s.total_len;
             d["memory_bytes"] = s.memory_bytes;
             d["allocated_bytes"] = s.allocated_bytes;
             return d;
           })
      .def_property_readonly("scoring",
                             [](const SparseIndex& self) {
                               return self.scoring() == fastrag::Scoring::BM25 ? "bm25" : "impact";
                             })
      .def_property_readonly(
          "method", [](const SparseIndex& self) { return bm25_method_name(self.params().method); })
      .def_property_readonly("impact_cache",
                             [](const SparseIndex& self) {
                               py::gil_scoped_release release;  // may commit pending documents
                               return self.impact_cache();
                             })
      .def_property_readonly("impact_cache_policy",
                             [](const SparseIndex& self) {
                               return cache_policy_object(self.impact_cache_policy());
                             })
      .def(
          "set_impact_cache",
          [](SparseIndex& self, const py::object& policy) {
            const fastrag::ImpactCache p = cache_policy(policy);
            py::gil_scoped_release release;
            self.set_impact_cache(p);
          },
          py::arg("policy"))
      .def_property_readonly("k1", [](const SparseIndex& self) { return self.params().k1; })
      .def_property_readonly("b", [](const SparseIndex& self) { return self.params().b; })
      .def_property_readonly("delta", [](const SparseIndex& self) { return self.params().delta; });
  fastrag::bindings::def_save(cls);
  cls.def_static(
      "load",
      [](const std::string& path, bool mmap, const py::object& impact_cache) {
        const fastrag::ImpactCache policy = cache_policy(impact_cache);
        std::string extra;
        std::unique_ptr<SparseIndex> ix;
        {
          py::gil_scoped_release release;
          ix = SparseIndex::load(path, mmap, &extra, policy);
        }
        return py::make_tuple(py::cast(std::move(ix)), py::bytes(extra));
      },
      py::arg("path"), py::kw_only(), py::arg("mmap") = false,
      py::arg("impact_cache") = py::str("auto"));
}
