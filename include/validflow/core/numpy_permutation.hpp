#pragma once
// Channel permutations bit-identical to numpy's legacy `np.random.seed(k); np.random.permutation(n)`,
// which the official CS-Flow uses and never stores in its checkpoints. std::mt19937 seeded with k matches
// numpy's legacy MT19937 seeding; numpy shuffles with a masked-rejection Fisher-Yates.
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace validflow {

/// One numpy-legacy permutation of 0..n-1 drawn from `generator` (advances it as numpy does).
inline std::vector<int64_t> numpy_legacy_permutation(std::mt19937& generator, int64_t n) {
  std::vector<int64_t> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), int64_t{0});
  for (int64_t i = n - 1; i >= 1; --i) {
    uint32_t mask = static_cast<uint32_t>(i);  // smallest 2^m - 1 >= i
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    uint32_t j;
    do {
      j = static_cast<uint32_t>(generator()) & mask;
    } while (j > static_cast<uint32_t>(i));
    std::swap(values[static_cast<size_t>(i)], values[j]);
  }
  return values;
}

/// The permutations of CS-Flow's block `seed`: one per scale, drawn in turn from one generator.
inline std::vector<std::vector<int64_t>> csflow_permutations(uint32_t seed, const std::vector<int64_t>& channels) {
  std::mt19937 generator(seed);
  std::vector<std::vector<int64_t>> permutations;
  for (int64_t c : channels) permutations.push_back(numpy_legacy_permutation(generator, c));
  return permutations;
}

}  // namespace validflow
