#include "runtime/zero.h"

#include <algorithm>
#include <cmath>

#include "kernels/adamw.h"
#include "base/error.h"

namespace bfm::runtime {

ShardedAdamW::ShardedAdamW(int64_t arena_size, std::vector<ArenaSegment> segments, AdamWConfig config,
                           Communicator& comm)
    : comm_(comm), arena_(arena_size), config_(config) {
  const int ranks = comm_.size(), rank = comm_.rank();
  require(arena_size >= 0, "ShardedAdamW: bad arena size ", arena_size, " on rank ", rank);
  const int64_t even = arena_size / ranks;
  chunk_ = even >= 16 ? even / 16 * 16 : even;
  begin_ = rank * chunk_;
  end_ = rank + 1 == ranks ? arena_size : begin_ + chunk_;
  for (const auto& s : segments) {
    require(s.offset >= 0 && s.size >= 0 && s.offset + s.size <= arena_size, "ShardedAdamW: segment [", s.offset,
            ", ", s.offset + s.size, ") outside the arena of ", arena_size, " on rank ", rank);
    const int64_t lo = std::max(s.offset, begin_), hi = std::min(s.offset + s.size, end_);
    if (lo < hi) pieces_.push_back({lo - begin_, hi - lo, s.weight_decay});
  }
  const auto n = static_cast<size_t>(end_ - begin_);
  m_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  grad_.assign(n, 0.0f);
}

double ShardedAdamW::step(float* params, float* grads, float grad_scale, double lr) {
  const int ranks = comm_.size(), rank = comm_.rank();
  const int64_t gathered = ranks * chunk_, tail = arena_ - gathered;
  require(static_cast<int64_t>(m_.size()) == end_ - begin_ && static_cast<int64_t>(v_.size()) == end_ - begin_,
          "ShardedAdamW: moments of ", m_.size(), " and ", v_.size(), " floats on rank ", rank, ", the shard [",
          begin_, ", ", end_, ") has ", end_ - begin_);

  // 1. The gradient sum of this rank's shard: chunk from the reduce-scatter, the last rank's tail from an all-reduce
  //    (in place in grads: it is scratch).
  comm_.reduce_scatter_sum(grads, grad_.data(), chunk_);
  if (tail > 0) {
    comm_.allreduce_sum(grads + gathered, tail);
    if (rank + 1 == ranks) std::copy(grads + gathered, grads + arena_, grad_.begin() + chunk_);
  }
  // 2. The mean (or whatever scale the caller folds in), as the caller of AdamW scales after its all-reduce.
  if (grad_scale != 1.0f)
    for (float& g : grad_) g *= grad_scale;

  // 3. The global norm over the segments: per-rank sums of squares, summed in double.
  double sum = 0.0;
  for (const auto& p : pieces_) sum += kernels::cpu::sum_of_squares(grad_.data() + p.offset, p.size);
  comm_.allreduce_sum_host(&sum, 1);
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm)) return norm;  // the same norm on every rank: all skip

  // 4. Clipping and the update of the shard, as AdamW::step.
  const double clip = (config_.grad_clip > 0 && norm > config_.grad_clip) ? config_.grad_clip / norm : 1.0;
  ++step_;
  float* shard = params + begin_;
  for (const auto& p : pieces_)
    kernels::cpu::adamw_update(shard + p.offset, m_.data() + p.offset, v_.data() + p.offset, grad_.data() + p.offset,
                               p.size, float(lr), float(config_.beta1), float(config_.beta2), float(config_.eps),
                               p.weight_decay ? float(config_.weight_decay) : 0.0f, float(clip), step_);

  // 5. Every rank gets every shard back: in place (rank r's chunk already sits at params + r chunk), then the tail.
  comm_.allgather(params + rank * chunk_, params, chunk_);
  if (tail > 0) comm_.broadcast(params + gathered, tail, ranks - 1);
  return norm;
}

}  // namespace bfm::runtime
