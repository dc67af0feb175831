// Parallel loops for the CPU kernels.
//
// Work is split into blocks of items (samples); each block owns its partial sums of weight
// gradients, reduced in block order after the loop, and each worker thread owns its scratch.
// Which thread runs which block never changes a result: the block boundaries depend only on the
// problem size and the thread count, so results are reproducible for a given thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <algorithm>
#include <atomic>
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

// Scratch sizes rounded up to 64 elements, so that every scratch area starts cache-line aligned.
inline int64_t padded(int64_t elements) { return (elements + 63) / 64 * 64; }

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

// Runs f(block, worker) for every block in [0, blocks) on `workers` threads (worker in
// [0, workers) indexes per-thread scratch). Blocks are handed out one at a time from a shared
// counter, so a thread that gets less CPU time (a shared machine) takes fewer blocks instead of
// holding everyone up. With one worker everything runs on the calling thread, outside any
// parallel region, so BLAS calls inside f may use all threads.
template <typename F>
void for_each_block(int64_t blocks, int64_t workers, const F& f) {
  if (workers <= 1 || blocks <= 1) {
    at::AutoDispatchBelowADInplaceOrView guard;
    for (int64_t block = 0; block < blocks; ++block) {
      f(block, int64_t{0});
    }
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView guard;
    for (int64_t worker = begin; worker < end; ++worker) {
      for (int64_t block = next.fetch_add(1); block < blocks; block = next.fetch_add(1)) {
        f(block, worker);
      }
    }
  });
}

}  // namespace posekernels::cpu
