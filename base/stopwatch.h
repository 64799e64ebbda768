// The one timing helper: a monotonic stopwatch (seconds as double). Header-only, so that every layer (the loader's
// data-wait clock in io/, the communicators' blocked time in runtime/) times the same way.
#pragma once

#include <chrono>

namespace bfm {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void restart() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace bfm
