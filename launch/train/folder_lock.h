// The output folder of a run belongs to that run while it runs: two `bfm pretrain` into the same --out would both
// start, interleave metrics.jsonl and fight over the checkpoints. The run's lead rank holds an exclusive lock
// (flock(2) on OUT/.lock) for as long as the run lives; the kernel drops it when the process ends, however it ends,
// so a killed run leaves no stale lock. The file records who holds it (host, pid, start time) for the error that
// refuses a second run.
#pragma once

#include <string>

namespace bfm::launch {

class FolderLock {
 public:
  // Creates `folder` when missing and locks it; throws bfm::Error naming the folder and the run that holds it.
  explicit FolderLock(const std::string& folder);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace bfm::launch
