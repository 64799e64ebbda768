#!/usr/bin/python3
"""Data scaling: does more pre-training data help downstream? The same model is pre-trained for the same steps on
the first N training subjects of one synthetic corpus (N = 10, 40, 160, 640 by default) and each checkpoint is
evaluated the same way, on the same held-out subjects; a CSV and a plot of the downstream metric against N.

    /usr/bin/python3 bench/data_scaling.py --out runs/data_scaling [--subjects 10,40,160,640] [--held-out 24]
        [--steps 1500] [--ranks 2] [--eval-ranks E] [--config configs/quickstart.toml] [--tasks category,embedding]
        [--fractions 0.1,1] [--synth-args "..."] [--eval-args "..."] [--set key=value ...] [--bfm build/launch/bfm]
        [--corpus DIR] [--plot-only]

One corpus, so that everything but N stays put (--corpus: an existing one, e.g. a converted BIDS study such as
bench/independent_study.py's; else `bfm synth` makes max(N) / 0.75 subjects (80 % train; the main job's
generator settings: 64 parcels, 20 minutes, 2 studies, 4 categories; --synth-args to change them)). For each N, a
view of that corpus (OUT/views/N: manifest.json whose train split is the first N training subjects in a seeded
order, the shards linked, not copied) is pre-trained (`mpirun -np R bfm pretrain --config C --set
data.corpus=VIEW --set train.steps=S`; with --ranks 1, no mpirun) and evaluated (`bfm eval --held-out H --tasks
... --fractions ...`) on the view of the first L training subjects (--labelled, default the smallest N) for every
N: the held-out subjects (the corpus' validation and test subjects) and the labelled subjects of the population
methods (ridge_pop, pca_pop, probe_pop: those L) are the same at every N, so what changes from one N to the next is
the pre-training data alone (ridge, ridge_pop, pca, pca_pop stay put; probe and probe_pop move with it; random_pop,
the untrained encoder at the probe's width, is the line pre-training has to clear). Every step
is skipped when its output is there (rerun to continue; --plot-only redraws). --repeats R pre-trains each N R
times (other train.seed values) and averages: one run's outcome varies a lot from seed to seed.

Outputs: OUT/data_scaling.csv (n_subjects, task, method, fraction, metric, mean, sd, n, per-subject values),
OUT/data_scaling_paired.csv (the largest N against the smallest, paired over the held-out subjects, 95 % t interval) and
OUT/data_scaling.png (the headline metric of each task against N, log scale, one line per method, mean with the
held-out subjects' spread, +-1 sd, and the chance level). Run on a cluster, each step is one command: the same
commands under slurm/pretrain.sbatch and slurm/eval.sbatch (the script prints them).
"""
import argparse
import csv
import json
import math
import os
import random
import shlex
import subprocess
import sys
from collections import defaultdict

HEADLINE = {"category": "balanced_accuracy", "embedding": "r", "retrieval": "top1", "encoding": "r"}
METHODS = ["ridge", "ridge_pop", "pca_pop", "stimridge_pop", "probe", "probe_pop", "random_pop", "clip"]


def sh(cmd, log):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log, "a") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        sys.exit(f"data_scaling: failed (exit {p.returncode}); see {log}")


