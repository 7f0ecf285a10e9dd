// Error types of the core. The bindings map them to Python exceptions:
//   std::invalid_argument -> ValueError, std::out_of_range -> IndexError,
//   fastrag::FormatError  -> fastrag.IndexFormatError, fastrag::IOError -> OSError.
#pragma once

#include <stdexcept>
#include <string>

namespace fastrag {

// A file that is not a fastrag index, is of another kind or version, is truncated or corrupted.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The operating system refused a file operation (mapped to OSError).
class IOError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Raised for an operation the object cannot do in its current state (e.g. writing to an mmap view).
class StateError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace fastrag
