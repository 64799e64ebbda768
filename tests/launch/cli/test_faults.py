#!/usr/bin/env python3
"""Faults a job of several ranks must survive, with real MPI ranks and real signals:
  - a rank stopped (SIGSTOP) in the middle of training: the other ranks wait at most train.collective_timeout_s
    (without spinning a core), then report which collective, which step and which rank they waited for, and the job
    ends with exit status 76 so that a scheduler requeues it;
  - an error that every rank meets (a bad --set, a damaged shard) is printed once per job, not once per rank.

    /usr/bin/python3 tests/launch/cli/test_faults.py --bfm build/launch/bfm --mpirun mpirun --workdir DIR
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common"))
from run_checks import Cases, rank_pids, tiny, train_losses  # noqa: E402

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


TINY = tiny()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@case
def a_stopped_rank_ends_the_job_with_a_report_naming_it(bfm, mpirun, work):
    out = os.path.join(work, "stopped_rank")
    timeout = 6
    cmd = [mpirun, "--oversubscribe", "-np", "3", bfm, "pretrain", *TINY, "--set", "train.steps=1000000",
           "--set", "train.batch_size=12", "--set", "train.log_every=20", "--set", "train.checkpoint_every=0",
           "--set", f"train.collective_timeout_s={timeout}", "--out", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if re.search(r"step +100/", line):
                break
        pids = rank_pids(out)
        assert sorted(pids) == [0, 1, 2], f"ranks found: {pids}"
        stopped = pids[1]
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.time()
        # After the first second of a wait the others poll with pauses: rank 0 must not spin a core meanwhile.
        time.sleep(2.0)
        c0 = cpu_seconds(pids[0])
        time.sleep(2.0)
        busy = (cpu_seconds(pids[0]) - c0) / 2.0
        assert busy < 0.3, f"rank 0 used {busy:.0%} of a core while waiting for a stopped rank"
        rest, _ = proc.communicate(timeout=timeout + 60)
        elapsed = time.time() - t0
        text = "".join(lines) + rest
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 76, f"exit {proc.returncode}, expected 76: {text[-3000:]}"
    assert elapsed < timeout + 40, f"the job took {elapsed:.0f} s to end after the stop"
    reports = [l for l in text.splitlines() if "collective timeout" in l]
    assert reports, text[-3000:]
    # Every waiting rank that reports names the silent rank 1, the collective and the step; rank 0 always reports.
    assert any(l.startswith("bfm: error: collective timeout: rank 0 of 3") for l in reports), reports
    for line in reports:
        assert "for rank 1, which did not answer" in line and "step " in line and "(collective #" in line, line
        assert "train.collective_timeout_s = 6" in line, line
    # Rank 2 answered rank 0's question from inside the same collective.
    zero = next(l for l in reports if "rank 0 of 3" in l)
    assert "rank 2 waits in the same collective" in zero, zero


@case
def a_rank_stopped_in_a_checkpoint_write_ends_the_job(bfm, mpirun, work):
    # The checkpoint is collective HDF5 over MPI-IO, where the communicator's polled waits do not reach: a watchdog
    # must end the job with 76 and keep the damaged write under its temporary name, and the rerun resumes from the
    # checkpoint before it.
    out = os.path.join(work, "stopped_in_write")
    timeout = 6
    cmd = [mpirun, "--oversubscribe", "-np", "2", "-x", "BFM_FAULT_STOP=checkpoint:1:2", bfm, "pretrain", *TINY,
           "--set", "train.steps=300", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=100",
           "--set", "train.validate_every=1000", "--set", f"train.collective_timeout_s={timeout}", "--out", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids = {}
    try:
        t0 = time.time()
        while time.time() - t0 < 60 and proc.poll() is None:  # the ranks' pids, for the clean-up
            pids = rank_pids(out) or pids
            if len(pids) == 2:
                break
            time.sleep(0.2)
        text, _ = proc.communicate(timeout=timeout + 60)
        elapsed = time.time() - t0
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 76, f"exit {proc.returncode}, expected 76: {text[-3000:]}"
    assert elapsed < timeout + 40, f"the job took {elapsed:.0f} s to end"
    reports = [l for l in text.splitlines() if l.startswith("bfm: error: collective timeout")]
    assert len(reports) == 1, text[-3000:]
    assert "rank 0 of 2" in reports[0] and "checkpoint write at step 200" in reports[0], reports[0]
    finished = sorted(f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".h5"))
    assert finished == ["ckpt-00000100.h5"], finished
    again = subprocess.run([mpirun, "--oversubscribe", "-np", "2", *cmd[6:]], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resumed from \S*ckpt-00000100.h5 at step 100", again.stderr), again.stderr[-2000:]


@case
def a_rank_stopped_after_the_run_finished_does_not_hang_the_job(bfm, mpirun, work):
    # MPI_Finalize waits for every rank: a rank stopped after the work is done would keep the job forever. The other
    # rank ends after the deadline with 76 and says the outputs are whole; slurm/pretrain.sbatch reads status.json
    # ("finished") and neither fails nor requeues the job.
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    config = os.path.join(work, "run.toml")
    with open(config, "w") as f:
        f.write(subprocess.run([bfm, "config", "--defaults"], capture_output=True, text=True, check=True).stdout)
    out = os.path.join(work, "finished")
    env = dict(os.environ, SLURM_JOB_ID="4243", SLURM_NTASKS="2", SLURM_CPUS_PER_TASK="1", BFM=bfm,
               BFM_LAUNCH="mpirun", OMPI_MCA_rmaps_base_oversubscribe="1", BFM_FAULT_STOP="finished:1:1")
    proc = subprocess.Popen(["bash", os.path.join(root, "slurm", "pretrain.sbatch"), config, out, *TINY,
                             "--set", "train.steps=100", "--set", "train.collective_timeout_s=5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    pids = {}
    try:
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 120:
            pids = rank_pids(out) or pids
            time.sleep(0.2)
        text = proc.stdout.read()
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}: {text[-3000:]}"
    reports = [l for l in text.splitlines() if l.startswith("bfm: error: collective timeout")]
    assert len(reports) == 1 and "rank 0 of 2" in reports[0] and "MPI_Finalize" in reports[0], text[-3000:]
    assert "outputs are whole" in text and "requeueing" not in text, text[-2000:]
    assert os.path.exists(os.path.join(out, "release", "model.safetensors"))
    assert json.load(open(os.path.join(out, "status.json")))["state"] == "finished"


@case
def an_error_every_rank_meets_is_printed_once(bfm, mpirun, work):
    out = os.path.join(work, "bad_set")
    proc = subprocess.run([mpirun, "--oversubscribe", "-np", "3", bfm, "pretrain", "--set", "model.d_model=banana",
                           "--out", out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr}"
    text = proc.stdout + proc.stderr
    ours = [l for l in text.splitlines() if l.startswith("bfm")]
    assert len(ours) == 1, f"expected one line from bfm, got {ours}"
    assert "--set model.d_model=banana" in ours[0], ours[0]
    assert not os.path.exists(out), "a refused run created its output folder"


@case
def a_damaged_shard_is_named_once(bfm, mpirun, work):
    # One shard of the corpus is truncated: one line names it (whichever rank meets it first), the job ends with 2.
    corpus = os.path.join(work, "corpus")
    subprocess.run([bfm, "synth", "--subjects", "8", "--parcels", "8", "--minutes", "2", "--subjects-per-shard", "2",
                    "--out", corpus], check=True, capture_output=True)
    shards = sorted(f for f in os.listdir(corpus) if f.startswith("shard-"))
    victim = os.path.join(corpus, shards[1])  # read by rank 1 of 2 (shard i goes to rank i % ranks)
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:
        f.truncate(size // 2)
    out = os.path.join(work, "one_rank")
    proc = subprocess.run([mpirun, "--oversubscribe", "-np", "2", bfm, "pretrain", *TINY, "--set", "model.n_parcels=8",
                           "--set", "data.source=corpus",
                           "--set", f"data.corpus={corpus}", "--set", "train.steps=5", "--out", out],
                          capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}: {text[-3000:]}"
    ours = [l for l in text.splitlines() if re.match(r"bfm: (rank \d+: )?error", l)]
    assert len(ours) == 1 and shards[1] in ours[0], ours


def _damage(path, how):
    """Damages a checkpoint file as a failing disk or a killed copy would."""
    import h5py
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) * 2 // 3)
        return
    if how == "emptied":
        open(path, "w").close()
        return
    dataset = {"params": None, "rng_state": "/state/rng_state", "metrics_jsonl": "/state/metrics_jsonl",
               "config_json": "/state/config_json", "moments": "/optimizer/v"}[how]
    with h5py.File(path, "r") as f:
        if dataset is None:
            dataset = "/params/" + sorted(f["params"].keys())[0]
        offset = f[dataset].id.get_offset()
        size = f[dataset].id.get_storage_size()
    assert offset is not None and size > 0, (dataset, offset, size)
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)[0]
        f.seek(offset + size // 2)
        f.write(bytes([byte ^ 0x10]))


@case
def a_damaged_newest_checkpoint_is_skipped_for_the_previous_good_one(bfm, mpirun, work):
    # The newest checkpoint damaged in each way a failing disk or a killed copy does: the rerun says which it skipped
    # and why, resumes from the one before, and ends byte-identical to the run that was never interrupted.
    cfg = [*TINY, "--set", "train.steps=30", "--set", "train.checkpoint_every=10", "--set", "train.keep_checkpoints=5",
           "--set", "train.validate_every=10"]
    def launch(ranks):
        return [mpirun, "--oversubscribe", "-np", str(ranks), bfm] if ranks > 1 else [bfm]

    # Under two ranks the read is collective: every rank must reach the same verdict and skip the file together.
    for ranks, kinds in [(1, ["truncated", "emptied", "params", "moments", "rng_state", "metrics_jsonl",
                              "config_json"]), (2, ["params", "metrics_jsonl"])]:
        straight = os.path.join(work, f"straight{ranks}")
        subprocess.run([*launch(ranks), "pretrain", *cfg, "--out", straight], check=True, capture_output=True,
                       timeout=120)
        want = open(os.path.join(straight, "release", "model.safetensors"), "rb").read()
        want_metrics = train_losses(os.path.join(straight, "metrics.jsonl"))
        for how in kinds:
            out = os.path.join(work, f"{how}{ranks}")
            shutil.copytree(straight, out)
            shutil.rmtree(os.path.join(out, "release"))
            ckpts = os.path.join(out, "checkpoints")
            os.remove(os.path.join(ckpts, "ckpt-00000030.h5"))
            with open(os.path.join(ckpts, "latest"), "w") as f:
                f.write("ckpt-00000020.h5\n")
            _damage(os.path.join(ckpts, "ckpt-00000020.h5"), how)
            proc = subprocess.run([*launch(ranks), "pretrain", *cfg, "--out", out], capture_output=True, text=True,
                                  timeout=120)
            what = f"{how} ({ranks} ranks)"
            assert proc.returncode == 0, f"{what}: exit {proc.returncode}: {proc.stderr[-2000:]}"
            skipped = [l for l in proc.stderr.splitlines() if "skipped a damaged checkpoint" in l]
            assert len(skipped) == 1 and "ckpt-00000020.h5" in skipped[0], f"{what}: {skipped}"
            assert "ckpt-00000010.h5 at step 10" in proc.stderr, f"{what}: {proc.stderr[-2000:]}"
            got = open(os.path.join(out, "release", "model.safetensors"), "rb").read()
            assert got == want, f"{what}: the resumed run's weights differ from the uninterrupted run's"
            got_metrics = train_losses(os.path.join(out, "metrics.jsonl"))
            assert got_metrics == want_metrics, f"{what}: metrics.jsonl differs"
    # Every checkpoint damaged: an error naming the folder and each reason, nothing overwritten.
    out = os.path.join(work, "all_damaged")
    shutil.copytree(os.path.join(work, "straight1"), out)
    shutil.rmtree(os.path.join(out, "release"))
    before = open(os.path.join(out, "metrics.jsonl")).read()
    for name in ["ckpt-00000010.h5", "ckpt-00000020.h5", "ckpt-00000030.h5"]:
        _damage(os.path.join(out, "checkpoints", name), "truncated")
    proc = subprocess.run([bfm, "pretrain", *cfg, "--set", "train.steps=40", "--out", out], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no training checkpoint there can be resumed" in proc.stderr and proc.stderr.count("ckpt-000000") >= 3, \
        proc.stderr
    assert open(os.path.join(out, "metrics.jsonl")).read() == before, "metrics.jsonl was overwritten"


@case
def a_second_run_into_the_same_folder_is_refused(bfm, mpirun, work):
    # While a run trains into OUT, another into OUT is refused (exit 2, one line naming the folder and the holder) and
    # the first goes on untouched; once the first has ended (here SIGKILL: no stale lock) OUT can be resumed.
    out = os.path.join(work, "run")
    cmd = [bfm, "pretrain", *TINY, "--set", "train.steps=1000000", "--set", "train.log_every=50",
           "--set", "train.checkpoint_every=200", "--out", out]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:
            if re.search(r"step +500/", line):
                break
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, f"exit {second.returncode}: {second.stderr[-2000:]}"
        lines = [l for l in second.stderr.splitlines() if l]
        assert len(lines) == 1 and out in lines[0] and "in use by another run" in lines[0] and \
            f"pid {first.pid}" in lines[0], lines
        assert first.poll() is None, "the first run stopped"
    finally:
        first.kill()
        first.wait()
    metrics = [l for l in open(os.path.join(out, "metrics.jsonl"))]
    steps = [int(re.search(r'"step":(\d+)', l).group(1)) for l in metrics if '"train"' in l]
    assert steps == list(range(1, len(steps) + 1)), "metrics.jsonl was written by two runs"
    longer = [a if a != "train.steps=1000000" else "train.steps=100000000" for a in cmd]
    again = subprocess.Popen(longer, stderr=subprocess.PIPE, text=True)
    try:
        text = ""
        for line in again.stderr:
            text += line
            if "resumed from" in line or "error" in line:
                break
    finally:
        again.kill()
        again.wait()
    assert "resumed from" in text, text[-2000:]  # the lock died with the killed run


@case
def settings_changed_on_resume_are_named_key_by_key(bfm, mpirun, work):
    # The learning-rate schedule and the length may change on resume (each change is said); what decides the data
    # order may not (refused, naming each key, before anything is written).
    out = os.path.join(work, "run")
    base = [bfm, "pretrain", *TINY, "--set", "train.checkpoint_every=10", "--out", out]
    subprocess.run([*base, "--set", "train.steps=20"], check=True, capture_output=True, timeout=120)
    before = open(os.path.join(out, "metrics.jsonl")).read()
    refused = subprocess.run([*base, "--set", "train.steps=30", "--set", "data.noise=0.5", "--set", "data.seed=4"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert "data_order/data.noise 0.3 there, 0.5 now" in line and "data_order/data.seed 1 there, 4 now" in line, line
    assert "train.steps" not in line, line
    assert open(os.path.join(out, "metrics.jsonl")).read() == before, "a refused resume changed metrics.jsonl"
    again = subprocess.run([*base, "--set", "train.steps=30", "--set", "train.lr=0.0005"], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    noted = [l for l in again.stderr.splitlines() if "resuming with" in l]
    assert any("train.lr = 0.0005 (the checkpoint's run had 0.001)" in l for l in noted), noted
    assert any("train.steps = 30 (the checkpoint's run had 20)" in l for l in noted), noted
    assert len(noted) == 2, noted


@case
def a_nan_in_a_shard_is_named_by_the_loader(bfm, mpirun, work):
    # NaN written into a corpus by another tool (h5py keeps the chunk checksums good): training stops with one line
    # naming the shard, the run, its subject, the time point and the parcel, not a "diverged" run.
    import h5py
    corpus = os.path.join(work, "corpus")
    subprocess.run([bfm, "synth", "--subjects", "30", "--parcels", "8", "--minutes", "2", "--subjects-per-shard", "8",
                    "--out", corpus], check=True, capture_output=True)
    for name in sorted(f for f in os.listdir(corpus) if f.startswith("shard-")):
        with h5py.File(os.path.join(corpus, name), "r+") as f:
            for offset, length in zip(f["runs/offset"][:], f["runs/length"][:]):
                if length > 50:
                    f["runs/timeseries"][offset + 50, 3] = float("nan")
    proc = subprocess.run([bfm, "pretrain", *TINY, "--set", "model.n_parcels=8", "--set", "data.source=corpus",
                           "--set", f"data.corpus={corpus}", "--set", "train.steps=300",
                           "--out", os.path.join(work, "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    line = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"shard-0000\d\.h5: run \d+ \(subject '[^']+'\): /runs/timeseries holds nan at time point 50 of "
                     r"the run, parcel 3", line), line


@case
def a_full_disk_is_named_as_such(bfm, mpirun, work):
    # The checkpoint's temporary file is /dev/full (every write fails with ENOSPC, as on a full disk): one line that
    # names the file and "No space left on device", exit 2, nothing else printed (no HDF5 noise at exit).
    out = os.path.join(work, "run")
    os.makedirs(os.path.join(out, "checkpoints"))
    os.symlink("/dev/full", os.path.join(out, "checkpoints", ".ckpt-00000010.h5.partial"))
    proc = subprocess.run([bfm, "pretrain", *TINY, "--set", "train.steps=30", "--set", "train.checkpoint_every=10",
                           "--set", "train.log_every=100", "--out", out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    lines = proc.stderr.strip().splitlines()
    errors = [l for l in lines if "error" in l.lower() or "HDF5" in l]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    assert "ckpt-00000010.h5" in errors[0] and "No space left on device" in errors[0], errors[0]
    assert not os.path.exists(os.path.join(out, "checkpoints", "ckpt-00000010.h5"))


@case
def sigterm_and_sigint_stop_with_a_checkpoint_and_exit_75(bfm, mpirun, work):
    # slurm/pretrain.sbatch's own signal handling, run by bash with real mpirun ranks (the Slurm variables it reads
    # set by hand; tests/slurm runs it under a real slurmctld): SIGTERM or SIGINT to the batch script reaches the ranks
    # as SIGUSR1, they checkpoint, and the script exits 75 without requeueing. Then mpirun itself sent SIGTERM (as
    # scancel does to every process of a job): Open MPI's mpirun exits 1 whatever its ranks return, but the ranks
    # still stop with a checkpoint and OUT/status.json says so (the script reads it).
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    script = os.path.join(root, "slurm", "pretrain.sbatch")
    config = os.path.join(work, "run.toml")
    with open(config, "w") as f:
        f.write(subprocess.run([bfm, "config", "--defaults"], capture_output=True, text=True, check=True).stdout)
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_CPUS_PER_TASK="1", BFM=bfm,
               BFM_LAUNCH="mpirun", OMPI_MCA_rmaps_base_oversubscribe="1")
    args = [*TINY, "--set", "train.steps=1000000", "--set", "train.log_every=50", "--set", "train.checkpoint_every=0"]
    for sig in [signal.SIGTERM, signal.SIGINT]:
        out = os.path.join(work, f"run_{sig.name}")
        proc = subprocess.Popen(["bash", script, config, out, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        text = ""
        for line in proc.stdout:
            text += line
            if re.search(r"step +200/", line):
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=120)
        text += rest
        assert proc.returncode == 75, f"{sig.name}: exit {proc.returncode}: {text[-3000:]}"
        assert "requeueing" not in text, text[-2000:]
        assert os.path.exists(os.path.join(out, "checkpoints", "latest")), f"{sig.name}: no checkpoint"
        status = json.load(open(os.path.join(out, "status.json")))
        assert status["state"] == "stopped" and status["exit_status"] == 75, status
    out = os.path.join(work, "mpirun_term")
    proc = subprocess.Popen([mpirun, "--oversubscribe", "-np", "2", bfm, "pretrain", *args, "--out", out],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if re.search(r"step +200/", line):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    status = json.load(open(os.path.join(out, "status.json")))
    assert status["state"] == "stopped" and status["exit_status"] == 75, (proc.returncode, status)
    latest = open(os.path.join(out, "checkpoints", "latest")).read().strip()
    assert latest == "ckpt-%08d.h5" % status["step"], (latest, status)


@case
def a_nifti_header_claiming_huge_dimensions_is_named(bfm, mpirun, work):
    # A damaged header (dims 30000^4) on a small file, plain and gzipped: one line naming the file and its claimed
    # dims, exit 2, before anything is allocated for it (it was "out of memory").
    import gzip
    import struct
    import nibabel as nib
    import numpy as np
    scan, atlas = os.path.join(work, "scan.nii"), os.path.join(work, "atlas.nii")
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 10), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, scan)
    nib.save(nib.Nifti1Image((np.arange(64).reshape(4, 4, 4) % 3).astype(np.int16), np.eye(4)), atlas)
    raw = bytearray(open(scan, "rb").read())
    struct.pack_into("<5h", raw, 40, 4, 30000, 30000, 30000, 30000)  # dim[0..4]
    open(scan, "wb").write(raw)
    with open(scan, "rb") as f, gzip.open(scan + ".gz", "wb") as g:
        g.write(f.read())
    for path in [scan, scan + ".gz"]:
        out = os.path.join(work, "corpus" + str(len(path)))
        proc = subprocess.run([bfm, "convert", path, "--atlas", atlas, "--out", out], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, f"{path}: exit {proc.returncode}: {proc.stderr[-2000:]}"
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"bfm: error: {path}: its header claims dims [30000, 30000, 30000, 30000]"), line
        assert not os.path.exists(os.path.join(out, "manifest.json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    shutil.rmtree(args.workdir, ignore_errors=True)
    cases = Cases()
    for fn in CASES:
        work = os.path.join(args.workdir, fn.__name__)
        os.makedirs(work)
        cases.run(fn.__name__, fn, os.path.abspath(args.bfm), args.mpirun, work)
    sys.exit(1 if cases.failed else 0)


if __name__ == "__main__":
    main()
