// The generic path's micro-kernels: sums of products of whole rows.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "vec.h"

namespace carafe {
namespace __attribute__((visibility("hidden"))) cpu {

  // out[q] = sum_{i < pairs} a[i][q] * b[i][q], for q < n (generic types:
  // float or double, accumulated in the output's precision).
  template <typename Out, typename A, typename B>
  void pair_sum_row(Out* __restrict__ out, const A* const* a, const B* const* b, int64_t pairs,
                    int64_t n) {
    using Acc = std::conditional_t<std::is_same_v<Out, double>, double, float>;
    for (int64_t q = 0; q < n; ++q) {
      Acc acc = 0;
      for (int64_t i = 0; i < pairs; ++i) {
        acc += static_cast<Acc>(a[i][q]) * static_cast<Acc>(b[i][q]);
      }
      out[q] = static_cast<Out>(acc);
    }
  }

  // The same for float32, 32 columns at a time in registers (rows under 32
  // columns take the loop above). Overloads the template: float rows take it.
  void pair_sum_row(float* __restrict__ out, const float* const* a, const float* const* b,
                    int64_t pairs, int64_t n);

  // Sums into an accumulator row, then stores in the tensor's dtype; for
  // float32 (and float64) the accumulator is the destination itself.
  template <typename scalar_t, typename acc_t, typename A, typename Bt>
  void pair_sum_to(scalar_t * dst, std::vector<acc_t> & tmp, const A* const* a, const Bt* const* b,
                   int64_t pairs, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      pair_sum_row(dst, a, b, pairs, n);
    } else {
      pair_sum_row(tmp.data(), a, b, pairs, n);
      for (int64_t q = 0; q < n; ++q) dst[q] = static_cast<scalar_t>(tmp[q]);
    }
  }

  // out[kx][q] = sum_{c < count} a[c][q] * b[c][q + s*kx], for kx < k, q < n:
  // grad_masks for the k taps (ky, 0..k-1) of one mask row at once. False
  // (nothing done) for k other than 3, 5, 7 and rows under 16 columns: the
  // caller falls back to pair sums.
  bool shift_sum_rows(int64_t k, float* const* out, const float* const* a, const float* const* b,
                      int64_t count, int64_t s, int64_t n);

  // out[c][q] = sum_{i < pairs} a[i][q] * b[c][i][q] for c < kChannelBlock
  // channels that share their rows a, q < n. False (nothing done) for rows
  // under 16 columns: the caller falls back to pair sums per channel.
  constexpr int64_t kChannelBlock = 4;
  bool channel_block_sum4(float* const* out, const float* const* a, const float* const* const* b,
                          int64_t pairs, int64_t n);

}  // namespace cpu
}  // namespace carafe
