// Python bindings of the HNSW index (fastrag._core.HnswIndex).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "arrays.hpp"
#include "fastrag/hnsw.hpp"
#include "sizes.hpp"

namespace py = pybind11;
using fastrag::HnswIndex;
using fastrag::bindings::at_least;
using fastrag::bindings::checked;
using fastrag::bindings::Count;
using fastrag::bindings::in_range;
using fastrag::bindings::thread_count;
using fastrag::bindings::to_numpy;

namespace {

fastrag::Metric parse_metric(const std::string& s) {
  if (s == "ip") return fastrag::Metric::IP;
  if (s == "cosine") return fastrag::Metric::Cosine;
  if (s == "l2") return fastrag::Metric::L2;
  throw std::invalid_argument("metric must be 'ip', 'cosine' or 'l2', got '" + s + "'");
}
fastrag::Storage parse_storage(const std::string& s) {
  if (s == "float32") return fastrag::Storage::F32;
  if (s == "int8") return fastrag::Storage::I8;
  if (s == "float16") return fastrag::Storage::F16;
  if (s == "int4") return fastrag::Storage::I4;
  throw std::invalid_argument("storage must be 'float32', 'int8', 'float16' or 'int4', got '" + s +
                              "'");
}
const char* metric_name(fastrag::Metric m) {
  return m == fastrag::Metric::IP ? "ip" : m == fastrag::Metric::Cosine ? "cosine" : "l2";
}
const char* storage_name(fastrag::Storage s) {
  switch (s) {
    case fastrag::Storage::F32: return "float32";
    case fastrag::Storage::I8: return "int8";
    case fastrag::Storage::F16: return "float16";
    case fastrag::Storage::I4: return "int4";
  }
  return "unknown";
}

// Checks a (n, dim) float32 matrix and returns n.
std::size_t rows_of(const HnswIndex& ix, const py::array& a, const char* name) {
  checked<float>(a, name, 2);
  if (static_cast<std::uint32_t>(a.shape(1)) != ix.params().dim || a.shape(1) < 0)
    throw std::invalid_argument(std::string(name) + ": expected " +
                                std::to_string(ix.params().dim) + " dimensions, got " +
                                std::to_string(a.shape(1)));
  return static_cast<std::size_t>(a.shape(0));
}

}  // namespace

