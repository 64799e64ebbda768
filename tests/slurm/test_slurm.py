#!/usr/bin/env python3
"""slurm/pretrain.sbatch under a real Slurm: munged, slurmctld and slurmd started on this machine in a temporary
folder (one node of 4 CPUs, so that two 2-rank jobs fit at once), the real script submitted with sbatch for 2 CPU
ranks on a tiny synthetic run.

  - a 2-rank job finishes and leaves OUT/checkpoint (released) and OUT/checkpoints/latest;
  - a job sent SIGUSR1 part-way (as --signal=B:USR1@120 does before the time limit) checkpoints, requeues itself,
    resumes, and ends with exactly the parameters of the uninterrupted job (read with PyTorch from the released
    safetensors), its log holding both attempts;
  - the same with the mpirun launcher (for a Slurm without PMIx).

    /usr/bin/python3 tests/slurm/test_slurm.py --bfm build/launch/bfm [--workdir DIR] [--keep]

Exits 0 with a SKIP line when munged, slurmctld or slurmd is not installed (scripts/setup.sh installs them).
Needs root (the daemons run as root, as in TOOLCHAIN.md). Every daemon is stopped by its pid and the folder removed,
whatever happens.
"""
import argparse
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
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=30,socket={self.munge_socket}
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
MailProg=/bin/true
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
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import bfm_torch
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
    assert os.path.exists(os.path.join(out, "checkpoint", "model.safetensors")), text[-3000:]
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
    same_params(os.path.join(straight, "checkpoint"), os.path.join(out, "checkpoint"))
    return int(m.group(2)), text


def run_cases(slurm, bfm, work):
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
    step, text = check_resumed(slurm, *stopped, straight)
    assert f"2 ranks by {launcher}" in text, text[-3000:]
    print(f"PASS  a job by {launcher} signalled at step {step} checkpoints, requeues itself, resumes and ends with "
          f"the uninterrupted job's parameters ({time.time() - t0:.0f} s)")
    step, text = check_resumed(slurm, *by_mpirun, straight)
    assert "2 ranks by mpirun" in text and "2 ranks by srun" not in text, text[-3000:]
    print(f"PASS  the same by mpirun (signalled at step {step}) ({time.time() - t0:.0f} s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", help="where the jobs' temporary folder goes (default: the system's temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (daemon logs, job logs and runs)")
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
        run_cases(slurm, os.path.abspath(args.bfm), work)
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
