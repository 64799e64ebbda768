#include "launch/train/run_config.h"

#include <limits>
#include <sstream>

#include <toml++/toml.h>

#include "base/error.h"

namespace bfm::launch {

namespace {

// The defaults: a small model that trains in minutes on two cores.
constexpr const char* kDefaults = R"(# bfm run configuration (TOML). Every key is optional; these are the defaults.
[model]
n_parcels = 64          # P, parcels of the atlas
window = 64             # T, time points per sample
patch_len = 8           # L, time points per token
d_model = 128           # D
n_heads = 4             # H
n_layers = 4
mlp_ratio = 4
objectives = ["mae"]    # "mae" or "causal", optionally with "contrastive"
mask_ratio = 0.75
stim_dim = 16           # S, size of the stimulus embedding (contrastive)
proj_dim = 32           # E, size of the shared embedding (contrastive)
ln_eps = 1e-5

[model.decoder]         # the MAE decoder
d_model = 64
n_heads = 4
n_layers = 2

[model.loss_weights]
mae = 1.0
causal = 1.0
contrastive = 1.0

[data]
source = "synthetic"    # windows generated in memory with known structure | "corpus" (data.corpus = its folder)
corpus = ""
stride = 10             # corpus: window starts every `stride` time points, jittered per epoch
memory_budget_mb = 256  # corpus: read-ahead per rank; what it leaves caches chunks
shuffle = "window"      # corpus: "window" shuffles every window over the corpus | "block" (docs/TRAINING.md, Data order)
shuffle_blocks = 64     # shuffle = "block": blocks of 256 time points drawn together (the shuffle buffer)
read_threads = 0        # corpus: threads reading chunks per rank (0: 2 on a GPU rank, 1 on a CPU rank)
n_networks = 6
n_categories = 16
noise = 0.3             # observation noise relative to the network signals
stim_gain = 1.5         # stimulus-driven response relative to intrinsic dynamics
seed = 1

[train]
steps = 300
epochs = 0              # corpus data: > 0 trains this many passes over the training windows instead of `steps`
batch_size = 16         # global batch: windows per optimizer step over all ranks
micro_batch = 0         # windows per forward/backward on one rank (0: batch_size / ranks); smaller = accumulation
warmup_steps = 30
lr = 1e-3
min_lr_ratio = 0.1      # cosine decay ends at lr * min_lr_ratio
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
weight_decay = 0.05
grad_clip = 1.0
mask_strategy = "random"  # random | tube | future
seed = 0
log_every = 10
out = "runs/bfm"
device = "auto"         # auto: the GPU where the build and the machine have one, else the CPU | cpu | cuda
precision = "bf16"      # GPU only: bf16 (bf16 activations, fp32 master weights) | fp32 (for checking)
validate_every = 50     # held-out loss every N steps
checkpoint_every = 100  # training checkpoint (resumable) every N steps; 0: only on a stop signal and at the end
keep_checkpoints = 2    # the newest K training checkpoints are kept
max_bad_steps = 5       # non-finite loss or gradient this many steps in a row stops the run
comm = "auto"           # gradient all-reduce: auto | self | mpi | nccl
bucket_mb = 25          # all-reduce bucket size: buckets start while backward goes on
gpu_overlap = false     # GPU ranks with NCCL: start the buckets' all-reduces during backward (not yet run on GPUs)
zero = false            # ZeRO-1: shard AdamW's moments over the ranks (reduce-scatter, update a shard, all-gather)
)";

class Reader {
 public:
  Reader(const toml::table& table, std::string source) : table_(table), source_(std::move(source)) {}

  template <class T>
  void get(const char* section, const char* key, T& value) {
    const toml::node* node = lookup(section, key);
    if (!node) return;
    const std::string where = source_ + ": " + section + "." + key;
    if constexpr (std::is_same_v<T, bool>) {
      auto v = node->value<bool>();
      require(v.has_value(), where, " must be true or false");
      value = *v;
    } else if constexpr (std::is_integral_v<T>) {
      auto v = node->value<int64_t>();
      require(v.has_value() && node->is_integer(), where, " must be an integer");
      require(*v >= 0 || std::is_signed_v<T>, where, " must not be negative");
      require(std::is_same_v<T, uint64_t> || std::is_same_v<T, int64_t> ||
                  (*v >= int64_t(std::numeric_limits<T>::min()) && *v <= int64_t(std::numeric_limits<T>::max())),
              where, " = ", *v, " is out of range");
      value = static_cast<T>(*v);
    } else if constexpr (std::is_floating_point_v<T>) {
      auto v = node->value<double>();
      require(v.has_value(), where, " must be a number");
      value = static_cast<T>(*v);
    } else if constexpr (std::is_same_v<T, std::string>) {
      auto v = node->value<std::string>();
      require(v.has_value(), where, " must be a string");
      value = *v;
    } else {
      const toml::array* array = node->as_array();
      require(array != nullptr, where, " must be a list of strings");
      value.clear();
      for (const auto& item : *array) {
        auto s = item.value<std::string>();
        require(s.has_value(), where, " must be a list of strings");
        value.push_back(*s);
      }
    }
  }

