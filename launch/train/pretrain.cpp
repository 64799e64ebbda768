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

namespace bfm::launch {

namespace {

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
  return model::choose_placement(rc.model, rc.train.device, model::parse_precision(rc.train.precision),
                                 rc.source + ": train.device");
}

TrainResult pretrain(const RunConfig& rc, const TrainOptions& options) {
  const auto& m = rc.model;
  const auto& t = rc.train;
  TrainResult result;

  // ---- the ranks, the model and the batch geometry
  const model::Placement placement = run_placement(rc);
  require(t.comm != "nccl" || placement.gpu, rc.source, ": train.comm = \"nccl\" sums gradients on GPUs, but this run "
          "trains on the CPU");
  // The host communicator carries the losses, the stop flag, the checkpoints' coordination and a CPU model's
  // gradients; a GPU model's gradients go through the step engine's device communicator (train.comm).
  std::unique_ptr<runtime::Communicator> comm = runtime::make_communicator(t.comm == "nccl" ? "auto" : t.comm, false);
  const int rank = comm->rank(), ranks = comm->size();
  const bool lead = rank == 0;
  const bool verbose = options.verbose && lead;
  require(t.batch_size % ranks == 0, rc.source, ": train.batch_size = ", t.batch_size, " is not a multiple of the ",
          ranks, " ranks");
  const int local = t.batch_size / ranks;
  const int micro = t.micro_batch > 0 ? t.micro_batch : local;
  require(local % micro == 0, rc.source, ": train.micro_batch = ", micro, " does not divide the ", local,
          " windows each of the ", ranks, " ranks takes from a global batch of ", t.batch_size);
  const int accumulation = local / micro;

  if (verbose && !placement.note.empty()) runtime::log_line("pretrain: " + placement.note);
  if (verbose && placement.ranks_sharing_gpu > 1)
    runtime::log_line("pretrain: " + std::to_string(placement.ranks_sharing_gpu) + " ranks on this node share " +
                      placement.describe());
  result.model = model::make_model(m, placement, t.optimizer);
  model::BrainModel& model = *result.model;
  model.initialize(t.seed);
  try {
    if (ranks > 1 && m.contrastive)  // CLIP's negatives from all ranks' micro-batches
      model.set_contrastive_group(rank, ranks, [&comm](const float* mine, float* all, int64_t n) {
        comm->allgather(mine, all, n);
      });
    if (t.zero) model.shard_optimizer(*comm);
  } catch (const Error& e) {
    fail(rc.source, ": ", e.what());
  }

  // ---- data: the training source and a fixed held-out batch (this rank's rows of it)
  RunData data = open_run_data(rc, rank, ranks, placement.gpu);
  result.data_atlas = data.atlas;
  result.data_tr = data.tr;
  result.data_description = data.train->describe();
  // train.epochs (corpus data): passes over the training windows, each of batches_per_epoch() global batches.
  int64_t total_steps = t.steps;
  if (t.epochs > 0) {
    const int64_t per_epoch = data.train->batches_per_epoch();
    require(per_epoch > 0, rc.source, ": train.epochs needs corpus data (data.source = \"corpus\")");
    total_steps = t.epochs * per_epoch;
  }
  Rng mask_rng = Rng::stream(t.seed, 2);
  {
    Rng val_mask_rng = Rng::stream(t.seed, 4);
    draw_masks(m, t.mask_strategy, data.validation, val_mask_rng, t.batch_size, rank, ranks);
  }

  StepOptions so;
  so.bucket_mb = t.bucket_mb;
  so.gpu_comm = t.comm;
  so.gpu_overlap = t.gpu_overlap;
  StepEngine engine(model, *comm, so);
  if (verbose && placement.gpu && engine.describe() != comm->backend())
    runtime::log_line("pretrain: gradients summed over ranks by " + engine.describe());

  // ---- resume
  int64_t start_step = 0, bad_in_a_row = 0;
  std::string restored_metrics;
  const std::string& ckpt_dir = options.checkpoint_dir;
  model::ModelConfig provenance = m;
  provenance.atlas = result.data_atlas;
  provenance.tr_seconds = result.data_tr;
  nlohmann::json config_json = model::to_checkpoint_json(provenance);
  config_json["batch_size"] = t.batch_size;
  config_json["seed"] = t.seed;
  config_json["data"] = data.train->describe();
#ifdef BFM_WITH_HDF5
  if (!ckpt_dir.empty()) {
    const std::string latest = runtime::latest_train_checkpoint(ckpt_dir);
    if (!latest.empty()) {
      const runtime::TrainState s = runtime::read_train_checkpoint(latest, model.checkpoint_tensors());
      model.checkpoint_loaded();
      const nlohmann::json saved = nlohmann::json::parse(s.config_json);
      require(saved == config_json, latest, ": written by a run with another model, batch or seed (",
              saved.dump(), "), not this one (", config_json.dump(), ")");
      start_step = s.step;
      result.skipped_steps = s.skipped_steps;
      bad_in_a_row = s.skipped_in_a_row;
      model.set_steps_taken(s.step - s.skipped_steps);
      const size_t n_data = s.rng_state.size() - 6;
      data.train->restore(std::vector<uint64_t>(s.rng_state.begin(), s.rng_state.begin() + n_data));
      std::array<uint64_t, 6> ms{};
      std::copy(s.rng_state.begin() + n_data, s.rng_state.end(), ms.begin());
      mask_rng.set_state(ms);
      restored_metrics = s.metrics_jsonl;
      result.resumed_from = latest;
      if (verbose)
        runtime::log_line("pretrain: resumed from " + latest + " at step " + std::to_string(start_step) +
                          " (written by " + std::to_string(s.world_size) + " ranks, now " + std::to_string(ranks) +
                          ")");
    }
  }
  if (!ckpt_dir.empty() && lead) {  // what bfm export builds the model from (after the resume check passed)
    std::filesystem::create_directories(ckpt_dir);
    std::ofstream(std::filesystem::path(ckpt_dir) / "config.json") << config_json.dump(2) << "\n";
  }
#endif

  // Rank 0's metrics: the file, and the text the next checkpoint stores.
  MetricsLog metrics(lead ? options.metrics_path : "", restored_metrics);
  auto emit = [&](const nlohmann::json& j) {
    if (lead) metrics.append(j);
  };

  // Held-out losses: each rank evaluates its rows in micro-batches, means over all ranks.
  auto evaluate = [&](int64_t step) {
    std::vector<model::Losses> parts;
    for (int a = 0; a < data.validation.rows / micro; ++a)
      parts.push_back(model.forward(batch_of(m, data.validation, a * micro, micro), "held-out batch"));
    const model::Losses l = engine.reduce_losses(parts);
    nlohmann::json j{{"step", step}, {"split", "validation"}};
    for (const auto& [name, v] : model::named_losses(l)) j[name] = v;
    emit(j);
    return l;
  };

  if (verbose) {
    std::ostringstream os;
    os << "pretrain: " << model.arena_size() << " parameters, objectives " << nlohmann::json(m.objectives()).dump()
       << ", " << m.n_tokens() << " tokens per window, global batch " << t.batch_size << " (" << ranks << " rank"
       << (ranks > 1 ? "s" : "") << " x " << accumulation << " micro-batch" << (accumulation > 1 ? "es" : "")
       << " of " << micro << "), " << total_steps << " steps, " << data.train->describe() << ", on "
       << (placement.gpu ? "the GPU (" + t.precision + ")" : std::string("the CPU")) << ", all-reduce "
       << comm->backend();
    runtime::log_line(os.str());
  }
  result.first = evaluate(start_step);
  if (verbose) runtime::log_line(describe(("held-out loss at step " + std::to_string(start_step)).c_str(), result.first));

  auto checkpoint = [&](int64_t step) {
#ifdef BFM_WITH_HDF5
    if (ckpt_dir.empty()) return;
    runtime::TrainState s;
    s.step = step;
    s.skipped_steps = result.skipped_steps;
    s.skipped_in_a_row = bad_in_a_row;
    s.rng_state = data.train->state();
    const auto ms = mask_rng.state();
    s.rng_state.insert(s.rng_state.end(), ms.begin(), ms.end());
    s.config_json = config_json.dump();
    s.metrics_jsonl = metrics.text();
    s.world_size = ranks;
    const Stopwatch clock;
    const std::string path =
        runtime::write_train_checkpoint(ckpt_dir, model.checkpoint_tensors(), s, t.keep_checkpoints);
    if (verbose) runtime::log_line("checkpoint " + path + " (" + runtime::format_duration(clock.seconds()) + ")");
    result.last_checkpoint = path;
#else
    (void)step;
#endif
  };

  SignalGuard signals;
  const Stopwatch clock;
  const double wait0 = data.train->wait_seconds(), comm0 = engine.communication_seconds();
  const int64_t tokens_per_sample = m.mae ? m.n_tokens() - m.n_masked_tokens() : m.n_tokens();
  LocalBatch batch;
  int64_t step = start_step;
  for (; step < total_steps; ++step) {
    // This step's own time, data wait and communication, for its metrics line.
    const Stopwatch step_clock;
    const double step_wait0 = data.train->wait_seconds(), step_comm0 = engine.communication_seconds();
    // Every rank agrees to stop (a signal reached any of them) before the step starts.
    double stop = g_stop_signal.load() != 0 || step == options.stop_before_step ? 1.0 : 0.0;
    comm->allreduce_max_host(&stop, 1);
    if (stop > 0) {
      result.stopped_by_signal = true;
      if (verbose) runtime::log_line("pretrain: stop signal: checkpoint at step " + std::to_string(step) + ", exit");
      break;
    }

    data.train->next(batch);
    draw_masks(m, t.mask_strategy, batch, mask_rng, t.batch_size, rank, ranks);
    for (int64_t bad : options.nan_input_steps)
      if (bad == step) std::fill(batch.x.begin(), batch.x.end(), std::nanf(""));
    const double lr = runtime::learning_rate(t.optimizer.lr, step, t.warmup_steps, total_steps, t.min_lr_ratio);
    const StepResult r = engine.step(
        accumulation,
        [&](int a, float scale, const model::ReadyHook& on_ready) {
          return model.forward_backward(batch_of(m, batch, a * micro, micro), scale, on_ready);
        },
        lr);

    if (!r.applied) {
      ++result.skipped_steps;
      ++bad_in_a_row;
      if (verbose)
        runtime::log_line("step " + std::to_string(step + 1) + ": non-finite loss or gradient, update skipped (" +
                          std::to_string(bad_in_a_row) + " in a row)");
      if (bad_in_a_row >= t.max_bad_steps) {
        result.diverged = true;
        if (verbose)
          runtime::log_line("pretrain: " + std::to_string(bad_in_a_row) +
                            " non-finite steps in a row (train.max_bad_steps): stopping");
        ++step;
        break;
      }
    } else {
      bad_in_a_row = 0;
    }
    nlohmann::json j{{"step", step + 1}, {"split", "train"}, {"lr", lr}, {"grad_norm", r.grad_norm}};
    for (const auto& [name, v] : model::named_losses(r.losses)) j[name] = v;
    {  // timing (rank 0's clock): what bfm plot draws as throughput, and what scaling studies read
      const double step_s = step_clock.seconds();
      j["step_s"] = step_s;
      j["samples_per_s"] = step_s > 0 ? double(t.batch_size) / step_s : 0.0;
      j["data_wait_s"] = data.train->wait_seconds() - step_wait0;
      j["comm_s"] = engine.communication_seconds() - step_comm0;
      j["elapsed_s"] = clock.seconds();
    }
    emit(j);
    const int64_t done = step + 1 - start_step;
    if (verbose && ((step + 1) % t.log_every == 0 || step + 1 == total_steps)) {
      const double elapsed = clock.seconds();
      runtime::ProgressFields f;
      f.step = step + 1;
      f.total_steps = total_steps;
      f.losses = model::named_losses(r.losses);
      f.lr = lr;
      f.grad_norm = r.grad_norm;
      f.samples_per_s = double(done) * t.batch_size / elapsed;
      f.tokens_per_s = f.samples_per_s * double(tokens_per_sample);
      f.elapsed_s = elapsed;
      f.eta_s = elapsed / double(done) * double(total_steps - step - 1);
      f.data_wait_s = data.train->wait_seconds() - wait0;
      f.comm_s = engine.communication_seconds() - comm0;
      runtime::log_line(runtime::format_progress(f));
      if (engine.overlapped() && !model.optimizer_sharded() && (ranks > 1 || placement.gpu) &&
          step + 1 == total_steps)
        runtime::log_line("all-reduce: " + std::to_string(engine.n_buckets()) + " buckets, " +
                          std::to_string(int(100 * engine.mean_hidden_fraction())) +
                          "% of their time hidden behind backward on average");
    }
    if ((step + 1) % t.validate_every == 0 && step + 1 < total_steps) {
      const model::Losses v = evaluate(step + 1);
      if (verbose) runtime::log_line(describe(("held-out loss at step " + std::to_string(step + 1)).c_str(), v));
    }
    if (t.checkpoint_every > 0 && (step + 1) % t.checkpoint_every == 0 && step + 1 < total_steps) checkpoint(step + 1);
  }
  result.steps_done = step;
  result.seconds = clock.seconds();
  if (result.stopped_by_signal) {
    checkpoint(step);
    return result;
  }
  result.last = evaluate(step);
  if (step >= total_steps) checkpoint(step);  // the final state, its held-out losses included in the metrics
  if (verbose) {
    std::string line = describe(("held-out loss after " + std::to_string(step) + " steps").c_str(), result.last);
    if (result.first.total && result.last.total && start_step == 0) {
      std::ostringstream os;
      os.precision(3);
      os << " (" << 100.0 * (1.0 - *result.last.total / *result.first.total) << "% below step 0)";
      line += os.str();
    }
    runtime::log_line(line);
    if (result.skipped_steps)
      runtime::log_line(std::to_string(result.skipped_steps) + " steps skipped for non-finite values");
  }
  return result;
}

}  // namespace bfm::launch
