// The host back-ends of the communicator (runtime/comm.h) and the choice between back-ends:
//   self  a world of one, where each collective is the identity or a copy;
//   mpi   the collectives over a duplicate of an MPI communicator, with errors returned (MPI_ERRORS_RETURN) and
//         thrown as bfm::Error naming the operation and the rank.
// MPI counts are int: a range longer than max_count (INT_MAX, smaller in the tests) is split into several calls. The
// all-reduces and the broadcast split into consecutive pieces; the all-gather and the reduce-scatter, whose pieces
// would interleave ranks, become one broadcast (all-gather) or one reduce (reduce-scatter) per rank and piece: slower
// than the single call, but it needs no scratch buffer and no derived datatype, and it only runs past 8 GiB per rank.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "runtime/comm.h"
#include "runtime/device.h"
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

// Waiting: the first second is spent polling without a pause (a healthy collective finishes there, and MPI
// progresses a non-blocking collective, and moves its bytes, only inside MPI calls); after that a pause of 1 ms
// between polls, 10 ms after 5 s, so that a rank whose peer is stopped waits without spinning a core.
void pause_while_waiting(double waited_s) {
  if (waited_s < 1) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(waited_s < 5 ? 1 : 10));
}

std::string seconds_text(double s) {
  std::ostringstream os;
  os.precision(s < 10 ? 2 : 0);
  os << std::fixed << s << " s";
  return os.str();
}

