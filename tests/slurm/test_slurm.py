#!/usr/bin/env python3
"""slurm/ under a real Slurm: munged, slurmctld and slurmd started on this machine in a temporary folder (one node
of 4 CPUs, so that two 2-rank jobs fit at once), the real scripts submitted with sbatch on CPU ranks and tiny data.

  - a 2-rank job finishes and leaves OUT/release (the released checkpoint) and OUT/checkpoints/latest;
  - a job sent SIGUSR1 part-way (as --signal=B:USR1@120 does before the time limit) checkpoints, requeues itself,
    resumes, and ends with exactly the parameters of the uninterrupted job (read with PyTorch from the released
    safetensors), its log holding both attempts;
  - the same with the mpirun launcher (for a Slurm without PMIx);
  - (while those two wait for their requeue) slurm/array.sh synth: a 3-task array of `bfm synth --part I/3` and
    the merge job after it give the corpus of one plain `bfm synth` (every dataset and attribute of every HDF5 file
    compared with h5py, manifest.json and ground_truth.json byte for byte);
  - slurm/array.sh eval: 2 parts of `bfm eval --part I/2` on that corpus and the merge job give one run's rows;
  - slurm/array.sh convert: a 3-task array of `bfm convert --part I/3` over a small BIDS dataset (5 subjects made
    with nibabel in MNI space, the real AICHA atlas from mricron-data) and its merge give a corpus that
    `bfm inspect --verify` passes, with the content of one plain `bfm convert`;
  - slurm/scaling.py with ranks 1 and 2 and a few steps on the synthetic corpus: scaling.csv with its weak and
    strong rows, projection.csv, and the three PNG plots.

    /usr/bin/python3 tests/slurm/test_slurm.py --bfm build/launch/bfm [--workdir DIR] [--keep]

Exits 0 with a SKIP line when munged, slurmctld or slurmd is not installed (scripts/setup.sh installs them).
Needs root (the daemons run as root, as in TOOLCHAIN.md). Every daemon is stopped by its pid and the folder removed,
whatever happens.
"""
import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SBATCH_SCRIPT = os.path.join(ROOT, "slurm", "pretrain.sbatch")
ARRAY_SCRIPT = os.path.join(ROOT, "slurm", "array.sh")
SCALING_SCRIPT = os.path.join(ROOT, "slurm", "scaling.py")
AICHA = "/usr/share/mricron/templates/AICHAmc.nii.gz"  # mricron-data: 192 labels, 2 mm, MNI space
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}

# A tiny model on synthetic windows: 2 ranks do 400 steps in about 2 s on 2 cores.
TINY = ["--set", "model.n_parcels=5", "--set", "model.window=12", "--set", "model.patch_len=4",
        "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
        "--set", "model.decoder.d_model=32", "--set", "model.decoder.n_heads=2", "--set", "model.decoder.n_layers=1",
        "--set", "train.batch_size=8", "--set", "train.log_every=10", "--set", "train.validate_every=100000",
        "--set", "train.checkpoint_every=0"]
STEPS = 1500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_conf(munge_socket):
    """slurm.conf lines every test cluster shares (this one and tests/multinode's): root daemons, munge on a private
    socket, PMIx, no cgroups, no accounting, nodes back in service by themselves."""
    return f"""\
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=30,socket={munge_socket}
SchedulerParameters=bf_interval=1
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true"""


