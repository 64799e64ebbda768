#include "launch/train/run_config.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>

#include <toml++/toml.h>

#include "base/error.h"

namespace bfm::launch {

namespace {

// The TOML spelling of the two fields that are not written as themselves: model.objectives (the flags mae, causal
// and contrastive) and train.mask_strategy (an enum).
struct Spelled {
  std::vector<std::string> objectives;
  std::string mask_strategy;
};

// Every key of a run config, in the order `bfm config --defaults` prints them, with the comment printed beside it:
// the parser and the printer both walk this one list. `v.section(name, comment)` opens a table;
// `v.key(name, field, comment)` is a key and the field it sets. A key's default is the field's initialiser
// (run_config.h), not written here.
template <class Visitor>
void visit_keys(RunConfig& rc, Spelled& spelled, Visitor& v) {
  model::ModelConfig& m = rc.model;
  v.section("model", "");
  v.key("n_parcels", m.n_parcels, "P, parcels of the atlas");
  v.key("window", m.window, "T, time points per sample");
  v.key("patch_len", m.patch_len, "L, time points per token");
  v.key("d_model", m.d_model, "D");
  v.key("n_heads", m.n_heads, "H");
  v.key("n_layers", m.n_layers, "");
  v.key("mlp_ratio", m.mlp_ratio, "");
  v.key("objectives", spelled.objectives, "\"mae\" or \"causal\", optionally with \"contrastive\"");
  v.key("mask_ratio", m.mask_ratio, "");
  v.key("stim_dim", m.stim_dim, "S, size of the stimulus embedding (contrastive)");
  v.key("proj_dim", m.proj_dim, "E, size of the shared embedding (contrastive)");
  v.key("ln_eps", m.ln_eps, "");
  model::DecoderConfig& decoder = m.decoder ? *m.decoder : m.decoder.emplace();
  v.section("model.decoder", "the MAE decoder");
  v.key("d_model", decoder.d_model, "");
  v.key("n_heads", decoder.n_heads, "");
  v.key("n_layers", decoder.n_layers, "");
  v.section("model.loss_weights", "");
  v.key("mae", m.weight_mae, "");
  v.key("causal", m.weight_causal, "");
  v.key("contrastive", m.weight_contrastive, "");

  DataConfig& d = rc.data;
  v.section("data", "");
  v.key("source", d.source,
        "windows generated in memory with known structure | \"corpus\" (data.corpus = its folder)");
  v.key("corpus", d.corpus, "");
  v.key("stride", d.stride, "corpus: window starts every `stride` time points, jittered per epoch");
  v.key("memory_budget_mb", d.memory_budget_mb, "corpus: read-ahead per rank; what it leaves caches chunks");
  v.key("shuffle", d.shuffle,
        "corpus: \"window\" shuffles every window over the corpus | \"block\" (docs/TRAINING.md, Data order)");
  v.key("shuffle_blocks", d.shuffle_blocks,
        "shuffle = \"block\": blocks of 256 time points drawn together (the shuffle buffer)");
  v.key("read_threads", d.read_threads,
        "corpus: threads reading chunks per rank (0: 2 on a GPU rank, 1 on a CPU rank)");
  v.key("exclude_studies", d.exclude_studies,
        "corpus: studies (the runs' study names) left out of pre-training and its held-out loss, e.g. for a "
        "leave-one-study-out evaluation (bfm eval --heldout-study)");
  v.key("n_networks", d.n_networks, "");
  v.key("n_categories", d.n_categories, "");
  v.key("noise", d.noise, "observation noise relative to the network signals");
  v.key("stim_gain", d.stim_gain, "stimulus-driven response relative to intrinsic dynamics");
  v.key("seed", d.seed, "");

  TrainConfig& t = rc.train;
  v.section("train", "");
  v.key("steps", t.steps, "");
  v.key("epochs", t.epochs, "corpus data: > 0 trains this many passes over the training windows instead of `steps`");
  v.key("batch_size", t.batch_size, "global batch: windows per optimizer step over all ranks");
  v.key("micro_batch", t.micro_batch,
        "windows per forward/backward on one rank (0: batch_size / ranks); smaller = accumulation");
  v.key("warmup_steps", t.warmup_steps, "");
  v.key("lr", t.optimizer.lr, "");
  v.key("min_lr_ratio", t.min_lr_ratio, "cosine decay ends at lr * min_lr_ratio");
  v.key("beta1", t.optimizer.beta1, "");
  v.key("beta2", t.optimizer.beta2, "");
  v.key("eps", t.optimizer.eps, "");
  v.key("weight_decay", t.optimizer.weight_decay, "");
  v.key("grad_clip", t.optimizer.grad_clip, "");
  v.key("mask_strategy", spelled.mask_strategy, "random | tube | future");
  v.key("seed", t.seed, "");
  v.key("log_every", t.log_every, "");
  v.key("out", t.out, "");
  v.key("device", t.device, "auto: the GPU where the build and the machine have one, else the CPU | cpu | cuda");
  v.key("precision", t.precision, "GPU only: bf16 (bf16 activations, fp32 master weights) | fp32 (for checking)");
  v.key("validate_every", t.validate_every, "held-out loss every N steps");
  v.key("checkpoint_every", t.checkpoint_every,
        "training checkpoint (resumable) every N steps; 0: only on a stop signal and at the end");
  v.key("keep_checkpoints", t.keep_checkpoints, "the newest K training checkpoints are kept");
  v.key("max_bad_steps", t.max_bad_steps, "non-finite loss or gradient this many steps in a row stops the run");
  v.key("comm", t.comm, "gradient all-reduce: auto | self | mpi | nccl");
  v.key("bucket_mb", t.bucket_mb, "all-reduce bucket size: buckets start while backward goes on");
  v.key("gpu_overlap", t.gpu_overlap,
        "GPU ranks with NCCL: start the buckets' all-reduces during backward (not yet run on GPUs)");
  v.key("collective_timeout_s", t.collective_timeout_s,
        "a collective waiting longer (a rank stopped, hung or lost) stops the job, naming the ranks (exit 76); 0: never");
  v.key("zero", t.zero, "ZeRO-1: shard AdamW's moments over the ranks (reduce-scatter, update a shard, all-gather)");
}

Spelled spell(const RunConfig& rc) {
  return {rc.model.objectives(), model::to_string(rc.train.mask_strategy)};
}

// A double as a TOML float: the shortest text that reads back as the same value, plain or with an exponent,
// whichever is shorter ("0.75", "1e-5"; "1.0", never "1", which TOML would read as an integer).
std::string toml_float(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
  char buffer[64];
  std::string plain(buffer, std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed).ptr);
  if (plain.find('.') == std::string::npos) plain += ".0";
  std::string exponent(buffer,
                       std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific).ptr);
  const size_t e = exponent.find('e');  // "1e-05" -> "1e-5", "2.5e+01" -> "2.5e1"
  size_t digits = e + 1;
  if (exponent[digits] == '+') exponent.erase(digits, 1);
  else if (exponent[digits] == '-') ++digits;
  while (digits + 1 < exponent.size() && exponent[digits] == '0') exponent.erase(digits, 1);
  return exponent.size() < plain.size() ? exponent : plain;
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Prints the keys with their values and comments, the comments from column 24.
class DefaultsPrinter {
 public:
  explicit DefaultsPrinter(std::ostringstream& os) : os_(os) {}
  void section(const char* name, const char* comment) {
    if (!first_) os_ << "\n";
    first_ = false;
    line(std::string("[").append(name).append("]"), comment);
  }
  template <class T>
  void key(const char* name, const T& value, const char* comment) {
    line(std::string(name) + " = " + text(value), comment);
  }

