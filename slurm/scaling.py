#!/usr/bin/python3
"""Weak- and strong-scaling study of `bfm pretrain` on a Slurm cluster: submits the runs, waits for them, collects
their measurements into one CSV and PNG plots, beside a projection to hundreds of GPUs from a ring all-reduce model.

    /usr/bin/python3 slurm/scaling.py --max-ranks 64 --out scaling/ [--config run.toml] [--corpus DIR]
        [--steps 50] [--batch-per-rank 8] [--strong-batch B] [--gpus] [--cpus-per-task C] [--ranks-per-node R]
        [--sbatch-arg=--partition=gpu ...] [--set key=value ...] [--bandwidth-gbs 25] [--latency-us 10]
        [--project-to 512] [--serial] [--bfm PATH]
    /usr/bin/python3 slurm/scaling.py --out scaling/ --collect      (collect the finished jobs of an earlier call again)

Runs. Ranks p = 1, 2, 4, ... up to --max-ranks (and --max-ranks itself). Weak scaling keeps the work per rank:
global batch = --batch-per-rank x p. Strong scaling keeps the global batch (--strong-batch, default
--batch-per-rank x --max-ranks) and splits it over p ranks. Runs that coincide (same p and global batch) are
submitted once and count in both series. Each run is one job of slurm/pretrain.sbatch (so ranks start, bind to GPUs
and find each other exactly as in production) with p tasks, a short fixed number of steps (--steps), progress
logged only at the end, no checkpoint but the final one, no validation: on synthetic windows by default
(data.source = "synthetic", data made in memory), on a corpus with --corpus DIR (read through the prefetching
loader, so the data wait is the real one). --config (default `bfm config --defaults`) and --set shape the model.
The jobs run at once (each has its own allocation); --serial chains them (--dependency=afterany) so that they never
share a node's cores, as on a small cluster or one machine.

Measurements (from each run's last progress line, which averages over all its steps): samples/s, and the shares of
time the ranks waited for data ("data") and were blocked in communication ("comm", the all-reduce time not hidden
behind backward); compute is the rest. Per step: step_s = global_batch / samples_per_s, comm_s = step_s x comm share,
data_s = step_s x data share, compute_s = step_s - comm_s - data_s. Efficiency = samples_per_s(p) /
(p x samples_per_s(1)) within each series (1 for perfect scaling); speedup = samples_per_s(p) / samples_per_s(1).

Projection (the stated model). A data-parallel step on p ranks takes
    step(p) = compute(p) + data(p) + max(0, allreduce(p) - overlap x compute(p))
    allreduce(p) = 2 (p - 1) / p x bytes / bandwidth + 2 (p - 1) x latency         (ring all-reduce)
with bytes = parameters x --grad-bytes (4: fp32 gradients; the parameter count is the one bfm reports for the
config), bandwidth (--bandwidth-gbs, GB/s per rank's link) and latency (--latency-us, per ring step) given.
compute and data are the measured per-step times of the 1-rank run (--compute-ms overrides compute, e.g. with a
GPU's): the same for every p in weak scaling, divided by p in strong scaling (perfectly divisible work). --overlap
(default 0: none hidden) is the fraction of compute time that can hide the all-reduce behind backward. Projected
from 1 to --project-to ranks (powers of 2).

Output in --out: scaling.csv (one row per run and series), projection.csv (the model's rows), throughput.png
(samples/s against ranks, measured and projected, with the ideal), efficiency.png, time_split.png (per step:
compute, communication, data wait; measured bars and the projected split), jobs.json (the submitted jobs), logs/
(the jobs' logs) and runs/ (their output folders). Needs sbatch and scontrol on PATH (SLURM_CONF where the
cluster needs it) and matplotlib (Debian's python3-matplotlib) for the plots.
"""
import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAIN = os.path.join(HERE, "pretrain.sbatch")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
        "DEADLINE", "SPECIAL_EXIT"}


def die(message):
    print(f"scaling.py: {message}", file=sys.stderr)
    sys.exit(2)


def rank_series(max_ranks):
    ranks, p = [], 1
    while p < max_ranks:
        ranks.append(p)
        p *= 2
    ranks.append(max_ranks)
    return ranks


