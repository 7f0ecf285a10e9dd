// Self-describing binary files: a fixed 64-byte header (magic, format version, kind, sizes,
// checksum), a section table and 64-byte aligned sections. Written to a temporary file that
// is renamed over the target, so a crash during save never leaves a half-written index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fastrag/memory.hpp"

namespace fastrag {

enum class FileKind : std::uint32_t { SparseIndex = 1, DenseIndex = 2, ApproxSparseIndex = 3 };

// A 64-bit checksum over a byte stream, fed in pieces of any size.
class Checksum {
 public:
  void update(const void* data, std::size_t n);
  std::uint64_t digest() const;

 private:
  void mix_block(const unsigned char* p);
  std::uint64_t lanes_[4] = {0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL, 0xa4093822299f31d0ULL,
                             0x082efa98ec4e6c89ULL};
  unsigned char tail_[32] = {};
  std::size_t tail_len_ = 0;
  std::uint64_t total_ = 0;
};

struct SectionData {
  std::uint32_t id;
  std::uint32_t elem_size;
  const void* data;
  std::uint64_t bytes;
};

// Writes header + sections to `path` atomically: to `<path>.tmp-<pid>-<n>`, fsync, rename.
// Any error removes the temporary file and leaves an existing `path` untouched; a process
// killed during the write (SIGKILL, power loss) leaves the temporary file behind for its
// owner to remove (a collection clears `*.tmp-*` in its folder).
void write_sections(const std::string& path, FileKind kind, std::uint32_t version,
                    const std::vector<SectionData>& sections);

// A file read into memory or mapped read-only; sections are views into it.
class FileView {
 public:
  // Opens and validates: magic, kind, version (<= max_version), sizes, table bounds and
  // (when verify) the checksum. Throws FormatError with a message saying what is wrong.
  static std::shared_ptr<const FileView> open(const std::string& path, FileKind kind,
                                              std::uint32_t max_version, bool use_mmap,
                                              bool verify = true);
  ~FileView();
  FileView(const FileView&) = delete;
  FileView& operator=(const FileView&) = delete;

  std::uint32_t version() const { return version_; }
  bool has(std::uint32_t id) const;
  // Raw bytes of a section; throws FormatError when missing or of another element size.
  const void* section(std::uint32_t id, std::uint32_t elem_size, std::uint64_t* count) const;
  const std::string& path() const { return path_; }

 private:
  FileView() = default;
  struct Entry {
    std::uint32_t id, elem_size;
    std::uint64_t offset, bytes;
  };
  std::string path_;
  std::uint32_t version_ = 0;
  const unsigned char* base_ = nullptr;
  std::uint64_t size_ = 0;
  bool mapped_ = false;
  // Owns the bytes when not mapped: 2 MiB aligned and advised for huge pages when large, as
  // graph walks read a loaded index at random just as they read a built one.
  std::vector<std::uint64_t, HugePageAllocator<std::uint64_t>> buffer_;
  std::vector<Entry> entries_;
};

}  // namespace fastrag
