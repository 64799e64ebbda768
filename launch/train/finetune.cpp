#include "launch/train/finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/checkpoint.h"
#include "base/error.h"
#include "base/hash.h"
#include "launch/train/step_engine.h"
#include "model/placement.h"
#include "runtime/optimizer.h"
#include "runtime/progress.h"
#include "base/rng.h"
#include "runtime/safetensors.h"

namespace bfm::launch {

namespace {
namespace fs = std::filesystem;

// A uniform number in [0, 1) from a subject id alone (FNV-1a, then the splitmix64 finalizer: FNV's high bits barely
// differ between ids that differ in their last characters): the validation hold-back depends on the id only.
// The FNV basis here is 1469598103934665603 (the standard one, 14695981039346656037, without its last digit): kept,
// because another would move subjects between the hold-back and training and change every fine-tuned result.
double id_uniform(const std::string& s) { return unit_interval(mix64(fnv1a64(s, 1469598103934665603ULL))); }

struct Rows {
  std::vector<int64_t> trials;  // indices into data.trials
};

// The task's target of a trial: a class, or the standardised embedding.
struct Targets {
  int outputs = 0;
  bool classes = false;
  std::vector<float> mean, scale;  // embedding standardisation (training trials)
};

}  // namespace

FinetuneResult finetune(const model::BrainModel& init, const eval::EvalData& data, const FinetuneOptions& options,
                        runtime::Communicator& comm) {
  const model::ModelConfig& config = init.config();
  require(config.n_parcels == data.n_parcels, "finetune: the model takes ", config.n_parcels,
          " parcels, the corpus ", data.corpus, " has ", data.n_parcels);
  require(config.window == data.window, "finetune: window mismatch");
  require(options.task == "category" || options.task == "embedding", "finetune: unknown task '", options.task,
          "' (category | embedding)");
  require(options.batch_size % comm.size() == 0, "finetune: the batch size ", options.batch_size,
          " is not a multiple of the ", comm.size(), " ranks");
  // One GPU per rank (bf16 with fp32 master weights and moments), chosen by its node-local rank.
  const model::Placement placement =
      model::choose_placement(config, options.device, model::Precision::bf16, "finetune --device");
  Stopwatch clock;

  // Training and validation trials: population subjects only, the hold-back chosen by the subject id's hash.
  Rows train, valid;
  for (int64_t i = 0; i < int64_t(data.trials.size()); ++i) {
    const eval::EvalTrial& t = data.trials[size_t(i)];
    const eval::EvalSubject& s = data.subjects[size_t(t.subject)];
    if (s.held_out) continue;
    if (options.task == "category" && t.label < 0) continue;
    const double u = id_uniform(s.id);
    (u < options.validation_fraction ? valid : train).trials.push_back(i);
  }
  require(!train.trials.empty(), data.corpus, ": no labelled trial of a pre-training subject to fine-tune on");
  if (valid.trials.empty()) {  // too few subjects for a hold-back: the validation loss is then a training loss
    valid = train;
    if (options.verbose && comm.rank() == 0)
      runtime::log_line("finetune: no pre-training subject falls in the validation hold-back; the validation loss is "
                        "measured on the training trials");
  }

  Targets tg;
  const int64_t S = data.stim_dim;
  if (options.task == "category") {
    tg.classes = true;
    tg.outputs = data.n_categories;
    require(tg.outputs >= 2, data.corpus, ": fewer than 2 stimulus categories");
  } else {
    require(S > 0, data.corpus, ": no stimulus embeddings (/runs/stim_embedding) for the embedding task");
    tg.outputs = int(S);
    tg.mean.assign(size_t(S), 0.0f);
    tg.scale.assign(size_t(S), 1.0f);
    std::vector<double> m(size_t(S), 0.0), q(size_t(S), 0.0);
    for (int64_t i : train.trials)
      for (int64_t j = 0; j < S; ++j) m[size_t(j)] += data.stimuli[size_t(data.trials[size_t(i)].stimulus)][size_t(j)];
    for (auto& v : m) v /= double(train.trials.size());
    for (int64_t i : train.trials)
      for (int64_t j = 0; j < S; ++j) {
        const double c = data.stimuli[size_t(data.trials[size_t(i)].stimulus)][size_t(j)] - m[size_t(j)];
        q[size_t(j)] += c * c;
      }
    for (int64_t j = 0; j < S; ++j) {
      tg.mean[size_t(j)] = float(m[size_t(j)]);
      const double sd = std::sqrt(q[size_t(j)] / double(train.trials.size()));
      tg.scale[size_t(j)] = float(sd > 1e-12 ? sd : 1.0);
    }
  }

  FinetuneResult result;
  runtime::AdamWConfig opt;
  opt.lr = options.lr;
  opt.weight_decay = options.weight_decay;
  result.model = model::make_model(config, placement, opt);
  model::BrainModel& m = *result.model;
  m.load_params(init.params_copy().data());
  StepOptions so;
  so.reduction = StepOptions::Reduction::sum;  // each rank's loss is divided by the global batch already
  StepEngine engine(m, comm, so);

  const int D = config.d_model, O = tg.outputs;
  TaskHead& head = result.head;
  head.task = options.task;
  head.outputs = O;
  head.weight.assign(size_t(O) * D, 0.0f);
  head.bias.assign(size_t(O), 0.0f);
  head.target_mean = tg.mean;
  head.target_scale = tg.scale;
  {
    Rng rng = Rng::stream(options.seed, 0x4ead);
    for (auto& w : head.weight) w = float(0.02 * rng.normal());
  }
  // The head: [weight | bias] as one arena with its own AdamW (weight decayed, bias not).
  const int64_t head_size = int64_t(O) * D + O;
  std::vector<float> head_params(static_cast<size_t>(head_size)), head_grads(static_cast<size_t>(head_size));
  std::copy(head.weight.begin(), head.weight.end(), head_params.begin());
  runtime::AdamWConfig head_opt = opt;
  head_opt.lr = options.head_lr;
  head_opt.grad_clip = 0;  // the encoder's clipping covers the model; the head's norm is reported with it
  runtime::AdamW head_adamw(head_size, {{0, int64_t(O) * D, true}, {int64_t(O) * D, O, false}}, head_opt);
  engine.attach({head_params.data(), head_grads.data(), head_size, &head_adamw});

  const int64_t T = config.window, P = config.n_parcels;
  const int ranks = comm.size(), rank = comm.rank();
  const int local = options.batch_size / ranks;
  std::vector<float> x(size_t(local) * T * P);

  // Loss and d_pooled for rows of a batch; `norm` divides the summed loss (the global batch size).
  auto head_loss = [&](const std::vector<float>& pooled, const std::vector<int64_t>& trials, double norm,
                       std::vector<float>* d_pooled, std::vector<float>* d_head, int64_t* correct) {
    const int64_t b = int64_t(trials.size());
    double loss = 0;
    std::vector<double> out(static_cast<size_t>(O));
    for (int64_t r = 0; r < b; ++r) {
      const eval::EvalTrial& t = data.trials[size_t(trials[size_t(r)])];
      const float* h = &pooled[size_t(r * D)];
      for (int o = 0; o < O; ++o) {
        double s = head_params[size_t(int64_t(O) * D + o)];
        for (int j = 0; j < D; ++j) s += double(head_params[size_t(int64_t(o) * D + j)]) * h[j];
        out[size_t(o)] = s;
      }
      std::vector<double> d_out(static_cast<size_t>(O));
      if (tg.classes) {
        const double mx = *std::max_element(out.begin(), out.end());
        double z = 0;
        for (double v : out) z += std::exp(v - mx);
        loss += -(out[size_t(t.label)] - mx - std::log(z));
        int arg = int(std::max_element(out.begin(), out.end()) - out.begin());
        if (correct) *correct += arg == t.label;
        for (int o = 0; o < O; ++o) d_out[size_t(o)] = (std::exp(out[size_t(o)] - mx) / z - (o == t.label)) / norm;
      } else {
        const std::vector<float>& e = data.stimuli[size_t(t.stimulus)];
        for (int o = 0; o < O; ++o) {
          const double target = (e[size_t(o)] - tg.mean[size_t(o)]) / tg.scale[size_t(o)];
          const double diff = out[size_t(o)] - target;
          loss += diff * diff / O;
          d_out[size_t(o)] = 2 * diff / O / norm;
        }
      }
      if (d_pooled) {
        float* dp = &(*d_pooled)[size_t(r * D)];
        for (int j = 0; j < D; ++j) {
          double s = 0;
          for (int o = 0; o < O; ++o) s += d_out[size_t(o)] * head_params[size_t(int64_t(o) * D + j)];
          dp[j] = float(s);
        }
      }
      if (d_head) {
        for (int o = 0; o < O; ++o) {
          for (int j = 0; j < D; ++j) (*d_head)[size_t(int64_t(o) * D + j)] += float(d_out[size_t(o)] * h[j]);
          (*d_head)[size_t(int64_t(O) * D + o)] += float(d_out[size_t(o)]);
        }
      }
    }
    return loss / norm;
  };
  auto fill = [&](const std::vector<int64_t>& trials) {
    for (size_t r = 0; r < trials.size(); ++r) {
      const eval::EvalTrial& t = data.trials[size_t(trials[r])];
      eval::copy_window(data, t.subject, t.run, t.onset, &x[r * size_t(T * P)]);
    }
    model::Batch batch;
    batch.size = int(trials.size());
    batch.x = x.data();
    batch.encoder_only = true;
    return batch;
  };
  // Validation: every rank a contiguous share of the validation trials; loss (and accuracy) summed over ranks.
  auto validate = [&](double* accuracy) {
    const int64_t n = int64_t(valid.trials.size());
    double sums[2] = {0, 0};
    for (int64_t first = rank * local; first < n; first += int64_t(local) * ranks) {
      std::vector<int64_t> rows(valid.trials.begin() + first, valid.trials.begin() + std::min(n, first + local));
      m.forward(fill(rows), "fine-tuning batch");
      const auto pooled = m.pooled();
      int64_t correct = 0;
      sums[0] += head_loss(pooled, rows, 1.0, nullptr, nullptr, &correct);
      sums[1] += double(correct);
    }
    comm.allreduce_sum_host(sums, 2);
    if (accuracy) *accuracy = tg.classes ? sums[1] / double(n) : -1;
    return sums[0] / double(n);
  };

  result.train_trials = int64_t(train.trials.size());
  result.validation_trials = int64_t(valid.trials.size());
  result.first_validation_loss = validate(nullptr);
  if (options.verbose && rank == 0)
    runtime::log_line("finetune " + options.task + ": " + std::to_string(train.trials.size()) + " training trials, " +
                      std::to_string(valid.trials.size()) + " validation trials (pre-training subjects only), " +
                      std::to_string(ranks) + " rank(s), validation loss " +
                      std::to_string(result.first_validation_loss));
  std::vector<float> d_pooled(size_t(local) * D);
  Stopwatch train_clock;
  for (int64_t step = 0; step < options.steps; ++step) {
    // The global batch: drawn the same on every rank from (seed, step); this rank takes its slice.
    Rng rng = Rng::stream(options.seed, 0xf1e7, uint64_t(step));
    std::vector<int64_t> rows(static_cast<size_t>(local));
    for (int i = 0; i < options.batch_size; ++i) {
      const int64_t pick = train.trials[rng.below(train.trials.size())];
      if (i / local == rank) rows[size_t(i % local)] = pick;
    }
    const double lr_scale = runtime::learning_rate(1.0, step, options.warmup_steps, options.steps, 0.1);
    const StepResult r = engine.step(
        1,
        [&](int, float scale, const model::ReadyHook& on_ready) {
          m.forward(fill(rows), "fine-tuning batch");
          model::Losses l;
          l.total = head_loss(m.pooled(), rows, double(options.batch_size), &d_pooled, &head_grads, nullptr);
          m.backward_pooled(d_pooled.data(), scale, on_ready);
          return l;
        },
        options.lr * lr_scale, options.head_lr * lr_scale);
    const double loss = r.losses.total.value_or(std::nan(""));
    const double grad_norm = r.grad_norm;
    if (step == 0) result.first_train_loss = loss;
    result.last_train_loss = loss;
    result.steps = step + 1;
    if (options.verbose && rank == 0 &&
        ((step + 1) % std::max<int64_t>(1, options.log_every) == 0 || step + 1 == options.steps)) {
      runtime::ProgressFields f;
      f.step = step + 1;
      f.total_steps = options.steps;
      f.losses = {{"loss", loss}};
      f.lr = options.lr * lr_scale;
      f.elapsed_s = train_clock.seconds();
      f.grad_norm = grad_norm;
      f.samples_per_s = double(options.batch_size) * double(step + 1) / std::max(1e-9, train_clock.seconds());
      f.tokens_per_s = f.samples_per_s * config.n_tokens();
      runtime::log_line(runtime::format_progress(f));
    }
  }
  result.last_validation_loss = validate(&result.validation_accuracy);
  std::copy_n(head_params.begin(), int64_t(O) * D, head.weight.begin());
  std::copy_n(head_params.begin() + int64_t(O) * D, O, head.bias.begin());
  result.seconds = clock.seconds();
  if (options.verbose && rank == 0) {
    std::ostringstream line;
    line << "finetune " << options.task << ": validation loss " << result.first_validation_loss << " -> "
         << result.last_validation_loss;
    if (result.validation_accuracy >= 0) line << ", accuracy " << result.validation_accuracy;
    line << " in " << runtime::format_duration(result.seconds);
    runtime::log_line(line.str());
  }
  return result;
}

void save_finetuned(const std::string& dir, const FinetuneResult& result, const FinetuneOptions& options,
                    const std::string& source_checkpoint) {
  const TaskHead& h = result.head;
  const int D = result.model->config().d_model;
  // The head file is written into a scratch folder first, its bytes then travel with the checkpoint's own files so
  // that the folder appears whole or not at all.
  const fs::path scratch = fs::path(dir).string() + ".head";
  fs::create_directories(scratch);
  const std::string head_path = (scratch / "task_head.safetensors").string();
  runtime::write_safetensors(head_path, {{"task_head.weight", {h.outputs, D}, h.weight.data()},
                                         {"task_head.bias", {h.outputs}, h.bias.data()}},
                             {{"task", h.task}});
  std::ifstream in(head_path, std::ios::binary);
  std::string head_bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove_all(scratch);
  nlohmann::json task = {
      {"format", "bfm-task-head"},
      {"format_version", 1},
      {"task", h.task},
      {"outputs", h.outputs},
      {"input", "pooled"},
      {"loss", h.task == "category" ? "cross_entropy" : "mse_standardised"},
      {"target_mean", h.target_mean},
      {"target_scale", h.target_scale},
      {"source_checkpoint", source_checkpoint},
      {"steps", result.steps},
      {"batch_size", options.batch_size},
      {"lr", options.lr},
      {"head_lr", options.head_lr},
      {"train_trials", result.train_trials},
      {"validation_trials", result.validation_trials},
      {"validation_loss", {result.first_validation_loss, result.last_validation_loss}},
  };
  if (result.validation_accuracy >= 0) task["validation_accuracy"] = result.validation_accuracy;
  model::save_released_checkpoint(dir, *result.model,
                                  {{"task_head.safetensors", head_bytes}, {"task.json", task.dump(2) + "\n"}});
}

TaskHead load_task_head(const std::string& dir, int d_model) {
  const std::string json_path = (fs::path(dir) / "task.json").string();
  std::ifstream in(json_path);
  require(static_cast<bool>(in), json_path, ": missing (not a fine-tuned checkpoint: bfm finetune writes it)");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    fail(json_path, ": not JSON (", e.what(), ")");
  }
  require(j.value("format", "") == "bfm-task-head", json_path, ": format is not \"bfm-task-head\"");
  TaskHead h;
  try {
    h.task = j.at("task").get<std::string>();
    h.outputs = j.at("outputs").get<int>();
    h.target_mean = j.value("target_mean", std::vector<float>{});
    h.target_scale = j.value("target_scale", std::vector<float>{});
  } catch (const std::exception& e) {
    fail(json_path, ": ", e.what());
  }
  const std::string st = (fs::path(dir) / "task_head.safetensors").string();
  const runtime::SafetensorsContents c = runtime::read_safetensors(st);
  auto get = [&](const char* name, std::vector<int64_t> shape) {
    auto it = c.tensors.find(name);
    require(it != c.tensors.end(), st, ": tensor ", name, " is missing");
    require(it->second.shape == shape, st, ": tensor ", name, " has the wrong shape for a model of width ", d_model,
            " and ", h.outputs, " outputs");
    for (float v : it->second.data) require(std::isfinite(v), st, ": tensor ", name, " holds a non-finite value");
    return it->second.data;
  };
  h.weight = get("task_head.weight", {h.outputs, d_model});
  h.bias = get("task_head.bias", {h.outputs});
  return h;
}

}  // namespace bfm::launch