 private:
  static std::string text(bool v) { return v ? "true" : "false"; }
  static std::string text(double v) { return toml_float(v); }
  static std::string text(const std::string& v) { return toml_string(v); }
  static std::string text(const std::vector<std::string>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ", ";
      out += toml_string(v[i]);
    }
    return out + "]";
  }
  template <class T>
    requires std::is_integral_v<T>
  static std::string text(T v) {
    return std::to_string(v);
  }
  void line(const std::string& content, const char* comment) {
    os_ << content;
    if (*comment) os_ << std::string(content.size() + 2 < 24 ? 24 - content.size() : 2, ' ') << "# " << comment;
    os_ << "\n";
  }
  std::ostringstream& os_;
  bool first_ = true;
};

// Reads the keys that a table holds into their fields (visit_keys); a key the table lacks keeps the field's value.
class Reader {
 public:
  // overridden: key path -> the --set assignment that gave it (errors about that key name the assignment).
  Reader(const toml::table& table, std::string source, std::map<std::string, std::string> overridden)
      : table_(table), source_(std::move(source)), overridden_(std::move(overridden)) {}

  void section(const char* name, const char*) { section_ = name; }
  template <class T>
  void key(const char* name, T& value, const char*) {
    const std::string path = section_ + "." + name;
    used_.push_back(path);
    const toml::node* node = table_.at_path(path).node();
    if (!node) return;
    const auto set = overridden_.find(path);
    const std::string where = (set != overridden_.end() ? "--set " + set->second : source_) + ": " + path;
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
  void check_table(const toml::table& table, const std::string& prefix) const {
    for (const auto& [k, node] : table) {
      const std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (const toml::table* sub = node.as_table()) {
        check_table(*sub, path);
        continue;
      }
      bool known = false;
      for (const auto& u : used_) known = known || u == path;
      const auto set = overridden_.find(path);
      require(known, set != overridden_.end() ? "--set " + set->second : source_, ": unknown key \"", path,
              "\" (see `bfm config --defaults` for every key)");
    }
  }

  const toml::table& table_;
  std::string source_;
  std::map<std::string, std::string> overridden_;
  std::string section_;
  std::vector<std::string> used_;
};

// "train.steps=100" -> sets train.steps in the table, the value parsed as TOML. Returns the key's path.
std::string apply_override(toml::table& table, const std::string& assignment) {
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
  return path;
}

}  // namespace