class Slurm:
    """A one-node Slurm (munged, slurmctld, slurmd) living in `root`; `stop()` ends each daemon by its pid."""

    def __init__(self, root):
        self.root = root
        self.pids = {}
        host = socket.gethostname()
        for d in ["spool", "state", "log"]:
            os.makedirs(os.path.join(root, d))
        key = os.path.join(root, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_socket = os.path.join(root, "munge.sock")
        mem_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        p = lambda *names: os.path.join(root, *names)  # noqa: E731
        conf = f"""\
ClusterName=bfmtest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
{common_conf(self.munge_socket)}
SlurmctldPidFile={p("slurmctld.pid")}
SlurmdPidFile={p("slurmd.pid")}
SlurmdSpoolDir={p("spool")}
StateSaveLocation={p("state")}
SlurmctldLogFile={p("log", "slurmctld.log")}
SlurmdLogFile={p("log", "slurmd.log")}
SlurmdParameters=config_overrides
NodeName={host} CPUs=4 RealMemory={max(mem_mib - 1024, 512)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        self.conf = p("slurm.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in list(self.env):  # a job started inside another Slurm job must not inherit that job's settings
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "SLURM_CONF":
                del self.env[k]
        self.key = key

    def start(self):
        p = lambda *names: os.path.join(self.root, *names)  # noqa: E731
        key = self.key
        self._daemon("munged", [DAEMONS["munged"], f"--key-file={key}", f"--socket={self.munge_socket}",
                                f"--pid-file={p('munged.pid')}", f"--log-file={p('log', 'munged.log')}",
                                f"--seed-file={p('munged.seed')}"], p("munged.pid"))
        self._daemon("slurmctld", [DAEMONS["slurmctld"]], p("slurmctld.pid"))
        self._daemon("slurmd", [DAEMONS["slurmd"]], p("slurmd.pid"))
        deadline = time.time() + 30
        while self.cmd("sinfo", "-h", "-o", "%T", ok=False).stdout.strip() != "idle":
            if time.time() > deadline:
                raise AssertionError(f"the node did not become idle: {self.cmd('sinfo', ok=False).stdout}"
                                     f"{self.logs()}")
            time.sleep(0.2)

    def _daemon(self, name, argv, pid_file):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError(f"{name} did not start ({proc.returncode}): {proc.stderr.strip()}{self.logs()}")
        deadline = time.time() + 10
        while not os.path.exists(pid_file) or not open(pid_file).read().strip():
            if time.time() > deadline:
                raise AssertionError(f"{name} wrote no pid file {pid_file}{self.logs()}")
            time.sleep(0.05)
        self.pids[name] = int(open(pid_file).read().split()[0])

    def logs(self):
        text = ""
        for name in ["slurmctld.log", "slurmd.log", "munged.log"]:
            path = os.path.join(self.root, "log", name)
            if os.path.exists(path):
                text += f"\n--- {name} (end) ---\n" + "".join(open(path).readlines()[-15:])
        return text

    def cmd(self, *argv, ok=True):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if ok and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def submit(self, *argv, env=None):
        proc = subprocess.run(["sbatch", "--parsable", *argv], env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id):
        """The job's fields from `scontrol show job` (kept MinJobAge = 300 s after its end), {} once it is gone."""
        proc = self.cmd("scontrol", "show", "job", "-o", job_id, ok=False)
        if proc.returncode != 0:
            return {}
        return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv)

    def wait_done(self, job_id, timeout):
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                                            "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"):
                return info
            if time.time() > deadline:
                self.cmd("scancel", job_id, ok=False)
                raise AssertionError(f"job {job_id} still {info.get('JobState')} after {timeout} s{self.logs()}")
            time.sleep(0.2)

    def stop(self):
        # A failed test may leave jobs running: cancel every job of this private cluster while its controller is up,
        # so that no rank outlives the daemons.
        if "slurmctld" in self.pids:
            try:
                self.cmd("scancel", f"--user={os.getuid()}", ok=False)
                deadline = time.time() + 15
                while time.time() < deadline and self.cmd("squeue", "-h", ok=False).stdout.strip():
                    time.sleep(0.2)
            except Exception:  # noqa: BLE001 - the daemons are stopped below whatever happens here
                pass
        for name in ["slurmd", "slurmctld", "munged"]:  # clients before the authority they need
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)


