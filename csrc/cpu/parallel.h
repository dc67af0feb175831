// Chunked parallel loops for the CPU kernels.
//
// Work is split into a fixed number of chunks (at most one per thread), each chunk owning its
// scratch and its partial sums of weight gradients; the partials are reduced after the loop. The
// chunk count depends only on the problem size and the thread count, never on which thread runs
// which chunk, so results are reproducible for a given thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <algorithm>
#include <cstdint>

namespace posekernels::cpu {

// Number of chunks for `items` work items, each chunk getting at least `min_items_per_chunk`.
inline int64_t chunk_count(int64_t items, int64_t min_items_per_chunk) {
  if (at::in_parallel_region()) {
    return 1;  // called from inside someone else's parallel loop: stay serial
  }
  const int64_t by_size = items / std::max<int64_t>(1, min_items_per_chunk);
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), by_size));
}

// First item of `chunk` when `items` are split evenly into `chunks` contiguous ranges.
inline int64_t chunk_begin(int64_t chunk, int64_t chunks, int64_t items) {
  return items / chunks * chunk + std::min(chunk, items % chunks);
}

// Runs f(chunk) for chunk in [0, chunks), in parallel when chunks > 1. A single chunk runs on
// the calling thread outside any parallel region, so BLAS calls inside it may use all threads.
// The ATen calls made inside f work on scratch views that never need autograd.
template <typename F>
void for_each_chunk(int64_t chunks, const F& f) {
  if (chunks <= 1) {
    at::AutoDispatchBelowADInplaceOrView guard;
    f(int64_t{0});
    return;
  }
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView guard;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      f(chunk);
    }
  });
}

}  // namespace posekernels::cpu
