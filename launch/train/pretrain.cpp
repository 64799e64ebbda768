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

#include "io/synthetic_windows.h"
#include "model/masking.h"
#include "runtime/comm.h"
#include "runtime/device.h"
#include "base/error.h"
#include "runtime/grad_buckets.h"
#include "runtime/optimizer.h"
#include "runtime/progress.h"
#include "base/rng.h"
#include "runtime/world.h"
#include "runtime/zero.h"
#ifdef BFM_WITH_CUDA
#include "model/cuda/cuda_model.h"
#endif
#ifdef BFM_WITH_HDF5
#include "io/corpus.h"
#include "io/window_loader.h"
#include "io/corpus_manifest_reader.h"
#include "runtime/train_checkpoint.h"
#endif

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

// This rank's share of a global batch: global rows r, r + R, r + 2R, ... (the window sampler's assignment), so that
// the union over ranks is the global batch whatever R is.
struct LocalBatch {
  int rows = 0;
  std::vector<float> x;       // [rows, T, P]
  std::vector<float> stim;    // [rows, S] or empty
  std::vector<uint8_t> mask;  // [rows, N] or empty
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // x and stim of this rank's rows of the next global batch.
  virtual void next(LocalBatch& b) = 0;
  virtual std::vector<uint64_t> state() const = 0;
  virtual void restore(const std::vector<uint64_t>& state) = 0;
  virtual double wait_seconds() const { return 0.0; }
  virtual std::string describe() const = 0;
  virtual int64_t batches_per_epoch() const { return 0; }  // 0: no epochs (generated data)
};

// Windows generated in memory: every rank draws the whole global batch from the same stream and keeps its rows.
class SyntheticSource final : public DataSource {
 public:
  SyntheticSource(const RunConfig& rc, int global, int rank, int ranks, uint64_t stream)
      : data_({rc.model.n_parcels, rc.model.window, rc.model.contrastive ? rc.model.stim_dim : 0, rc.data.n_networks,
               rc.data.n_categories, rc.data.noise, rc.data.stim_gain, rc.data.seed}),
        rng_(Rng::stream(rc.train.seed, stream)), global_(global), rank_(rank), ranks_(ranks),
        tp_(int64_t(rc.model.window) * rc.model.n_parcels), s_(rc.model.contrastive ? rc.model.stim_dim : 0) {}

  void next(LocalBatch& b) override {
    gx_.resize(global_ * tp_);
    gs_.resize(int64_t(global_) * s_);
    data_.sample(global_, rng_, gx_.data(), s_ ? gs_.data() : nullptr, nullptr);
    b.rows = global_ / ranks_;
    b.x.resize(b.rows * tp_);
    b.stim.resize(int64_t(b.rows) * s_);
    for (int j = 0; j < b.rows; ++j) {
      const int64_t g = rank_ + int64_t(j) * ranks_;
      std::copy_n(gx_.data() + g * tp_, tp_, b.x.data() + j * tp_);
      if (s_) std::copy_n(gs_.data() + g * s_, s_, b.stim.data() + int64_t(j) * s_);
    }
  }
  std::vector<uint64_t> state() const override {
    const auto s = rng_.state();
    return {s.begin(), s.end()};
  }
  void restore(const std::vector<uint64_t>& s) override {
    require(s.size() == 6, "training checkpoint: synthetic data state has ", s.size(), " words, expected 6");
    std::array<uint64_t, 6> a{};
    std::copy(s.begin(), s.end(), a.begin());
    rng_.set_state(a);
  }
  std::string describe() const override { return "synthetic windows"; }

 private:
  io::SyntheticWindows data_;
  Rng rng_;
  int global_, rank_, ranks_;
  int64_t tp_, s_;
  std::vector<float> gx_, gs_;
};

#ifdef BFM_WITH_HDF5
// A corpus folder (bfm synth / bfm convert): windows of the manifest's training subjects through the prefetching
// loader, this rank's part of each global batch as the distributed sampler assigns it.
struct CorpusRuns {
  std::vector<std::string> shard_paths;
  std::vector<int64_t> train_lengths, validation_lengths;  // per global run; 0 outside the split
  int64_t n_parcels = 0, stimulus_dim = 0;
  std::string summary;
  std::string atlas;  // the shards' atlas ("mixed" when they name several)
  double tr = 0;      // the TR every run shares, 0 when they differ
};