#ifdef BFM_WITH_MPI
// MPI_ERRORS_RETURN on MPI_COMM_WORLD for its scope, the handler before restored after.
class WorldErrorsReturn {
 public:
  WorldErrorsReturn() {
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &before_);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~WorldErrorsReturn() {
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, before_);
    MPI_Errhandler_free(&before_);
  }
  WorldErrorsReturn(const WorldErrorsReturn&) = delete;
  WorldErrorsReturn& operator=(const WorldErrorsReturn&) = delete;

 private:
  MPI_Errhandler before_ = MPI_ERRHANDLER_NULL;
};
#endif

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
    check(MPI_Comm_dup(comm, &watch_), "MPI_Comm_dup (watch)");
    check(MPI_Comm_set_errhandler(watch_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler (watch)");
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // With operations still pending (an exception left them), freeing could wait on ranks that never join: leak.
    if (!finalized && pending_.empty()) {
      MPI_Comm_free(&comm_);
      MPI_Comm_free(&watch_);
    }
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
      collective("allreduce_sum", [&](MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, data + at, piece(n, at), MPI_FLOAT, MPI_SUM, comm_, r);
      });
  }

  void allgather(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("allgather", n);
    float* mine = recv + rank_ * n;
    const bool in_place = send == mine;
    require(in_place || !overlap(send, n, recv, size_ * n), "mpi communicator: allgather on rank ", rank_,
            ": send overlaps recv other than at recv + rank * n");
    if (n <= max_count_) {
      collective("allgather", [&](MPI_Request* r) {
        return MPI_Iallgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(n), MPI_FLOAT, recv,
                              static_cast<int>(n), MPI_FLOAT, comm_, r);
      });
      return;
    }
    if (!in_place) std::copy(send, send + n, mine);
    for (int64_t at = 0; at < n; at += max_count_)
      for (int r = 0; r < size_; ++r)
        collective("allgather (by broadcasts)", [&](MPI_Request* request) {
          return MPI_Ibcast(recv + r * n + at, piece(n, at), MPI_FLOAT, r, comm_, request);
        });
  }

  void reduce_scatter_sum(const float* send, float* recv, int64_t n) override {
    BlockedScope blocked(blocked_);
    check_count("reduce_scatter_sum", n);
    require(!overlap(send, size_ * n, recv, n), "mpi communicator: reduce_scatter_sum on rank ", rank_,
            ": send and recv overlap");
    if (n <= max_count_) {
      collective("reduce_scatter_sum", [&](MPI_Request* r) {
        return MPI_Ireduce_scatter_block(send, recv, static_cast<int>(n), MPI_FLOAT, MPI_SUM, comm_, r);
      });
      return;
    }
    for (int64_t at = 0; at < n; at += max_count_)
      for (int r = 0; r < size_; ++r)
        collective("reduce_scatter_sum (by reductions)", [&](MPI_Request* request) {
          return MPI_Ireduce(send + r * n + at, r == rank_ ? recv + at : nullptr, piece(n, at), MPI_FLOAT, MPI_SUM,
                             r, comm_, request);
        });
  }

  void broadcast(float* data, int64_t n, int root) override {
    BlockedScope blocked(blocked_);
    check_count("broadcast", n);
    require(root >= 0 && root < size_, "mpi communicator: broadcast from root ", root, " on rank ", rank_,
            " in a world of ", size_);
    for (int64_t at = 0; at < n; at += max_count_)
      collective("broadcast", [&](MPI_Request* r) {
        return MPI_Ibcast(data + at, piece(n, at), MPI_FLOAT, root, comm_, r);
      });
  }

  void allreduce_sum_host(double* data, int64_t n) override { allreduce_host(data, n, MPI_SUM, "allreduce_sum_host"); }
  void allreduce_max_host(double* data, int64_t n) override { allreduce_host(data, n, MPI_MAX, "allreduce_max_host"); }

  void barrier() override {
    BlockedScope blocked(blocked_);
    collective("barrier", [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
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
    complete(requests, "wait (bucketed allreduce_sum)");
  }

  void wait_all() override {
    while (!pending_.empty()) wait(pending_.begin()->first);
  }

  double blocked_seconds() const override { return blocked_; }

  // Polls done() under the timeout, answering the other ranks' questions meanwhile (see the file's comment).
  void watch_wait(const char* op, const std::function<bool()>& done) override {
    ++sequence_;
    Stopwatch waited, since_asked;
    waiting_op_ = op;
    int mismatches = 0;
    while (!done()) {
      answer_questions();
      if (timeout_s_ > 0 && since_asked.seconds() > timeout_s_) {
        if (ask_peers(op, waited.seconds(), done, mismatches)) break;  // it completed while the peers were asked
        since_asked.restart();  // every rank answered: slow, not lost; ask again after another timeout
      }
      pause_while_waiting(waited.seconds());
    }
    waiting_op_ = nullptr;
  }

 private:
  // Starts one non-blocking collective (start fills the request) and completes it under the timeout.
  template <class Start>
  void collective(const char* op, Start&& start) {
    std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
    check(start(&requests[0]), op);
    complete(requests, op);
  }
  void complete(std::vector<MPI_Request>& requests, const char* op) {
    // Open MPI reports a failed non-blocking collective's error (a truncated message) through MPI_COMM_WORLD's
    // handler, not the request's communicator: it must return, to be thrown here, rather than abort the job.
    WorldErrorsReturn errors_return;
    watch_wait(op, [&] {
      int done = 0;
      check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), op);
      return done != 0;
    });
  }

  // The questions and answers of the timeout, on watch_ (its own communicator, so they never match a collective's
  // traffic). A question carries the asker's question id; the answer echoes it, with the collective the answering
  // rank waits in (its sequence number and name). Only a rank inside watch_wait answers: one that is stopped, hung
  // in its own work, or dead does not, and that is what the report names.
  static constexpr int kQuestionTag = 1, kAnswerTag = 2;
  struct Answer {
    int64_t question = 0, sequence = 0;
    char op[48] = {};
  };

  void answer_questions() {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      check(MPI_Iprobe(MPI_ANY_SOURCE, kQuestionTag, watch_, &flag, &status), "MPI_Iprobe (timeout questions)");
      if (!flag) return;
      int64_t question = 0;
      check(MPI_Recv(&question, 1, MPI_INT64_T, status.MPI_SOURCE, kQuestionTag, watch_, MPI_STATUS_IGNORE),
            "MPI_Recv (timeout question)");
      Answer answer;
      answer.question = question;
      answer.sequence = sequence_;
      std::strncpy(answer.op, waiting_op_ != nullptr ? waiting_op_ : "?", sizeof answer.op - 1);
      // A few dozen bytes: sent eagerly, so this returns without the asker's progress.
      check(MPI_Send(&answer, sizeof answer, MPI_BYTE, status.MPI_SOURCE, kAnswerTag, watch_),
            "MPI_Send (timeout answer)");
    }
  }

  // After the timeout: asks every other rank where it is, waits a grace period (2 to 10 s) for the answers, serving
  // the others' questions meanwhile. Returns true when the collective completed in the meantime, false when every
  // rank answered from inside this same collective (it is slow, not lost: keep waiting). Throws CollectiveTimeout
  // naming the ranks that did not answer, or, when every rank answers but some from another collective twice in a
  // row (`mismatches` counts), naming where each waits: then the ranks will never meet.
  bool ask_peers(const char* op, double waited_s, const std::function<bool()>& done, int& mismatches) {
    const int64_t question = ++questions_;
    std::vector<MPI_Request> sends, receives;
    std::vector<Answer> answers(size_);
    std::vector<int> answered(size_, 0);
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      MPI_Request send = MPI_REQUEST_NULL, receive = MPI_REQUEST_NULL;
      check(MPI_Isend(&question, 1, MPI_INT64_T, r, kQuestionTag, watch_, &send), "MPI_Isend (timeout question)");
      check(MPI_Irecv(&answers[r], sizeof(Answer), MPI_BYTE, r, kAnswerTag, watch_, &receive),
            "MPI_Irecv (timeout answer)");
      sends.push_back(send);
      receives.push_back(receive);
    }
    const double grace = std::clamp(timeout_s_ / 10, 2.0, 10.0);
    Stopwatch asking;
    bool completed = false;
    for (;;) {
      completed = done();
      int missing = 0;
      for (int r = 0, i = 0; r < size_; ++r) {
        if (r == rank_) continue;
        MPI_Request& receive = receives[i++];
        if (!answered[r]) {
          int flag = 0;
          check(MPI_Test(&receive, &flag, MPI_STATUS_IGNORE), "MPI_Test (timeout answer)");
          // An answer to an earlier question (one asked before a collective completed late): ask again.
          if (flag && answers[r].question != question)
            check(MPI_Irecv(&answers[r], sizeof(Answer), MPI_BYTE, r, kAnswerTag, watch_, &receive),
                  "MPI_Irecv (timeout answer)");
          else if (flag)
            answered[r] = 1;
        }
        missing += !answered[r];
      }
      if (completed || missing == 0 || asking.seconds() > grace) break;
      answer_questions();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (completed) {
      // Slow, not lost: forget the questions (a late answer is recognised by its question id and dropped).
      for (MPI_Request& r : receives)
        if (r != MPI_REQUEST_NULL) {
          MPI_Cancel(&r);
          MPI_Request_free(&r);
        }
      for (MPI_Request& r : sends)
        if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
      return true;
    }
    std::vector<int> silent, same;
    std::ostringstream elsewhere;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      if (!answered[r]) silent.push_back(r);
      else if (answers[r].sequence == sequence_) same.push_back(r);
      else
        elsewhere << "; rank " << r << " waits in "
                  << std::string(answers[r].op, strnlen(answers[r].op, sizeof answers[r].op))
                  << " (collective #" << answers[r].sequence << ")";
    }
    if (silent.empty()) {
      if (elsewhere.str().empty()) {
        mismatches = 0;
        return false;
      }
      if (++mismatches < 2) return false;  // one of them may still be completing the collective before
    }
    auto ranks = [](const std::vector<int>& list) {
      std::ostringstream os;
      os << (list.size() == 1 ? "rank " : "ranks ");
      for (size_t i = 0; i < list.size(); ++i) os << (i ? ", " : "") << list[i];
      return os.str();
    };
    std::ostringstream report;
    report << "collective timeout: rank " << rank_ << " of " << size_ << " waited " << seconds_text(waited_s)
           << " (train.collective_timeout_s = " << timeout_s_ << ") in " << op << " (collective #" << sequence_
           << (context_.empty() ? "" : ", " + context_) << ")";
    if (!silent.empty())
      report << " for " << ranks(silent) << ", which did not answer within " << seconds_text(grace)
             << " (stopped, hung, dead, or its node lost)";
    if (!same.empty())
      report << "; " << ranks(same) << (same.size() == 1 ? " waits" : " wait") << " in the same collective";
    report << elsewhere.str();
    throw CollectiveTimeout(report.str());
  }

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
      collective(name, [&](MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, data + at, piece(n, at), MPI_DOUBLE, op, comm_, r);
      });
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm watch_ = MPI_COMM_NULL;  // the timeout's questions and answers
  int64_t sequence_ = 0;             // collectives completed or waited for so far (the same on every rank)
  int64_t questions_ = 0;
  const char* waiting_op_ = nullptr;  // what this rank waits in, for its answers
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

