// ZeRO stage 1 on the CPU: AdamW with its moments sharded over the ranks of a Communicator. Each rank keeps m and v
// for one contiguous range of the arena only, so the optimizer state costs 2 * arena / R floats per rank instead of
// 2 * arena. The parameters stay whole on every rank (data-parallel replicas); the gradients arrive unaveraged.
//
// Shards. With R ranks and an arena of A floats, chunk = A / R rounded down to a multiple of 16 floats (64 bytes: every
// shard starts on a cache line; when A < 16 R, plain A / R). Rank r owns [r chunk, (r + 1) chunk); the last rank also
// owns the tail [R chunk, A) (fewer than 16 R floats). So the shards are contiguous, in rank order, cover [0, A),
// and are equal except the last.
//
// One step, in place of {all-reduce of the gradient sum, scale, AdamW::step}:
//   1. reduce-scatter of grads[0, R chunk) with chunk floats per rank (equal counts, no padding), and an all-reduce
//      of the tail grads[R chunk, A) that only the last rank uses: each rank holds the SUM over ranks of its shard;
//   2. g *= grad_scale (the trainer's 1/R: the same float product AdamW's caller makes after its all-reduce);
//   3. the global L2 norm: each rank's sum of squares over (segments ∩ its shard) in double, summed over ranks
//      (allreduce_sum_host), sqrt. Non-finite: every rank skips the update (all hold the same norm);
//   4. clipping and the update of the shard, as runtime::AdamW::step does (kernels::cpu::adamw_update per segment
//      piece, that segment's weight decay, bias corrections of the shared step count);
//   5. an in-place all-gather of params[0, R chunk) and a broadcast of the tail from the last rank: every rank holds
//      the whole updated arena again.
// Scratch: one gradient shard (at most chunk + tail floats); no padded copy of the arena.
//
// The result equals AdamW after an all-reduce-mean of the gradients to float rounding: the only difference is the
// order in which the collectives add the ranks' gradients (and the double rounding of the norm's partial sums). With
// one or two ranks (a + b rounds once whatever the order) it is bit for bit the same; with four, Open MPI happens to
// add in the same order at the sizes tests/runtime/test_zero.cpp runs, which asserts 1e-6 relative there.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/comm.h"
#include "runtime/optimizer.h"

namespace bfm::runtime {

class ShardedAdamW {
 public:
  // segments: as for AdamW (arena ranges with their weight decay; not overlapping). comm must outlive this object;
  // the constructor is local (not collective), but every rank must construct it with the same arguments.
  ShardedAdamW(int64_t arena_size, std::vector<ArenaSegment> segments, AdamWConfig config, Communicator& comm);

  // Collective. params: the whole arena, the same on every rank; updated in place (every rank ends with the same
  // arena). grads: this rank's gradient arena, NOT yet summed or averaged over ranks; it is overwritten (scratch).
  // Returns the global norm of the averaged gradient (sum over ranks * grad_scale) before clipping. A non-finite
  // norm skips the update on every rank: params, moments and steps_taken unchanged; the norm is returned.
  double step(float* params, float* grads, float grad_scale, double lr);

  // This rank's range [shard_begin, shard_end) of the arena: what CheckpointTensors::shard_begin/shard_end take.
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  int64_t arena_size() const { return arena_; }
  // The shard's moments: shard_end - shard_begin floats, element i for arena element shard_begin + i.
  std::vector<float>& first_moment() { return m_; }
  std::vector<float>& second_moment() { return v_; }
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t step) { step_ = step; }
  const AdamWConfig& config() const { return config_; }

 private:
  Communicator& comm_;
  int64_t arena_ = 0;
  int64_t chunk_ = 0;  // per-rank count of the reduce-scatter and all-gather; [R chunk, arena) is the tail
  int64_t begin_ = 0, end_ = 0;
  std::vector<ArenaSegment> pieces_;  // the segments cut to the shard, offsets relative to begin_
  AdamWConfig config_;
  std::vector<float> m_, v_;  // (end_ - begin_): the shard's moments
  std::vector<float> grad_;   // (end_ - begin_): the shard's summed, then scaled, gradient
  int64_t step_ = 0;
};

}  // namespace bfm::runtime
