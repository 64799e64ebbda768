// bfm embed --checkpoint DIR (--corpus DIR | --bids DIR --atlas A | SCAN.nii.gz ... --atlas A) --out OUT: a released
// checkpoint's embeddings of every window and subject. The job: launch/embed/embed.h.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "launch/cli/commands.h"
#include "launch/embed/embed.h"

namespace bfm::launch {

Command add_embed_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("embed", "Embeddings of every window and subject of a corpus or of scans");
  cmd->footer(
      "Scans (--bids or NIfTI files, with --atlas) are first converted into OUT/corpus with the preprocessing the "
      "checkpoint's corpus had (config.json's data_provenance). Data whose atlas or parcel order differs from the "
      "checkpoint's is refused; other preprocessing that differs is warned about. Writes OUT/embeddings.h5 "
      "(/windows/embedding [W, D] with /windows/run, start, start_s; /runs/...; /subjects/id and /subjects/embedding, "
      "the mean of the subject's windows) and with --csv OUT/windows.csv and OUT/subjects.csv. Over MPI ranks: "
      "mpirun -np R bfm embed ... (the same numbers).");
  auto o = std::make_shared<EmbedOptions>();
  cmd->add_option("--checkpoint", o->checkpoint, "Released checkpoint folder (model.safetensors, config.json)")
      ->required();
  cmd->add_option("--out", o->out, "Output folder")->required();
  cmd->add_option("--corpus", o->corpus, "Corpus folder (bfm synth / bfm convert)");
  cmd->add_option("--bids", o->bids, "BIDS dataset folder (converted with the checkpoint's preprocessing)");
  cmd->add_option("scans", o->scans, "4-D NIfTI scans (instead of --corpus or --bids)");
  cmd->add_option("--atlas", o->atlas, "3-D label NIfTI: the checkpoint's atlas (with --bids or scans)");
  cmd->add_option("--stride", o->stride, "Time points between window starts (default: the model's window)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--csv", o->csv, "Also write windows.csv and subjects.csv");
  cmd->add_option("--device", o->device, "auto (a GPU where there is one) | cpu | cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--batch", o->batch, "Windows per forward pass (default: 32 on the CPU, ~32k tokens on a GPU)")
      ->check(CLI::PositiveNumber);
  return [o]() -> int { return embed(*o); };
}

}  // namespace bfm::launch
