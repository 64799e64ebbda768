// bfm forward --checkpoint DIR --input IN.h5 --output OUT.h5 [--grads GRADS.safetensors]
// The conformance interface of MODEL_SPEC.md: one deterministic float32 CPU pass of a released checkpoint.
#include <cmath>
#include <sstream>

#include <CLI/CLI.hpp>

#include "launch/cli/commands.h"
#include "model/released_checkpoint.h"
#include "runtime/device.h"
#include "base/error.h"
#include "model/placement.h"
#include "runtime/progress.h"
#include "runtime/safetensors.h"

#ifdef BFM_WITH_HDF5
#include "io/h5_arrays.h"
#endif

namespace bfm::launch {

namespace {
#ifdef BFM_WITH_HDF5
void require_shape(const std::string& file, const char* dataset, const std::vector<int64_t>& got,
                   const std::vector<int64_t>& want, const char* meaning) {
  require(got == want, file, ": dataset '", dataset, "' has shape ", shape_string(got), ", the checkpoint needs ",
          shape_string(want), " ", meaning);
}

void require_finite(const std::string& file, const char* dataset, const std::vector<float>& data) {
  for (size_t i = 0; i < data.size(); ++i)
    require(std::isfinite(data[i]), file, ": dataset '", dataset, "' holds a non-finite value (", data[i],
            ") at flat index ", i);
}

void write_losses(io::H5ArrayWriter& out, const model::Losses& losses) {
  if (losses.mae) out.write_scalar_f32("loss_mae", static_cast<float>(*losses.mae));
  if (losses.causal) out.write_scalar_f32("loss_causal", static_cast<float>(*losses.causal));
  if (losses.contrastive) out.write_scalar_f32("loss_contrastive", static_cast<float>(*losses.contrastive));
  if (losses.total) out.write_scalar_f32("loss_total", static_cast<float>(*losses.total));
}

void write_grads(const std::string& path, const model::BrainModel& model) {
  std::vector<float> grads(size_t(model.arena_size()));
  model.store_grads(grads.data());
  std::vector<runtime::TensorRef> tensors;
  for (const auto& p : model.layout().params()) tensors.push_back({p.name, p.shape, grads.data() + p.offset});
  runtime::write_safetensors(path, tensors, {{"format", "pt"}, {"what", "d loss_total / d parameter"}});
}

int run_forward(const std::string& checkpoint, const std::string& input, const std::string& output,
                const std::string& grads_path, const std::string& device, const std::string& precision) {
  const model::ModelConfig c = model::read_checkpoint_config(checkpoint);
  const model::Placement placement =
      model::choose_placement(c, device, model::parse_precision(precision), "bfm forward --device");
  const std::unique_ptr<model::BrainModel> model = model::load_released_checkpoint(checkpoint, placement);
  const int T = c.window, P = c.n_parcels, L = c.patch_len, N = c.n_tokens(), D = c.d_model;

  io::H5ArrayReader in(input);
  require(in.has("x"), input, ": missing dataset 'x' [B, T, P]");
  const io::Array<float> x = in.read_f32("x");
  require(x.shape.size() == 3 && x.shape[0] > 0, input, ": dataset 'x' has shape ", shape_string(x.shape),
          ", expected [B, ", T, ", ", P, "]");
  const int64_t B = x.shape[0];
  require_shape(input, "x", x.shape, {B, T, P}, "[B, window, n_parcels]");
  require_finite(input, "x", x.data);

  io::Array<uint8_t> mask;
  if (in.has("mask")) {
    mask = in.read_u8("mask");
    require_shape(input, "mask", mask.shape, {B, N}, "[B, N tokens]");
    for (size_t i = 0; i < mask.data.size(); ++i)
      require(mask.data[i] <= 1, input, ": dataset 'mask' holds ", int(mask.data[i]), " at flat index ", i,
              " (expected 0 or 1)");
    if (!c.mae) runtime::log_line(input + ": 'mask' ignored: the model has no mae decoder");
  }
  io::Array<float> stim;
  if (in.has("stim")) {
    stim = in.read_f32("stim");
    if (c.contrastive) {
      require_shape(input, "stim", stim.shape, {B, c.stim_dim}, "[B, stim_dim]");
      require_finite(input, "stim", stim.data);
    } else {
      runtime::log_line(input + ": 'stim' ignored: the model has no contrastive objective");
    }
  }

  model::Batch batch;
  batch.size = static_cast<int>(B);
  batch.x = x.data.data();
  batch.mask = mask.data.empty() ? nullptr : mask.data.data();
  batch.stim = (c.contrastive && !stim.data.empty()) ? stim.data.data() : nullptr;
  // With --grads, forward and backward in one pass (the loss the inputs allow); otherwise forward only.
  const bool want_grads = !grads_path.empty();
  // (The GPU back-end's fused mae loss needs a mask to back-propagate; the CPU's backs the contrastive loss alone.)
  const model::Losses losses = want_grads && (!c.mae || batch.mask != nullptr || !model->on_gpu())
                                   ? model->forward_backward(batch, 1.0f, {}, input)
                                   : model->forward(batch, input);
  io::H5ArrayWriter out(output);
  out.write_f32("encoder_out", {B, model->encoder_tokens(), D}, model->encoder_out().data());
  out.write_f32("pooled", {B, D}, model->pooled().data());
  if (const auto r = model->reconstruction(); !r.empty()) out.write_f32("reconstruction", {B, N, L}, r.data());
  if (const auto n = model->next_prediction(); !n.empty()) out.write_f32("next_pred", {B, N, L}, n.data());
  write_losses(out, losses);
  if (want_grads) {
    require(losses.total.has_value(), input, ": --grads needs a loss, and these inputs allow none (",
            c.mae ? "an mae model needs 'mask'" : "", c.contrastive ? "; contrastive needs 'stim'" : "", ")");
    write_grads(grads_path, *model);
  }
  out.commit();
  return 0;
}
#endif
}  // namespace

Command add_forward_command(CLI::App& app) {
  struct Options {
    std::string checkpoint, input, output, grads, device = "auto", precision = "fp32";
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "forward", "Run a released checkpoint once (MODEL_SPEC conformance interface): float32 on the CPU, or on the "
                 "GPU where there is one");
  cmd->add_option("--checkpoint", opt->checkpoint, "Released checkpoint folder")->required();
  cmd->add_option("--input", opt->input, "HDF5 file with x [B,T,P], optional mask [B,N] uint8, stim [B,S]")
      ->required();
  cmd->add_option("--output", opt->output, "HDF5 file to write (encoder_out, pooled, ..., losses)")->required();
  cmd->add_option("--grads", opt->grads, "Also write d loss_total / d parameters here (safetensors)");
  cmd->add_option("--device", opt->device, "auto (the GPU where there is one), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--precision", opt->precision, "On the GPU: fp32 (matches the CPU to about 1e-5) or bf16")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  return [opt]() -> int {
#ifdef BFM_WITH_HDF5
    return run_forward(opt->checkpoint, opt->input, opt->output, opt->grads, opt->device, opt->precision);
#else
    fail("bfm forward reads and writes HDF5, and this build has HDF5 off (BFM_WITH_HDF5=OFF)");
#endif
  };
}

}  // namespace bfm::launch
