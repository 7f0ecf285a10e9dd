// fastrag._core: wires each area's bindings; the C++ core itself knows nothing of Python.
#include <pybind11/pybind11.h>

#include "fastrag/error.hpp"

namespace py = pybind11;

void register_sparse(py::module_& m);
void register_sparse_approx(py::module_& m);
void register_dense(py::module_& m);
void register_maxsim(py::module_& m);
void register_pooling(py::module_& m);
void register_executor(py::module_& m);
void register_text(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastrag's native core (private: use the fastrag package)";
  // A damaged, truncated or foreign file: a ValueError subclass, exported as fastrag.IndexFormatError.
  py::register_exception<fastrag::FormatError>(m, "IndexFormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastrag::IOError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const fastrag::StateError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  register_sparse(m);
  register_sparse_approx(m);
  register_dense(m);
  register_maxsim(m);
  register_pooling(m);
  register_executor(m);
  register_text(m);
}
