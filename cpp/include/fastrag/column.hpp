// A typed array that either owns its elements or views a loaded / mapped file. A view turns
// into an owned copy on the first write, so an index loaded with mmap can still be modified.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace fastrag {

template <class T, class Alloc = std::allocator<T>>
class Column {
 public:
  Column() = default;
  Column(const Column& o) : own_(o.own_), ptr_(o.ptr_), n_(o.n_), keep_(o.keep_) { fix(); }
  Column(Column&& o) noexcept
      : own_(std::move(o.own_)), ptr_(o.ptr_), n_(o.n_), keep_(std::move(o.keep_)) {
    fix();
  }
  Column& operator=(Column o) noexcept {
    own_ = std::move(o.own_);
    ptr_ = o.ptr_;
    n_ = o.n_;
    keep_ = std::move(o.keep_);
    fix();
    return *this;
  }
  explicit Column(std::vector<T, Alloc> v) : own_(std::move(v)) { refresh(); }

  static Column view(const T* data, std::size_t n, std::shared_ptr<const void> keep) {
    Column c;
    c.ptr_ = data;
    c.n_ = n;
    c.keep_ = std::move(keep);
    return c;
  }

  const T* data() const { return ptr_; }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const T& operator[](std::size_t i) const { return ptr_[i]; }
  const T* begin() const { return ptr_; }
  const T* end() const { return ptr_ + n_; }
  bool is_view() const { return keep_ != nullptr; }
  std::size_t owned_bytes() const { return keep_ ? 0 : own_.capacity() * sizeof(T); }
  // Bytes this column holds: its allocation (spare capacity included) when owned, the viewed
  // bytes when a view.
  std::size_t bytes() const { return keep_ ? n_ * sizeof(T) : own_.capacity() * sizeof(T); }

  // Mutable access: copies a view into owned memory first (a view of nothing too, so that a
  // column is never left a view once a writer has asked for it).
  std::vector<T, Alloc>& mut() {
    if (keep_) {
      own_.assign(ptr_, ptr_ + n_);
      keep_.reset();
    }
    return own_;
  }
  // Writable pointer; the column must own its elements already (see mut()).
  T* owned_data() { return own_.data(); }
  // Call after changing the vector returned by mut().
  void refresh() {
    ptr_ = own_.data();
    n_ = own_.size();
  }
  void assign(std::vector<T, Alloc> v) {
    keep_.reset();
    own_ = std::move(v);
    refresh();
  }

 private:
  void fix() {
    if (!keep_) refresh();
  }
  std::vector<T, Alloc> own_;
  const T* ptr_ = nullptr;
  std::size_t n_ = 0;
  std::shared_ptr<const void> keep_;
};

}  // namespace fastrag
