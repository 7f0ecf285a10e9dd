#include "fastrag/ascii_words.hpp"

#include <array>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace fastrag {

namespace {

// [A-Za-z0-9_]: what Python's \w matches in ASCII text.
constexpr std::array<bool, 256> make_word_chars() {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  return t;
}
constexpr std::array<bool, 256> kWordChar = make_word_chars();

std::uint64_t hash_word(std::string_view w) {
  const char* p = w.data();
  std::size_t n = w.size();
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
  }
  h *= 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 32);
}

constexpr std::size_t kFirstSlots = 256;
// Words are stored as (uint32 offset, uint32 length) into one arena.
constexpr std::size_t kMaxArena = std::numeric_limits<std::uint32_t>::max();

}  // namespace

const AsciiWordCache::Slot* AsciiWordCache::Table::find(std::string_view word,
                                                         std::uint64_t hash) const {
  const std::size_t mask = slots.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.length == 0) return &s;
    if (s.hash == hash && s.length == word.size() &&
        std::memcmp(arena.data() + s.offset, word.data(), word.size()) == 0)
      return &s;
  }
}

void AsciiWordCache::Table::insert(std::string_view word, std::uint64_t hash, std::uint32_t id) {
  if (slots.empty()) slots.resize(kFirstSlots);
  if ((used + 1) * 2 > slots.size()) {
    std::vector<Slot> old(slots.size() * 2);
    old.swap(slots);
    const std::size_t mask = slots.size() - 1;
    for (const Slot& s : old) {
      if (s.length == 0) continue;
      std::size_t i = s.hash & mask;
      while (slots[i].length != 0) i = (i + 1) & mask;
      slots[i] = s;
    }
  }
  Slot* s = const_cast<Slot*>(find(word, hash));
  s->hash = hash;
  s->offset = static_cast<std::uint32_t>(arena.size());
  s->length = static_cast<std::uint32_t>(word.size());
  s->id = id;
  arena.append(word);
  ++used;
}

AsciiWordCache::AsciiWordCache(std::size_t min_length, bool lowercase,
                               const std::vector<std::string>& stopwords, std::size_t max_words)
    : min_length_(min_length), lowercase_(lowercase), max_words_(max_words) {
  if (min_length == 0) throw std::invalid_argument("min_length must be >= 1");
  if (max_words == 0) throw std::invalid_argument("max_words must be >= 1");
  table_.slots.resize(kFirstSlots);
  for (const std::string& w : stopwords) {
    // Only words the splitter can produce can match; the others are left out.
    if (w.empty() || w.size() > kMaxArena - table_.arena.size()) continue;
    bool word = true;
    for (unsigned char c : w) word = word && kWordChar[c];
    if (!word) continue;
    const std::uint64_t h = hash_word(w);
    if (table_.find(w, h)->length != 0) continue;
    table_.insert(w, h, kStopword);
    ++n_stopwords_;
  }
}

void AsciiWordCache::encode(const std::vector<std::string_view>& docs,
                            std::vector<std::int64_t>& indptr, std::vector<std::uint32_t>& ids,
                            std::vector<std::string>& new_words) const {
  indptr.clear();
  ids.clear();
  new_words.clear();
  indptr.reserve(docs.size() + 1);
  indptr.push_back(0);
  std::size_t bytes = 0;
  for (std::string_view doc : docs) bytes += doc.size();
  ids.reserve(bytes / 8);  // English prose: about one kept word per 11 bytes
  Table pending;  // this call's new words -> kPending | index
  pending.slots.resize(kFirstSlots);
  std::string lowered;
  std::shared_lock<std::shared_mutex> lock(mutex_);
  for (std::string_view doc : docs) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(doc.data());
    const unsigned char* const end = p + doc.size();
    while (p < end) {
      while (p < end && !kWordChar[*p]) ++p;
      const unsigned char* const start = p;
      bool upper = false;
      while (p < end && kWordChar[*p]) {
        upper |= (*p >= 'A' && *p <= 'Z');
        ++p;
      }
      const std::size_t n = static_cast<std::size_t>(p - start);
      if (n < min_length_) continue;
      std::string_view word(reinterpret_cast<const char*>(start), n);
      if (lowercase_ && upper) {
        lowered.assign(word);
        for (char& c : lowered)
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
        word = lowered;
      }
      const std::uint64_t h = hash_word(word);
      const Slot* s = table_.find(word, h);
      if (s->length != 0) {
        if (s->id != kStopword) ids.push_back(s->id);
        continue;
      }
      const Slot* q = pending.find(word, h);
      if (q->length != 0) {
        ids.push_back(q->id);
        continue;
      }
      const std::uint32_t id = kPending | static_cast<std::uint32_t>(new_words.size());
      new_words.emplace_back(word);
      pending.insert(word, h, id);
      ids.push_back(id);
    }
    indptr.push_back(static_cast<std::int64_t>(ids.size()));
  }
}

void AsciiWordCache::resolve(std::uint32_t* ids, std::size_t n,
                             const std::vector<std::string>& new_words,
                             const std::uint32_t* new_ids) {
  const std::size_t n_new = new_words.size();
  for (std::size_t k = 0; k < n_new; ++k)
    if (new_ids[k] >= kPending)
      throw std::invalid_argument("term ids must be below 2**31, got " +
                                  std::to_string(new_ids[k]));
  for (std::size_t i = 0; i < n; ++i)
    if ((ids[i] & kPending) && (ids[i] & ~kPending) >= n_new)
      throw std::invalid_argument("ids hold a pending word " +
                                  std::to_string(ids[i] & ~kPending) + " of only " +
                                  std::to_string(n_new) + " new words");
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] & kPending) ids[i] = new_ids[ids[i] & ~kPending];
  std::unique_lock<std::shared_mutex> lock(mutex_);
  for (std::size_t k = 0; k < n_new; ++k) {
    if (table_.used - n_stopwords_ >= max_words_) break;
    const std::string& w = new_words[k];
    if (w.empty() || w.size() > kMaxArena - table_.arena.size()) continue;
    const std::uint64_t h = hash_word(w);
    if (table_.find(w, h)->length != 0) continue;  // cached meanwhile by another call
    table_.insert(w, h, new_ids[k]);
  }
}

std::size_t AsciiWordCache::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return table_.used - n_stopwords_;
}

std::size_t AsciiWordCache::memory_bytes() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return table_.slots.capacity() * sizeof(Slot) + table_.arena.capacity();
}

}  // namespace fastrag
