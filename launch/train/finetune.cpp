#include "launch/train/finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/released_checkpoint.h"
#include "base/error.h"
#include "base/hash.h"
#include "launch/eval/features.h"
#include "launch/eval/tasks.h"
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

eval::TokenProjection initial_head_projection(const model::BrainModel& init, const eval::EvalData& data,
                                              int components, const std::string& device, runtime::Communicator& comm) {
  std::vector<int> population;
  for (int s = 0; s < int(data.subjects.size()); ++s)
    if (!data.subjects[size_t(s)].held_out) population.push_back(s);
  return eval::token_projection(eval::fit_probe_basis(init, data, population, comm, device, components));
}

FinetuneResult finetune(const model::BrainModel& init, const eval::EvalData& data, const FinetuneOptions& options,
                        runtime::Communicator& comm) {
  const model::ModelConfig& config = init.config();
  require(config.n_parcels == data.n_parcels, "finetune: the model takes ", config.n_parcels,
          " parcels, the corpus ", data.corpus, " has ", data.n_parcels);
  require(config.window == data.window, "finetune: window mismatch");
  require(eval::is_task(options.task) && eval::task_info(options.task).fine_tunable, "finetune: unknown task '",
          options.task, "' (", eval::fine_tunable_list(" | "), ")");
  require(options.batch_size % comm.size() == 0, "finetune: the batch size ", options.batch_size,
          " is not a multiple of the ", comm.size(), " ranks");
  const bool classes = eval::task_info(options.task).classification;  // cross-entropy, else standardised MSE
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
    if (classes && t.label < 0) continue;
    const bool restricted = !options.labelled_subjects.empty();
    if (restricted && std::find(options.labelled_subjects.begin(), options.labelled_subjects.end(), s.id) ==
                          options.labelled_subjects.end())
      continue;
    const double u = restricted ? 1.0 : id_uniform(s.id);
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
  if (classes) {
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

  // The head's projection starts as the initial model's probe basis (the principal components of its tokens on
  // every pre-training subject's windows, no label read), so that fine-tuning starts where the frozen probe is; the
  // output map starts at zero.
  const int D = config.d_model, O = tg.outputs, N = int(config.n_tokens());
  const eval::TokenProjection basis =
      options.initial_projection ? *options.initial_projection
                                 : initial_head_projection(init, data, options.components, options.device, comm);
  require(basis.d_model == D, "finetune: a starting projection of width ", basis.d_model, " for a model of width ", D);
  model::TaskHead& head = result.head;
  head = model::TaskHead(options.task, tg.classes, O, D, N, basis.components);
  head.target_mean = tg.mean;
  head.target_scale = tg.scale;
  head.initialize(std::vector<float>(basis.weight.begin(), basis.weight.end()),
                  std::vector<float>(basis.bias.begin(), basis.bias.end()));
  runtime::AdamWConfig head_opt = opt;
  head_opt.lr = options.head_lr;
  head_opt.grad_clip = 0;  // the encoder's clipping covers the model; the head's norm is reported with it
  runtime::AdamW head_adamw(head.size(), head.segments(), head_opt);
  engine.attach({head.params(), head.grads(), head.size(), &head_adamw});

  const int64_t T = config.window, P = config.n_parcels;
  const int ranks = comm.size(), rank = comm.rank();
  const int local = options.batch_size / ranks;
  std::vector<float> x(size_t(local) * T * P);

  // The head's loss (and with d_enc_out, its gradients) on the encoder's tokens of trials; `norm` divides the summed
  // loss (the global batch size during training).
  std::vector<int32_t> labels;
  std::vector<float> values;
  auto head_loss = [&](const std::vector<float>& enc_out, const std::vector<int64_t>& trials, double norm,
                       float* d_enc_out, int64_t* correct) {
    require(int64_t(enc_out.size()) == int64_t(trials.size()) * N * D, "finetune: the encoder gave ", enc_out.size(),
            " values for ", trials.size(), " windows of ", N, " tokens");
    labels.clear();
    values.clear();
    for (int64_t i : trials) {
      const eval::EvalTrial& t = data.trials[size_t(i)];
      if (tg.classes) labels.push_back(t.label);
      else values.insert(values.end(), data.stimuli[size_t(t.stimulus)].begin(), data.stimuli[size_t(t.stimulus)].end());
    }
    return head.loss(enc_out.data(), int(trials.size()), labels.data(), values.data(), norm, d_enc_out, correct);
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
      int64_t correct = 0;
      sums[0] += head_loss(m.encoder_out(), rows, 1.0, nullptr, &correct);
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
  std::vector<float> d_enc_out(size_t(local) * N * D);
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
    // The encoder: frozen for the head-only steps, then its own warm-up and decay over the steps left.
    const int64_t encoder_step = step - options.head_steps;
    const double encoder_lr = encoder_step < 0 ? 0.0
                              : options.lr * runtime::learning_rate(1.0, encoder_step, options.warmup_steps,
                                                                    options.steps - options.head_steps, 0.1);
    const StepResult r = engine.step(
        1,
        [&](int, float scale, const model::ReadyHook& on_ready) {
          m.forward(fill(rows), "fine-tuning batch");
          model::Losses l;
          l.total = head_loss(m.encoder_out(), rows, double(options.batch_size), d_enc_out.data(), nullptr);
          m.backward_tokens(d_enc_out.data(), scale, on_ready);
          return l;
        },
        encoder_lr, options.head_lr * lr_scale);
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
      f.lr = encoder_lr;
      f.elapsed_s = train_clock.seconds();
      f.grad_norm = grad_norm;
      f.samples_per_s = double(options.batch_size) * double(step + 1) / std::max(1e-9, train_clock.seconds());
      f.tokens_per_s = f.samples_per_s * config.n_tokens();
      runtime::log_line(runtime::format_progress(f));
    }
  }
  result.last_validation_loss = validate(&result.validation_accuracy);
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
  nlohmann::json run = {
      {"source_checkpoint", source_checkpoint},
      {"steps", result.steps},
      {"batch_size", options.batch_size},
      {"lr", options.lr},
      {"head_lr", options.head_lr},
      {"head_steps", options.head_steps},
      {"components_asked", options.components},
      {"train_trials", result.train_trials},
      {"validation_trials", result.validation_trials},
      {"validation_loss", {result.first_validation_loss, result.last_validation_loss}},
  };
  if (result.validation_accuracy >= 0) run["validation_accuracy"] = result.validation_accuracy;
  if (!options.labelled_subjects.empty()) run["labelled_subjects"] = options.labelled_subjects;
  // The head's files travel with the checkpoint's own, so that the folder appears whole or not at all.
  model::save_released_checkpoint(dir, *result.model, model::task_head_files(result.head, run));
}

}  // namespace bfm::launch