def plan(args):
    """The runs: {name: {ranks, batch, series: [...]}} in submission order."""
    strong_batch = args.strong_batch or args.batch_per_rank * args.max_ranks
    runs = {}
    for series in ("weak", "strong"):
        for p in rank_series(args.max_ranks):
            batch = args.batch_per_rank * p if series == "weak" else strong_batch
            if batch % p:
                die(f"strong scaling: the global batch {batch} does not split over {p} ranks "
                    "(choose --strong-batch divisible by every rank count)")
            name = f"p{p:04d}-b{batch}"
            runs.setdefault(name, {"name": name, "ranks": p, "batch": batch, "series": []})["series"].append(series)
    return list(runs.values())


def slurm(*argv):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def submit(args, runs, out):
    config = args.config
    if not config:
        config = os.path.join(out, "config.toml")
        with open(config, "w") as f:
            f.write(subprocess.run([args.bfm, "config", "--defaults"], capture_output=True, text=True,
                                   check=True).stdout)
    config = os.path.abspath(config)
    sets = [f"train.steps={args.steps}", f"train.log_every={args.steps}", "train.checkpoint_every=0",
            "train.validate_every=1000000000", "train.keep_checkpoints=1"]
    if args.corpus:
        sets += ['data.source="corpus"', f'data.corpus="{os.path.abspath(args.corpus)}"']
    else:
        sets += ['data.source="synthetic"']
    sets += args.set
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    env = dict(os.environ, BFM=os.path.abspath(args.bfm) if os.sep in args.bfm else args.bfm)
    previous = None
    for run in runs:
        p = run["ranks"]
        run_dir = os.path.join(out, "runs", run["name"])
        shutil.rmtree(run_dir, ignore_errors=True)  # bfm pretrain would resume from an earlier study's checkpoint
        run["log"] = os.path.join(out, "logs", run["name"] + ".log")
        if os.path.exists(run["log"]):
            os.remove(run["log"])
        argv = ["sbatch", "--parsable", f"--job-name=bfm-scaling-{run['name']}", f"--output={run['log']}",
                f"--ntasks={p}", f"--cpus-per-task={args.cpus_per_task}", "--no-requeue", f"--chdir={out}"]
        if args.ranks_per_node:
            argv += [f"--nodes={math.ceil(p / args.ranks_per_node)}",
                     f"--ntasks-per-node={min(p, args.ranks_per_node)}"]
        if args.gpus:
            argv += ["--gpus-per-task=1"]
        if args.serial and previous:
            argv += [f"--dependency=afterany:{previous}"]
        argv += args.sbatch_arg + [PRETRAIN, config, run_dir, "--set", f"train.batch_size={run['batch']}"]
        for s in sets:
            argv += ["--set", s]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode != 0:
            die(f"sbatch failed ({proc.returncode}) for {run['name']}: {proc.stderr.strip()}")
        run["job"] = proc.stdout.strip().split(";")[0]
        previous = run["job"]
        print(f"scaling.py: job {run['job']}: {p} rank(s), global batch {run['batch']} ({', '.join(run['series'])})",
              flush=True)
    with open(os.path.join(out, "jobs.json"), "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f, indent=1)


def job_state(job):
    rc, stdout, _ = slurm("scontrol", "show", "job", "-o", job)
    if rc != 0:
        return None  # gone from the controller: finished long enough ago
    m = re.search(r"\bJobState=(\S+)", stdout)
    return m.group(1) if m else None


def wait(runs, timeout, poll):
    deadline = time.time() + timeout if timeout else None
    pending = {r["job"] for r in runs}
    last_report = 0.0
    while pending:
        for job in sorted(pending):
            state = job_state(job)
            if state is None or state in DONE:
                pending.discard(job)
                for r in runs:
                    if r["job"] == job:
                        r["state"] = state or "FINISHED"
        if not pending:
            break
        if deadline and time.time() > deadline:
            for job in pending:
                slurm("scancel", job)
            die(f"jobs {', '.join(sorted(pending))} still unfinished after {timeout} s (cancelled)")
        if time.time() - last_report > 60:
            print(f"scaling.py: waiting for {len(pending)} job(s)", flush=True)
            last_report = time.time()
        time.sleep(poll)


SI = {"": 1.0, "k": 1e3, "M": 1e6}


def parse_log(path):
    """Parameters and the last progress line's samples/s, data and comm shares of one run's log."""
    text = open(path, errors="replace").read() if os.path.exists(path) else ""
    got = {}
    m = re.search(r"pretrain: (\d+) parameters", text)
    if m:
        got["params"] = int(m.group(1))
    lines = [l for l in text.splitlines() if re.search(r"step +\d+/\d+ \|.*samples/s", l)]
    if lines:
        last = lines[-1]
        m = re.search(r"([0-9.]+)([kM]?) samples/s", last)
        got["samples_per_s"] = float(m.group(1)) * SI[m.group(2)]
        m = re.search(r"data (\d+)%", last)
        got["data_share"] = int(m.group(1)) / 100 if m else 0.0
        m = re.search(r"comm (\d+)%", last)
        got["comm_share"] = int(m.group(1)) / 100 if m else 0.0
        m = re.search(r"step +(\d+)/", last)
        got["steps"] = int(m.group(1))
    return got, text


FIELDS = ["series", "ranks", "global_batch", "batch_per_rank", "steps", "samples_per_s", "speedup", "efficiency",
          "step_s", "compute_s", "comm_s", "data_s", "comm_share", "data_share", "params", "job", "state"]


def collect(runs):
    rows, failed = [], []
    for run in runs:
        got, text = parse_log(run["log"])
        if "samples_per_s" not in got:
            failed.append(f"{run['name']} (job {run['job']}, {run.get('state', '?')}): no progress line in "
                          f"{run['log']}:\n" + "\n".join(text.splitlines()[-8:]))
            continue
        step = run["batch"] / got["samples_per_s"]
        for series in run["series"]:
            rows.append({"series": series, "ranks": run["ranks"], "global_batch": run["batch"],
                         "batch_per_rank": run["batch"] // run["ranks"], "steps": got["steps"],
                         "samples_per_s": got["samples_per_s"], "step_s": step,
                         "comm_s": step * got["comm_share"], "data_s": step * got["data_share"],
                         "compute_s": step * (1 - got["comm_share"] - got["data_share"]),
                         "comm_share": got["comm_share"], "data_share": got["data_share"],
                         "params": got.get("params", ""), "job": run["job"], "state": run.get("state", "")})
    rows.sort(key=lambda r: (r["series"] != "weak", r["ranks"]))
    for series in ("weak", "strong"):
        base = [r for r in rows if r["series"] == series and r["ranks"] == 1]
        for r in rows:
            if r["series"] == series:
                r["speedup"] = r["samples_per_s"] / base[0]["samples_per_s"] if base else ""
                r["efficiency"] = r["speedup"] / r["ranks"] if base else ""
    return rows, failed


def allreduce_s(p, nbytes, bandwidth, latency):
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency if p > 1 else 0.0


def project(args, rows):
    """The model's rows for p = 1, 2, 4, ... --project-to, from the 1-rank measurements of each series."""
    out = []
    for series in ("weak", "strong"):
        base = [r for r in rows if r["series"] == series and r["ranks"] == 1]
        if not base or not base[0]["params"]:
            continue
        b = base[0]
        nbytes = b["params"] * args.grad_bytes
        compute1 = args.compute_ms / 1e3 if args.compute_ms else b["compute_s"]
        data1 = b["data_s"]
        rate1 = b["global_batch"] / (compute1 + data1)
        for p in rank_series(args.project_to):
            if series == "strong" and p > b["global_batch"]:
                break  # fewer than one window per rank
            div = p if series == "strong" else 1
            compute, data = compute1 / div, data1 / div
            ar = allreduce_s(p, nbytes, args.bandwidth_gbs * 1e9, args.latency_us * 1e-6)
            comm = max(0.0, ar - args.overlap * compute)
            step = compute + data + comm
            batch = b["global_batch"] * (p if series == "weak" else 1)
            rate = batch / step
            out.append({"series": series, "ranks": p, "global_batch": batch, "step_s": step, "compute_s": compute,
                        "data_s": data, "allreduce_s": ar, "comm_s": comm, "samples_per_s": rate,
                        "efficiency": rate / (p * rate1), "params": b["params"], "grad_bytes": nbytes,
                        "bandwidth_gbs": args.bandwidth_gbs, "latency_us": args.latency_us,
                        "overlap": args.overlap})
    return out


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(args, rows, proj, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"weak": "tab:blue", "strong": "tab:orange"}
    model = (f"ring all-reduce model: {args.bandwidth_gbs:g} GB/s, {args.latency_us:g} us, "
             f"{args.grad_bytes} B/parameter, overlap {args.overlap:g}")
    written = []

    def finish(fig, ax, name, title, ylabel, log_y):
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("ranks (GPUs or CPU processes)")
        ax.set_ylabel(ylabel)
        ax.set_title(title + "\n" + model, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in ("weak", "strong"):
        m = [r for r in rows if r["series"] == s]
        pr = [r for r in proj if r["series"] == s]
        if m:
            ax.plot([r["ranks"] for r in m], [r["samples_per_s"] for r in m], "o", color=colors[s], ms=7,
                    label=f"{s} scaling, measured")
        if pr:
            ax.plot([r["ranks"] for r in pr], [r["samples_per_s"] for r in pr], "-", color=colors[s],
                    label=f"{s} scaling, projected")
            ideal1 = pr[0]["samples_per_s"]
            ax.plot([r["ranks"] for r in pr], [ideal1 * r["ranks"] for r in pr], ":", color=colors[s], alpha=0.6,
                    label=f"{s} scaling, ideal")
    finish(fig, ax, "throughput.png", "bfm pretrain throughput", "samples/s (global)", True)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in ("weak", "strong"):
        m = [r for r in rows if r["series"] == s and r["efficiency"] != ""]
        pr = [r for r in proj if r["series"] == s]
        if m:
            ax.plot([r["ranks"] for r in m], [r["efficiency"] for r in m], "o", color=colors[s], ms=7,
                    label=f"{s} scaling, measured")
        if pr:
            ax.plot([r["ranks"] for r in pr], [r["efficiency"] for r in pr], "-", color=colors[s],
                    label=f"{s} scaling, projected")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylim(0, max([1.1] + [r["efficiency"] * 1.1 for r in rows if r["efficiency"] != ""]))
    finish(fig, ax, "efficiency.png", "scaling efficiency: samples/s(p) / (p x samples/s(1))", "efficiency", False)

    # Time per step split into compute, communication and data wait: measured bars, projected lines.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
    for ax, s in zip(axes, ("weak", "strong")):
        m = [r for r in rows if r["series"] == s]
        pr = [r for r in proj if r["series"] == s]
        if m:
            x = [r["ranks"] for r in m]
            w = [0.35 * r for r in x]  # bars of equal width on the log axis
            c = [r["compute_s"] * 1e3 for r in m]
            k = [r["comm_s"] * 1e3 for r in m]
            d = [r["data_s"] * 1e3 for r in m]
            ax.bar(x, c, w, color="tab:green", label="compute (measured)")
            ax.bar(x, k, w, bottom=c, color="tab:red", label="communication (measured)")
            ax.bar(x, d, w, bottom=[a + b for a, b in zip(c, k)], color="tab:gray", label="data wait (measured)")
        if pr:
            x = [r["ranks"] for r in pr]
            ax.plot(x, [r["compute_s"] * 1e3 for r in pr], "-", color="tab:green", label="compute (projected)")
            ax.plot(x, [r["comm_s"] * 1e3 for r in pr], "-", color="tab:red", label="communication (projected)")
            ax.plot(x, [r["data_s"] * 1e3 for r in pr], "-", color="tab:gray", label="data wait (projected)")
            ax.plot(x, [r["step_s"] * 1e3 for r in pr], "--", color="black", label="step (projected)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)  # linear: the stacked bars add up to the step
        ax.set_xlabel("ranks")
        ax.set_ylabel("ms per step")
        ax.set_title(f"{s} scaling: time per step", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(model, fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "time_split.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (CSV, PNGs, logs, runs)")
    ap.add_argument("--max-ranks", type=int, help="largest rank count (ranks 1, 2, 4, ... up to it)")
    ap.add_argument("--collect", action="store_true", help="only collect and plot the jobs of an earlier call")
    ap.add_argument("--config", help="bfm run config (default: bfm config --defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="bfm pretrain --set, repeatable")
    ap.add_argument("--corpus", help="corpus folder to read (default: synthetic windows made in memory)")
    ap.add_argument("--steps", type=int, default=50, help="steps per run (default 50)")
    ap.add_argument("--batch-per-rank", type=int, default=8, help="weak scaling: windows per rank per step")
    ap.add_argument("--strong-batch", type=int, default=0,
                    help="strong scaling: global batch (default --batch-per-rank x --max-ranks)")
    ap.add_argument("--cpus-per-task", type=int, default=1, help="CPU cores per rank")
    ap.add_argument("--ranks-per-node", type=int, default=0, help="ranks per node (default: as Slurm places them)")
    ap.add_argument("--gpus", action="store_true", help="one GPU per rank (--gpus-per-task=1)")
    ap.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                    help="extra sbatch option for every job, e.g. --sbatch-arg=--partition=gpu (repeatable)")
    ap.add_argument("--serial", action="store_true", help="run the jobs one after the other")
    ap.add_argument("--bfm", default=os.environ.get("BFM", "bfm"), help="the bfm binary (default $BFM or bfm)")
    ap.add_argument("--timeout", type=float, default=0, help="give up (and cancel) after this many seconds")
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between job state checks")
    ap.add_argument("--bandwidth-gbs", type=float, default=25.0,
                    help="model: all-reduce bandwidth per rank in GB/s (default 25: 200 Gb/s InfiniBand)")
    ap.add_argument("--latency-us", type=float, default=10.0, help="model: latency per ring step in us (default 10)")
    ap.add_argument("--grad-bytes", type=int, default=4, help="model: bytes per gradient value (default 4, fp32)")
    ap.add_argument("--overlap", type=float, default=0.0,
                    help="model: fraction of compute time that hides the all-reduce (default 0)")
    ap.add_argument("--compute-ms", type=float, default=0.0,
                    help="model: compute time per step at 1 rank in ms (default: the measured one)")
    ap.add_argument("--project-to", type=int, default=512, help="model: project up to this many ranks")
    args = ap.parse_args()
    out = os.path.abspath(args.out)

    if args.collect:
        path = os.path.join(out, "jobs.json")
        if not os.path.exists(path):
            die(f"{path}: no jobs to collect (run without --collect first)")
        saved = json.load(open(path))
        runs = saved["runs"]
        for k in ("bandwidth_gbs", "latency_us", "grad_bytes", "overlap", "compute_ms", "project_to"):
            if getattr(args, k) == ap.get_default(k):
                setattr(args, k, saved["args"][k])
    else:
        if not args.max_ranks or args.max_ranks < 1:
            die("--max-ranks N (N >= 1) is needed")
        if args.steps < 1 or args.batch_per_rank < 1 or args.cpus_per_task < 1:
            die("--steps, --batch-per-rank and --cpus-per-task must be positive")
        for tool in ("sbatch", "scontrol"):
            if not shutil.which(tool):
                die(f"no {tool} on PATH: run this where Slurm's client commands are")
        os.makedirs(out, exist_ok=True)
        runs = plan(args)
        submit(args, runs, out)
    wait(runs, args.timeout, args.poll)
    rows, failed = collect(runs)
    write_csv(os.path.join(out, "scaling.csv"), rows, FIELDS)
    proj = project(args, rows)
    write_csv(os.path.join(out, "projection.csv"), proj,
              ["series", "ranks", "global_batch", "step_s", "compute_s", "data_s", "allreduce_s", "comm_s",
               "samples_per_s", "efficiency", "params", "grad_bytes", "bandwidth_gbs", "latency_us", "overlap"])
    written = plot(args, rows, proj, out)
    print(f"scaling.py: {len(rows)} measurements -> {os.path.join(out, 'scaling.csv')}, "
          f"{len(proj)} projected -> {os.path.join(out, 'projection.csv')}; plots: "
          + ", ".join(os.path.basename(p) for p in written))
    for r in rows:
        eff = f"{r['efficiency']:.2f}" if r["efficiency"] != "" else "?"
        print(f"  {r['series']:6s} {r['ranks']:4d} ranks, batch {r['global_batch']:5d}: "
              f"{r['samples_per_s']:10.1f} samples/s, efficiency {eff}, per step "
              f"compute {r['compute_s'] * 1e3:.1f} ms, comm {r['comm_s'] * 1e3:.1f} ms, data {r['data_s'] * 1e3:.1f} ms")
    if failed:
        print("scaling.py: runs without a measurement:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