void Communicator::watch_wait(const char* op, const std::function<bool()>& done) {
  Stopwatch waited;
  while (!done()) {
    const double t = waited.seconds();
    if (timeout_s_ > 0 && t > timeout_s_)
      throw CollectiveTimeout("collective timeout: " + std::string(op) + " did not complete within " +
                              seconds_text(timeout_s_) + (context_.empty() ? "" : " (" + context_ + ")"));
    pause_while_waiting(t);
  }
}

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

namespace detail {
int most_ranks_on_one_device(const std::vector<std::string>& device_ids) {
  std::map<std::string, int> ranks_on;
  int most = 0;
  for (const std::string& id : device_ids) {
    if (id.empty()) return 0;
    most = std::max(most, ++ranks_on[id]);
  }
  return most > 1 ? most : 0;
}
}  // namespace detail

#ifdef BFM_WITH_NCCL
namespace {
// NCCL takes one rank per GPU (ncclCommInitRank refuses two ranks on one device). Which GPU a rank uses is told by
// its UUID, not its index: a rank bound to its GPU (Slurm's --gpus-per-task, CUDA_VISIBLE_DEVICES) sees it as device
// 0 however many ranks its node runs. Gathered over `host` (a collective: every rank decides alike), each byte as a
// float (exact).
int ranks_sharing_a_gpu(Communicator& host) {
  constexpr int kBytes = 16;
  const std::string uuid = cuda_current_device_uuid();
  std::vector<float> mine(kBytes, 0.0f), all(size_t(kBytes) * size_t(host.size()));
  for (size_t i = 0; i < uuid.size() && i < size_t(kBytes); ++i) mine[i] = static_cast<unsigned char>(uuid[i]);
  host.allgather(mine.data(), all.data(), kBytes);
  std::vector<std::string> ids(size_t(host.size()));
  for (size_t r = 0; r < ids.size(); ++r) {
    const float* b = &all[r * kBytes];
    if (std::all_of(b, b + kBytes, [](float v) { return v == 0.0f; })) continue;  // no GPU named: ""
    for (int i = 0; i < kBytes; ++i) ids[r].push_back(static_cast<char>(static_cast<unsigned char>(b[i])));
  }
  return detail::most_ranks_on_one_device(ids);
}
}  // namespace
#endif