void register_dense(py::module_& m) {
  py::class_<HnswIndex> cls(m, "HnswIndex");
  cls      .def(py::init([](Count dim, const std::string& metric, const std::string& storage,
                       bool keep_float, Count M, Count ef_construction, std::uint64_t seed) {
             fastrag::HnswParams p;
             p.dim = static_cast<std::uint32_t>(in_range(dim, "dim", 1, 65536));
             p.metric = parse_metric(metric);
             p.storage = parse_storage(storage);
             p.keep_float = keep_float;
             p.M = static_cast<std::uint32_t>(in_range(M, "M", 2, 256));
             p.ef_construction = static_cast<std::uint32_t>(
                 in_range(ef_construction, "ef_construction", 1, 0xffffffffLL));
             p.seed = seed;
             return std::make_unique<HnswIndex>(p);
           }),
           py::arg("dim"), py::kw_only(), py::arg("metric") = "cosine",
           py::arg("storage") = "float32", py::arg("keep_float") = false,
           py::arg("M") = Count{16}, py::arg("ef_construction") = Count{200},
           py::arg("seed") = 100)
      .def(
          "add",
          [](HnswIndex& self, const py::array& rows, Count threads) {
            const std::size_t n = rows_of(self, rows, "vectors");
            const auto* p = static_cast<const float*>(rows.data());
            // Safe without the GIL: raw pointers into arrays the caller keeps alive.
            py::gil_scoped_release release;
            return self.add(p, n, thread_count(threads));
          },
          py::arg("vectors"), py::kw_only(), py::arg("threads") = Count{0})
      .def(
          "replace",
          [](HnswIndex& self, const py::array& ids, const py::array& rows, Count threads) {
            const auto* ip = checked<std::uint32_t>(ids, "ids");
            const std::size_t n = rows_of(self, rows, "vectors");
            if (static_cast<std::size_t>(ids.size()) != n)
              throw std::invalid_argument("ids and vectors must have the same length");
            const auto* p = static_cast<const float*>(rows.data());
            py::gil_scoped_release release;
            self.replace(ip, p, n, thread_count(threads));
          },
          py::arg("ids"), py::arg("vectors"), py::kw_only(), py::arg("threads") = Count{0})
      .def(
          "remove",
          [](HnswIndex& self, const py::array& ids) {
            const auto* p = checked<std::uint32_t>(ids, "ids");
            return self.remove(p, static_cast<std::size_t>(ids.size()));
          },
          py::arg("ids"))
      .def(
          "compact",
          [](HnswIndex& self, Count threads) {
            std::vector<std::int64_t> remap;
            {
              py::gil_scoped_release release;
              remap = self.compact(thread_count(threads));
            }
            return to_numpy(remap);
          },
          py::kw_only(), py::arg("threads") = Count{0})
      .def(
          "search",
          [](const HnswIndex& self, const py::array& queries, Count k_arg, Count ef,
             Count threads, bool exact, Count dims, Count rescore, const py::object& allow,
             Count exact_below) {
            const std::size_t n = rows_of(self, queries, "queries");
            const std::size_t k = fastrag::bindings::result_width(k_arg, n, self.size());
            // A beam or rescoring depth past 2**32 ids is the whole index (the core clamps it
            // to the index's size).
            constexpr std::uint64_t kAll = std::uint64_t{1} << 32;
            fastrag::DenseSearchOptions o;
            o.k = k;
            o.ef = at_least(ef, "ef", 1, kAll);
            o.threads = thread_count(threads);
            o.exact = exact;
            o.dims = static_cast<std::uint32_t>(at_least(dims, "dims", 0, 0xffffffffULL));
            o.rescore = at_least(rescore, "rescore", 0, kAll);
            o.exact_below = at_least(exact_below, "exact_below", 0, kAll);
            if (!allow.is_none()) {
              auto aa = allow.cast<py::array>();
              o.allow = checked<std::uint64_t>(aa, "allow");
              o.allow_words = static_cast<std::size_t>(aa.size());
            }
            py::array_t<std::int64_t> ids({n, k});
            py::array_t<float> scores({n, k});
            std::int64_t* ip = ids.mutable_data();
            float* sp = scores.mutable_data();
            const auto* q = static_cast<const float*>(queries.data());
            {
              // Safe without the GIL: inputs held by the caller, outputs owned here.
              py::gil_scoped_release release;
              self.search(q, n, o, ip, sp);
            }
            return py::make_tuple(ids, scores);
          },
          py::arg("queries"), py::kw_only(), py::arg("k") = Count{10}, py::arg("ef") = Count{64},
          py::arg("threads") = Count{1}, py::arg("exact") = false, py::arg("dims") = Count{0},
          py::arg("rescore") = Count{0}, py::arg("allow") = py::none(),
          py::arg("exact_below") = Count{0})
      .def("get_vector",
           [](const HnswIndex& self, std::uint32_t id) {
             py::array_t<float> out(self.params().dim);
             self.get_row(id, out.mutable_data());
             return out;
           })
      .def(
          "links",
          [](const HnswIndex& self, std::uint32_t id, int level) {
            // The neighbours of a node at a level (for tests of the graph's shape).
            if (id >= self.size()) throw std::out_of_range("id is not in the index");
            if (level < 0 || level > self.level(id)) return py::array_t<std::uint32_t>(0);
            const std::uint32_t* l = self.links(id, level);
            py::array_t<std::uint32_t> out(l[0]);
            std::copy(l + 1, l + 1 + l[0], out.mutable_data());
            return out;
          },
          py::arg("id"), py::arg("level") = 0)
      .def("is_live", &HnswIndex::is_live, py::arg("id"))
      .def("stats",
           [](const HnswIndex& self) {
             py::dict d;
             d["n_vectors"] = self.size();
             d["n_live"] = self.live();
             d["memory_bytes"] = self.memory_bytes();
             d["allocated_bytes"] = self.allocated_bytes();
             d["capacity"] = self.capacity();
             d["kernels"] = self.kernels();
             // How walks mark visited ids now (a bitset up to 2^21 ids, else a hash table).
             d["visited"] = self.size() <= self.visited_bits_max() ? "bitset" : "hash";
             return d;
           })
      .def_property_readonly("dim", [](const HnswIndex& s) { return s.params().dim; })
      .def_property_readonly("metric", [](const HnswIndex& s) { return metric_name(s.params().metric); })
      .def_property_readonly("storage",
                             [](const HnswIndex& s) { return storage_name(s.params().storage); })
      .def_property_readonly("keep_float", [](const HnswIndex& s) { return s.params().keep_float; })
      .def_property_readonly("M", [](const HnswIndex& s) { return s.params().M; })
      .def_property_readonly("ef_construction",
                             [](const HnswIndex& s) { return s.params().ef_construction; });
  fastrag::bindings::def_files(cls);
}
