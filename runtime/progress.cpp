#include "runtime/progress.h"

#include <cmath>
#include <cstdio>
#include <iostream>

namespace bfm::runtime {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(seconds + 0.5);
  char buffer[32];
  if (total >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", (long long)(total / 3600), (long long)(total % 3600 / 60));
  else if (total >= 60)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", (long long)(total / 60), (long long)(total % 60));
  else
    std::snprintf(buffer, sizeof buffer, "%llds", (long long)total);
  return buffer;
}

void log_line(const std::string& line) { std::cerr << "bfm: " << line << std::endl; }

namespace {
std::string si(double v) {
  char buffer[32];
  if (v >= 1e6) std::snprintf(buffer, sizeof buffer, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buffer, sizeof buffer, "%.1fk", v / 1e3);
  else std::snprintf(buffer, sizeof buffer, "%.1f", v);
  return buffer;
}
}  // namespace

std::string format_progress(const ProgressFields& f) {
  char head[64];
  const int width = static_cast<int>(std::to_string(f.total_steps).size());
  std::snprintf(head, sizeof head, "step %*lld/%lld", width, (long long)f.step, (long long)f.total_steps);
  std::string line = head;
  char buffer[96];
  line += " |";
  for (const auto& [name, value] : f.losses) {
    std::snprintf(buffer, sizeof buffer, " %s %.4f", name.c_str(), value);
    line += buffer;
  }
  std::snprintf(buffer, sizeof buffer, " | lr %.2e | |g| %.3f | ", f.lr, f.grad_norm);
  line += buffer;
  line += si(f.samples_per_s) + " samples/s " + si(f.tokens_per_s) + " tok/s | ";
  if (f.data_wait_s >= 0 || f.comm_s >= 0) {
    const double e = f.elapsed_s > 0 ? f.elapsed_s : 1.0;
    if (f.data_wait_s >= 0) {
      std::snprintf(buffer, sizeof buffer, "data %.0f%% ", 100.0 * f.data_wait_s / e);
      line += buffer;
    }
    if (f.comm_s >= 0) {
      std::snprintf(buffer, sizeof buffer, "comm %.0f%% ", 100.0 * f.comm_s / e);
      line += buffer;
    }
    line += "| ";
  }
  const double remaining =
      f.eta_s >= 0 ? f.eta_s
                   : f.step > 0 ? f.elapsed_s / double(f.step) * double(f.total_steps - f.step) : std::nan("");
  line += format_duration(f.elapsed_s) + ", ETA " + format_duration(remaining);
  return line;
}

}  // namespace bfm::runtime
