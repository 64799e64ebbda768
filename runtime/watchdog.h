// A deadline for a blocking stretch that the communicator's polled collectives cannot watch: collective HDF5 over
// MPI-IO (writing and reading training checkpoints), where every rank waits inside the library for the others. If
// a rank stops answering there (stopped, hung, dead, its node lost), the others would wait forever; a Watchdog that
// is still armed when its deadline passes prints one line on stderr naming what did not finish, which rank waited and
// how long, and ends the process with kExitCollectiveTimeout (76), as a collective timeout does, so that the launcher
// ends the job and the scheduler requeues it. Nothing is cleaned up (the waiting thread cannot be interrupted): files
// being written keep their temporary names, so a resume never mistakes them for whole ones.
//
// Ranks other than 0 wait a few seconds more before they report, so that a job whose rank 0 is alive prints one
// line (the launcher kills the rest when rank 0 exits) and a job whose rank 0 is the one stopped still prints one.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace bfm::runtime {

class Watchdog {
 public:
  // Armed from construction to destruction; seconds <= 0: never fires. `what` names the stretch ("the checkpoint
  // write at step 120"); `setting` the key that sets the deadline; `note` ends the report (what became of the
  // outputs).
  Watchdog(std::string what, double seconds, std::string note = "",
           std::string setting = "train.collective_timeout_s");
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void watch();

  std::string what_, note_, setting_;
  double seconds_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::thread thread_;
};

// Fault injection for the tests (tests/launch/cli/test_faults.py): with BFM_FAULT_STOP=PLACE:RANK:NTH in the
// environment, that rank stops itself (SIGSTOP) the NTH time it reaches fault_stop_point(PLACE), as a rank hung there
// would. The places: "checkpoint" (just before a checkpoint's collective write), "finished" (a finished run, before
// MPI ends). Unset, a call costs one getenv.
void fault_stop_point(const std::string& place);

}  // namespace bfm::runtime
