#!/usr/bin/env python3
"""Soak test (long; not in every CI run): kills a random rank of a pre-training job at a random moment, N times in a
row, each time rerunning the same command (which resumes from its newest good checkpoint), and checks that the final
weights and training losses are byte-identical to the same run straight through.

    /usr/bin/python3 tests/soak/kill_soak.py --bfm build/launch/bfm [--mpirun mpirun] [--ranks 2] [--kills 10]
                                              [--seed S] [--workdir DIR]
or  ctest -L long      (from the build folder)

A kill may land anywhere: in a step, in the all-reduce, while a checkpoint is written, before the first one. What
must hold: no rerun is refused, every rerun resumes from the newest checkpoint that is whole, and the end is the same.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from run_checks import rank_pids, tiny, train_losses  # noqa: E402

TINY = tiny(d_model=16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--workdir", default="soak-work")
    args = ap.parse_args()
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    rng = random.Random(args.seed)
    print(f"soak: seed {args.seed}, {args.kills} kills, {args.ranks} ranks, {args.steps} steps", flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    bfm = os.path.abspath(args.bfm)
    cfg = [*TINY, "--set", f"train.steps={args.steps}", "--set", "train.checkpoint_every=50",
           "--set", "train.keep_checkpoints=3", "--set", "train.validate_every=500", "--set", "train.log_every=100"]
    launch = [args.mpirun, "--oversubscribe", "-np", str(args.ranks), bfm, "pretrain", *cfg]

    straight = os.path.join(args.workdir, "straight")
    t0 = time.time()
    subprocess.run([*launch, "--out", straight], check=True, capture_output=True)
    duration = time.time() - t0
    print(f"soak: straight run {duration:.1f} s", flush=True)

    out = os.path.join(args.workdir, "killed")
    kills = 0
    while kills < args.kills:
        proc = subprocess.Popen([*launch, "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.2, duration * 0.6)
        time.sleep(delay)
        pids = rank_pids(out)
        if proc.poll() is not None or not pids:
            _, err = proc.communicate()
            if proc.returncode == 0:
                break  # it finished before the kill
            sys.exit(f"soak: a rerun failed by itself (exit {proc.returncode}): {err[-2000:]}")
        victim = rng.choice(sorted(pids))
        try:
            os.kill(pids[victim], signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=600)
        kills += 1
        resumed = re.findall(r"resumed from \S+ at step \d+", err)
        print(f"soak: kill {kills}: rank {victim} after {delay:.1f} s, mpirun exit {proc.returncode}"
              f"{'; ' + resumed[0] if resumed else ''}", flush=True)
        if "skipped a damaged checkpoint" in err:
            print("soak:   " + [l for l in err.splitlines() if "skipped" in l][0], flush=True)
    final = subprocess.run([*launch, "--out", out], capture_output=True, text=True)
    if final.returncode != 0:
        sys.exit(f"soak: the final rerun failed (exit {final.returncode}): {final.stderr[-2000:]}")
    a = open(os.path.join(straight, "release", "model.safetensors"), "rb").read()
    b = open(os.path.join(out, "release", "model.safetensors"), "rb").read()
    if a != b:
        sys.exit("soak: FAIL: the final weights differ from the run straight through")
    if train_losses(os.path.join(straight, "metrics.jsonl")) != train_losses(os.path.join(out, "metrics.jsonl")):
        sys.exit("soak: FAIL: the training losses differ from the run straight through")
    print(f"soak: ok: {kills} kills, final weights and losses byte-identical to the run straight through")


if __name__ == "__main__":
    main()