def _params(folder):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from bfm import model as bfm_torch
    return bfm_torch.load_checkpoint(folder)[1]


def same_params(a_dir, b_dir):
    a, b = _params(a_dir), _params(b_dir)
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    differ = [k for k in a if not bool((a[k] == b[k]).all())]
    assert not differ, f"{b_dir} differs from {a_dir} in {differ}"


def submit_pretrain(slurm, work, name, bfm, extra_env=None, steps=STEPS):
    config = os.path.join(work, "run.toml")
    if not os.path.exists(config):
        with open(config, "w") as f:
            f.write(subprocess.run([bfm, "config", "--defaults"], capture_output=True, text=True,
                                   check=True).stdout)
    out, log = os.path.join(work, name), os.path.join(work, name + ".log")
    job = slurm.submit("--ntasks=2", "--cpus-per-task=1", f"--output={log}", f"--chdir={work}",
                       f"--job-name={name}", SBATCH_SCRIPT, config, out, *TINY, "--set", f"train.steps={steps}",
                       env=dict(extra_env or {}, BFM=bfm))
    return job, out, log


def read(path):
    return open(path).read() if os.path.exists(path) else "(no log)"


def check_finished(slurm, job, out, log, timeout=90):
    info = slurm.wait_done(job, timeout)
    text = read(log)
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", f"{info}\n{text[-3000:]}"
    assert os.path.exists(os.path.join(out, "release", "model.safetensors")), text[-3000:]
    latest = open(os.path.join(out, "checkpoints", "latest")).read().strip()
    assert latest == f"ckpt-{STEPS:08d}.h5", latest
    assert f"step {STEPS}/{STEPS}" in text and "released checkpoint" in text, text[-3000:]
    return info, text


def submit_and_signal(slurm, bfm, work, name, extra_env=None):
    """Submits the run and sends the batch shell SIGUSR1 once training has begun, as --signal=B:USR1@120 does
    before the time limit."""
    job, out, log = submit_pretrain(slurm, work, name, bfm, extra_env=extra_env)
    deadline = time.time() + 60
    while not re.search(r"step +[1-9]\d*0/%d" % STEPS, read(log)):
        assert time.time() < deadline and slurm.job(job).get("JobState") in ("PENDING", "RUNNING"), read(log)
        time.sleep(0.05)
    slurm.cmd("scancel", "--signal=USR1", "--batch", job)
    return job, out, log


def check_resumed(slurm, job, out, log, straight):
    """The signalled job checkpointed, requeued itself (Slurm starts it again after about a minute, once its
    credentials have expired), resumed, and ended with the parameters of the uninterrupted run `straight`."""
    info, text = check_finished(slurm, job, out, log, timeout=150)
    assert info.get("Restarts") == "1", f"expected one requeue: {info}\n{text[-3000:]}"
    attempts = re.findall(r"pretrain.sbatch: job \d+ attempt (\d+)", text)
    assert attempts == ["1", "2"], f"the log must hold both attempts: {attempts}\n{text[-3000:]}"
    first, second = text.split("attempt 2", 1)
    assert "bfm exited with status 75" in first and "requeueing job" in first, first[-3000:]
    assert "stopped by a signal" in first and "released checkpoint" not in first, first[-3000:]
    m = re.search(r"resumed from \S*ckpt-(\d+)\.h5 at step (\d+)", second)
    assert m and 0 < int(m.group(2)) < STEPS, second[-3000:]
    same_params(os.path.join(straight, "release"), os.path.join(out, "release"))
    return int(m.group(2)), text


# ---- job arrays: bfm synth and bfm convert in parts, then the merge job

# 8 shards (3, 3 and 2 per array task); the scaling runs train on it too (its validation subject holds 14 windows).
SYNTH = ["--subjects", "30", "--subjects-per-shard", "4", "--parcels", "16", "--minutes", "2", "--studies", "2",
         "--stim-dim", "4", "--seed", "5"]


