// A task head on the encoder's output tokens, trained beside the encoder by fine-tuning (launch/train/finetune.h):
// every token reduced to C values by one linear map shared by all tokens (the projection, which the trainer
// initialises: from the principal components of the tokens, as the frozen probe's basis is), the N x C values of a
// window side by side, then a linear map to the task's outputs and its loss (the fused kernel of kernels/task_head.h on
// that [B, N*C] feature: cross-entropy over classes, or mean squared error against standardised targets).
//   z[b, n, c] = proj.weight[c, :] . x[b, n, :] + proj.bias[c]      x = encoder_out [B, N, D], z [B, N*C]
//   out[b, :]  = weight z[b, :] + bias                                weight [O, N*C], bias [O]
// Why the tokens and not the mean over them (MODEL_SPEC's `pooled`, this head's input until 2026-12-04): the mean over
// parcels averages away the spatial pattern that carries a stimulus. Measured (bench/RESULTS.md, "Does pre-training
// pay?"): the frozen probe went from 0.34 to 0.62 balanced accuracy with per-token features, and fine-tuning through
// the mean stayed below training from scratch.
//
// Parameters: one host arena [proj.weight (C x D) | proj.bias (C) | weight (O x N*C) | bias (O)], what an optimizer
// and the step engine see.
// Files (docs/EVALUATION.md, "Fine-tuned checkpoints"): task_head.safetensors (task_head.proj.weight [C, D],
// task_head.proj.bias [C], task_head.weight [O, N*C], task_head.bias [O], float32) and task.json (format
// "bfm-task-head", format_version 2, input "tokens", tokens N, components C, the task, its outputs, the loss, the
// target standardisation, and what the fine-tuning run adds); written and read here, and nowhere else.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/optimizer.h"

namespace bfm::model {

class TaskHead {
 public:
  TaskHead() = default;
  // A zero head for `task` with `outputs` outputs on `tokens` tokens of width d_model, each reduced to `components`.
  TaskHead(std::string task, bool classification, int outputs, int d_model, int tokens, int components);

  const std::string& task() const { return task_; }
  bool classification() const { return classification_; }
  int outputs() const { return outputs_; }
  int d_model() const { return d_model_; }
  int tokens() const { return tokens_; }
  int components() const { return components_; }
  int64_t width() const { return int64_t(tokens_) * components_; }  // N*C: the output map's input
  // Regression: target_o = (value_o - target_mean_o) / target_scale_o (set by the trainer from its training rows).
  std::vector<float> target_mean, target_scale;

  // The projection given (proj_weight [C, D], proj_bias [C]); the output map and its bias zero, so that training
  // starts from the loss of a constant prediction.
  void initialize(const std::vector<float>& proj_weight, const std::vector<float>& proj_bias);

  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  int64_t size() const { return int64_t(params_.size()); }
  const float* proj_weight() const { return params_.data(); }                                   // [C, D]
  const float* proj_bias() const { return proj_weight() + int64_t(components_) * d_model_; }    // [C]
  const float* weight() const { return proj_bias() + components_; }                              // [O, N*C]
  const float* bias() const { return weight() + int64_t(outputs_) * width(); }                  // [O]
  // AdamW's segments over params(): the two weights decayed, the biases not.
  std::vector<runtime::ArenaSegment> segments() const;

  // z [B, N*C] of encoder outputs [B, N, D].
  void project(const float* enc_out, int B, float* z) const;
  // The loss of windows' encoder outputs [B, N, D] divided by norm; labels [B] (classification) or raw target values
  // [B, O] (regression: standardised here). With d_enc_out non-null, writes dLoss/dencoder_out [B, N, D] there and adds
  // the head's gradient into grads(). *correct (classification, may be null) += rows predicted right.
  double loss(const float* enc_out, int B, const int32_t* labels, const float* values, double norm, float* d_enc_out,
              int64_t* correct = nullptr);

 private:
  std::string task_;
  bool classification_ = false;
  int outputs_ = 0, d_model_ = 0, tokens_ = 0, components_ = 0;
  std::vector<float> params_, grads_;
  std::vector<float> z_, d_z_, targets_;  // scratch of a loss call
};

// The files of a head (name -> bytes): task_head.safetensors, and task.json with `extra` merged into it.
std::map<std::string, std::string> task_head_files(const TaskHead& head, const nlohmann::json& extra);
// Reads DIR/task.json and DIR/task_head.safetensors for a model of width d_model and `tokens` encoder tokens; throws
// bfm::Error naming the file: missing, not JSON, another format, a head on the pooled output (format_version 1),
// tensors missing, of the wrong shape, or holding a non-finite value.
TaskHead load_task_head(const std::string& dir, int d_model, int tokens);

}  // namespace bfm::model
