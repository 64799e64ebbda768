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

TaskHead::TaskHead(std::string task, bool classification, int outputs, int d_model)
    : task_(std::move(task)), classification_(classification), outputs_(outputs), d_model_(d_model),
      params_(size_t(int64_t(outputs) * d_model + outputs), 0.0f), grads_(params_.size(), 0.0f) {
  require(outputs >= 1 && d_model >= 1, "task head '", task_, "': ", outputs, " outputs on a width of ", d_model);
}

void TaskHead::initialize(uint64_t seed) {
  Rng rng = Rng::stream(seed, 0x4ead);
  for (int64_t i = 0; i < int64_t(outputs_) * d_model_; ++i) params_[size_t(i)] = float(0.02 * rng.normal());
  std::fill(params_.begin() + int64_t(outputs_) * d_model_, params_.end(), 0.0f);
}

std::vector<runtime::ArenaSegment> TaskHead::segments() const {
  const int64_t w = int64_t(outputs_) * d_model_;
  return {{0, w, true}, {w, outputs_, false}};
}

double TaskHead::loss(const float* pooled, int B, const int32_t* labels, const float* values, double norm,
                      float* d_pooled, int64_t* correct) {
  kernels::cpu::TaskHeadGrads g;
  if (d_pooled) g = {d_pooled, grads_.data(), grads_.data() + int64_t(outputs_) * d_model_};
  if (classification_)
    return kernels::cpu::task_head_cross_entropy(pooled, weight(), bias(), labels, B, d_model_, outputs_, norm, g,
                                                 correct);
  targets_.resize(size_t(B) * outputs_);
  for (int64_t r = 0; r < B; ++r)
    for (int o = 0; o < outputs_; ++o)
      targets_[size_t(r * outputs_ + o)] =
          (values[r * outputs_ + o] - target_mean[size_t(o)]) / target_scale[size_t(o)];
  return kernels::cpu::task_head_mse(pooled, weight(), bias(), targets_.data(), B, d_model_, outputs_, norm, g);
}

std::map<std::string, std::string> task_head_files(const TaskHead& h, const nlohmann::json& extra) {
  const std::string st = runtime::encode_safetensors(
      "task_head.safetensors",
      {{"task_head.weight", {h.outputs(), h.d_model()}, h.weight()}, {"task_head.bias", {h.outputs()}, h.bias()}},
      {{"task", h.task()}});
  nlohmann::json task = {
      {"format", "bfm-task-head"},
      {"format_version", 1},
      {"task", h.task()},
      {"outputs", h.outputs()},
      {"input", "pooled"},
      {"loss", h.classification() ? "cross_entropy" : "mse_standardised"},
      {"target_mean", h.target_mean},
      {"target_scale", h.target_scale},
  };
  task.update(extra);
  return {{"task_head.safetensors", st}, {"task.json", task.dump(2) + "\n"}};
}

TaskHead load_task_head(const std::string& dir, int d_model) {
  const std::string json_path = (fs::path(dir) / "task.json").string();
  const nlohmann::json j =
      io::read_json_file(json_path, "missing (not a fine-tuned checkpoint: bfm finetune writes it)");
  require(j.is_object() && j.value("format", "") == "bfm-task-head", json_path, ": format is not \"bfm-task-head\"");
  TaskHead h;
  try {
    h = TaskHead(j.at("task").get<std::string>(), j.at("loss").get<std::string>() == "cross_entropy",
                 j.at("outputs").get<int>(), d_model);
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
  take("task_head.weight", {h.outputs(), d_model}, h.params());
  take("task_head.bias", {h.outputs()}, h.params() + int64_t(h.outputs()) * d_model);
  return h;
}

}  // namespace bfm::model