  // Keys present in the file that nobody read: typos must not pass silently.
  void check_all_used() const {
    check_table(table_, "");
  }

 private:
  const toml::node* lookup(const char* section, const char* key) {
    used_.push_back(std::string(section) + "." + key);
    const toml::node* node = table_.at_path(std::string(section) + "." + key).node();
    return node;
  }

  void check_table(const toml::table& table, const std::string& prefix) const {
    for (const auto& [k, node] : table) {
      const std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (const toml::table* sub = node.as_table()) {
        check_table(*sub, path);
        continue;
      }
      bool known = false;
      for (const auto& u : used_) known = known || u == path;
      require(known, source_, ": unknown key \"", path, "\" (see `bfm config --defaults` for every key)");
    }
  }

  const toml::table& table_;
  std::string source_;
  std::vector<std::string> used_;
};

// "train.steps=100" -> sets train.steps in the table, the value parsed as TOML.
void apply_override(toml::table& table, const std::string& assignment) {
  const auto eq = assignment.find('=');
  require(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected section.key=value");
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + text);
  } catch (const toml::parse_error&) {
    // A bare word is taken as a string: --set train.mask_strategy=tube
    parsed = toml::table{{"v", text}};
  }
  toml::table* target = &table;
  std::string rest = path;
  for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
    const std::string part = rest.substr(0, dot);
    rest = rest.substr(dot + 1);
    if (!target->contains(part)) target->insert(part, toml::table{});
    target = (*target)[part].as_table();
    require(target != nullptr, "--set ", assignment, ": \"", part, "\" is not a section");
  }
  target->insert_or_assign(rest, *parsed["v"].node());
}

}  // namespace

