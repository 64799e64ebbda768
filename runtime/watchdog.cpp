#include "runtime/watchdog.h"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <sstream>

#include "runtime/comm.h"
#include "runtime/world.h"

namespace bfm::runtime {

Watchdog::Watchdog(std::string what, double seconds, std::string note, std::string setting)
    : what_(std::move(what)), note_(std::move(note)), setting_(std::move(setting)), seconds_(seconds) {
  if (seconds_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  done_cv_.notify_one();
  thread_.join();
}

void Watchdog::watch() {
  const RankInWorld where = rank_in_world();
  // Rank 0 reports first; the others only when rank 0 has not ended the job within this grace.
  const double grace = where.rank == 0 ? 0 : 5;
  // Time counts while this process runs, not while it is stopped itself (a suspended job, SIGSTOP, a debugger):
  // a gap between two ticks far longer than a tick is left out, so a job resumed after a suspension is not ended.
  constexpr double kTick = 0.25, kGap = 2.0;
  using Clock = std::chrono::steady_clock;
  double waited = 0;
  auto last = Clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  while (waited < seconds_ + grace) {
    if (done_cv_.wait_for(lock, std::chrono::duration<double>(kTick), [this] { return done_; })) return;
    const auto now = Clock::now();
    const double dt = std::chrono::duration<double>(now - last).count();
    if (dt < kGap) waited += dt;
    last = now;
  }
  std::ostringstream line;
  line.precision(3);
  line << "bfm: error: collective timeout: rank " << where.rank << " of " << where.size << " waited " << waited
       << " s (" << setting_ << " = " << seconds_ << ") for " << what_
       << " to finish: a rank stopped answering (stopped, hung, dead, or its node lost)"
       << (note_.empty() ? "" : "; " + note_) << "\n";
  const std::string text = line.str();
  // One write(2), not a stream: the main thread is blocked inside MPI-IO and may hold stdio's locks.
  [[maybe_unused]] const ssize_t written = ::write(2, text.data(), text.size());
  ::_exit(kExitCollectiveTimeout);
}

void fault_stop_point(const std::string& place) {
  static std::map<std::string, int> reached;
  const char* spec = std::getenv("BFM_FAULT_STOP");
  if (spec == nullptr) return;
  const std::string here =
      place + ":" + std::to_string(rank_in_world().rank) + ":" + std::to_string(++reached[place]);
  if (here == spec) std::raise(SIGSTOP);
}

}  // namespace bfm::runtime
