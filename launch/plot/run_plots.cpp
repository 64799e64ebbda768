#include "launch/plot/run_plots.h"

#include "base/error.h"

#ifdef BFM_WITH_ZLIB
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "launch/plot/charts.h"
#include "launch/train/metrics.h"
#include "runtime/png.h"
#endif

namespace bfm::launch {

#ifdef BFM_WITH_ZLIB
namespace {

namespace fs = std::filesystem;
using runtime::Rgb;

bool is_loss(const std::string& key) {
  return key == "loss" || key == "mae" || key == "causal" || key == "contrastive" ||
         (key.size() > 4 && key.ends_with("loss"));
}

// The loss keys of a split: the total and the objectives in the model's order, then any other "...loss".
std::vector<std::string> loss_keys(const SplitMetrics& split) {
  std::vector<std::string> keys;
  for (const char* key : {"loss", "mae", "causal", "contrastive"})
    if (split.has(key)) keys.push_back(key);
  for (const auto& key : split.keys)
    if (is_loss(key) && std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  return keys;
}

// Colours (matplotlib's tab10): training objectives, validation losses, then anything else in turn.
Rgb train_colour(const std::string& key) {
  if (key == "mae") return {31, 119, 180};        // blue
  if (key == "causal") return {255, 127, 14};     // orange
  if (key == "contrastive") return {44, 160, 44}; // green
  return {23, 190, 207};                          // cyan
}
Rgb validation_colour(const std::string& key) {
  if (key == "loss") return {214, 39, 40};         // red
  if (key == "mae") return {148, 103, 189};        // purple
  if (key == "causal") return {140, 86, 75};       // brown
  if (key == "contrastive") return {227, 119, 194};// pink
  return {188, 189, 34};                           // olive
}
const Rgb kTotal{30, 30, 30}, kTotalRaw{190, 190, 190};
const std::vector<Rgb> kOthers = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
                                  {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};

Series series_of(const std::string& name, const std::map<double, double>& values, Rgb colour, int width = 1,
                 bool markers = false) {
  Series s{name, {}, {}, colour, width, markers};
  for (const auto& [step, v] : values) s.x.push_back(step), s.y.push_back(v);
  return s;
}

// A centred moving average over `window` points (fewer at the ends), skipping non-finite values.
Series moving_average(const Series& raw, int window, const std::string& name, Rgb colour, int width) {
  Series s{name, raw.x, std::vector<double>(raw.y.size(), std::nan("")), colour, width, false};
  const int n = int(raw.y.size()), half = window / 2;
  std::vector<double> sum(n + 1, 0.0), count(n + 1, 0.0);  // prefix sums of the finite values
  for (int i = 0; i < n; ++i) {
    const bool ok = std::isfinite(raw.y[i]);
    sum[i + 1] = sum[i] + (ok ? raw.y[i] : 0), count[i + 1] = count[i] + ok;
  }
  for (int i = 0; i < n; ++i) {
    const int a = std::max(0, i - half), b = std::min(n, i + half + 1);
    if (count[b] - count[a] > 0) s.y[i] = (sum[b] - sum[a]) / (count[b] - count[a]);
  }
  return s;
}

Chart loss_chart(std::map<std::string, SplitMetrics>& splits) {
  Chart c{"loss", "step", "loss", false, {}};
  const SplitMetrics& train = splits["train"];
  std::vector<std::string> objectives = loss_keys(train);
  std::erase(objectives, "loss");
  // With one objective the total is that objective: draw it once, as the total.
  const bool one_objective = train.has("loss") && objectives.size() == 1;
  const std::string total = one_objective ? "loss (" + objectives[0] + ")" : "loss";
  if (!one_objective)
    for (const auto& key : objectives) c.series.push_back(series_of(key, train.values.at(key), train_colour(key)));
  if (train.has("loss")) {
    Series raw = series_of(total + ", each step", train.values.at("loss"), kTotalRaw);
    // A window of about a twentieth of the run, odd so that it centres.
    const int window = std::max(1, int(raw.y.size() / 20)) | 1;
    Series mean = moving_average(raw, window, window > 1 ? total + ", mean of " + std::to_string(window) : total,
                                 kTotal, 3);
    if (window > 1) c.series.insert(c.series.begin(), std::move(raw));  // pale, under everything
    c.series.push_back(std::move(mean));
  }
  if (splits.count("validation")) {
    const SplitMetrics& val = splits["validation"];
    for (const auto& key : loss_keys(val))
      if (!(one_objective && key == objectives[0]))
        c.series.push_back(series_of("validation " + (key == "loss" ? total : key), val.values.at(key),
                                     validation_colour(key), 1, true));
  }
  c.log_y = spans_more_than_a_decade(c.series);
  if (c.log_y) c.y_label = "loss (log scale)";
  return c;
}

// One panel per chart, stacked, each panel_h high.
void write_panels(const std::string& path, const std::vector<Chart>& charts, int width, int panel_h) {
  runtime::RgbImage img(width, panel_h * int(charts.size()), {255, 255, 255});
  for (size_t i = 0; i < charts.size(); ++i) draw_chart(img, 0, int(i) * panel_h, width, panel_h, charts[i]);
  runtime::write_png(path, img);
}

}  // namespace

std::vector<std::string> plot_run(const std::string& metrics, const std::string& out) {
  std::ifstream f(metrics);
  require(bool(f), metrics, ": cannot open: ", std::strerror(errno));
  auto splits = read_metrics(f, metrics);
  std::error_code ec;
  fs::create_directories(out, ec);
  require(!ec, out, ": cannot create the output folder: ", ec.message());
  std::vector<std::string> written;
  constexpr int kWidth = 900;

  const std::string loss_png = (fs::path(out) / "loss.png").string();
  write_panels(loss_png, {loss_chart(splits)}, kWidth, 500);
  written.push_back(loss_png);

  const SplitMetrics& train = splits["train"];
  std::vector<Chart> optimiser;
  if (train.has("lr"))
    optimiser.push_back({"learning rate", "step", "lr", false, {series_of("lr", train.values.at("lr"), kOthers[0])}});
  if (train.has("grad_norm")) {
    Chart c{"gradient norm", "step", "grad norm", false, {series_of("grad_norm", train.values.at("grad_norm"),
                                                                    kOthers[3])}};
    c.log_y = spans_more_than_a_decade(c.series);
    if (c.log_y) c.y_label = "grad norm (log scale)";
    optimiser.push_back(std::move(c));
  }
  if (!optimiser.empty()) {
    const std::string lr_png = (fs::path(out) / "lr.png").string();
    write_panels(lr_png, optimiser, kWidth, optimiser.size() == 1 ? 500 : 360);
    written.push_back(lr_png);
  }

  // Everything not yet drawn: samples_per_s on top, the rest (times, counters, validation extras) below.
  std::vector<Chart> throughput;
  if (train.has("samples_per_s"))
    throughput.push_back({"throughput", "step", "samples/s",
                          false, {series_of("samples_per_s", train.values.at("samples_per_s"), kOthers[2])}});
  Chart rest{"", "step", "value", false, {}};
  for (const auto& [split, m] : splits)
    for (const auto& key : m.keys) {
      if (is_loss(key) || (split == "train" && (key == "lr" || key == "grad_norm" || key == "samples_per_s" ||
                                                key == "elapsed_s")))
        continue;  // elapsed_s grows with the step: the x axis already says it
      if (split != "train" && split != "validation") continue;
      const std::string name = split == "train" ? key : split + " " + key;
      rest.title += (rest.series.empty() ? "" : ", ") + name;
      rest.series.push_back(series_of(name, m.values.at(key), kOthers[rest.series.size() % kOthers.size()], 1,
                                      split != "train"));
    }
  if (!rest.series.empty()) {
    rest.log_y = spans_more_than_a_decade(rest.series);
    if (rest.log_y) rest.y_label = "value (log scale)";
    throughput.push_back(std::move(rest));
  }
  if (!throughput.empty()) {
    const std::string throughput_png = (fs::path(out) / "throughput.png").string();
    write_panels(throughput_png, throughput, kWidth, throughput.size() == 1 ? 500 : 360);
    written.push_back(throughput_png);
  }
  return written;
}

#else
std::vector<std::string> plot_run(const std::string&, const std::string&) {
  fail("bfm plot: this build has no zlib (zlib1g-dev), which it needs to write PNG files");
}
#endif

std::string render_loss_plot(const std::string& metrics_jsonl) {
#ifdef BFM_WITH_ZLIB
  std::istringstream in(metrics_jsonl);
  std::map<std::string, SplitMetrics> splits;
  try {
    splits = read_metrics(in, "metrics");
  } catch (const Error&) {
    return "";  // a model card without its plot rather than no release
  }
  runtime::RgbImage img(900, 500, {255, 255, 255});
  draw_chart(img, 0, 0, img.width, img.height, loss_chart(splits));
  const std::vector<uint8_t> png = runtime::encode_png(img);
  return std::string(png.begin(), png.end());
#else
  (void)metrics_jsonl;
  return "";
#endif
}

}  // namespace bfm::launch
