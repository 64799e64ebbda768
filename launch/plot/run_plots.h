// The charts of a run's metrics (launch/train/metrics.h), drawn by bfm itself (launch/plot/charts.h):
//   loss.png        training loss per objective (thin lines), the training total (pale) and its moving average
//                   (thick), validation losses (dots and lines); a log y axis when they span more than 10x
//   lr.png          learning rate (top) and gradient norm (bottom)
//   throughput.png  samples_per_s (top) and any other numeric key, e.g. step_s, data_wait_s and comm_s (bottom)
// Every numeric key of the train and validation lines but elapsed_s is plotted somewhere. PNG files need zlib: a
// build without it has plots that say so (bfm plot) or are left out (the model card).
#pragma once

#include <string>
#include <vector>

namespace bfm::launch {

// Writes the PNG files for metrics file `metrics` into folder `out` (created); returns their paths. Errors name the
// file (launch/train/metrics.h's reader).
std::vector<std::string> plot_run(const std::string& metrics, const std::string& out);

// The loss chart of a run's metrics as PNG bytes; "" when the metrics hold no training line or there is no zlib.
std::string render_loss_plot(const std::string& metrics_jsonl);

}  // namespace bfm::launch
