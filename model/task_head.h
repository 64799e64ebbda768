// A task head: a linear map from the pooled encoder output (MODEL_SPEC's `pooled`) to a downstream task's outputs,
// trained beside the encoder by fine-tuning (launch/train/finetune.h). Its loss and gradient are the fused kernel of
// kernels/task_head.h: cross-entropy over classes, or mean squared error against standardised targets.
//
// Parameters: one host arena [weight (O x D) | bias (O)], what an optimizer and the step engine see.
// Files (docs/EVALUATION.md, "Fine-tuned checkpoints"): task_head.safetensors (task_head.weight [O, D],
// task_head.bias [O], float32) and task.json (format "bfm-task-head", the task, its outputs, the loss, the target
// standardisation, and what the fine-tuning run adds); written and read here, and nowhere else.
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
  // A zero head for `task` with `outputs` outputs on a d_model-wide pooled feature.
  TaskHead(std::string task, bool classification, int outputs, int d_model);

  const std::string& task() const { return task_; }
  bool classification() const { return classification_; }
  int outputs() const { return outputs_; }
  int d_model() const { return d_model_; }
  // Regression: target_o = (value_o - target_mean_o) / target_scale_o (set by the trainer from its training rows).
  std::vector<float> target_mean, target_scale;

  // weight ~ N(0, 0.02) from (seed, 0x4ead), bias 0.
  void initialize(uint64_t seed);

  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  int64_t size() const { return int64_t(params_.size()); }
  const float* weight() const { return params_.data(); }                         // [O, D]
  const float* bias() const { return params_.data() + int64_t(outputs_) * d_model_; }  // [O]
  // AdamW's segments over params(): the weight decayed, the bias not.
  std::vector<runtime::ArenaSegment> segments() const;

  // The loss of rows of pooled features [B, D] divided by norm; labels [B] (classification) or raw target values
  // [B, O] (regression: standardised here). With d_pooled non-null, writes dLoss/dpooled [B, D] there and adds the
  // head's gradient into grads(). *correct (classification, may be null) += rows predicted right.
  double loss(const float* pooled, int B, const int32_t* labels, const float* values, double norm, float* d_pooled,
              int64_t* correct = nullptr);

 private:
  std::string task_;
  bool classification_ = false;
  int outputs_ = 0, d_model_ = 0;
  std::vector<float> params_, grads_;
  std::vector<float> targets_;  // scratch: standardised targets of the rows of a loss call
};

// The files of a head (name -> bytes): task_head.safetensors, and task.json with `extra` merged into it.
std::map<std::string, std::string> task_head_files(const TaskHead& head, const nlohmann::json& extra);
// Reads DIR/task.json and DIR/task_head.safetensors; throws bfm::Error naming the file: missing, not JSON, another
// format, tensors missing, of the wrong shape for d_model, or holding a non-finite value.
TaskHead load_task_head(const std::string& dir, int d_model);

}  // namespace bfm::model
