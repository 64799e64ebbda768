#include "launch/train/pretrain.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/rng.h"
#include "launch/train/data_sources.h"
#include "launch/train/metrics.h"
#include "launch/train/step_engine.h"
#include "model/masking.h"
#include "model/placement.h"
#include "runtime/comm.h"
#include "runtime/progress.h"
#include "runtime/train_checkpoint.h"
#include "runtime/watchdog.h"
#include "runtime/world.h"

namespace bfm::launch {

namespace {

// The key of the run's settings (config_json_) that a resume may change, each change logged, not refused.
constexpr const char* kNoted = "may_change_on_resume";

// SIGUSR1 / SIGTERM: stop at the next step boundary (every rank agrees through the communicator), write a
// checkpoint, exit with kExitStoppedBySignal.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

struct SignalGuard {
  struct sigaction old_usr1 {}, old_term {};
  SignalGuard() {
    g_stop_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old_usr1);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalGuard() {
    sigaction(SIGUSR1, &old_usr1, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

std::string describe(const char* what, const model::Losses& l) {
  std::ostringstream os;
  os << what << ":";
  for (const auto& [name, v] : model::named_losses(l)) os << " " << name << " " << v;
  return os.str();
}

// MAE's masks of this rank's rows of a global batch: drawn for the whole batch on every rank from one stream, so
// that the masks do not depend on the number of ranks.
void draw_masks(const model::ModelConfig& m, model::MaskStrategy strategy, LocalBatch& b, Rng& rng, int global,
                int rank, int ranks) {
  if (!m.mae) return;
  const int N = m.n_tokens();
  std::vector<uint8_t> all(int64_t(global) * N);
  model::make_masks(all.data(), global, m.n_time(), m.n_parcels, m.mask_ratio, strategy, rng);
  b.mask.resize(int64_t(b.rows) * N);
  for (int j = 0; j < b.rows; ++j)
    std::copy_n(all.data() + (rank + int64_t(j) * ranks) * N, N, b.mask.data() + int64_t(j) * N);
}

// Rows [first, first + rows) of a local batch as the model's input.
model::Batch batch_of(const model::ModelConfig& m, const LocalBatch& b, int first, int rows) {
  const int64_t tp = int64_t(m.window) * m.n_parcels;
  model::Batch out;
  out.size = rows;
  out.x = b.x.data() + first * tp;
  out.mask = m.mae && !b.mask.empty() ? b.mask.data() + int64_t(first) * m.n_tokens() : nullptr;
  out.stim = m.contrastive && !b.stim.empty() ? b.stim.data() + int64_t(first) * m.stim_dim : nullptr;
  return out;
}

}  // namespace

model::Placement run_placement(const RunConfig& rc) {
  const std::string who = rc.source + ": train.device";
  model::Placement p =
      model::choose_placement(rc.model, rc.train.device, model::parse_precision(rc.train.precision), who);
  // CLIP's negatives come from every rank's micro-batches (set_contrastive_group). The GPU model's path for that
  // (the embeddings through the host, model/cuda/cuda_model.cu) has not run on a GPU yet
  // (GpuModel.ContrastiveGroupOverRanksMatchesCpu waits for one): under "auto" several GPU ranks with the
  // contrastive objective train on the CPU, with the reason logged; "cuda" asks for it explicitly.
  const int ranks = runtime::world_started() ? runtime::world().size : 1;  // as choose_placement: MPI not started here
  if (p.gpu && rc.model.contrastive && ranks > 1 && rc.train.device == "auto") {
    p = model::Placement::cpu();
    p.note = who + " = \"auto\": on the CPU although there is a GPU: the contrastive objective over " +
             std::to_string(ranks) + " GPU ranks has not been checked on a GPU yet (train.device = \"cuda\" runs "
             "it there; one rank, or objectives without \"contrastive\", train on the GPU)";
  }
  return p;
}

namespace {

// One run of pre-training on this rank. The constructor sets everything up (model, data, step engine, resumed state,
// metrics); run() is the loop. Every collective call happens in the same order on every rank.
class Pretraining {
 public:
  Pretraining(const RunConfig& rc, const TrainOptions& options, TrainResult& result);
  void run();

 private:
  void resume();
  bool stop_requested(int64_t step);
  void next_batch(int64_t step);
  StepResult train_step(double lr);
  bool count_skipped(const StepResult& r, int64_t step);
  void record(int64_t step, double lr, const StepResult& r, const Stopwatch& step_clock, double wait0, double comm0);
  void show_progress(int64_t step, double lr, const StepResult& r);
  model::Losses validate(int64_t step);
  void checkpoint(int64_t step);
  void finish(int64_t step);
  void log(const std::string& line) const {
    if (verbose_) runtime::log_line(line);
  }

  const RunConfig& rc_;
  const model::ModelConfig& m_;
  const TrainConfig& t_;
  const TrainOptions& options_;
  TrainResult& result_;
  model::Placement placement_;
  // The host communicator carries the losses, the stop flag, the checkpoints' coordination and a CPU model's
  // gradients; a GPU model's gradients go through the step engine's device communicator (train.comm).
  std::unique_ptr<runtime::Communicator> comm_;
  int rank_ = 0, ranks_ = 1;
  bool lead_ = true, verbose_ = true;
  int micro_ = 1, accumulation_ = 1;  // micro-batches of micro_ windows per rank and step
  model::BrainModel* model_ = nullptr;
  RunData data_;
  int64_t total_steps_ = 0, start_step_ = 0, bad_in_a_row_ = 0;
  Rng mask_rng_;
  std::unique_ptr<StepEngine> engine_;
  nlohmann::json config_json_;  // what a checkpoint must have been written by to be resumed from
  std::string restored_metrics_;
  double last_write_s_ = 0;  // how long the last checkpoint write took
  // The deadline of a checkpoint's collective HDF5 I/O (runtime/watchdog.h): the collective timeout, or three times
  // the last write where a large model's writes take longer; 0 (no timeout) stays 0.
  double io_deadline_s() const {
    return t_.collective_timeout_s > 0 ? std::max(t_.collective_timeout_s, 3 * last_write_s_) : 0;
  }
  std::unique_ptr<MetricsLog> metrics_;
  LocalBatch batch_;
  Stopwatch clock_;
  double wait0_ = 0, comm0_ = 0;
  int64_t tokens_per_sample_ = 0;
};

Pretraining::Pretraining(const RunConfig& rc, const TrainOptions& options, TrainResult& result)
    : rc_(rc), m_(rc.model), t_(rc.train), options_(options), result_(result), placement_(run_placement(rc)),
      mask_rng_(Rng::stream(rc.train.seed, 2)) {
  // ---- the ranks, the model and the batch geometry
  require(t_.comm != "nccl" || placement_.gpu, rc.source, ": train.comm = \"nccl\" sums gradients on GPUs, but this "
          "run trains on the CPU");
  comm_ = runtime::make_communicator(t_.comm == "nccl" ? "auto" : t_.comm, false);
  comm_->set_timeout(t_.collective_timeout_s);
  comm_->set_context("setting up");
  runtime::set_exit_deadline(t_.collective_timeout_s);
  rank_ = comm_->rank(), ranks_ = comm_->size();
  lead_ = rank_ == 0;
  verbose_ = options.verbose && lead_;
  require(t_.batch_size % ranks_ == 0, rc.source, ": train.batch_size = ", t_.batch_size,
          " is not a multiple of the ", ranks_, " ranks");
  const int local = t_.batch_size / ranks_;
  micro_ = t_.micro_batch > 0 ? t_.micro_batch : local;
  require(local % micro_ == 0, rc.source, ": train.micro_batch = ", micro_, " does not divide the ", local,
          " windows each of the ", ranks_, " ranks takes from a global batch of ", t_.batch_size);
  accumulation_ = local / micro_;

  if (!placement_.note.empty()) log("pretrain: " + placement_.note);
  result_.model = model::make_model(m_, placement_, t_.optimizer);
  model_ = result_.model.get();
  model_->initialize(t_.seed);
  try {
    if (ranks_ > 1 && m_.contrastive)  // CLIP's negatives from all ranks' micro-batches
      model_->set_contrastive_group(rank_, ranks_, [this](const float* mine, float* all, int64_t n) {
        comm_->allgather(mine, all, n);
      });
    if (t_.zero) model_->shard_optimizer(*comm_);
  } catch (const Error& e) {
    fail(rc.source, ": ", e.what());
  }

  // ---- data: the training source and a fixed held-out batch (this rank's rows of it)
  data_ = open_run_data(rc, rank_, ranks_, placement_.gpu);
  result_.data_atlas = data_.atlas;
  result_.data_tr = data_.tr;
  result_.data_provenance = data_.provenance;
  result_.data_studies = data_.studies;
  result_.data_subjects = data_.subjects;
  result_.data_description = data_.train->describe();
  // train.epochs (corpus data): passes over the training windows, each of batches_per_epoch() global batches.
  total_steps_ = t_.steps;
  if (t_.epochs > 0) {
    const int64_t per_epoch = data_.train->batches_per_epoch();
    require(per_epoch > 0, rc.source, ": train.epochs needs corpus data (data.source = \"corpus\")");
    total_steps_ = t_.epochs * per_epoch;
  }
  {
    Rng val_mask_rng = Rng::stream(t_.seed, 4);
    draw_masks(m_, t_.mask_strategy, data_.validation, val_mask_rng, t_.batch_size, rank_, ranks_);
  }

  StepOptions so;
  so.bucket_mb = t_.bucket_mb;
  so.gpu_comm = t_.comm;
  so.gpu_overlap = t_.gpu_overlap;
  so.collective_timeout_s = t_.collective_timeout_s;
  engine_ = std::make_unique<StepEngine>(*model_, *comm_, so);
  if (placement_.gpu && engine_->describe() != comm_->backend())
    log("pretrain: gradients summed over ranks by " + engine_->describe());

  model::ModelConfig provenance = m_;
  provenance.atlas = result_.data_atlas;
  provenance.tr_seconds = result_.data_tr;
  provenance.data_provenance = result_.data_provenance;
  config_json_ = model::to_checkpoint_json(provenance);
  config_json_["batch_size"] = t_.batch_size;
  config_json_["seed"] = t_.seed;
  config_json_["data"] = data_.train->describe();
  // What decides which windows come in which order: a resume with other values would not continue the same run.
  const DataConfig& d = rc.data;
  config_json_["data_order"] =
      d.source == "corpus"
          ? nlohmann::json{{"data.stride", d.stride}, {"data.shuffle", d.shuffle}, {"data.shuffle_blocks", d.shuffle_blocks}}
          : nlohmann::json{{"data.seed", d.seed}, {"data.n_networks", d.n_networks}, {"data.n_categories", d.n_categories},
                           {"data.noise", d.noise}, {"data.stim_gain", d.stim_gain}};
  // Left-out studies change the windows too; named only when there are some, so that checkpoints written before the
  // key existed resume as they did.
  if (d.source == "corpus" && !d.exclude_studies.empty()) config_json_["data_order"]["data.exclude_studies"] = d.exclude_studies;
  // Settings a resume may change (a longer run, a lower learning rate after a spike): each change is named.
  config_json_[kNoted] = {{"train.steps", total_steps_},
                          {"train.lr", t_.optimizer.lr},
                          {"train.warmup_steps", t_.warmup_steps},
                          {"train.min_lr_ratio", t_.min_lr_ratio},
                          {"train.weight_decay", t_.optimizer.weight_decay},
                          {"train.grad_clip", t_.optimizer.grad_clip},
                          {"train.beta1", t_.optimizer.beta1},
                          {"train.beta2", t_.optimizer.beta2},
                          {"train.mask_strategy", model::to_string(t_.mask_strategy)}};
  resume();
  // Rank 0's metrics: the file, and the text the next checkpoint stores.
  metrics_ = std::make_unique<MetricsLog>(lead_ ? options.metrics_path : "", restored_metrics_);
  tokens_per_sample_ = m_.mae ? m_.n_tokens() - m_.n_masked_tokens() : m_.n_tokens();
}

// From the newest good training checkpoint, when there is one: parameters, moments, counters, the data source's and
// the mask RNG's states, the metrics so far. A damaged checkpoint (truncated, emptied, a flipped byte: its checksums
// or HDF5's say so) is skipped, with a line saying which and why, for the next older one; a checkpoint of another
// run (its settings differ) is refused, never skipped. Then config.json beside the checkpoints (what bfm export
// builds from).
void Pretraining::resume() {
#ifdef BFM_WITH_HDF5
  const std::string& dir = options_.checkpoint_dir;
  if (dir.empty()) return;
  std::vector<std::string> skipped;
  const std::vector<std::string> candidates = runtime::train_checkpoint_candidates(dir, skipped);
  for (const std::string& path : candidates) {
    // The settings first, so that a checkpoint of another run is named by what differs, not by a tensor's shape.
    nlohmann::json saved;
    try {
      saved = nlohmann::json::parse(runtime::train_checkpoint_config(path), nullptr, false);
      require(!saved.is_discarded(), path, ": /state/config_json is not JSON");
    } catch (const Error& e) {
      skipped.push_back(e.what());
      continue;
    }
    // Checkpoints written before a key existed are compared without it.
    nlohmann::json now = config_json_;
    for (const char* key : {"data_order", kNoted, "data_provenance"})
      if (!saved.contains(key)) now.erase(key);
    const nlohmann::json noted_there = saved.value(kNoted, nlohmann::json::object());
    const nlohmann::json noted_now = now.value(kNoted, nlohmann::json::object());
    saved.erase(kNoted);
    now.erase(kNoted);
    if (saved != now) {
      // Name what differs, key by key (a JSON patch from the checkpoint's settings to this run's).
      std::string diffs;
      for (const auto& op : nlohmann::json::diff(saved, now)) {
        const nlohmann::json::json_pointer at(op["path"].get<std::string>());
        const std::string key = op["path"].get<std::string>().substr(1);
        const std::string was = saved.contains(at) ? saved[at].dump() : "absent";
        const std::string is = now.contains(at) ? now[at].dump() : "absent";
        diffs += (diffs.empty() ? "" : "; ") + key + " " + was + " there, " + is + " now";
      }
      fail(path, ": written by a run with another model, batch, seed or data (", diffs, "): resume it with the same "
           "settings, or start this run in another --out folder");
    }
    runtime::TrainState s;
    try {  // collective: every rank reaches the same verdict on the same file
      const runtime::Watchdog deadline("the checkpoint read of " + path, io_deadline_s(),
                                        "or the file system stalled");
      s = runtime::read_train_checkpoint(path, model_->checkpoint_tensors());
    } catch (const Error& e) {
      skipped.push_back(e.what());
      continue;
    }
    for (const auto& [key, value] : noted_now.items())
      if (noted_there.contains(key) && noted_there[key] != value)
        log("pretrain: resuming with " + key + " = " + value.dump() + " (the checkpoint's run had " +
            noted_there[key].dump() + ")");
    model_->checkpoint_loaded();
    start_step_ = s.step;
    result_.skipped_steps = s.skipped_steps;
    bad_in_a_row_ = s.skipped_in_a_row;
    model_->set_steps_taken(s.step - s.skipped_steps);
    const size_t n_data = s.rng_state.size() - 6;
    data_.train->restore(std::vector<uint64_t>(s.rng_state.begin(), s.rng_state.begin() + n_data));
    std::array<uint64_t, 6> ms{};
    std::copy(s.rng_state.begin() + n_data, s.rng_state.end(), ms.begin());
    mask_rng_.set_state(ms);
    restored_metrics_ = s.metrics_jsonl;
    result_.resumed_from = path;
    for (const std::string& why : skipped) log("pretrain: skipped a damaged checkpoint: " + why);
    log("pretrain: resumed from " + path + " at step " + std::to_string(start_step_) + " (written by " +
        std::to_string(s.world_size) + " ranks, now " + std::to_string(ranks_) + ")");
    break;
  }
  if (result_.resumed_from.empty() && !candidates.empty()) {
    // Starting over would overwrite a run's history: the user decides (move the folder away, or mend it).
    std::string reasons;
    for (const std::string& why : skipped) reasons += (reasons.empty() ? "" : "; ") + why;
    fail(dir, ": no training checkpoint there can be resumed (", reasons, "); move the folder away to start over");
  }
  if (lead_) {  // after the resume check passed
    std::filesystem::create_directories(dir);
    std::ofstream(std::filesystem::path(dir) / "config.json") << config_json_.dump(2) << "\n";
  }
#endif
}

void Pretraining::run() {
  {
    std::ostringstream os;
    os << "pretrain: " << model_->arena_size() << " parameters, objectives "
       << nlohmann::json(m_.objectives()).dump() << ", " << m_.n_tokens() << " tokens per window, global batch "
       << t_.batch_size << " (" << ranks_ << " rank" << (ranks_ > 1 ? "s" : "") << " x " << accumulation_
       << " micro-batch" << (accumulation_ > 1 ? "es" : "") << " of " << micro_ << "), " << total_steps_
       << " steps, " << data_.train->describe() << ", on "
       << (placement_.gpu ? "the GPU (" + t_.precision + ")" : std::string("the CPU")) << ", all-reduce "
       << comm_->backend();
    log(os.str());
  }
  result_.first = validate(start_step_);
  log(describe(("held-out loss at step " + std::to_string(start_step_)).c_str(), result_.first));

  SignalGuard signals;
  clock_.restart();
  wait0_ = data_.train->wait_seconds(), comm0_ = engine_->communication_seconds();
  int64_t step = start_step_;
  for (; step < total_steps_; ++step) {
    // This step's own time, data wait and communication, for its metrics line.
    const Stopwatch step_clock;
    const double wait0 = data_.train->wait_seconds(), comm0 = engine_->communication_seconds();
    engine_->set_context("step " + std::to_string(step));
    if (stop_requested(step)) break;
    next_batch(step);
    const double lr = runtime::learning_rate(t_.optimizer.lr, step, t_.warmup_steps, total_steps_, t_.min_lr_ratio);
    const StepResult r = train_step(lr);
    if (!count_skipped(r, step)) {  // diverged
      ++step;
      break;
    }
    record(step, lr, r, step_clock, wait0, comm0);
    show_progress(step, lr, r);
    if ((step + 1) % t_.validate_every == 0 && step + 1 < total_steps_)
      log(describe(("held-out loss at step " + std::to_string(step + 1)).c_str(), validate(step + 1)));
    if (t_.checkpoint_every > 0 && (step + 1) % t_.checkpoint_every == 0 && step + 1 < total_steps_)
      checkpoint(step + 1);
  }
  finish(step);
}

// Every rank agrees to stop (a signal reached any of them) before the step starts.
bool Pretraining::stop_requested(int64_t step) {
  double stop = g_stop_signal.load() != 0 || step == options_.stop_before_step ? 1.0 : 0.0;
  comm_->allreduce_max_host(&stop, 1);
  if (stop > 0) {
    result_.stopped_by_signal = true;
    log("pretrain: stop signal: checkpoint at step " + std::to_string(step) + ", exit");
  }
  return stop > 0;
}

// This rank's rows of the next global batch, with their masks.
void Pretraining::next_batch(int64_t step) {
  data_.train->next(batch_);
  draw_masks(m_, t_.mask_strategy, batch_, mask_rng_, t_.batch_size, rank_, ranks_);
  for (int64_t bad : options_.nan_input_steps)
    if (bad == step) std::fill(batch_.x.begin(), batch_.x.end(), std::nanf(""));
}

StepResult Pretraining::train_step(double lr) {
  return engine_->step(
      accumulation_,
      [this](int a, float scale, const model::ReadyHook& on_ready) {
        return model_->forward_backward(batch_of(m_, batch_, a * micro_, micro_), scale, on_ready);
      },
      lr);
}

// Counts a skipped update; false when train.max_bad_steps of them came in a row (the run stops).
bool Pretraining::count_skipped(const StepResult& r, int64_t step) {
  if (r.applied) {
    bad_in_a_row_ = 0;
    return true;
  }
  ++result_.skipped_steps;
  ++bad_in_a_row_;
  log("step " + std::to_string(step + 1) + ": non-finite loss or gradient, update skipped (" +
      std::to_string(bad_in_a_row_) + " in a row)");
  if (bad_in_a_row_ < t_.max_bad_steps) return true;
  result_.diverged = true;
  log("pretrain: " + std::to_string(bad_in_a_row_) + " non-finite steps in a row (train.max_bad_steps): stopping");
  return false;
}

// The step's metrics line (rank 0's clock): what bfm plot draws and what scaling studies read.
void Pretraining::record(int64_t step, double lr, const StepResult& r, const Stopwatch& step_clock, double wait0,
                         double comm0) {
  nlohmann::json j{{"step", step + 1}, {"split", "train"}, {"lr", lr}, {"grad_norm", r.grad_norm}};
  for (const auto& [name, v] : model::named_losses(r.losses)) j[name] = v;
  const double step_s = step_clock.seconds();
  j["step_s"] = step_s;
  j["samples_per_s"] = step_s > 0 ? double(t_.batch_size) / step_s : 0.0;
  j["data_wait_s"] = data_.train->wait_seconds() - wait0;
  j["comm_s"] = engine_->communication_seconds() - comm0;
  j["elapsed_s"] = clock_.seconds();
  if (lead_) metrics_->append(j);
}

// The progress line every train.log_every steps (and at the last).
void Pretraining::show_progress(int64_t step, double lr, const StepResult& r) {
  if (!verbose_ || ((step + 1) % t_.log_every != 0 && step + 1 != total_steps_)) return;
  const int64_t done = step + 1 - start_step_;
  const double elapsed = clock_.seconds();
  runtime::ProgressFields f;
  f.step = step + 1;
  f.total_steps = total_steps_;
  f.losses = model::named_losses(r.losses);
  f.lr = lr;
  f.grad_norm = r.grad_norm;
  f.samples_per_s = double(done) * t_.batch_size / elapsed;
  f.tokens_per_s = f.samples_per_s * double(tokens_per_sample_);
  f.elapsed_s = elapsed;
  f.eta_s = elapsed / double(done) * double(total_steps_ - step - 1);
  f.data_wait_s = data_.train->wait_seconds() - wait0_;
  f.comm_s = engine_->communication_seconds() - comm0_;
  runtime::log_line(runtime::format_progress(f));
  if (engine_->overlapped() && !model_->optimizer_sharded() && (ranks_ > 1 || placement_.gpu) &&
      step + 1 == total_steps_)
    runtime::log_line("all-reduce: " + std::to_string(engine_->n_buckets()) + " buckets, " +
                      std::to_string(int(100 * engine_->mean_hidden_fraction())) +
                      "% of their time hidden behind backward on average");
}

// Held-out losses: each rank evaluates its rows in micro-batches, means over all ranks; a metrics line.
model::Losses Pretraining::validate(int64_t step) {
  engine_->set_context("held-out loss at step " + std::to_string(step));
  std::vector<model::Losses> parts;
  for (int a = 0; a < data_.validation.rows / micro_; ++a)
    parts.push_back(model_->forward(batch_of(m_, data_.validation, a * micro_, micro_), "held-out batch"));
  const model::Losses l = engine_->reduce_losses(parts);
  nlohmann::json j{{"step", step}, {"split", "validation"}};
  for (const auto& [name, v] : model::named_losses(l)) j[name] = v;
  if (lead_) metrics_->append(j);
  return l;
}

void Pretraining::checkpoint(int64_t step) {
#ifdef BFM_WITH_HDF5
  if (options_.checkpoint_dir.empty()) return;
  engine_->set_context("checkpoint at step " + std::to_string(step));
  runtime::TrainState s;
  s.step = step;
  s.skipped_steps = result_.skipped_steps;
  s.skipped_in_a_row = bad_in_a_row_;
  s.rng_state = data_.train->state();
  const auto ms = mask_rng_.state();
  s.rng_state.insert(s.rng_state.end(), ms.begin(), ms.end());
  s.config_json = config_json_.dump();
  s.metrics_jsonl = metrics_->text();
  s.world_size = ranks_;
  const Stopwatch clock;
  std::string path;
  {
    const runtime::Watchdog deadline("the checkpoint write at step " + std::to_string(step), io_deadline_s(),
                                     "or the file system stalled; the file keeps its temporary name");
    runtime::fault_stop_point("checkpoint");
    path = runtime::write_train_checkpoint(options_.checkpoint_dir, model_->checkpoint_tensors(), s,
                                           t_.keep_checkpoints);
  }
  last_write_s_ = clock.seconds();
  log("checkpoint " + path + " (" + runtime::format_duration(last_write_s_) + ")");
  result_.last_checkpoint = path;
#else
  (void)step;
#endif
}

// After the loop: a stopped run writes its checkpoint; a finished one its last held-out losses and checkpoint.
void Pretraining::finish(int64_t step) {
  result_.steps_done = step;
  result_.seconds = clock_.seconds();
  if (result_.stopped_by_signal) {
    checkpoint(step);
    return;
  }
  result_.last = validate(step);
  if (step >= total_steps_) checkpoint(step);  // the final state, its held-out losses included in the metrics
  std::string line = describe(("held-out loss after " + std::to_string(step) + " steps").c_str(), result_.last);
  if (result_.first.total && result_.last.total && start_step_ == 0) {
    std::ostringstream os;
    os.precision(3);
    os << " (" << 100.0 * (1.0 - *result_.last.total / *result_.first.total) << "% below step 0)";
    line += os.str();
  }
  log(line);
  if (result_.skipped_steps) log(std::to_string(result_.skipped_steps) + " steps skipped for non-finite values");
}

}  // namespace

TrainResult pretrain(const RunConfig& rc, const TrainOptions& options) {
  TrainResult result;
  Pretraining run(rc, options, result);
  run.run();
  return result;
}

}  // namespace bfm::launch
