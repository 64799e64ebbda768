#!/usr/bin/env python3
"""A two-node Slurm cluster on one machine: two network namespaces made by this test (netns_cluster.sh), each a node
with its own address, hostname and slurmd (its own NodeName, spool, pid and log), slurmctld on node 0, munge shared
(its socket is a file). slurm/pretrain.sbatch runs with -N 2 --ntasks-per-node=1, Open MPI over TCP between the
namespaces only. Checks:
  - by srun (PMIx) and by mpirun inside the allocation: the job ends byte-identical to 2 ranks on one node;
  - node 1's rank killed, and separately node 1 lost (its slurmd and every process in its namespace killed): the job ends promptly, not
    COMPLETED; with node 1 back, the same job submitted again resumes from its last checkpoint and ends
    byte-identical;
  - SIGUSR1 to the batch script (as --signal=B:USR1@120 sends): the job checkpoints on both nodes, requeues itself
    and ends byte-identical;
  - slurm/array.sh synth and convert: their 3 tasks run on both nodes and with the merge job give the corpus of one
    `bfm synth` / `bfm convert`;
  - slurm/scaling.py --ranks-per-node 1: its weak and strong series with ranks 1 and 2, one per node (TCP between
    namespaces on one machine stands in for the interconnect: the numbers say nothing about a real network).
Needs root, iproute2, munge and slurm-wlm; exits 77 (skipped) without them.

    /usr/bin/python3 tests/multinode/test_slurm_two_nodes.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CLUSTER = os.path.join(HERE, "netns_cluster.sh")
SBATCH_SCRIPT = os.path.join(ROOT, "slurm", "pretrain.sbatch")
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from run_checks import Cases, can_make_namespaces, tiny  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "slurm"))
import test_slurm as one_node  # noqa: E402  (the one-node Slurm test: its conf lines, array and scaling checks)

TINY = [*tiny(d_model=16), "--set", "train.checkpoint_every=50", "--set", "train.keep_checkpoints=3",
        "--set", "train.log_every=10", "--set", "train.validate_every=100000"]


def cluster(*args):
    return subprocess.run([CLUSTER, *args], check=True, capture_output=True, text=True, timeout=60)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodeSlurm:
    def __init__(self, root):
        self.root = root
        self.prefix = f"bfms{os.getpid() % 100000}"
        self.nodes = [f"{self.prefix}-node{i}" for i in range(2)]

    def p(self, *names):
        return os.path.join(self.root, *names)

    def __enter__(self):
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self):
        cluster("down", self.prefix)
        cluster("up", self.prefix, "2")
        self.addrs = [cluster("addr", self.prefix, str(i)).stdout.strip() for i in range(2)]
        self.net = self.addrs[0].rsplit(".", 1)[0] + ".0/24"
        for d in ["state", "log", "spool-" + self.nodes[0], "spool-" + self.nodes[1]]:
            os.makedirs(self.p(d))
        key = self.p("munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_socket = self.p("munge.sock")
        conf = f"""\
