// ASCII text to term ids without Python strings: the fast path of BM25.add for the English
// analyzer (python/fastrag/text/analyzers.py, EnglishAnalyzer).
//
// On ASCII text that analyzer's words are exactly the maximal runs of [A-Za-z0-9_] of at least
// min_length characters (NFKC leaves ASCII unchanged and its regex is then that character
// class), lowercased (A-Z only) when `lowercase`, without the stopwords (compared after
// lowercasing, before stemming). Each word then becomes a stem and the stem a term id: that
// step stays in Python (PyStemmer and the index's vocabulary), and this cache remembers its
// outcome per surface word, so that a word seen once never leaves C++ again.
//
// encode() splits documents into words and looks each up: a cached word gives its term id, a
// word not cached gives kPending | k, k being its place among the call's distinct new words
// (in order of first occurrence). The caller stems the new words, gives them term ids and
// calls resolve(), which rewrites the pending ids and caches the words. encode() only reads
// the cache (any number of threads at once); resolve() writes it (one at a time, readers
// wait). Once the cache holds max_words words it stops growing: further new words stay
// pending in every call, which is slower but gives the same ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fastrag {

class AsciiWordCache {
 public:
  static constexpr std::uint32_t kPending = 0x80000000u;  // term ids must stay below this
  static constexpr std::size_t kDefaultMaxWords = std::size_t{1} << 22;

  // Throws std::invalid_argument for min_length 0 or max_words 0.
  AsciiWordCache(std::size_t min_length, bool lowercase, const std::vector<std::string>& stopwords,
                 std::size_t max_words = kDefaultMaxWords);

  // Words of docs (ASCII bytes; other bytes count as separators) as term ids: the ids of doc
  // i are ids[indptr[i]:indptr[i + 1]] (indptr is cleared and gets docs.size() + 1 values; ids
  // is cleared). new_words gets the distinct words not in the cache, in order of first
  // occurrence; their places in ids hold kPending | (index in new_words).
  void encode(const std::vector<std::string_view>& docs, std::vector<std::int64_t>& indptr,
              std::vector<std::uint32_t>& ids, std::vector<std::string>& new_words) const;

  // Replaces every kPending | k in ids[0:n] by new_ids[k] and caches new_words[k] -> new_ids[k]
  // (n_new values each; until the cache is full). Checks everything before changing anything:
  // std::invalid_argument for a new id >= kPending or a pending index >= n_new.
  void resolve(std::uint32_t* ids, std::size_t n, const std::vector<std::string>& new_words,
               const std::uint32_t* new_ids);

  std::size_t size() const;            // cached words (stopwords not counted)
  std::size_t memory_bytes() const;    // the table and the words' bytes
  std::size_t min_length() const { return min_length_; }
  bool lowercase() const { return lowercase_; }

 private:
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t offset = 0;  // into arena_
    std::uint32_t length = 0;  // 0: empty slot
    std::uint32_t id = 0;
  };
  // An open-addressing table of words (their bytes in one arena) with linear probing.
  struct Table {
    std::vector<Slot> slots;
    std::string arena;
    std::size_t used = 0;
    // The slot holding `word`, or the empty slot where it would go.
    const Slot* find(std::string_view word, std::uint64_t hash) const;
    // Adds a word known to be absent (grows the table first when half full).
    void insert(std::string_view word, std::uint64_t hash, std::uint32_t id);
  };
  static constexpr std::uint32_t kStopword = 0xFFFFFFFFu;

  std::size_t min_length_;
  bool lowercase_;
  std::size_t max_words_;
  std::size_t n_stopwords_ = 0;
  Table table_;
  mutable std::shared_mutex mutex_;
};

}  // namespace fastrag