def make_view(corpus, view, n, seed):
    """A corpus folder whose manifest trains on the first n training subjects (seeded order), shards linked."""
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    train = sorted(manifest["split"]["train"])
    random.Random(seed).shuffle(train)
    if n > len(train):
        sys.exit(f"data_scaling: the corpus has {len(train)} training subjects, fewer than {n}")
    os.makedirs(view, exist_ok=True)
    for name in os.listdir(corpus):
        if name != "manifest.json" and not os.path.exists(os.path.join(view, name)):
            os.symlink(os.path.abspath(os.path.join(corpus, name)), os.path.join(view, name))
    manifest["split"]["train"] = sorted(train[:n])
    with open(os.path.join(view, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(view, "manifest.json.tmp"), os.path.join(view, "manifest.json"))


def tag(n, repeat):
    """The folder name of size n's repeat (0: "N", then "N-rK")."""
    return str(n) if repeat == 0 else f"{n}-r{repeat}"


def collect(out, sizes, repeats):
    """data_scaling.csv's rows, and (task, method, fraction, metric) -> N -> subject -> its mean over folds and
    repeats."""
    rows, subject_values = [], defaultdict(dict)
    for n in sizes:
        # (task, method, fraction, metric) -> subject -> [its mean over folds, one per repeat]
        per = defaultdict(lambda: defaultdict(list))
        repeat_means = defaultdict(list)
        chance = {}
        for k in range(repeats):
            results = os.path.join(out, "eval", tag(n, k), "results.csv")
            if not os.path.exists(results):
                continue
            folds = defaultdict(lambda: defaultdict(list))
            for r in csv.DictReader(open(results)):
                key = (r["task"], r["method"], float(r["fraction"]), r["metric"])
                value = float(r["value"])
                if math.isfinite(value):  # a fold whose metric is undefined (one stimulus in its test set: r) is left
                    folds[key][r["subject"]].append(value)  # out, as bfm eval's summary leaves it out
            for key, subjects in folds.items():
                means = [sum(v) / len(v) for v in subjects.values()]
                repeat_means[key].append(sum(means) / len(means))
                for subject, v in subjects.items():
                    per[key][subject].append(sum(v) / len(v))
            for r in csv.DictReader(open(os.path.join(out, "eval", tag(n, k), "summary.csv"))):
                chance[(r["task"], r["metric"])] = r["chance"]
        for (task, method, fraction, metric), subjects in sorted(per.items()):
            values = [sum(v) / len(v) for v in subjects.values()]  # each subject: its mean over folds and repeats
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
            subject_values[(task, method, fraction, metric)][n] = {k: sum(v) / len(v) for k, v in subjects.items()}
            rows.append({"n_subjects": n, "task": task, "method": method, "fraction": fraction, "metric": metric,
                         "mean": mean, "sd": sd, "n": len(values), "chance": chance.get((task, metric), ""),
                         "repeat_means": " ".join(f"{v:.4f}" for v in repeat_means[(task, method, fraction, metric)]),
                         "values": " ".join(f"{v:.6g}" for v in values)})
    with open(os.path.join(out, "data_scaling.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["n_subjects", "task", "method", "fraction", "metric", "mean", "sd", "n",
                                          "chance", "repeat_means", "values"])
        w.writeheader()
        w.writerows(rows)
    return rows, subject_values


# Student's t 0.975 quantiles by degrees of freedom (printed tables); larger df: the normal's 1.96 plus a small term.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 23: 2.069, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df):
    below = [d for d in T975 if d <= df]
    return T975[max(below)] if below else T975[1]


def paired(out, subject_values):
    """The largest N against the smallest, subject by subject (the same held-out subjects at every N): the mean
    paired difference with its 95 % t interval (the table's df at or below n - 1, so slightly wide), one row per task,
    method, fraction and metric that moves with N. OUT/data_scaling_paired.csv."""
    rows = []
    for (task, method, fraction, metric), by_n in sorted(subject_values.items()):
        lo, hi = min(by_n), max(by_n)
        common = sorted(set(by_n[lo]) & set(by_n[hi]))
        if lo == hi or len(common) < 2:
            continue
        d = [by_n[hi][k] - by_n[lo][k] for k in common]
        mean = sum(d) / len(d)
        sd = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5
        if sd == 0 and mean == 0:
            continue  # a method that does not read the model (ridge, pca, oracle): the same at every N
        half = t975(len(d) - 1) * sd / len(d) ** 0.5
        rows.append({"task": task, "method": method, "fraction": fraction, "metric": metric, "n_low": lo,
                     "n_high": hi, "mean_difference": mean, "ci_low": mean - half, "ci_high": mean + half,
                     "n": len(d)})
    with open(os.path.join(out, "data_scaling_paired.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "method", "fraction", "metric", "n_low", "n_high",
                                          "mean_difference", "ci_low", "ci_high", "n"])
        w.writeheader()
        w.writerows(rows)
    return rows


def plot(out, rows, fraction):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = [t for t in HEADLINE if any(r["task"] == t for r in rows)]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = HEADLINE[task]
        chance = None
        found = sorted({r["method"] for r in rows if r["task"] == task and r["method"].split("@")[0] in METHODS},
                       key=lambda m: (METHODS.index(m.split("@")[0]), m))
        for method in found:
            # A point whose mean is not finite (no subject gave a value: a tiny corpus) is left out; an sd that is not
            # (one subject) is drawn as none.
            pts = sorted((r["n_subjects"], r["mean"], r["sd"] if math.isfinite(r["sd"]) else 0.0) for r in rows
                         if r["task"] == task and r["method"] == method and r["metric"] == metric
                         and abs(r["fraction"] - fraction) < 1e-9 and math.isfinite(r["mean"]))
            if not pts:
                continue
            xs, ms, sds = zip(*pts)
            # One colour per method across the panels (the panels hold different methods).
            ax.errorbar(xs, ms, yerr=sds, marker="o", capsize=3, label=method,
                        color=f"C{METHODS.index(method.split('@')[0]) % 10}")
            chance = chance or next((r["chance"] for r in rows if r["task"] == task and r["metric"] == metric), None)
        if chance not in (None, ""):
            ax.axhline(float(chance), color="grey", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("pre-training subjects")
        ax.set_ylabel(f"{metric} (held-out subjects, {fraction:.0%} of their data)")
        ax.set_title(task)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "data_scaling.png"), dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--subjects", default="10,40,160,640")
    ap.add_argument("--held-out", type=int, default=24, help="held-out subjects evaluated (the same for every N)")
    ap.add_argument("--labelled", type=int, default=0, help="pre-training subjects whose labels the population "
                    "methods use, the same at every N (default: the smallest N)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--eval-ranks", type=int, default=0, help="MPI ranks of bfm synth and of each evaluation "
                    "(default: --ranks): synth writes its shards in parallel and the evaluation's cross-validation "
                    "splits the held-out subjects over them, so on a GPU machine with many cores more ranks than "
                    "pre-training's pay")
    ap.add_argument("--config", default="configs/quickstart.toml")
    ap.add_argument("--tasks", default="category,embedding")
    ap.add_argument("--fractions", default="0.1,1")
    ap.add_argument("--synth-args", default="--parcels 64 --minutes 20 --studies 2 --stim-dim 16 --categories 4 "
                                            "--clips 200 --seed 7")
    ap.add_argument("--corpus", default="", help="an existing corpus (bfm convert of a BIDS study, another bfm synth) "
                    "instead of the one --synth-args makes; --set its model.n_parcels (and model.stim_dim)")
    ap.add_argument("--eval-args", default="", help="more bfm eval arguments, e.g. \"--labelled-subjects 10,all\"")
    ap.add_argument("--set", action="append", default=[], help="more bfm pretrain --set key=value")
    ap.add_argument("--seed", type=int, default=0, help="order in which training subjects join")
    ap.add_argument("--repeats", type=int, default=1, help="pre-training runs per N (the first with the config's "
                    "train.seed, then 1001, 1002, ...); the metric is averaged over them, their means listed")
    ap.add_argument("--bfm", default="build/launch/bfm")
    ap.add_argument("--plot-only", action="store_true")
    a = ap.parse_args()
    sizes = sorted(int(s) for s in a.subjects.split(","))
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "log")
    bfm = os.path.abspath(a.bfm)
    launch = [] if a.ranks == 1 else ["mpirun", "--oversubscribe", "-np", str(a.ranks)]
    eval_ranks = a.eval_ranks or a.ranks
    eval_launch = [] if eval_ranks == 1 else ["mpirun", "--oversubscribe", "-np", str(eval_ranks)]
    if not a.plot_only:
        corpus = os.path.abspath(a.corpus) if a.corpus else os.path.join(out, "corpus")
        if not a.corpus and not os.path.exists(os.path.join(corpus, "manifest.json")):
            total = int(max(sizes) / 0.75 + 0.999)  # synth's split: 80 % train by a hash, so some to spare
            sh([*eval_launch, bfm, "synth", "--subjects", str(total), "--out", corpus, *a.synth_args.split()], log)
        labelled = a.labelled or sizes[0]
        labelled_view = os.path.join(out, "views", f"labelled-{labelled}")
        make_view(corpus, labelled_view, labelled, a.seed)
        for n, k in [(n, k) for k in range(a.repeats) for n in sizes]:
            view = os.path.join(out, "views", str(n))
            make_view(corpus, view, n, a.seed)
            run = os.path.join(out, "runs", tag(n, k))
            if not os.path.exists(os.path.join(run, "release", "model.safetensors")):
                seed = [f"train.seed={1000 + k}"] if k > 0 else []
                sets = [x for s in [f"data.corpus=\"{view}\"", f"train.steps={a.steps}", *seed, *a.set]
                        for x in ("--set", s)]
                sh([*launch, bfm, "pretrain", "--config", a.config, *sets, "--out", run], log)
            report = os.path.join(out, "eval", tag(n, k))
            if not os.path.exists(os.path.join(report, "results.csv")):
                sh([*eval_launch, bfm, "eval", "--checkpoint", os.path.join(run, "release"), "--corpus", labelled_view,
                    "--out", report, "--held-out", str(a.held_out), "--population", "0", "--tasks", a.tasks,
                    "--fractions", a.fractions, "--no-predictions", *a.eval_args.split()], log)
    rows, subject_values = collect(out, sizes, a.repeats)
    differences = paired(out, subject_values)
    fraction = max(float(f) for f in a.fractions.split(","))
    plot(out, rows, fraction)
    print(f"data_scaling: {os.path.join(out, 'data_scaling.csv')}, {os.path.join(out, 'data_scaling.png')}")
    for task, metric in HEADLINE.items():
        for method in sorted({r["method"] for r in rows}):
            line = [f"{r['mean']:.3f}+-{r['sd']:.3f} ({r['repeat_means']})"
                    for r in sorted(rows, key=lambda r: r["n_subjects"])
                    if r["task"] == task and r["method"] == method and r["metric"] == metric
                    and abs(r["fraction"] - fraction) < 1e-9]
            if line:
                print(f"  {task} {metric} {method}: " + "  ".join(
                    f"N={n}: {v}" for n, v in zip(sorted({r['n_subjects'] for r in rows}), line)))
    for r in differences:
        if HEADLINE.get(r["task"]) == r["metric"]:
            print(f"  paired, N={r['n_high']} - N={r['n_low']}: {r['task']} {r['metric']} {r['method']} at "
                  f"{100 * r['fraction']:g} %: {r['mean_difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
                  f"over {r['n']} held-out subjects")


if __name__ == "__main__":
    main()