CorpusRuns scan_corpus(const std::string& dir) {
  const CorpusManifest manifest = read_corpus_manifest(dir);
  CorpusRuns out;
  std::set<std::string> train(manifest.train.begin(), manifest.train.end());
  std::set<std::string> validation(manifest.validation.begin(), manifest.validation.end());
  {
    io::Corpus corpus(dir, manifest.shard_files);
    std::set<std::string> atlases;
    std::set<double> trs;
    for (int64_t s = 0; s < corpus.n_shards(); ++s) {
      atlases.insert(corpus.shard(s).header().atlas);
      for (const io::Run& run : corpus.shard(s).runs()) trs.insert(run.tr);
    }
    out.atlas = atlases.size() == 1 ? *atlases.begin() : "mixed";
    out.tr = trs.size() == 1 ? *trs.begin() : 0.0;
    for (int64_t s = 0; s < corpus.n_shards(); ++s) {
      const io::ShardReader& shard = corpus.shard(s);
      out.n_parcels = shard.header().n_parcels;
      out.stimulus_dim = std::max<int64_t>(out.stimulus_dim, shard.header().stimulus_dim);
      for (const io::Run& run : shard.runs()) {
        out.train_lengths.push_back(train.count(run.subject) ? run.length : 0);
        out.validation_lengths.push_back(validation.count(run.subject) ? run.length : 0);
      }
    }
  }  // no HDF5 call of ours may overlap a loader's
  for (const auto& f : manifest.shard_files) out.shard_paths.push_back((std::filesystem::path(dir) / f).string());
  std::ostringstream os;
  os << "corpus " << dir << " (" << manifest.shard_files.size() << " shards, " << manifest.n_subjects
     << " subjects: " << manifest.train.size() << " train, " << manifest.validation.size() << " validation)";
  out.summary = os.str();
  return out;
}

class CorpusSource final : public DataSource {
 public:
  CorpusSource(const RunConfig& rc, const CorpusRuns& runs, int global, int rank, int ranks, bool on_gpu)
      : summary_(runs.summary), s_(rc.model.contrastive ? rc.model.stim_dim : 0) {
    io::SamplerOptions so;
    so.window = rc.model.window;
    so.stride = rc.data.stride;
    so.jitter = true;
    so.global_batch = global;
    so.seed = rc.train.seed;
    if (rc.data.shuffle == "block") {  // opt-in (docs/TRAINING.md, Data order); a checkpoint then records it
      so.block = io::kShardChunkRows;
      so.shuffle_blocks = rc.data.shuffle_blocks;
      summary_ += ", block shuffle of " + std::to_string(so.shuffle_blocks) + " blocks";
    }
    sampler_options_ = so;
    // A GPU rank's host has cores to spare and a step to feed: two readers (bench/RESULTS.md: the window shuffle at
    // `cat`'s speed); a CPU rank's cores compute.
    threads_ = rc.data.read_threads > 0 ? rc.data.read_threads : on_gpu ? 2 : 1;
    lengths_ = runs.train_lengths;
    paths_ = runs.shard_paths;
    rank_ = rank, ranks_ = ranks;
    budget_ = rc.data.memory_budget_mb << 20;
    start(io::SamplerState{});
  }
  void next(LocalBatch& b) override {
    io::WindowBatch w = loader_->next();
    b.rows = static_cast<int>(w.windows.size());
    b.x.swap(w.timeseries);
    if (s_) {
      require(static_cast<int64_t>(w.stimulus.size()) == int64_t(b.rows) * s_, summary_,
              ": model.stim_dim = ", s_, " but the corpus' stimulus embeddings have ",
              b.rows ? w.stimulus.size() / b.rows : 0, " dimensions");
      b.stim.swap(w.stimulus);
    }
    loader_->recycle(std::move(w));
  }
  std::vector<uint64_t> state() const override {
    const io::SamplerState s = loader_->state();
    return {s.epoch, s.batch};
  }
  void restore(const std::vector<uint64_t>& s) override {
    require(s.size() == 2, "training checkpoint: corpus sampler state has ", s.size(), " words, expected 2");
    start({s[0], s[1]});
  }
  double wait_seconds() const override { return waited_ + (loader_ ? loader_->data_wait_seconds() : 0.0); }
  int64_t batches_per_epoch() const override { return per_epoch_; }
  std::string describe() const override { return summary_; }