std::string default_config_toml() {
  RunConfig defaults;
  Spelled spelled = spell(defaults);
  std::ostringstream os;
  os << "# bfm run configuration (TOML). Every key is optional; these are the defaults.\n";
  DefaultsPrinter printer(os);
  visit_keys(defaults, spelled, printer);
  return os.str();
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides, bool model_only) {
  toml::table table;
  RunConfig rc;  // the defaults, which the file's keys replace
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
  std::map<std::string, std::string> overridden;
  for (const auto& o : overrides) overridden[apply_override(table, o)] = o;
  // The checks below name the file and the overrides together: a value may come from either.
  if (!overrides.empty()) {
    rc.source += " with --set";
    for (const auto& o : overrides) rc.source += " " + o;
  }

  Reader r(table, path.empty() ? "built-in defaults" : path, overridden);
  Spelled spelled = spell(rc);
  visit_keys(rc, spelled, r);

  auto& m = rc.model;
  m.mae = m.causal = m.contrastive = false;
  for (const auto& o : spelled.objectives) {
    if (o == "mae") m.mae = true;
    else if (o == "causal") m.causal = true;
    else if (o == "contrastive") m.contrastive = true;
    else fail(rc.source, ": model.objectives: unknown objective \"", o, "\" (known: mae, causal, contrastive)");
  }
  if (!m.mae) m.decoder.reset();
  m.validate(rc.source);

  const DataConfig& d = rc.data;
  require(d.source == "synthetic" || d.source == "corpus", rc.source, ": data.source \"", d.source,
          "\" is not one of \"synthetic\", \"corpus\"");
  require(model_only || d.source != "corpus" || !d.corpus.empty(), rc.source,
          ": data.source = \"corpus\" needs data.corpus (a folder)");
  require(d.stride > 0 && d.memory_budget_mb > 0, rc.source, ": data.stride and data.memory_budget_mb must be positive");
  require(d.shuffle == "window" || d.shuffle == "block", rc.source, ": data.shuffle \"", d.shuffle,
          "\" is not one of \"window\", \"block\"");
  require(d.shuffle_blocks > 0 && d.read_threads >= 0, rc.source,
          ": data.shuffle_blocks must be positive and data.read_threads not negative");
  require(d.n_networks > 0 && d.n_categories > 0 && d.noise >= 0, rc.source,
          ": data.n_networks and data.n_categories must be positive, data.noise not negative");

  TrainConfig& t = rc.train;
  require(t.epochs >= 0, rc.source, ": train.epochs must not be negative");
  t.mask_strategy = model::parse_mask_strategy(spelled.mask_strategy);
  require(t.micro_batch >= 0, rc.source, ": train.micro_batch must not be negative");
  require(t.validate_every > 0 && t.checkpoint_every >= 0 && t.keep_checkpoints >= 1 && t.max_bad_steps >= 1,
          rc.source, ": train.validate_every, keep_checkpoints and max_bad_steps must be positive, checkpoint_every "
          "not negative");
  require(t.comm == "auto" || t.comm == "self" || t.comm == "mpi" || t.comm == "nccl", rc.source, ": train.comm is '",
          t.comm, "', expected auto, self, mpi or nccl");
  require(t.bucket_mb > 0, rc.source, ": train.bucket_mb must be positive");
  require(t.collective_timeout_s >= 0, rc.source, ": train.collective_timeout_s must not be negative (0: no timeout)");
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
