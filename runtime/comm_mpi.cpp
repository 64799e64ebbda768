// The host back-ends of the communicator (runtime/comm.h) and the choice between back-ends:
//   self  a world of one, where each collective is the identity or a copy;
//   mpi   the collectives over a duplicate of an MPI communicator, with errors returned (MPI_ERRORS_RETURN) and
//         thrown as bfm::Error naming the operation and the rank.
// MPI counts are int: a range longer than max_count (INT_MAX, smaller in the tests) is split into several calls. The
// all-reduces and the broadcast split into consecutive pieces; the all-gather and the reduce-scatter, whose pieces
// would interleave ranks, become one broadcast (all-gather) or one reduce (reduce-scatter) per rank and piece: slower
// than the single call, but it needs no scratch buffer and no derived datatype, and it only runs past 8 GiB per rank.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "runtime/comm.h"
#include "base/error.h"
#include "runtime/progress.h"
#include "runtime/world.h"

namespace bfm::runtime {

namespace {

// Adds the seconds of its scope to a communicator's blocked time.
class BlockedScope {
 public:
  explicit BlockedScope(double& total) : total_(total) {}
  ~BlockedScope() { total_ += watch_.seconds(); }
  BlockedScope(const BlockedScope&) = delete;
  BlockedScope& operator=(const BlockedScope&) = delete;

 private:
  double& total_;
  Stopwatch watch_;
};

bool overlap(const float* a, int64_t na, const float* b, int64_t nb) {
  if (na == 0 || nb == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + static_cast<uintptr_t>(nb) * sizeof(float) && b0 < a0 + static_cast<uintptr_t>(na) * sizeof(float);
}

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "self"; }

  void allreduce_sum(float*, int64_t n) override { check_count("allreduce_sum", n); }
  void allgather(const float* send, float* recv, int64_t n) override {
    check_count("allgather", n);
    require(send == recv || !overlap(send, n, recv, n), "self communicator: allgather buffers overlap");
    if (send != recv) std::copy(send, send + n, recv);
  }
  void reduce_scatter_sum(const float* send, float* recv, int64_t n) override {
    check_count("reduce_scatter_sum", n);
    require(!overlap(send, n, recv, n), "self communicator: reduce_scatter_sum buffers overlap");
    std::copy(send, send + n, recv);
  }
  void broadcast(float*, int64_t n, int root) override {
    check_count("broadcast", n);
    require(root == 0, "self communicator: broadcast from root ", root, " in a world of one");
  }
  void allreduce_sum_host(double*, int64_t n) override { check_count("allreduce_sum_host", n); }
  void allreduce_max_host(double*, int64_t n) override { check_count("allreduce_max_host", n); }
  void barrier() override {}

  int64_t start_allreduce_sum(float*, int64_t n) override {
    check_count("start_allreduce_sum", n);
    pending_.insert(next_handle_);
    return next_handle_++;
  }
  void progress() override {}
  void wait(int64_t handle) override {
    require(pending_.erase(handle) == 1, "self communicator: wait on unknown handle ", handle,
            " (never started, or already waited for)");
  }
  void wait_all() override { pending_.clear(); }
  double blocked_seconds() const override { return 0.0; }

 private:
  static void check_count(const char* op, int64_t n) {
    require(n >= 0, "self communicator: ", op, " of ", n, " elements");
  }