ClusterName=bfmtwo
SlurmctldHost={self.nodes[0]}({self.addrs[0]})
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
{one_node.common_conf(self.munge_socket)}
SlurmdTimeout=10
SlurmctldPidFile={self.p("slurmctld.pid")}
SlurmdPidFile={self.p("slurmd-%n.pid")}
SlurmdSpoolDir={self.p("spool-%n")}
StateSaveLocation={self.p("state")}
SlurmctldLogFile={self.p("log", "slurmctld.log")}
SlurmdLogFile={self.p("log", "slurmd-%n.log")}
SlurmdParameters=config_overrides
NodeName={self.nodes[0]} NodeAddr={self.addrs[0]} NodeHostname={self.nodes[0]} CPUs=2 RealMemory=2048 State=UNKNOWN
NodeName={self.nodes[1]} NodeAddr={self.addrs[1]} NodeHostname={self.nodes[1]} CPUs=2 RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        self.conf = self.p("slurm.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        self.env.update(SLURM_CONF=self.conf, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                        OMPI_MCA_btl="self,tcp", OMPI_MCA_btl_tcp_if_include=self.net,
                        OMPI_MCA_oob_tcp_if_include=self.net, OMP_NUM_THREADS="1")
        subprocess.run(["/usr/sbin/munged", f"--key-file={key}", f"--socket={self.munge_socket}",
                        f"--pid-file={self.p('munged.pid')}", f"--log-file={self.p('log', 'munged.log')}",
                        f"--seed-file={self.p('munged.seed')}"], check=True, env=self.env, timeout=30)
        self.on(0, "/usr/sbin/slurmctld")
        for i in range(2):
            self.start_slurmd(i)
        self.wait_idle()
        return self

    def start_slurmd(self, i):
        self.on(i, "/usr/sbin/slurmd", "-N", self.nodes[i])

    def wait_idle(self, timeout=60):
        deadline = time.time() + timeout
        while True:
            states = self.on(0, "sinfo", "-h", "-N", "-o", "%N %T", ok=False).stdout.split("\n")
            if sum(1 for l in states if l.endswith(" idle")) == 2:
                return
            if time.time() > deadline:
                raise AssertionError(f"the nodes did not become idle: {states}{self.logs()}")
            time.sleep(0.3)

    def on(self, i, *argv, ok=True, env=None):
        proc = subprocess.run([CLUSTER, "run", self.prefix, str(i), *argv], env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=60)
        if ok and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} on node {i} failed ({proc.returncode}): {proc.stderr.strip()}"
                                 f"{self.logs()}")
        return proc

    def logs(self):
        text = ""
        for name in sorted(os.listdir(self.p("log"))):
            text += f"\n--- {name} (end) ---\n" + "".join(open(self.p("log", name)).readlines()[-10:])
        return text

    def job(self, job_id):
        proc = self.on(0, "scontrol", "show", "job", "-o", job_id, ok=False)
        return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv) if proc.returncode == 0 else {}

    def wait_done(self, job_id, timeout):
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED"):
                return info
            if time.time() > deadline:
                self.on(0, "scancel", job_id, ok=False)
                raise AssertionError(f"job {job_id} still {info.get('JobState')} after {timeout} s{self.logs()}")
            time.sleep(0.3)

    def __exit__(self, *exc):
        try:
            self.on(0, "scancel", "--user=root", ok=False)
        except Exception:  # noqa: BLE001 - the namespaces go below whatever happens here
            pass
        cluster("down", self.prefix)  # kills slurmctld, the slurmds and anything left in the namespaces
        try:
            os.kill(int(open(self.p("munged.pid")).read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def weights(out):
    return open(os.path.join(out, "release", "model.safetensors"), "rb").read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    tools = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"]
    if os.geteuid() != 0 or not all(os.access(t, os.X_OK) for t in tools) or not can_make_namespaces():
        print("skipped: needs root with namespaces (CAP_SYS_ADMIN), iproute2, munge and slurm-wlm")
        sys.exit(77)
    bfm = os.path.abspath(args.bfm)
    if os.path.abspath(args.workdir).startswith("/tmp/"):
        sys.exit("--workdir must be outside /tmp: every node has a /tmp of its own")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    work = os.path.abspath(args.workdir)
    steps = ["--set", "train.steps=600"]
    config = os.path.join(work, "run.toml")
    with open(config, "w") as f:
        f.write(subprocess.run([bfm, "config", "--defaults"], capture_output=True, text=True, check=True).stdout)
    straight = os.path.join(work, "one_node")
    subprocess.run([args.mpirun, "--oversubscribe", "-np", "2", bfm, "pretrain", "--config", config, *TINY, *steps,
                    "--out", straight], check=True, capture_output=True, timeout=300,
                   env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                            OMP_NUM_THREADS="1"))
    want = weights(straight)
    cases = Cases()
    with TwoNodeSlurm(os.path.join(work, "slurm")) as slurm:
        def submit(name, launcher, extra=()):
            out, log = os.path.join(work, name), os.path.join(work, name + ".log")
            job = slurm.on(0, "sbatch", "--parsable", "-N", "2", "--ntasks-per-node=1", "--cpus-per-task=1",
                           f"--output={log}", f"--chdir={work}", SBATCH_SCRIPT, config, out, *TINY, *steps, *extra,
                           env={"BFM": bfm, "BFM_LAUNCH": launcher}).stdout.strip().split(";")[0]
            return job, out, log

        def across_nodes(launcher):
            def check():
                job, out, log = submit(f"by_{launcher}", launcher)
                info = slurm.wait_done(job, 240)
                text = open(log).read() if os.path.exists(log) else ""
                assert info.get("JobState") == "COMPLETED", f"{info.get('JobState')}: {text[-3000:]}{slurm.logs()}"
                assert f"2 ranks by {launcher}" in text, text[-2000:]
                assert all(n in info.get("NodeList", "") or "node[0-1]" in info.get("NodeList", "")
                           for n in ["node"]), info
                assert weights(out) == want, f"2 nodes by {launcher} differ from 1 node x 2 ranks"
            return check


        def lost(what):
            def check():
                job, out, log = submit(f"lost_{what}", "mpirun", ["--set", "train.collective_timeout_s=20"])
                deadline = time.time() + 120
                while not (os.path.exists(log) and re.search(r"step +(1\d\d|2\d\d)/", open(log).read())):
                    assert time.time() < deadline, f"the job did not reach step 100: {slurm.logs()}"
                    time.sleep(0.2)
                lost = time.time()
                pids = subprocess.run(["ip", "netns", "pids", slurm.nodes[1]], capture_output=True,
                                      text=True).stdout.split()
                if what == "rank":  # only node 1's bfm rank; its slurmd and the job's step daemon live on
                    pids = [p for p in pids if open(f"/proc/{p}/comm").read().strip() == "bfm"]
                    assert len(pids) == 1, pids
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                info = slurm.wait_done(job, 120)
                took = time.time() - lost
                assert info.get("JobState") != "COMPLETED", info
                assert took < 90, f"the job took {took:.0f} s to end after node 1's {what} was lost"
                if what == "node":
                    slurm.start_slurmd(1)
                    slurm.on(0, "scontrol", "update", f"nodename={slurm.nodes[1]}", "state=resume", ok=False)
                slurm.wait_idle()
                job2 = slurm.on(0, "sbatch", "--parsable", "-N", "2", "--ntasks-per-node=1", "--cpus-per-task=1",
                                f"--output={log}", f"--chdir={work}", SBATCH_SCRIPT, config, out, *TINY, *steps,
                                "--set", "train.collective_timeout_s=20",
                                env={"BFM": bfm, "BFM_LAUNCH": "mpirun"}).stdout.strip().split(";")[0]
                info = slurm.wait_done(job2, 240)
                text = open(log).read()
                assert info.get("JobState") == "COMPLETED", f"{info.get('JobState')}: {text[-3000:]}"
                assert "resumed from" in text, text[-2000:]
                assert weights(out) == want, f"the run resumed after losing node 1's {what} differs"
            return check

        # The one-node Slurm test's array and scaling checks, with their clients run on node 0 (the controller's
        # network) through small wrappers, and the scaling runs one rank per node.
        array_wrapper = os.path.join(work, "array_on_node0.sh")
        with open(array_wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec "{CLUSTER}" run {slurm.prefix} 0 "{one_node.ARRAY_SCRIPT}" "$@"\n')
        os.chmod(array_wrapper, 0o755)
        scaling_wrapper = os.path.join(work, "scaling_on_node0.py")
        with open(scaling_wrapper, "w") as f:
            f.write(f"import os, sys\nos.execv({CLUSTER!r}, [{CLUSTER!r}, 'run', {slurm.prefix!r}, '0', "
                    f"'/usr/bin/python3', {one_node.SCALING_SCRIPT!r}, '--ranks-per-node', '1', *sys.argv[1:]])\n")
        one_node.ARRAY_SCRIPT, one_node.SCALING_SCRIPT = array_wrapper, scaling_wrapper
        slurm.cmd = lambda *argv, ok=True: slurm.on(0, *argv, ok=ok)

        def arrays_spread_over_both_nodes():
            jobs, out = one_node.submit_synth_array(slurm, bfm, work)
            one_node.check_synth_result(slurm, bfm, work, jobs, out)
            used = {slurm.job(f"{jobs[0]}_{i}").get("NodeList") for i in range(3)}
            assert used == set(slurm.nodes), f"the 3 array tasks ran on {used}"
            return out

        def convert_array_over_both_nodes():
            if not os.path.exists(one_node.AICHA):
                print("      (no AICHA atlas from mricron-data: the convert array is left out)")
                return
            jobs, out = one_node.submit_convert_array(slurm, bfm, work)
            one_node.check_convert_result(slurm, bfm, work, jobs, out)
            used = {slurm.job(f"{jobs[0]}_{i}").get("NodeList") for i in range(3)}
            assert used == set(slurm.nodes), f"the 3 array tasks ran on {used}"

        corpus = []

        def scaling_across_nodes():
            rows, _ = one_node.check_scaling(slurm, bfm, work, corpus[0])
            two = [r for r in rows if int(r["ranks"]) == 2]
            assert two, rows
            for r in rows:
                print(f"      {r['series']:6s} ranks {r['ranks']} (one per node, TCP between namespaces) batch "
                      f"{r['global_batch']:>2s}: {float(r['samples_per_s']):8.1f} samples/s, efficiency "
                      f"{float(r['efficiency']):.2f}, comm {float(r['comm_share']):.0%}", flush=True)

        cases.run("a_synth_array_over_both_nodes_equals_one_process", lambda: corpus.append(arrays_spread_over_both_nodes()))
        cases.run("a_convert_array_over_both_nodes_equals_one_process", convert_array_over_both_nodes)
        if corpus:
            cases.run("scaling_weak_and_strong_one_rank_per_node", scaling_across_nodes)

        listing = slurm.on(0, "srun", "--mpi=list", ok=False)
        if re.search(r"\bpmix\b", listing.stdout + listing.stderr):
            cases.run("two_nodes_by_srun_equal_one_node", across_nodes("srun"))
        cases.run("two_nodes_by_mpirun_equal_one_node", across_nodes("mpirun"))
        def requeued_across_nodes():
            job, out, log = submit("requeued", "mpirun")
            deadline = time.time() + 120
            while not (os.path.exists(log) and re.search(r"step +[1-9]\d*0/", open(log).read())):
                assert time.time() < deadline, f"the job did not start training: {slurm.logs()}"
                time.sleep(0.1)
            slurm.on(0, "scancel", "--signal=USR1", "--batch", job)
            info = slurm.wait_done(job, 200)
            text = open(log).read()
            assert info.get("JobState") == "COMPLETED" and info.get("Restarts") == "1", f"{info}\n{text[-3000:]}"
            assert "requeueing job" in text and "resumed from" in text, text[-3000:]
            assert weights(out) == want, "the requeued job differs from the uninterrupted run"

        cases.run("the_nodes_rank_killed_ends_the_job_and_the_next_job_resumes", lost("rank"))
        cases.run("a_lost_node_ends_the_job_and_the_next_job_resumes", lost("node"))
        cases.run("sigusr1_requeue_across_nodes_resumes_byte_identical", requeued_across_nodes)
    sys.exit(1 if cases.failed else 0)


if __name__ == "__main__":
    main()
