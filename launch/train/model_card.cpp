#include "launch/train/model_card.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "launch/train/metrics.h"
#include "runtime/progress.h"

namespace bfm::launch {

namespace {
std::string losses_of(const nlohmann::json& j) {
  if (j.is_null()) return "none recorded";
  std::ostringstream os;
  os << "step " << j.value("step", 0) << ":";
  for (const char* k : {"loss", "mae", "causal", "contrastive"})
    if (j.contains(k)) os << " " << k << " " << j[k].get<double>();
  return os.str();
}
}  // namespace

std::string model_card(const CardInputs& in) {
  const model::ModelConfig& m = in.config;
  std::ostringstream os;
  os << "# bfm checkpoint\n\n"
     << "A brain transformer (MODEL_SPEC v1) pre-trained by `bfm pretrain` with objectives "
     << nlohmann::json(m.objectives()).dump() << ".\n\n"
     << "- Input: windows of " << m.window << " time points x " << m.n_parcels << " parcels (atlas " << m.atlas
     << "), patches of " << m.patch_len << " time points (" << m.n_tokens() << " tokens)\n"
     << "- Encoder: " << m.n_layers << " layers, width " << m.d_model << ", " << m.n_heads << " heads";
  if (m.mae && m.decoder)
    os << "; MAE decoder " << m.decoder->n_layers << " layers, width " << m.decoder->d_model << ", mask ratio "
       << m.mask_ratio;
  os << "\n";
  if (!in.data.empty()) os << "- Data: " << in.data << "\n";
  os << "- Training: " << in.steps << " steps";
  if (in.batch_size > 0) os << " of global batch " << in.batch_size;
  os << " over " << in.ranks << " rank" << (in.ranks > 1 ? "s" : "");
  if (in.seconds > 0) os << ", " << runtime::format_duration(in.seconds);
  os << "\n";
  if (!in.source_checkpoint.empty()) os << "- Exported from the training checkpoint `" << in.source_checkpoint << "`\n";
  os << "- Last training losses: " << losses_of(last_metrics_line(in.metrics_jsonl, "train")) << "\n"
     << "- Last held-out losses: " << losses_of(last_metrics_line(in.metrics_jsonl, "validation")) << "\n\n";
  if (!in.plot_file.empty()) os << "![losses](" << in.plot_file << ")\n\n";
  os << "Load it in PyTorch with the bfm Python package (`pip install ./python` in the bfm repository; "
        "`tools/load_checkpoint_example.py` runs this):\n\n"
     << "```python\nimport bfm, torch\n"
     << "model = bfm.BrainModel.from_pretrained(\"path/to/this/folder\")  # bfm.load_checkpoint(folder): config, "
        "state\n"
     << "x = bfm.preprocess(series, \"path/to/this/folder\", tr=" << (m.tr_seconds > 0 ? m.tr_seconds : 2.0)
     << ")  # one run's parcel means [T, " << m.n_parcels << "], preprocessed as the training data\n"
     << "embedding = model(torch.as_tensor(x[None, :" << m.window << "], dtype=torch.float32))[\"pooled\"]  # [1, "
     << m.d_model << "]\n```\n\n"
     << "Or from the command line: `bfm embed --checkpoint path/to/this/folder SCAN.nii.gz --atlas ATLAS --out OUT` "
        "(every window's and the subject's embedding).\n";
  return os.str();
}

}  // namespace bfm::launch
