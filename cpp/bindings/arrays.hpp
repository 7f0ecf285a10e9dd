// Checks numpy arrays at the boundary without copying them: dtype, dimensions and
// C-contiguity, with an error that says how to fix the input.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastrag/maxsim.hpp"  // TokenType

namespace fastrag::bindings {

namespace py = pybind11;

template <class T>
const char* dtype_name();
template <> inline const char* dtype_name<float>() { return "float32"; }
template <> inline const char* dtype_name<std::uint32_t>() { return "uint32"; }
template <> inline const char* dtype_name<std::int64_t>() { return "int64"; }
template <> inline const char* dtype_name<std::uint64_t>() { return "uint64"; }

// Returns a pointer into `a` after checking it is a C-contiguous `ndim`-dimensional T array.
template <class T>
const T* checked(const py::array& a, const char* name, int ndim = 1) {
  // equal(), not is(): an unpickled array carries an equal dtype object that is not the
  // cached one. equal() also refuses a non-native byte order.
  if (!a.dtype().equal(py::dtype::of<T>()))
    throw std::invalid_argument(std::string(name) + " must be a " + dtype_name<T>() +
                                " array, got " + std::string(py::str(a.dtype())) +
                                " (convert with np.asarray(x, dtype=np." + dtype_name<T>() +
                                "))");
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(ndim) +
                                " dimension(s), got " + std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) +
                                " must be C-contiguous (use np.ascontiguousarray(x))");
  return static_cast<const T*>(a.data());
}

// A new 1-D numpy array holding a copy of v.
template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> out(v.size());
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

// save(path, extra) of an index class whose C++ type has save(path, extra).
template <class Index>
void def_save(py::class_<Index>& cls) {
  cls.def(
      "save",
      [](const Index& self, const std::string& path, const py::bytes& extra) {
        std::string e = extra;
        py::gil_scoped_release release;  // only C++ objects from here on
        self.save(path, e);
      },
      py::arg("path"), py::arg("extra") = py::bytes());
}

// def_save and the static load(path, mmap=) -> (index, extra) of an index class whose C++
// type has load(path, mmap, &extra).
template <class Index>
void def_files(py::class_<Index>& cls) {
  def_save(cls);
  cls.def_static(
          "load",
          [](const std::string& path, bool mmap) {
            std::string extra;
            std::unique_ptr<Index> ix;
            {
              py::gil_scoped_release release;
              ix = Index::load(path, mmap, &extra);
            }
            return py::make_tuple(py::cast(std::move(ix)), py::bytes(extra));
          },
          py::arg("path"), py::kw_only(), py::arg("mmap") = false);
}

// Checks token vectors (MaxSim's token store, pooling's inputs): a C-contiguous 2-D float32
// or float16 array, used without a copy. Returns its element type.
inline TokenType token_type(const py::array& t, const std::string& name) {
  TokenType type;
  if (t.dtype().equal(py::dtype::of<float>()))
    type = TokenType::F32;
  else if (t.dtype().equal(py::dtype("float16")))
    type = TokenType::F16;
  else
    throw std::invalid_argument(
        name + " must be a float32 or float16 array, got " + std::string(py::str(t.dtype())) +
        " (convert with np.asarray(x, dtype=np.float32) or dtype=np.float16)");
  if (t.ndim() != 2)
    throw std::invalid_argument(name + " must have 2 dimensions (n_tokens, dim), got " +
                                std::to_string(t.ndim()));
  if (!(t.flags() & py::array::c_style))
    throw std::invalid_argument(name + " must be C-contiguous (use np.ascontiguousarray(x))");
  return type;
}

}  // namespace fastrag::bindings