def run_local(argv, ok=True):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def submit_array(slurm, bfm, work, what, parts, bfm_args):
    """slurm/array.sh WHAT PARTS: the array job and its merge job; returns both ids."""
    proc = subprocess.run([ARRAY_SCRIPT, what, str(parts), f"--chdir={work}", "--cpus-per-task=1", "--",
                           *bfm_args], env=dict(slurm.env, BFM=bfm), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"array.sh {what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    array, merge = proc.stdout.strip().splitlines()[-1].split()
    return array, merge


def array_logs(work, what, array, merge):
    text = ""
    for name in sorted(os.listdir(work)):
        if name.startswith((f"bfm-{what}-{array}_", f"bfm-{what}-merge-{merge}")):
            text += f"--- {name}\n" + read(os.path.join(work, name))[-1500:]
    return text


def check_array_done(slurm, work, what, array, merge, parts, timeout=120):
    info = slurm.wait_done(merge, timeout)
    logs = array_logs(work, what, array, merge)
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", f"merge job: {info}\n{logs}"
    for i in range(parts):
        text = read(os.path.join(work, f"bfm-{what}-{array}_{i}.log"))
        assert f"part {i}/{parts} done" in text, f"array task {i}:\n{text[-2000:]}\n{logs}"
    assert "merged" in read(os.path.join(work, f"bfm-{what}-merge-{merge}.log")), logs


def h5_contents(path):
    """{name: value} of every dataset and attribute of an HDF5 file, read with h5py."""
    import h5py
    import numpy as np
    got = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                got[f"{name}@{k}"] = np.asarray(v)
            if isinstance(obj, h5py.Dataset):
                got[name] = (obj.dtype.str, obj[()])
        visit("/", f)
        f.visititems(visit)
    return got


def same_corpus(plain, parted):
    """The two folders hold the same files; the HDF5 ones the same datasets and attributes, the others the same
    bytes."""
    import numpy as np

    def equal(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)  # NaN: a missing value
        return np.array_equal(a, b)

    names = sorted(os.listdir(plain))
    assert sorted(os.listdir(parted)) == names, (sorted(os.listdir(parted)), names)
    for name in names:
        a, b = os.path.join(plain, name), os.path.join(parted, name)
        if name.endswith(".h5"):
            x, y = h5_contents(a), h5_contents(b)
            assert x.keys() == y.keys(), (name, sorted(set(x) ^ set(y)))
            for k in x:
                if isinstance(x[k], tuple):
                    assert x[k][0] == y[k][0] and equal(x[k][1], y[k][1]), f"{name}: {k} differs"
                else:
                    assert equal(x[k], y[k]), f"{name}: attribute {k} differs: {x[k]} != {y[k]}"
        else:
            assert open(a, "rb").read() == open(b, "rb").read(), f"{name} differs"
    return names


def submit_synth_array(slurm, bfm, work):
    """Submits the 3-part synth array and its merge job: their ids and the corpus folder (check_synth_result)."""
    out = os.path.join(work, "synth_array")
    return submit_array(slurm, bfm, work, "synth", 3, [*SYNTH, "--out", out]), out


def check_synth_result(slurm, bfm, work, jobs, out):
    check_array_done(slurm, work, "synth", *jobs, 3)
    plain = os.path.join(work, "synth_plain")
    run_local([bfm, "synth", *SYNTH, "--out", plain])
    names = same_corpus(plain, out)
    assert names == ["ground_truth.h5", "ground_truth.json", "manifest.json"] + \
        [f"shard-{j:05d}.h5" for j in range(8)], names
    return names


def check_eval_array(slurm, bfm, work, corpus):
    """slurm/array.sh eval: 2 parts over the held-out subjects and the merge job give the rows of one bfm eval."""
    ckpt = os.path.join(work, "eval_ckpt")
    run_local([bfm, "init", "--out", ckpt, "--seed", "3", "--set", "model.n_parcels=16", "--set", "model.window=8",
               "--set", "model.patch_len=4", "--set", "model.d_model=8", "--set", "model.n_heads=2",
               "--set", "model.n_layers=1", "--set", "model.decoder.d_model=8", "--set", "model.decoder.n_heads=2",
               "--set", "model.decoder.n_layers=1"])
    args = ["--checkpoint", ckpt, "--corpus", corpus, "--tasks", "category,embedding,retrieval,diagnosis",
            "--fractions", "0.5,1", "--folds", "3", "--device", "cpu"]
    report = os.path.join(work, "eval_array")
    jobs = submit_array(slurm, bfm, work, "eval", 2, [*args, "--out", report])
    check_array_done(slurm, work, "eval", *jobs, 2)
    plain = os.path.join(work, "eval_plain")
    run_local([bfm, "eval", *args, "--out", plain])
    rows = lambda d: sorted(read(os.path.join(d, "results.csv")).splitlines()[1:])
    a, b = rows(plain), rows(report)
    assert a == b and len(a) > 20, f"merged array rows differ from one run: {len(a)} vs {len(b)} rows"
    assert sorted(os.listdir(os.path.join(report, "parts"))) == ["part-0", "part-1"]
    return len(a)


def make_bids(root, n_subjects=5):
    """A small BIDS dataset in MNI space: sub-01..sub-05, one or two resting runs each (TR 2 s from the root
    sidecar), 8 mm voxels over the AICHA atlas's box, random signals with a drift."""
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
    from scans import make_scan
    rng = np.random.default_rng(23)
    os.makedirs(root)
    json.dump({"Name": "arr", "BIDSVersion": "1.8.0"}, open(os.path.join(root, "dataset_description.json"), "w"))
    json.dump({"RepetitionTime": 2.0, "TaskName": "rest"}, open(os.path.join(root, "task-rest_bold.json"), "w"))
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    shape = (23, 28, 23)
    for s in range(1, n_subjects + 1):
        func = os.path.join(root, f"sub-{s:02d}", "func")
        os.makedirs(func)
        for r in range(1, 1 + (1 if s % 2 else 2)):
            make_scan(os.path.join(func, f"sub-{s:02d}_task-rest_run-{r}_bold.nii.gz"), shape, affine, 20 + 3 * s + r,
                      2.0, rng)


def convert_args(work, out):
    return ["--bids", os.path.join(work, "bids_arr"), "--atlas", AICHA, "--out", out, "--subjects-per-shard", "1"]


def submit_convert_array(slurm, bfm, work):
    make_bids(os.path.join(work, "bids_arr"))
    out = os.path.join(work, "convert_array")
    return submit_array(slurm, bfm, work, "convert", 3, convert_args(work, out)), out


def check_convert_result(slurm, bfm, work, jobs, out):
    check_array_done(slurm, work, "convert", *jobs, 3)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["n_shards"] == 5 and manifest["n_subjects"] == 5 and manifest["n_runs"] == 7, manifest
    verify = run_local([bfm, "inspect", out, "--verify"])
    plain = os.path.join(work, "convert_plain")
    run_local([bfm, "convert", *convert_args(work, plain)])
    same_corpus(plain, out)
    # Which task wrote which shard: the logs of tasks 0, 1, 2 name shards {0, 3}, {1, 4}, {2}.
    for i, mine in enumerate([2, 2, 1]):
        text = read(os.path.join(work, f"bfm-convert-{jobs[0]}_{i}.log"))
        assert f"part {i}/3: {mine} shard(s) done" in text, text[-2000:]
    return verify.stdout + verify.stderr


# ---- the scaling driver

def check_scaling(slurm, bfm, work, corpus):
    out = os.path.join(work, "scaling")
    config = os.path.join(work, "run.toml")
    # A tiny model on the synthetic corpus the synth array made (16 parcels).
    tiny = ["model.n_parcels=16", "model.window=12", "model.patch_len=4", "model.d_model=32", "model.n_heads=2",
            "model.n_layers=1", "model.decoder.d_model=32", "model.decoder.n_heads=2", "model.decoder.n_layers=1"]
    argv = ["/usr/bin/python3", SCALING_SCRIPT, "--max-ranks", "2", "--out", out, "--config", config,
            "--corpus", corpus, "--steps", "200", "--batch-per-rank", "4", "--serial", "--bfm", bfm,
            "--timeout", "150", "--poll", "0.3", "--project-to", "256"]
    for t in tiny:
        argv += ["--set", t]
    proc = subprocess.run(argv, env=slurm.env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"scaling.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    rows = list(csv.DictReader(open(os.path.join(out, "scaling.csv"))))
    got = sorted((r["series"], int(r["ranks"]), int(r["global_batch"])) for r in rows)
    assert got == [("strong", 1, 8), ("strong", 2, 8), ("weak", 1, 4), ("weak", 2, 8)], got
    for r in rows:
        assert float(r["samples_per_s"]) > 0 and float(r["step_s"]) > 0, r
        parts = float(r["compute_s"]) + float(r["comm_s"]) + float(r["data_s"])
        assert abs(parts - float(r["step_s"])) < 1e-6 * max(1.0, float(r["step_s"])) + 1e-9, r
        assert int(r["params"]) > 0 and r["state"] == "COMPLETED", r
        if int(r["ranks"]) == 1:
            assert abs(float(r["efficiency"]) - 1) < 1e-9, r
    # Three jobs: (2 ranks, batch 8) serves both series.
    assert len(json.load(open(os.path.join(out, "jobs.json")))["runs"]) == 3
    proj = list(csv.DictReader(open(os.path.join(out, "projection.csv"))))
    weak = [r for r in proj if r["series"] == "weak"]
    assert [int(r["ranks"]) for r in weak] == [1, 2, 4, 8, 16, 32, 64, 128, 256], weak
    # The model's all-reduce time: 2 (p - 1) / p * bytes / bandwidth + 2 (p - 1) * latency.
    r = weak[-1]
    want = 2 * 255 / 256 * float(r["grad_bytes"]) / 25e9 + 2 * 255 * 10e-6
    assert abs(float(r["allreduce_s"]) - want) < 1e-6 * want, (r, want)
    for name in ("throughput.png", "efficiency.png", "time_split.png"):
        path = os.path.join(out, name)
        assert os.path.exists(path) and os.path.getsize(path) > 5000, name
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", name
    return rows, proc.stdout


def run_cases(slurm, bfm, work, with_convert=True):
    # The script starts ranks with srun where this Slurm has PMIx, else with mpirun; both are checked.
    listing = slurm.cmd("srun", "--mpi=list", ok=False)
    launcher = "srun" if re.search(r"\bpmix\b", listing.stdout + listing.stderr) else "mpirun"

    t0 = time.time()
    job, straight, log = submit_pretrain(slurm, work, "straight", bfm)
    _, text = check_finished(slurm, job, straight, log)
    assert f"2 ranks by {launcher}" in text and "bfm exited with status 0" in text, text[-3000:]
    print(f"PASS  a 2-rank job by {launcher} finishes with a released checkpoint ({time.time() - t0:.0f} s)")

    # Two signalled jobs side by side (the node has room for both), so that their requeue delays overlap: one by
    # the default launcher, one by mpirun.
    t0 = time.time()
    stopped = submit_and_signal(slurm, bfm, work, "stopped")
    by_mpirun = submit_and_signal(slurm, bfm, work, "by_mpirun", extra_env={"BFM_LAUNCH": "mpirun"})

    # While those two wait about a minute for their requeue, the arrays and their merge jobs run.
    t1 = time.time()
    synth = submit_synth_array(slurm, bfm, work)
    convert = submit_convert_array(slurm, bfm, work) if with_convert else None
    names = check_synth_result(slurm, bfm, work, *synth)
    print(f"PASS  a 3-task synth array and its merge job give the corpus of one bfm synth ({len(names)} files "
          f"compared) ({time.time() - t1:.0f} s)")
    t2 = time.time()
    n_rows = check_eval_array(slurm, bfm, work, synth[1])
    print(f"PASS  a 2-task eval array over the held-out subjects and its merge job give the {n_rows} rows of one "
          f"bfm eval ({time.time() - t2:.0f} s)")
    if convert:
        check_convert_result(slurm, bfm, work, *convert)
        print(f"PASS  a 3-task convert array over 5 BIDS subjects and its merge job give a corpus that inspect "
              f"--verify passes, the same as one bfm convert ({time.time() - t1:.0f} s)")
    else:
        print("SKIP  the convert array: this bfm has no NIfTI converter")

    step, text = check_resumed(slurm, *stopped, straight)
    assert f"2 ranks by {launcher}" in text, text[-3000:]
    print(f"PASS  a job by {launcher} signalled at step {step} checkpoints, requeues itself, resumes and ends with "
          f"the uninterrupted job's parameters ({time.time() - t0:.0f} s)")
    step, text = check_resumed(slurm, *by_mpirun, straight)
    assert "2 ranks by mpirun" in text and "2 ranks by srun" not in text, text[-3000:]
    print(f"PASS  the same by mpirun (signalled at step {step}) ({time.time() - t0:.0f} s)")

    t0 = time.time()
    rows, _ = check_scaling(slurm, bfm, work, synth[1])
    print(f"PASS  the scaling driver (ranks 1 and 2) writes scaling.csv, projection.csv and 3 PNG plots "
          f"({time.time() - t0:.0f} s)")
    for r in rows:
        print(f"      {r['series']:6s} ranks {r['ranks']} batch {r['global_batch']:>2s}: "
              f"{float(r['samples_per_s']):8.1f} samples/s, efficiency {float(r['efficiency']):.2f}, "
              f"comm {float(r['comm_share']):.0%}, data {float(r['data_share']):.0%}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", help="where the jobs' temporary folder goes (default: the system's temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (daemon logs, job logs and runs)")
    ap.add_argument("--no-convert", action="store_true", help="leave out the convert array (a bfm without NIfTI)")
    args = ap.parse_args()
    missing = [d for d, path in DAEMONS.items() if not os.access(path, os.X_OK)]
    missing += [c for c in ["sbatch", "srun", "scontrol", "sinfo", "scancel"] if not shutil.which(c)]
    if missing:
        print(f"SKIP  no {', '.join(missing)} (scripts/setup.sh installs slurm-wlm and munge)")
        return 0
    if os.geteuid() != 0:
        print("SKIP  the test Slurm runs its daemons as root")
        return 0
    # The daemons' folder holds Unix sockets (munged's, slurmd's), whose paths must stay short: it is made in the
    # system's temporary folder; the jobs' runs and logs go under --workdir.
    daemons = tempfile.mkdtemp(prefix="bfm-slurm-")
    os.chmod(daemons, 0o755)  # munged wants every folder above its socket open to all
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bfm-slurm-jobs-", dir=args.workdir)
    slurm = None
    try:
        slurm = Slurm(daemons)
        slurm.start()
        run_cases(slurm, os.path.abspath(args.bfm), work, with_convert=not args.no_convert)
        print("all passed")
        return 0
    except Exception as e:  # noqa: BLE001 - report, then stop the daemons whatever went wrong
        print(f"FAIL  {type(e).__name__}: {e}")
        return 1
    finally:
        if slurm is not None:
            slurm.stop()
        if args.keep:
            print(f"kept {daemons} (Slurm) and {work} (jobs)")
        else:
            shutil.rmtree(daemons, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
