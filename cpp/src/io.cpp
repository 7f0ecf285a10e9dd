#include "fastrag/io.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "fastrag/error.hpp"

namespace fastrag {
namespace {

constexpr char kMagic[8] = {'F', 'A', 'S', 'T', 'R', 'A', 'G', '\x01'};
constexpr std::uint64_t kHeaderSize = 64;
constexpr std::uint64_t kAlign = 64;
constexpr std::uint64_t kEntrySize = 24;  // id u32, elem_size u32, offset u64, bytes u64
constexpr std::uint64_t kP1 = 0x9e3779b97f4a7c15ULL;
constexpr std::uint64_t kP2 = 0xc2b2ae3d27d4eb4fULL;

struct Header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t kind;
  std::uint64_t file_size;
  std::uint64_t n_sections;
  std::uint64_t checksum;  // over the whole file, with this field read as zero
  std::uint64_t reserved[3];
};
static_assert(sizeof(Header) == kHeaderSize, "header must be 64 bytes");

std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
std::uint64_t align_up(std::uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

std::string errno_text() { return std::strerror(errno); }

// Writes all bytes or throws; updates the checksum when given.
void write_all(int fd, const void* data, std::size_t n, const std::string& path, Checksum* sum) {
  if (n == 0) return;
  const char* p = static_cast<const char*>(data);
  if (sum) sum->update(data, n);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IOError("cannot write " + path + ": " + errno_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

void Checksum::mix_block(const unsigned char* p) {
  for (int i = 0; i < 4; ++i) lanes_[i] = rotl(lanes_[i] + load64(p + 8 * i) * kP2, 31) * kP1;
}

void Checksum::update(const void* data, std::size_t n) {
  // An empty section may have no storage at all (data == nullptr), and memcpy from a null
  // pointer is undefined even for 0 bytes.
  if (n == 0) return;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (tail_len_ > 0) {
    std::size_t take = std::min(n, 32 - tail_len_);
    std::memcpy(tail_ + tail_len_, p, take);
    tail_len_ += take;
    p += take;
    n -= take;
    if (tail_len_ < 32) return;
    mix_block(tail_);
    tail_len_ = 0;
  }
  for (; n >= 32; n -= 32, p += 32) mix_block(p);
  std::memcpy(tail_, p, n);
  tail_len_ = n;
}

std::uint64_t Checksum::digest() const {
  std::uint64_t h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) +
                    rotl(lanes_[3], 18) + total_;
  for (std::size_t i = 0; i < tail_len_; ++i) h = rotl(h ^ (tail_[i] * kP1), 11) * kP2;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP1;
  h ^= h >> 32;
  return h;
}

void write_sections(const std::string& path, FileKind kind, std::uint32_t version,
                    const std::vector<SectionData>& sections) {
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IOError("cannot create " + tmp + ": " + errno_text());
  try {
    // Layout: header, table, then each section at a 64-byte aligned offset.
    std::vector<unsigned char> table(sections.size() * kEntrySize);
    std::uint64_t offset = align_up(kHeaderSize + table.size());
    for (std::size_t i = 0; i < sections.size(); ++i) {
      const auto& s = sections[i];
      unsigned char* e = table.data() + i * kEntrySize;
      std::memcpy(e, &s.id, 4);
      std::memcpy(e + 4, &s.elem_size, 4);
      std::memcpy(e + 8, &offset, 8);
      std::memcpy(e + 16, &s.bytes, 8);
      offset = align_up(offset + s.bytes);
    }
    const std::uint64_t file_size = offset;
    Header h{};
    std::memcpy(h.magic, kMagic, 8);
    h.version = version;
    h.kind = static_cast<std::uint32_t>(kind);
    h.file_size = file_size;
    h.n_sections = sections.size();
    write_all(fd, &h, sizeof h, tmp, nullptr);  // rewritten with the checksum below

    Checksum sum;
    sum.update(&h, sizeof h);
    static const unsigned char zeros[kAlign] = {};
    std::uint64_t pos = kHeaderSize;
    write_all(fd, table.data(), table.size(), tmp, &sum);
    pos += table.size();
    for (const auto& s : sections) {
      std::uint64_t pad = align_up(pos) - pos;
      write_all(fd, zeros, pad, tmp, &sum);
      pos += pad;
      write_all(fd, s.data, s.bytes, tmp, &sum);
      pos += s.bytes;
    }
    write_all(fd, zeros, file_size - pos, tmp, &sum);
    h.checksum = sum.digest();
    if (::pwrite(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
      throw IOError("cannot write " + tmp + ": " + errno_text());
    if (::fsync(fd) != 0) throw IOError("cannot sync " + tmp + ": " + errno_text());
    if (::close(fd) != 0) {
      fd = -1;
      throw IOError("cannot close " + tmp + ": " + errno_text());
    }
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw IOError("cannot rename " + tmp + " to " + path + ": " + errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

std::shared_ptr<const FileView> FileView::open(const std::string& path, FileKind kind,
                                               std::uint32_t max_version, bool use_mmap,
                                               bool verify) {
  std::shared_ptr<FileView> v(new FileView());
  v->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw IOError("no such index file: " + path);
    throw IOError("cannot open " + path + ": " + errno_text());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw IOError("cannot stat " + path + ": " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IOError(path + " is not a regular file");
  }
  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  if (size < kHeaderSize) {
    ::close(fd);
    throw FormatError(path + " is not a fastrag index (only " + std::to_string(size) +
                      " bytes; truncated or empty file)");
  }
  if (use_mmap) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw IOError("cannot mmap " + path + ": " + errno_text());
    v->base_ = static_cast<const unsigned char*>(p);
    v->mapped_ = true;
  } else {
    v->buffer_.resize((size + 7) / 8);
    unsigned char* dst = reinterpret_cast<unsigned char*>(v->buffer_.data());
    std::uint64_t got = 0;
    while (got < size) {
      ssize_t r = ::pread(fd, dst + got, size - got, static_cast<off_t>(got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        ::close(fd);
        throw IOError("cannot read " + path + ": " + errno_text());
      }
      got += static_cast<std::uint64_t>(r);
    }
    ::close(fd);
    v->base_ = dst;
  }
  v->size_ = size;

  Header h;
  std::memcpy(&h, v->base_, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0)
    throw FormatError(path + " is not a fastrag index (bad magic bytes)");
  if (h.kind != static_cast<std::uint32_t>(kind))
    throw FormatError(path + " holds another kind of fastrag index (kind " +
                      std::to_string(h.kind) + ", expected " +
                      std::to_string(static_cast<std::uint32_t>(kind)) + ")");
  if (h.version == 0 || h.version > max_version)
    throw FormatError(path + " has format version " + std::to_string(h.version) +
                      "; this fastrag reads versions up to " + std::to_string(max_version) +
                      ": upgrade fastrag or rebuild the index");
  if (h.file_size != size)
    throw FormatError(path + " is truncated or has trailing bytes (header says " +
                      std::to_string(h.file_size) + " bytes, file has " + std::to_string(size) +
                      ")");
  if (h.n_sections > (size - kHeaderSize) / kEntrySize)
    throw FormatError(path + " has a corrupted section table");
  if (verify) {
    Header zeroed = h;
    zeroed.checksum = 0;
    Checksum sum;
    sum.update(&zeroed, sizeof zeroed);
    sum.update(v->base_ + kHeaderSize, size - kHeaderSize);
    if (sum.digest() != h.checksum)
      throw FormatError(path + " is corrupted (checksum mismatch); rebuild or restore the index");
  }
  v->version_ = h.version;
  for (std::uint64_t i = 0; i < h.n_sections; ++i) {
    const unsigned char* e = v->base_ + kHeaderSize + i * kEntrySize;
    Entry en{};
    std::memcpy(&en.id, e, 4);
    std::memcpy(&en.elem_size, e + 4, 4);
    std::memcpy(&en.offset, e + 8, 8);
    std::memcpy(&en.bytes, e + 16, 8);
    if (en.offset % kAlign != 0 || en.offset > size || en.bytes > size - en.offset ||
        en.elem_size == 0 || en.bytes % en.elem_size != 0)
      throw FormatError(path + " has a corrupted section table (section " +
                        std::to_string(en.id) + ")");
    v->entries_.push_back(en);
  }
  return v;
}

FileView::~FileView() {
  if (mapped_ && base_) ::munmap(const_cast<unsigned char*>(base_), size_);
}

bool FileView::has(std::uint32_t id) const {
  for (const auto& e : entries_)
    if (e.id == id) return true;
  return false;
}

const void* FileView::section(std::uint32_t id, std::uint32_t elem_size,
                              std::uint64_t* count) const {
  for (const auto& e : entries_) {
    if (e.id != id) continue;
    if (e.elem_size != elem_size)
      throw FormatError(path_ + ": section " + std::to_string(id) + " has elements of " +
                        std::to_string(e.elem_size) + " bytes, expected " +
                        std::to_string(elem_size));
    *count = e.bytes / elem_size;
    return base_ + e.offset;
  }
  throw FormatError(path_ + " lacks section " + std::to_string(id) + " (corrupted file)");
}

}  // namespace fastrag