  std::set<int64_t> pending_;
  int64_t next_handle_ = 1;
};

#ifdef BFM_WITH_MPI
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, int64_t max_count) : max_count_(max_count) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    require(initialized, "mpi communicator: MPI is not running (runtime::world() starts it)");
    require(max_count >= 1 && max_count <= INT_MAX, "mpi communicator: max_count ", max_count,
            " outside [1, INT_MAX]");
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // With operations still pending (an exception left them), freeing could wait on ranks that never join: leak.
    if (!finalized && pending_.empty()) MPI_Comm_free(&comm_);
  }

  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  void allreduce_sum(float* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("allreduce_sum", n);
    for (int64_t at = 0; at < n; at += max_count_)
      check(MPI_Allreduce(MPI_IN_PLACE, data + at, piece(n, at), MPI_FLOAT, MPI_SUM, comm_), "MPI_Allreduce");
  }

  void allgather(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("allgather", n);
    float* mine = recv + rank_ * n;
    const bool in_place = send == mine;
    require(in_place || !overlap(send, n, recv, size_ * n), "mpi communicator: allgather on rank ", rank_,
            ": send overlaps recv other than at recv + rank * n");
    if (n <= max_count_) {
      check(MPI_Allgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(n), MPI_FLOAT, recv, static_cast<int>(n),
                          MPI_FLOAT, comm_),
            "MPI_Allgather");
      return;
    }
    if (!in_place) std::copy(send, send + n, mine);
    for (int64_t at = 0; at < n; at += max_count_)
      for (int r = 0; r < size_; ++r)
        check(MPI_Bcast(recv + r * n + at, piece(n, at), MPI_FLOAT, r, comm_), "MPI_Bcast (allgather)");
  }

  void reduce_scatter_sum(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("reduce_scatter_sum", n);
    require(!overlap(send, size_ * n, recv, n), "mpi communicator: reduce_scatter_sum on rank ", rank_,
            ": send and recv overlap");
    if (n <= max_count_) {
      check(MPI_Reduce_scatter_block(send, recv, static_cast<int>(n), MPI_FLOAT, MPI_SUM, comm_),
            "MPI_Reduce_scatter_block");
      return;
    }
    for (int64_t at = 0; at < n; at += max_count_)
      for (int r = 0; r < size_; ++r)
        check(MPI_Reduce(send + r * n + at, r == rank_ ? recv + at : nullptr, piece(n, at), MPI_FLOAT, MPI_SUM, r,
                         comm_),
              "MPI_Reduce (reduce_scatter_sum)");
  }

  void broadcast(float* data, int64_t n, int root) override {
    BlockedScope blocked(blocked_);
    check_count("broadcast", n);
    require(root >= 0 && root < size_, "mpi communicator: broadcast from root ", root, " on rank ", rank_,
            " in a world of ", size_);
    for (int64_t at = 0; at < n; at += max_count_)
      check(MPI_Bcast(data + at, piece(n, at), MPI_FLOAT, root, comm_), "MPI_Bcast");
  }

  void allreduce_sum_host(double* data, int64_t n) override { allreduce_host(data, n, MPI_SUM, "allreduce_sum_host"); }
  void allreduce_max_host(double* data, int64_t n) override { allreduce_host(data, n, MPI_MAX, "allreduce_max_host"); }

  void barrier() override {
    BlockedScope blocked(blocked_);
    check(MPI_Barrier(comm_), "MPI_Barrier");
  }

  int64_t start_allreduce_sum(float* data, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("start_allreduce_sum", n);
    std::vector<MPI_Request> requests;
    for (int64_t at = 0; at < n; at += max_count_) {
      MPI_Request request = MPI_REQUEST_NULL;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + at, piece(n, at), MPI_FLOAT, MPI_SUM, comm_, &request),
            "MPI_Iallreduce");
      requests.push_back(request);
    }
    pending_.emplace(next_handle_, std::move(requests));
    return next_handle_++;
  }

  void progress() override {
    BlockedScope blocked(blocked_);
    for (auto& [handle, requests] : pending_) {
      int done = 0;
      check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
            "MPI_Testall");
    }
  }

  void wait(int64_t handle) override {
    BlockedScope blocked(blocked_);
    auto it = pending_.find(handle);
    require(it != pending_.end(), "mpi communicator: wait on unknown handle ", handle, " on rank ", rank_,
            " (never started, or already waited for)");
    std::vector<MPI_Request> requests = std::move(it->second);
    pending_.erase(it);
    check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  }

  void wait_all() override {
    while (!pending_.empty()) wait(pending_.begin()->first);
  }

  double blocked_seconds() const override { return blocked_; }

 private:
  void check(int code, const char* op) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    fail("mpi communicator: ", op, " failed on rank ", rank_, " of ", size_, ": ", std::string(text, length));
  }
  void check_count(const char* op, int64_t n) const {
    require(n >= 0, "mpi communicator: ", op, " of ", n, " elements on rank ", rank_);
  }
  // The count of the piece of [0, n) that starts at `at`.
  int piece(int64_t n, int64_t at) const { return static_cast<int>(std::min(max_count_, n - at)); }

  void allreduce_host(double* data, int64_t n, MPI_Op op, const char* name) {
    BlockedScope blocked(blocked_);
    check_count(name, n);
    for (int64_t at = 0; at < n; at += max_count_)
      check(MPI_Allreduce(MPI_IN_PLACE, data + at, piece(n, at), MPI_DOUBLE, op, comm_), "MPI_Allreduce (host)");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  int64_t max_count_;
  std::map<int64_t, std::vector<MPI_Request>> pending_;  // handle -> the requests of its pieces
  int64_t next_handle_ = 1;
  double blocked_ = 0;
};
#endif

// The host communicator of the world: MPI where built, else self (a world of one).
std::unique_ptr<Communicator> world_host_communicator() {
#ifdef BFM_WITH_MPI
  return make_mpi_communicator(world().comm);
#else
  return make_self_communicator();
#endif
}

}  // namespace

std::unique_ptr<Communicator> make_self_communicator() { return std::make_unique<SelfCommunicator>(); }

#ifdef BFM_WITH_MPI
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<MpiCommunicator>(comm, INT_MAX);
}
namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm, int64_t max_count) {
  return std::make_unique<MpiCommunicator>(comm, max_count);
}
}  // namespace detail
#endif

std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool on_gpu) {
  if (backend == "self") return make_self_communicator();
  if (backend == "mpi") {
#ifdef BFM_WITH_MPI
    return make_mpi_communicator(world().comm);
#else
    fail("communicator back-end 'mpi' asked for, but this build has no MPI (BFM_WITH_MPI=OFF)");
#endif
  }
  if (backend == "nccl") {
#ifdef BFM_WITH_NCCL
    require(on_gpu, "communicator back-end 'nccl' needs the training on the GPU");
    return make_nccl_communicator(world_host_communicator());
#else
    fail("communicator back-end 'nccl' asked for, but this build has no NCCL (needs BFM_WITH_CUDA and nccl.h)");
#endif
  }
  if (backend == "auto") {
#ifdef BFM_WITH_NCCL
    if (on_gpu) return make_nccl_communicator(world_host_communicator());
#endif
    (void)on_gpu;
    return world_host_communicator();
  }
  fail("unknown communicator back-end '", backend, "' (self, mpi, nccl or auto)");
}

}  // namespace bfm::runtime