std::unique_ptr<Communicator> make_communicator(const std::string& backend, bool on_gpu, std::string* why_host) {
  if (why_host != nullptr) why_host->clear();
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
    auto host = world_host_communicator();
    const int sharing = ranks_sharing_a_gpu(*host);
    require(sharing == 0, "communicator back-end 'nccl' needs a GPU per rank, but ", sharing,
            " ranks share one GPU (more ranks than GPUs on a node); use the host back-end ('mpi', or 'auto')");
    return make_nccl_communicator(std::move(host));
#else
    fail("communicator back-end 'nccl' asked for, but this build has no NCCL (needs BFM_WITH_CUDA and nccl.h)");
#endif
  }
  if (backend == "auto") {
    auto host = world_host_communicator();
#ifdef BFM_WITH_NCCL
    if (on_gpu) {
      const int sharing = ranks_sharing_a_gpu(*host);
      if (sharing == 0) return make_nccl_communicator(std::move(host));
      if (why_host != nullptr)
        *why_host = std::to_string(sharing) + " ranks share one GPU and NCCL takes one rank per GPU";
    }
#else
    if (on_gpu && why_host != nullptr) *why_host = "this bfm was built without NCCL";
#endif
    return host;
  }
  fail("unknown communicator back-end '", backend, "' (self, mpi, nccl or auto)");
}

}  // namespace bfm::runtime
