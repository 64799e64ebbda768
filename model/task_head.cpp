#include "model/task_head.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "io/json_file.h"
#include "base/rng.h"
#include "kernels/task_head.h"
#include "runtime/safetensors.h"

namespace bfm::model {

namespace fs = std::filesystem;

TaskHead::TaskHead(std::string task, bool classification, int outputs, int d_model, int tokens, int components)
    : task_(std::move(task)), classification_(classification), outputs_(outputs), d_model_(d_model), tokens_(tokens),
      components_(components) {
  require(outputs >= 1 && d_model >= 1 && tokens >= 1 && components >= 1 && components <= d_model, "task head '",
          task_, "': ", outputs, " outputs on ", tokens, " tokens of width ", d_model, " reduced to ", components);
  params_.assign(size_t(int64_t(components) * d_model + components + int64_t(outputs) * width() + outputs), 0.0f);
  grads_.assign(params_.size(), 0.0f);
}

void TaskHead::initialize(const std::vector<float>& proj_weight, const std::vector<float>& proj_bias) {
  require(int64_t(proj_weight.size()) == int64_t(components_) * d_model_ && int(proj_bias.size()) == components_,
          "task head '", task_, "': a projection of ", proj_weight.size(), " + ", proj_bias.size(), " values, ",
          components_, " x ", d_model_, " + ", components_, " needed");
  std::copy(proj_weight.begin(), proj_weight.end(), params_.begin());
  std::copy(proj_bias.begin(), proj_bias.end(), params_.begin() + int64_t(components_) * d_model_);
  std::fill(params_.begin() + (weight() - params_.data()), params_.end(), 0.0f);
}

std::vector<runtime::ArenaSegment> TaskHead::segments() const {
  const int64_t pw = int64_t(components_) * d_model_, w = int64_t(outputs_) * width();
  return {{0, pw, true}, {pw, components_, false}, {pw + components_, w, true}, {pw + components_ + w, outputs_, false}};
}

void TaskHead::project(const float* enc_out, int B, float* z) const {
  const int64_t D = d_model_, C = components_;
  const float* W = proj_weight();
  const float* bw = proj_bias();
  for (int64_t t = 0; t < int64_t(B) * tokens_; ++t) {
    const float* x = enc_out + t * D;
    for (int64_t c = 0; c < C; ++c) {
      double v = bw[c];
      for (int64_t a = 0; a < D; ++a) v += double(W[c * D + a]) * x[a];
      z[t * C + c] = float(v);
    }
  }
}

double TaskHead::loss(const float* enc_out, int B, const int32_t* labels, const float* values, double norm,
                      float* d_enc_out, int64_t* correct) {
  const int64_t D = d_model_, C = components_, NC = width();
  z_.resize(size_t(B * NC));
  project(enc_out, B, z_.data());
  float* g_proj = grads_.data();
  float* g_weight = g_proj + C * D + C;
  kernels::cpu::TaskHeadGrads g;
  if (d_enc_out) {
    d_z_.resize(z_.size());
    g = {d_z_.data(), g_weight, g_weight + int64_t(outputs_) * NC};
  }
  double loss = 0;
  if (classification_) {
    loss = kernels::cpu::task_head_cross_entropy(z_.data(), weight(), bias(), labels, B, int(NC), outputs_, norm, g,
                                                 correct);
  } else {
    targets_.resize(size_t(B) * outputs_);
    for (int64_t r = 0; r < B; ++r)
      for (int o = 0; o < outputs_; ++o)
        targets_[size_t(r * outputs_ + o)] =
            (values[r * outputs_ + o] - target_mean[size_t(o)]) / target_scale[size_t(o)];
    loss = kernels::cpu::task_head_mse(z_.data(), weight(), bias(), targets_.data(), B, int(NC), outputs_, norm, g);
  }
  if (!d_enc_out) return loss;
  // Back through the projection: its gradient summed over every token of the batch (float64), and each token's
  // dLoss/dx = sum_c dz[c] proj.weight[c, :].
  const float* W = proj_weight();
  std::vector<double> gw(size_t(C * D), 0.0), gb(size_t(C), 0.0);
  for (int64_t t = 0; t < int64_t(B) * tokens_; ++t) {
    const float* x = enc_out + t * D;
    const float* dz = d_z_.data() + t * C;
    float* dx = d_enc_out + t * D;
    std::fill(dx, dx + D, 0.0f);
    for (int64_t c = 0; c < C; ++c) {
      if (dz[c] == 0.0f) continue;
      gb[size_t(c)] += dz[c];
      for (int64_t a = 0; a < D; ++a) {
        gw[size_t(c * D + a)] += double(dz[c]) * x[a];
        dx[a] += dz[c] * W[c * D + a];
      }
    }
  }
  for (int64_t i = 0; i < C * D; ++i) g_proj[i] += float(gw[size_t(i)]);
  for (int64_t c = 0; c < C; ++c) g_proj[C * D + c] += float(gb[size_t(c)]);
  return loss;
}

std::map<std::string, std::string> task_head_files(const TaskHead& h, const nlohmann::json& extra) {
  const std::string st = runtime::encode_safetensors(
      "task_head.safetensors",
      {{"task_head.proj.weight", {h.components(), h.d_model()}, h.proj_weight()},
       {"task_head.proj.bias", {h.components()}, h.proj_bias()},
       {"task_head.weight", {int64_t(h.outputs()), h.width()}, h.weight()},
       {"task_head.bias", {h.outputs()}, h.bias()}},
      {{"task", h.task()}});
  nlohmann::json task = {
      {"format", "bfm-task-head"},
      {"format_version", 2},
      {"task", h.task()},
      {"outputs", h.outputs()},
      {"input", "tokens"},
      {"tokens", h.tokens()},
      {"components", h.components()},
      {"loss", h.classification() ? "cross_entropy" : "mse_standardised"},
      {"target_mean", h.target_mean},
      {"target_scale", h.target_scale},
  };
  task.update(extra);
  return {{"task_head.safetensors", st}, {"task.json", task.dump(2) + "\n"}};
}

TaskHead load_task_head(const std::string& dir, int d_model, int tokens) {
  const std::string json_path = (fs::path(dir) / "task.json").string();
  const nlohmann::json j =
      io::read_json_file(json_path, "missing (not a fine-tuned checkpoint: bfm finetune writes it)");
  require(j.is_object() && j.value("format", "") == "bfm-task-head", json_path, ": format is not \"bfm-task-head\"");
  require(j.value("input", "pooled") == "tokens", json_path, ": a head on the pooled output (input \"",
          j.value("input", "pooled"), "\", written by bfm before 2026-12-04); this bfm's heads take the encoder's "
          "tokens: fine-tune the checkpoint again");
  TaskHead h;
  try {
    const int file_tokens = j.at("tokens").get<int>(), outputs = j.at("outputs").get<int>(),
              components = j.at("components").get<int>();
    require(file_tokens == tokens, json_path, ": a head on ", file_tokens, " tokens, the model has ", tokens);
    require(outputs >= 1 && components >= 1 && components <= d_model, json_path, ": ", outputs, " outputs and ",
            components, " components per token; a head needs at least 1 of each and at most the model's width ",
            d_model, " components");
    h = TaskHead(j.at("task").get<std::string>(), j.at("loss").get<std::string>() == "cross_entropy", outputs, d_model,
                 tokens, components);
    h.target_mean = j.value("target_mean", std::vector<float>{});
    h.target_scale = j.value("target_scale", std::vector<float>{});
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(json_path, ": ", e.what());
  }
  require(h.classification() || (int(h.target_mean.size()) == h.outputs() && int(h.target_scale.size()) == h.outputs()),
          json_path, ": target_mean and target_scale need ", h.outputs(), " values each");
  const std::string st = (fs::path(dir) / "task_head.safetensors").string();
  const runtime::SafetensorsContents c = runtime::read_safetensors(st);
  auto take = [&](const char* name, std::vector<int64_t> shape, float* to) {
    auto it = c.tensors.find(name);
    require(it != c.tensors.end(), st, ": tensor ", name, " is missing");
    require(it->second.shape == shape, st, ": tensor ", name, " has shape ", shape_string(it->second.shape),
            ", a head of ", h.outputs(), " outputs on a model of width ", d_model, " needs ", shape_string(shape));
    for (float v : it->second.data) require(std::isfinite(v), st, ": tensor ", name, " holds a non-finite value");
    std::copy(it->second.data.begin(), it->second.data.end(), to);
  };
  // Each tensor where the head's own accessors say it lives in the arena.
  float* arena = h.params();
  auto at = [&](const float* p) { return arena + (p - arena); };
  const int64_t C = h.components(), D = d_model;
  take("task_head.proj.weight", {C, D}, at(h.proj_weight()));
  take("task_head.proj.bias", {C}, at(h.proj_bias()));
  take("task_head.weight", {int64_t(h.outputs()), h.width()}, at(h.weight()));
  take("task_head.bias", {h.outputs()}, at(h.bias()));
  return h;
}

}  // namespace bfm::model