 private:
  void start(const io::SamplerState& state) {
    if (loader_) waited_ += loader_->data_wait_seconds();
    loader_.reset();
    io::WindowSampler sampler(lengths_, sampler_options_, rank_, ranks_);
    per_epoch_ = sampler.batches_per_epoch();
    sampler.restore(state);
    io::LoaderOptions lo{sampler_options_.window, budget_};
    lo.threads = threads_;
    loader_ = std::make_unique<io::WindowLoader>(paths_, std::move(sampler), lo);
  }
  std::string summary_;
  int64_t s_;
  io::SamplerOptions sampler_options_;
  std::vector<int64_t> lengths_;
  std::vector<std::string> paths_;
  int rank_ = 0, ranks_ = 1, threads_ = 1;
  int64_t budget_ = 0, per_epoch_ = 0;
  double waited_ = 0;
  std::unique_ptr<io::WindowLoader> loader_;
};
#endif

std::string describe(const char* what, const model::Losses& l) {
  std::ostringstream os;
  os << what << ":";
  for (const auto& [name, v] : named_losses(l)) os << " " << name << " " << v;
  return os.str();
}

// train.device: "auto" takes the GPU where the build and the machine have one.
bool use_gpu(const std::string& device, const std::string& source) {
#ifdef BFM_WITH_CUDA
  if (device == "cpu") return false;
  const bool have = runtime::cuda_device_count() > 0;
  require(have || device != "cuda", source, ": train.device = \"cuda\" but this machine has no CUDA GPU (",
          runtime::describe_devices(), ")");
  return have;
#else
  require(device != "cuda", source, ": train.device = \"cuda\" but this bfm was built without CUDA (BFM_WITH_CUDA=OFF)");
  return false;
#endif
}

// Sums of the losses present over micro-batches (and ranks): weights of each objective's mean.
struct LossSums {
  double v[4] = {0, 0, 0, 0};  // total, mae, causal, contrastive
  double n[4] = {0, 0, 0, 0};
  void add(const model::Losses& l) {
    const std::optional<double>* f[4] = {&l.total, &l.mae, &l.causal, &l.contrastive};
    for (int i = 0; i < 4; ++i)
      if (f[i]->has_value()) v[i] += **f[i], n[i] += 1;
  }
  model::Losses mean() const {
    model::Losses l;
    std::optional<double>* f[4] = {&l.total, &l.mae, &l.causal, &l.contrastive};
    for (int i = 0; i < 4; ++i)
      if (n[i] > 0) *f[i] = v[i] / n[i];
    return l;
  }
};

}  // namespace

bool train_on_gpu(const RunConfig& rc) {
#ifdef BFM_WITH_CUDA
  return use_gpu(rc.train.device, rc.source) &&
         (rc.train.device == "cuda" || model::GpuBrainModel::unsupported(rc.model).empty());
#else
  return use_gpu(rc.train.device, rc.source);
#endif
}

std::vector<std::pair<std::string, double>> named_losses(const model::Losses& l) {
  std::vector<std::pair<std::string, double>> out;
  if (l.total) out.emplace_back("loss", *l.total);
  if (l.mae) out.emplace_back("mae", *l.mae);
  if (l.causal) out.emplace_back("causal", *l.causal);
  if (l.contrastive) out.emplace_back("contrastive", *l.contrastive);
  return out;
}

