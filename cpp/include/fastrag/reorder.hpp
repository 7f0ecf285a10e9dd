// Document reordering by recursive graph bisection ("BP"): documents that share terms get
// nearby ids, so that posting lists have small gaps (fewer bits per posting) and their
// blocks cluster the documents a query matches.
//
// Dhulipala, Kabiljo, Karrer, Ottaviano, Pupyrev and Shalita, "Compressing graphs and indexes
// with recursive graph bisection", KDD 2016; settings as in Mackenzie, Mallia, Petri, Culpepper
// and Suel, "Compressing inverted indexes with recursive graph bisection: a reproducibility
// study", ECIR 2019 (20 iterations per level, the log-gap cost).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastrag {

struct ReorderParams {
  int iterations = 20;        // swap rounds per bisection at most
  std::size_t min_size = 32;  // parts this small are not split further
  int threads = 0;            // 0: all cores (the two halves of a split run in parallel)
};

// The new order of n_docs documents given as CSR: document d holds the distinct terms
// terms[offsets[d]:offsets[d + 1]], each < n_terms. Returns order, a permutation of
// [0, n_docs): order[i] is the document that gets position i. Deterministic for a given input
// and parameters (whatever the threads).
std::vector<std::uint32_t> bp_order(std::size_t n_docs, const std::uint64_t* offsets,
                                    const std::uint32_t* terms, std::size_t n_terms,
                                    const ReorderParams& params = {});

}  // namespace fastrag
