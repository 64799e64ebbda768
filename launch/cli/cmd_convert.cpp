// bfm convert (--bids DIR | SCAN.nii.gz ...) --atlas ATLAS.nii.gz --out DIR: real scans into a corpus.
// The job itself (finding scans, sharding, resuming, parts of a job array): launch/data/convert.h.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "launch/cli/commands.h"
#include "launch/data/convert.h"

namespace bfm::launch {

Command add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert BIDS / NIfTI scans with an atlas into a corpus");
  cmd->footer(
      "With --bids, each run's *_events.tsv (found by BIDS inheritance, as the JSON sidecars) labels its time "
      "points: time point k (at k * TR after any --target-tr, plus the median of the sidecar's SliceTiming) takes the "
      "event whose [onset, onset + duration) holds it (the latest onset where several do), else label -1 and no "
      "stimulus. participants.tsv fills age, sex (M/F/male/female), the diagnosis (--diagnosis) and every other "
      "numeric column as a score. A malformed events file, participants.tsv or feature table is one error line "
      "naming the file and line (exit 2), found before anything is written; so is a confounds file (--confounds, "
      "--scrub) with another number of rows than the scan's volumes, a missing column or a non-numeric cell. "
      "docs/FORMAT.md, \"Bringing your own BIDS study\".");
#if defined(BFM_WITH_HDF5) && defined(BFM_WITH_NIFTI)
  auto o = std::make_shared<ConvertOptions>();
  cmd->add_option("scans", o->scans, "4-D NIfTI scans (instead of --bids)");
  cmd->add_option("--bids", o->bids, "BIDS dataset folder (fMRIPrep derivatives under derivatives/ preferred)");
  cmd->add_option("--atlas", o->atlas, "3-D label NIfTI, on any grid")->required();
  cmd->add_option("--out", o->out, "Corpus folder to write")->required();
  cmd->add_option("--target-tr", o->target_tr, "Resample every run in time to this TR (seconds; 0 keeps it)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--scaling", o->scaling, "Per-parcel scaling after detrending")
      ->check(CLI::IsMember({"zscore", "robust", "none"}));
  cmd->add_flag("--no-detrend", o->no_detrend, "Keep the linear trend");
  cmd->add_option("--confounds", o->confounds, "none|motion6|motion24|acompcor|FILE.json ({\"columns\": [names]}): "
                  "fMRIPrep's *_desc-confounds_timeseries.tsv columns beside each preprocessed BOLD, regressed out of "
                  "every parcel together with the constant and the linear trend (one least squares), before "
                  "--target-tr and scaling; n/a cells are 0. motion6: trans_x/y/z, rot_x/y/z; motion24: those with "
                  "their _derivative1, _power2, _derivative1_power2; acompcor: a_comp_cor_00..04")
      ->capture_default_str();
  cmd->add_option("--scrub", o->scrub, "FD (mm): drop the volumes whose framewise_displacement (n/a = 0) exceeds "
                  "FD, with their labels and stimulus rows (dropped, not interpolated; also left out of the "
                  "confound fit); not with --target-tr")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--scrub-min-length", o->scrub_min_length, "A run left with fewer volumes than this after --scrub "
                  "(the model window; bfm pretrain's default is 64) is skipped with a note")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--study", o->study, "Study name (default: the BIDS folder's name, or 'scans')");
  cmd->add_option("--subjects-per-shard", o->subjects_per_shard, "Subjects per shard file");
  cmd->add_option("--chunk-rows", o->chunk_rows,
                  "Time points per HDF5 chunk (smaller: fewer bytes read per random window; larger: bigger reads)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--label-column", o->label_column, "Column of each run's *_events.tsv whose values label the time "
                  "points (names -> 0, 1, ... in sorted order, the same over the whole study)")->capture_default_str();
  cmd->add_option("--stim-column", o->stim_column, "Column of *_events.tsv naming each event's stimulus")
      ->capture_default_str();
  cmd->add_option("--stim-features", o->stim_features, "Stimulus feature table: TSV/CSV with a header (first column "
                  "the stimulus, then numbers), HDF5 with datasets ids [M] and features [M, S], or .npz with arrays "
                  "ids and features; fills /runs/stim_embedding and the corpus' /stimuli table");
  cmd->add_flag("--allow-missing-stimuli", o->allow_missing_stimuli, "An event whose stimulus is not in "
                "--stim-features gets no stimulus (default: an error naming the events file and line)");
  cmd->add_option("--diagnosis", o->diagnosis, "COLUMN[=VALUE]: participants.tsv's diagnosis column, and the value "
                  "of the positive class (stored as VALUE, the other participants' as 'control'); default: the "
                  "column 'diagnosis', values as they are");
  cmd->add_option("--split-seed", o->split_seed, "Seed of the subject-level train/validation/test split");
  cmd->add_option("--train-fraction", o->train_fraction, "Fraction of subjects in train");
  cmd->add_option("--validation-fraction", o->validation_fraction, "Fraction of subjects in validation");
  cmd->add_flag("--overwrite", o->overwrite, "Delete the folder's shards and manifest first (default: resume); "
                "with --part, this part's shards");
  cmd->add_option("--part", o->part, "I/N: convert only the shards i with i % N == I and write no manifest (part I "
                  "of N independent jobs, e.g. a Slurm array; then --manifest-only)");
  cmd->add_flag("--manifest-only", o->manifest_only, "Only write manifest.json, once every --part job has written "
                "its shards (same options; names any missing shard)");
  return [o]() -> int { return convert(*o); };
#else
  (void)cmd;
  return []() -> int { fail("bfm convert needs HDF5 and nifti_clib, and this build lacks one of them"); };
#endif
}

}  // namespace bfm::launch