TrainResult pretrain(const RunConfig& rc, const TrainOptions& options) {
  const auto& m = rc.model;
  const auto& t = rc.train;
  TrainResult result;

  // ---- the ranks and the batch geometry
  const bool gpu_requested = train_on_gpu(rc);
  (void)gpu_requested;  // used only where the build has CUDA
  // Gradients of a GPU run are averaged on the host for now (one rank per job until NCCL is wired in): the host
  // communicator carries the losses, the stop flag and the checkpoints' coordination.
  // The host communicator (losses, flags, checkpoints; CPU gradients): train.comm = "nccl" names the GPU gradients'
  // back-end, the host side is then MPI where built.
  require(t.comm != "nccl" || gpu_requested, rc.source, ": train.comm = \"nccl\" sums gradients on GPUs, but this run "
          "trains on the CPU");
  std::unique_ptr<runtime::Communicator> comm =
      runtime::make_communicator(t.comm == "nccl" ? "auto" : t.comm, /*on_gpu=*/false);
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

  result.model = std::make_unique<model::BrainModel>(m);
  model::BrainModel& model = *result.model;
  model.initialize(t.seed);
  if (ranks > 1 && m.contrastive)  // CLIP's negatives from all ranks' micro-batches
    model.set_contrastive_group(rank, ranks, [&comm](const float* mine, float* all, int64_t n) {
      comm->allgather(mine, all, n);
    });

#ifdef BFM_WITH_CUDA
  std::unique_ptr<model::GpuBrainModel> gpu;
  // GPU ranks: each its own GPU (the local rank picks it), the gradients summed over ranks on the device by NCCL
  // where the build has it (train.comm auto or nccl), else through the host over MPI.
  std::unique_ptr<runtime::Communicator> grad_comm;
  if (gpu_requested) {
    const int devices = runtime::cuda_device_count();
    require(devices > 0, rc.source, ": train.device asks for a GPU, and this machine has none");
    const int local_rank = runtime::world_started() ? runtime::world().local_rank : 0;
    const int local_size = runtime::world_started() ? runtime::world().local_size : 1;
    if (local_size > devices && lead)
      runtime::log_line("pretrain: " + std::to_string(local_size) + " ranks on this node share " +
                        std::to_string(devices) + " GPU(s)");
    runtime::select_cuda_device(local_rank % devices);
    require(!(ranks > 1 && m.contrastive), rc.source, ": the contrastive objective over ", ranks,
            " GPU ranks needs the all-gather of embeddings on the device, which the GPU model does not do yet: "
            "train it on one GPU, or on CPU ranks");
    gpu = std::make_unique<model::GpuBrainModel>(m, model::parse_gpu_precision(t.precision), t.optimizer);
    gpu->load_params(model.params());
    if (ranks > 1 || t.comm == "nccl") {
      grad_comm = runtime::make_communicator(t.comm == "mpi" ? "mpi" : t.comm, /*on_gpu=*/true);
      if (verbose)
        runtime::log_line(std::string("pretrain: gradients summed over ranks by ") + grad_comm->backend() +
                          (std::string(grad_comm->backend()) == "nccl" ? " on the device" : " through the host"));
    }
  }
  const bool on_gpu = gpu != nullptr;
  const std::string gpu_gap = model::GpuBrainModel::unsupported(m);
  if (!on_gpu && t.device == "auto" && !gpu_gap.empty() && runtime::cuda_device_count() > 0 && verbose)
    runtime::log_line("pretrain: on the CPU although there is a GPU: " + gpu_gap);
#else
  const bool on_gpu = false;
#endif

  // ---- data: training source and a fixed held-out batch (this rank's rows of it)
  std::unique_ptr<DataSource> data;
  LocalBatch validation;
  Rng mask_rng = Rng::stream(t.seed, 2);
  auto draw_masks = [&](LocalBatch& b, Rng& rng, int global) {
    if (!m.mae) return;
    const int N = m.n_tokens();
    std::vector<uint8_t> all(int64_t(global) * N);
    model::make_masks(all.data(), global, m.n_time(), m.n_parcels, m.mask_ratio, t.mask_strategy, rng);
    b.mask.resize(int64_t(b.rows) * N);
    for (int j = 0; j < b.rows; ++j)
      std::copy_n(all.data() + (rank + int64_t(j) * ranks) * N, N, b.mask.data() + int64_t(j) * N);
  };
  if (rc.data.source == "synthetic") {
    data = std::make_unique<SyntheticSource>(rc, t.batch_size, rank, ranks, 1);
    SyntheticSource held_out(rc, t.batch_size, rank, ranks, 3);
    held_out.next(validation);
  } else {
#ifdef BFM_WITH_HDF5
    const CorpusRuns runs = scan_corpus(rc.data.corpus);
    result.data_atlas = runs.atlas;
    result.data_tr = runs.tr;
    require(runs.n_parcels == m.n_parcels, rc.data.corpus, ": the corpus has ", runs.n_parcels,
            " parcels, the model (model.n_parcels) ", m.n_parcels);
    {
      int64_t held_windows = 0;
      for (int64_t len : runs.validation_lengths)
        if (len >= m.window) held_windows += (len - m.window) / rc.data.stride + 1;
      require(held_windows >= t.batch_size, rc.data.corpus, ": its validation subjects hold ", held_windows,
              " windows of ", m.window, " time points (stride ", rc.data.stride, "), fewer than one global batch of ",
              t.batch_size, " for the held-out loss: use a corpus with more subjects or a smaller train.batch_size");
      CorpusRuns held = runs;
      held.train_lengths = runs.validation_lengths;
      RunConfig vc = rc;
      vc.train.seed = t.seed + 1;
      vc.data.shuffle = "window";  // the held-out batch is the same whatever data.shuffle
      CorpusSource held_out(vc, held, t.batch_size, rank, ranks, on_gpu);
      held_out.next(validation);
    }
    data = std::make_unique<CorpusSource>(rc, runs, t.batch_size, rank, ranks, on_gpu);
#else
    fail(rc.source, ": data.source = \"corpus\" needs HDF5, and this bfm was built without it");
#endif
  }
  result.data_description = data->describe();
  // train.epochs (corpus data): passes over the training windows, each of batches_per_epoch() global batches.
  int64_t total_steps = t.steps;
  if (t.epochs > 0) {
    const int64_t per_epoch = data->batches_per_epoch();
    require(per_epoch > 0, rc.source, ": train.epochs needs corpus data (data.source = \"corpus\")");
    total_steps = t.epochs * per_epoch;
  }
  {
    Rng val_mask_rng = Rng::stream(t.seed, 4);
    draw_masks(validation, val_mask_rng, t.batch_size);
  }

  // ---- optimizer, gradient buckets
  std::vector<runtime::ArenaSegment> segments;
  std::vector<std::pair<int64_t, int64_t>> tensors;
  for (const auto& p : model.layout().params()) {
    segments.push_back({p.offset, p.size, p.weight_decay});
    tensors.emplace_back(p.offset, p.size);
  }
  runtime::AdamW optimizer(t.zero ? 0 : model.arena_size(),
                           t.zero ? std::vector<runtime::ArenaSegment>{} : segments, t.optimizer);
  std::unique_ptr<runtime::ShardedAdamW> zero;
  if (t.zero) {
    require(!on_gpu, rc.source, ": train.zero (sharded optimizer state) is for CPU ranks; GPU runs keep AdamW on "
            "the device");
    zero = std::make_unique<runtime::ShardedAdamW>(model.arena_size(), segments, t.optimizer, *comm);
  }
#ifdef BFM_WITH_HDF5
  // The moments a checkpoint holds: the whole arena, or this rank's shard.
  auto checkpoint_tensors = [&]() {
    if (zero)
      return runtime::CheckpointTensors{&model.layout(), model.params(), zero->first_moment().data(),
                                        zero->second_moment().data(), zero->shard_begin(), zero->shard_end()};
    return runtime::CheckpointTensors{&model.layout(), model.params(), optimizer.first_moment().data(),
                                      optimizer.second_moment().data()};
  };
#endif
  runtime::GradientBuckets buckets(tensors, static_cast<int64_t>(t.bucket_mb * (1 << 20)));
  // GPU ranks with NCCL: the same buckets over the device arena's tensors (its padded offsets), each all-reduce
  // started on the communicator's stream as soon as backward has enqueued its tensors' gradient kernels, ordered
  // after them by an event on the model's stream.
  std::unique_ptr<runtime::GradientBuckets> device_buckets;
#ifdef BFM_WITH_CUDA
  if (grad_comm && std::string(grad_comm->backend()) == "nccl" && t.gpu_overlap) {
    grad_comm->set_producer_stream(gpu->stream());
    device_buckets = std::make_unique<runtime::GradientBuckets>(gpu->device_tensors(),
                                                                static_cast<int64_t>(t.bucket_mb * (1 << 20)));
  }
#endif
  runtime::GradientBuckets* active_buckets = device_buckets ? device_buckets.get() : &buckets;
  std::vector<char> reported(model.layout().params().size(), 0);
  const std::function<void(const std::string&)> on_ready = [&](const std::string& prefix) {
    const auto& params = model.layout().params();
    for (size_t i = 0; i < params.size(); ++i)
      if (!reported[i] && params[i].name.compare(0, prefix.size(), prefix) == 0) {
        reported[i] = 1;
        active_buckets->tensor_ready(i);
      }
  };
  double hidden_sum = 0;  // the share of each step's all-reduce time that backward hid, summed over steps
  double gpu_comm_seconds = 0;  // GPU ranks: time waiting for the gradient all-reduce after backward
  const float max_logit_scale = static_cast<float>(model::BrainModel::kMaxLogitScale);
  float* logit_scale = m.contrastive ? model.params() + model.layout().offset("logit_scale") : nullptr;

  // ---- resume
  int64_t start_step = 0, bad_in_a_row = 0;
  std::string restored_metrics;
  const std::string ckpt_dir =
      options.checkpoint_dir.empty() ? "" : options.checkpoint_dir;
#ifdef BFM_WITH_HDF5
  model::ModelConfig provenance = m;
  provenance.atlas = result.data_atlas;
  provenance.tr_seconds = result.data_tr;
  nlohmann::json config_json = model::to_checkpoint_json(provenance);
  config_json["batch_size"] = t.batch_size;
  config_json["seed"] = t.seed;
  config_json["data"] = data->describe();
  if (!ckpt_dir.empty()) {
    const std::string latest = runtime::latest_train_checkpoint(ckpt_dir);
    if (!latest.empty()) {
      const runtime::TrainState s = runtime::read_train_checkpoint(latest, checkpoint_tensors());
      const nlohmann::json saved = nlohmann::json::parse(s.config_json);
      require(saved == config_json, latest, ": written by a run with another model, batch or seed (",
              saved.dump(), "), not this one (", config_json.dump(), ")");
      start_step = s.step;
      result.skipped_steps = s.skipped_steps;
      bad_in_a_row = s.skipped_in_a_row;
      optimizer.set_steps_taken(s.step - s.skipped_steps);
      if (zero) zero->set_steps_taken(s.step - s.skipped_steps);
      const size_t n_data = s.rng_state.size() - 6;
      data->restore(std::vector<uint64_t>(s.rng_state.begin(), s.rng_state.begin() + n_data));
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
#ifdef BFM_WITH_CUDA
  if (on_gpu) {
    gpu->load_params(model.params());
    gpu->load_moments(optimizer.first_moment().data(), optimizer.second_moment().data());
    gpu->set_steps_taken(optimizer.steps_taken());
  }
#endif

  std::ofstream metrics;
  if (lead && !options.metrics_path.empty()) {
    metrics.open(options.metrics_path, std::ios::trunc);
    require(static_cast<bool>(metrics), options.metrics_path, ": cannot write");
    metrics << restored_metrics << std::flush;
  }
  std::ostringstream metrics_so_far;  // what the next checkpoint stores
  metrics_so_far << restored_metrics;
  auto emit = [&](const nlohmann::json& j) {
    if (!lead) return;
    const std::string line = j.dump() + "\n";
    metrics_so_far << line;
    if (metrics.is_open()) metrics << line << std::flush;
  };

  auto batch_of = [&](const LocalBatch& b, int first, int rows) {
    const int64_t tp = int64_t(m.window) * m.n_parcels;
    model::Batch out;
    out.size = rows;
    out.x = b.x.data() + first * tp;
    out.mask = m.mae && !b.mask.empty() ? b.mask.data() + int64_t(first) * m.n_tokens() : nullptr;
    out.stim = m.contrastive && !b.stim.empty() ? b.stim.data() + int64_t(first) * m.stim_dim : nullptr;
    return out;
  };
  // Held-out losses: each rank evaluates its rows in micro-batches, means over all ranks.
  auto evaluate = [&](int64_t step) {
    LossSums sums;
    for (int a = 0; a < validation.rows / micro; ++a) {
      const model::Batch b = batch_of(validation, a * micro, micro);
#ifdef BFM_WITH_CUDA
      sums.add(on_gpu ? gpu->forward(b, "held-out batch") : model.forward(b, "held-out batch"));
#else
      sums.add(model.forward(b, "held-out batch"));
#endif
    }
    double buf[8];
    for (int i = 0; i < 4; ++i) buf[i] = sums.v[i], buf[4 + i] = sums.n[i];
    comm->allreduce_sum_host(buf, 8);
    for (int i = 0; i < 4; ++i) sums.v[i] = buf[i], sums.n[i] = buf[4 + i];
    const model::Losses l = sums.mean();
    nlohmann::json j{{"step", step}, {"split", "validation"}};
    for (const auto& [name, v] : named_losses(l)) j[name] = v;
    emit(j);
    return l;
  };

  if (verbose) {
    std::ostringstream os;
    os << "pretrain: " << model.arena_size() << " parameters, objectives " << nlohmann::json(m.objectives()).dump()
       << ", " << m.n_tokens() << " tokens per window, global batch " << t.batch_size << " (" << ranks << " rank"
       << (ranks > 1 ? "s" : "") << " x " << accumulation << " micro-batch" << (accumulation > 1 ? "es" : "")
       << " of " << micro << "), " << total_steps << " steps, " << data->describe() << ", on "
       << (on_gpu ? "the GPU (" + t.precision + ")" : std::string("the CPU")) << ", all-reduce " << comm->backend();
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
    s.rng_state = data->state();
    const auto ms = mask_rng.state();
    s.rng_state.insert(s.rng_state.end(), ms.begin(), ms.end());
    s.config_json = config_json.dump();
    s.metrics_jsonl = metrics_so_far.str();
    s.world_size = ranks;
#ifdef BFM_WITH_CUDA
    if (on_gpu) {
      gpu->store_params(model.params());
      gpu->store_moments(optimizer.first_moment().data(), optimizer.second_moment().data());
    }
#endif
    Stopwatch clock;
    const std::string path = runtime::write_train_checkpoint(ckpt_dir, checkpoint_tensors(), s, t.keep_checkpoints);
    if (verbose) runtime::log_line("checkpoint " + path + " (" + runtime::format_duration(clock.seconds()) + ")");
    result.last_checkpoint = path;
#else
    (void)step;
#endif
  };

  SignalGuard signals;
  Stopwatch clock;
  const double wait0 = data->wait_seconds(), comm0 = comm->blocked_seconds();
  const int64_t tokens_per_sample = m.mae ? m.n_tokens() - m.n_masked_tokens() : m.n_tokens();
  LocalBatch batch;
  int64_t step = start_step;
  for (; step < total_steps; ++step) {
    // This step's own time, data wait and communication, for its metrics line.
    const Stopwatch step_clock;
    const double step_wait0 = data->wait_seconds(), step_comm0 = comm->blocked_seconds() + gpu_comm_seconds;
    // Every rank agrees to stop (a signal reached any of them) before the step starts.
    double stop = g_stop_signal.load() != 0 || step == options.stop_before_step ? 1.0 : 0.0;
    comm->allreduce_max_host(&stop, 1);
    if (stop > 0) {
      result.stopped_by_signal = true;
      if (verbose) runtime::log_line("pretrain: stop signal: checkpoint at step " + std::to_string(step) + ", exit");
      break;
    }
    data->next(batch);
    draw_masks(batch, mask_rng, t.batch_size);
    for (int64_t bad : options.nan_input_steps)
      if (bad == step) std::fill(batch.x.begin(), batch.x.end(), std::nanf(""));
    const double lr = runtime::learning_rate(t.optimizer.lr, step, t.warmup_steps, total_steps, t.min_lr_ratio);
    LossSums sums;
    double norm = 0;
    bool finite = true;
#ifdef BFM_WITH_CUDA
    if (on_gpu) {
      gpu->zero_grads();
      for (int a = 0; a < accumulation; ++a) {
        // 1 / (accumulation * ranks): the sum over ranks below is then the mean gradient of the global batch.
        const float scale = 1.0f / float(accumulation * ranks);
        const bool last = a + 1 == accumulation;
        model::Losses l;
        if (device_buckets && last) {  // the buckets' all-reduces start while this backward is still enqueued
          device_buckets->begin_step(gpu->device_grads(), *grad_comm);
          std::fill(reported.begin(), reported.end(), 0);
          l = gpu->forward_backward(batch_of(batch, a * micro, micro), scale, on_ready);
        } else {
          l = gpu->forward_backward(batch_of(batch, a * micro, micro), scale);
        }
        sums.add(l);
        finite = finite && l.total && std::isfinite(*l.total);
      }
      if (grad_comm) {
        Stopwatch comm_clock;
        if (device_buckets) {
          device_buckets->finish(1.0f);  // the scale is already in the gradients
          hidden_sum += device_buckets->hidden_fraction();
        } else if (std::string(grad_comm->backend()) == "nccl") {
          grad_comm->allreduce_sum(gpu->device_grads(), gpu->device_arena_size());
        } else {
          gpu->store_grads(model.grads());
          grad_comm->allreduce_sum(model.grads(), model.arena_size());
          gpu->load_grads(model.grads());
        }
        gpu_comm_seconds += comm_clock.seconds();
      }
      if (ranks > 1) {  // skip the step on every rank when any rank's loss was not finite
        double flag = finite ? 0.0 : 1.0;
        comm->allreduce_max_host(&flag, 1);
        finite = flag == 0.0;
      }
      bool applied = false;
      if (finite) norm = gpu->optimizer_step(lr, &applied);
      finite = finite && applied;
    }
#endif
    if (!on_gpu) {
      model.zero_grads();
      for (int a = 0; a < accumulation; ++a) {
        const model::Losses l = model.forward(batch_of(batch, a * micro, micro));
        sums.add(l);
        finite = finite && l.total && std::isfinite(*l.total);
        const bool last = a + 1 == accumulation;
        // Gradient mean over ranks: the last micro-batch's backward reports each group of tensors as its
        // gradients become final, and their bucket's all-reduce starts while backward goes on.
        const bool hook = last && !zero;
        if (hook) {
          buckets.begin_step(model.grads(), *comm);
          std::fill(reported.begin(), reported.end(), 0);
        }
        if (l.total) model.backward(1.0f / accumulation, hook ? on_ready : std::function<void(const std::string&)>{});
      }
      if (!zero) {
        buckets.finish(1.0f / ranks);
        hidden_sum += buckets.hidden_fraction();
      }
      double flag = finite ? 0.0 : 1.0;
      comm->allreduce_max_host(&flag, 1);
      finite = flag == 0.0;
      if (zero) {
        // ZeRO-1: reduce-scatter of the gradient sums, clipping on the global norm, AdamW on this rank's shard,
        // all-gather of the parameters (runtime/zero.h).
        if (finite) {
          norm = zero->step(model.params(), model.grads(), 1.0f / ranks, lr);
          finite = std::isfinite(norm);
        }
      } else {
        if (finite) {
          norm = optimizer.grad_norm(model.grads());
          finite = std::isfinite(norm);
        }
        if (finite) optimizer.step(model.params(), model.grads(), lr);
      }
      if (finite && logit_scale && *logit_scale > max_logit_scale) *logit_scale = max_logit_scale;
    }
    // Losses: means over micro-batches and ranks.
    double buf[8];
    for (int i = 0; i < 4; ++i) buf[i] = sums.v[i], buf[4 + i] = sums.n[i];
    comm->allreduce_sum_host(buf, 8);
    for (int i = 0; i < 4; ++i) sums.v[i] = buf[i], sums.n[i] = buf[4 + i];
    const model::Losses losses = sums.mean();
    if (!finite) {
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
    nlohmann::json j{{"step", step + 1}, {"split", "train"}, {"lr", lr}, {"grad_norm", norm}};
    for (const auto& [name, v] : named_losses(losses)) j[name] = v;
    {  // timing (rank 0's clock): what bfm plot draws as throughput, and what scaling studies read
      const double step_s = step_clock.seconds();
      j["step_s"] = step_s;
      j["samples_per_s"] = step_s > 0 ? double(t.batch_size) / step_s : 0.0;
      j["data_wait_s"] = data->wait_seconds() - step_wait0;
      j["comm_s"] = comm->blocked_seconds() + gpu_comm_seconds - step_comm0;
      j["elapsed_s"] = clock.seconds();
    }
    emit(j);
    const int64_t done = step + 1 - start_step;
    if (verbose && ((step + 1) % t.log_every == 0 || step + 1 == total_steps)) {
      const double elapsed = clock.seconds();
      runtime::ProgressFields f;
      f.step = step + 1;
      f.total_steps = total_steps;
      f.losses = named_losses(losses);
      f.lr = lr;
      f.grad_norm = norm;
      f.samples_per_s = double(done) * t.batch_size / elapsed;
      f.tokens_per_s = f.samples_per_s * double(tokens_per_sample);
      f.elapsed_s = elapsed;
      f.eta_s = elapsed / double(done) * double(total_steps - step - 1);
      f.data_wait_s = data->wait_seconds() - wait0;
      f.comm_s = comm->blocked_seconds() - comm0 + gpu_comm_seconds;
      runtime::log_line(runtime::format_progress(f));
      if (((ranks > 1 && !on_gpu) || device_buckets) && !zero && step + 1 == total_steps)
        runtime::log_line("all-reduce: " + std::to_string(active_buckets->n_buckets()) + " buckets, " +
                          std::to_string(int(100 * hidden_sum / double(done))) + "% of their time hidden behind "
                          "backward on average");
    }
    if ((step + 1) % t.validate_every == 0 && step + 1 < total_steps) {
      const model::Losses v = evaluate(step + 1);
      if (verbose) runtime::log_line(describe(("held-out loss at step " + std::to_string(step + 1)).c_str(), v));
    }
    if (t.checkpoint_every > 0 && (step + 1) % t.checkpoint_every == 0 && step + 1 < total_steps) checkpoint(step + 1);
  }
  result.steps_done = step;
  result.seconds = clock.seconds();
#ifdef BFM_WITH_CUDA
  if (on_gpu) gpu->store_params(model.params());  // the checkpoint is written from the CPU arena
#endif
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
