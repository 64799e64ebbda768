// bfm plot RUN_DIR [--out DIR] [--metrics FILE]: a run's metrics.jsonl as PNG charts (launch/plot/run_plots.h says
// which), printing the files written.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "launch/cli/commands.h"
#include "launch/plot/run_plots.h"

namespace bfm::launch {

Command add_plot_command(CLI::App& app) {
  struct Options {
    std::string run_dir, out, metrics;
  };
  auto* sub = app.add_subcommand("plot", "Draw a run's metrics.jsonl as PNG charts: loss, learning rate, throughput");
  auto o = std::make_shared<Options>();
  sub->add_option("run_dir", o->run_dir, "The run's output folder (bfm pretrain --out)")->required();
  sub->add_option("--out", o->out, "Where to write the PNG files (default RUN_DIR/plots)");
  sub->add_option("--metrics", o->metrics, "The metrics file (default RUN_DIR/metrics.jsonl)");
  return [o] {
    namespace fs = std::filesystem;
    const std::string metrics = o->metrics.empty() ? (fs::path(o->run_dir) / "metrics.jsonl").string() : o->metrics;
    const std::string out = o->out.empty() ? (fs::path(o->run_dir) / "plots").string() : o->out;
    for (const auto& p : plot_run(metrics, out)) std::cout << p << "\n";
    std::cout.flush();
    return 0;
  };
}

}  // namespace bfm::launch
