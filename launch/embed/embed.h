// bfm embed: a released checkpoint's embeddings of data (the command line is launch/cli/cmd_embed.cpp).
//
// The data is a corpus (bfm synth / bfm convert), or scans (a BIDS folder, or 4-D NIfTI files, with an atlas) that
// are first converted into OUT/corpus with the preprocessing the checkpoint's corpus had (its config.json's
// data_provenance: detrending, scaling, target TR, confounds, scrubbing; launch/data/provenance.h), so that a new
// subject's scan reaches the model as the pre-training data did. The corpus is checked against the checkpoint: another
// atlas or parcel order is refused, other preprocessing is warned about.
//
// Every run is cut into windows of the model's length from time point 0 every `stride` points (default: the window,
// no overlap; a run shorter than a window gives none, with a note); each window's embedding is the model's `pooled`
// output (the mean of the encoder's tokens, as bfm forward writes it), the whole window visible. Windows are shared
// over the ranks of the world (round robin) and summed to rank 0, which writes OUT/embeddings.h5:
//   /windows/embedding [W, D] float32, /windows/run [W] int64 (row of /runs), /windows/start [W] int64 (time point),
//   /windows/start_s [W] float64 (start * the run's TR)
//   /runs/subject, /runs/study, /runs/task, /runs/source [R] strings, /runs/tr [R] float64, /runs/length [R] int64
//   /subjects/id [S] strings, /subjects/embedding [S, D] float32 (mean of the subject's windows), /subjects/windows [S]
// and with --csv OUT/windows.csv and OUT/subjects.csv (the same, one row per window / subject).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::launch {

struct EmbedOptions {
  std::string checkpoint, out;
  std::string corpus;              // a corpus folder, or:
  std::string bids, atlas;         // a BIDS folder (with the atlas), or:
  std::vector<std::string> scans;  // 4-D NIfTI files (with the atlas)
  int64_t stride = 0;              // 0: the model's window
  bool csv = false;
  std::string device = "auto";     // auto (a GPU where there is one) | cpu | cuda
  int batch = 0;                   // windows per forward; 0: 32 on the CPU, ~32k tokens on a GPU
};

// Runs on every rank of the world; returns the exit status. Needs HDF5 (and NIfTI for scans).
int embed(const EmbedOptions& options);

}  // namespace bfm::launch