std::string default_config_toml() { return kDefaults; }

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  toml::table table;
  RunConfig rc;
  rc.source = path.empty() ? "built-in defaults" : path;
  if (!path.empty()) {
    try {
      table = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      std::ostringstream os;
      os << e.description() << " (line " << e.source().begin.line << ")";
      fail(path, ": ", os.str());
    }
  }
  for (const auto& o : overrides) apply_override(table, o);

  Reader r(table, rc.source);
  auto& m = rc.model;
  // Defaults of the model, as in kDefaults.
  m.n_parcels = 64, m.window = 64, m.patch_len = 8, m.d_model = 128, m.n_heads = 4, m.n_layers = 4;
  m.mae = true;
  m.decoder = model::DecoderConfig{64, 4, 2};
  m.stim_dim = 16, m.proj_dim = 32;
  r.get("model", "n_parcels", m.n_parcels);
  r.get("model", "window", m.window);
  r.get("model", "patch_len", m.patch_len);
  r.get("model", "d_model", m.d_model);
  r.get("model", "n_heads", m.n_heads);
  r.get("model", "n_layers", m.n_layers);
  r.get("model", "mlp_ratio", m.mlp_ratio);
  std::vector<std::string> objectives{"mae"};
  r.get("model", "objectives", objectives);
  m.mae = m.causal = m.contrastive = false;
  for (const auto& o : objectives) {
    if (o == "mae") m.mae = true;
    else if (o == "causal") m.causal = true;
    else if (o == "contrastive") m.contrastive = true;
    else fail(rc.source, ": model.objectives: unknown objective \"", o, "\" (known: mae, causal, contrastive)");
  }
  r.get("model", "mask_ratio", m.mask_ratio);
  r.get("model", "stim_dim", m.stim_dim);
  r.get("model", "proj_dim", m.proj_dim);
  r.get("model", "ln_eps", m.ln_eps);
  r.get("model.decoder", "d_model", m.decoder->d_model);
  r.get("model.decoder", "n_heads", m.decoder->n_heads);
  r.get("model.decoder", "n_layers", m.decoder->n_layers);
  if (!m.mae) m.decoder.reset();
  r.get("model.loss_weights", "mae", m.weight_mae);
  r.get("model.loss_weights", "causal", m.weight_causal);
  r.get("model.loss_weights", "contrastive", m.weight_contrastive);
  m.validate(rc.source);

  auto& d = rc.data;
  r.get("data", "source", d.source);
  require(d.source == "synthetic" || d.source == "corpus", rc.source, ": data.source \"", d.source,
          "\" is not one of \"synthetic\", \"corpus\"");
  r.get("data", "corpus", d.corpus);
  r.get("data", "stride", d.stride);
  r.get("data", "memory_budget_mb", d.memory_budget_mb);
  require(d.source != "corpus" || !d.corpus.empty(), rc.source, ": data.source = \"corpus\" needs data.corpus (a folder)");
  require(d.stride > 0 && d.memory_budget_mb > 0, rc.source, ": data.stride and data.memory_budget_mb must be positive");
  r.get("data", "shuffle", d.shuffle);
  require(d.shuffle == "window" || d.shuffle == "block", rc.source, ": data.shuffle \"", d.shuffle,
          "\" is not one of \"window\", \"block\"");
  r.get("data", "shuffle_blocks", d.shuffle_blocks);
  r.get("data", "read_threads", d.read_threads);
  require(d.shuffle_blocks > 0 && d.read_threads >= 0, rc.source,
          ": data.shuffle_blocks must be positive and data.read_threads not negative");
  r.get("data", "n_networks", d.n_networks);
  r.get("data", "n_categories", d.n_categories);
  r.get("data", "noise", d.noise);
  r.get("data", "stim_gain", d.stim_gain);
  r.get("data", "seed", d.seed);
  require(d.n_networks > 0 && d.n_categories > 0 && d.noise >= 0, rc.source,
          ": data.n_networks and data.n_categories must be positive, data.noise not negative");

  auto& t = rc.train;
  r.get("train", "steps", t.steps);
  r.get("train", "epochs", t.epochs);
  require(t.epochs >= 0, rc.source, ": train.epochs must not be negative");
  r.get("train", "batch_size", t.batch_size);
  r.get("train", "micro_batch", t.micro_batch);
  r.get("train", "warmup_steps", t.warmup_steps);
  r.get("train", "lr", t.optimizer.lr);
  r.get("train", "min_lr_ratio", t.min_lr_ratio);
  r.get("train", "beta1", t.optimizer.beta1);
  r.get("train", "beta2", t.optimizer.beta2);
  r.get("train", "eps", t.optimizer.eps);
  r.get("train", "weight_decay", t.optimizer.weight_decay);
  r.get("train", "grad_clip", t.optimizer.grad_clip);
  std::string strategy = "random";
  r.get("train", "mask_strategy", strategy);
  t.mask_strategy = model::parse_mask_strategy(strategy);
  r.get("train", "seed", t.seed);
  r.get("train", "log_every", t.log_every);
  r.get("train", "out", t.out);
  r.get("train", "validate_every", t.validate_every);
  r.get("train", "checkpoint_every", t.checkpoint_every);
  r.get("train", "keep_checkpoints", t.keep_checkpoints);
  r.get("train", "max_bad_steps", t.max_bad_steps);
  r.get("train", "comm", t.comm);
  r.get("train", "bucket_mb", t.bucket_mb);
  r.get("train", "zero", t.zero);
  r.get("train", "gpu_overlap", t.gpu_overlap);
  require(t.micro_batch >= 0, rc.source, ": train.micro_batch must not be negative");
  require(t.validate_every > 0 && t.checkpoint_every >= 0 && t.keep_checkpoints >= 1 && t.max_bad_steps >= 1,
          rc.source, ": train.validate_every, keep_checkpoints and max_bad_steps must be positive, checkpoint_every "
          "not negative");
  require(t.comm == "auto" || t.comm == "self" || t.comm == "mpi" || t.comm == "nccl", rc.source, ": train.comm is '",
          t.comm, "', expected auto, self, mpi or nccl");
  require(t.bucket_mb > 0, rc.source, ": train.bucket_mb must be positive");
  r.get("train", "device", t.device);
  r.get("train", "precision", t.precision);
  require(t.device == "auto" || t.device == "cpu" || t.device == "cuda", rc.source, ": train.device is '", t.device,
          "', expected auto, cpu or cuda");
  require(t.precision == "bf16" || t.precision == "fp32", rc.source, ": train.precision is '", t.precision,
          "', expected bf16 or fp32");
  require(t.steps > 0, rc.source, ": train.steps must be positive");
  require(t.batch_size > 0, rc.source, ": train.batch_size must be positive");
  require(t.optimizer.lr > 0, rc.source, ": train.lr must be positive");
  require(t.optimizer.beta1 >= 0 && t.optimizer.beta1 < 1 && t.optimizer.beta2 >= 0 && t.optimizer.beta2 < 1,
          rc.source, ": train.beta1 and train.beta2 must be in [0, 1)");
  require(t.log_every > 0, rc.source, ": train.log_every must be positive");
  r.check_all_used();
  return rc;
}

}  // namespace bfm::launch
