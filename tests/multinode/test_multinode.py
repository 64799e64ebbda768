#!/usr/bin/env python3
"""bfm over two "nodes": two network namespaces made by this test (tests/multinode/netns_cluster.sh), each with its
own address and hostname, joined by a bridge in a third; Open MPI between them over TCP only (mpirun on node 0
starts node 1's daemon through the script, in place of ssh). Checks:
  - 2 nodes x 1 rank train byte-identical to 2 ranks on one node;
  - SIGUSR1 to mpirun stops both nodes' ranks with a checkpoint (exit 75), and the rerun ends byte-identical;
  - node 1 lost mid-job (every process in its namespace killed): the job ends promptly and non-zero, and the rerun
    resumes from the last good checkpoint and ends byte-identical to the run that was never interrupted.
Needs root (ip netns); exits 77 (skipped) where namespaces cannot be made.

    /usr/bin/python3 tests/multinode/test_multinode.py --bfm build/launch/bfm --mpirun mpirun --workdir DIR
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "netns_cluster.sh")
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from run_checks import Cases, can_make_namespaces, tiny  # noqa: E402

TINY = [*tiny(d_model=16), "--set", "train.checkpoint_every=50", "--set", "train.keep_checkpoints=3",
        "--set", "train.log_every=50", "--set", "train.validate_every=500"]


def cluster(*args, **kw):
    return subprocess.run([CLUSTER, *args], check=True, capture_output=True, text=True, timeout=60, **kw)


class TwoNodes:
    def __init__(self, mpirun):
        self.prefix = f"bfm{os.getpid() % 100000}"
        self.mpirun = mpirun

    def __enter__(self):
        cluster("down", self.prefix)
        cluster("up", self.prefix, "2")
        self.addrs = [cluster("addr", self.prefix, str(i)).stdout.strip() for i in range(2)]
        self.net = self.addrs[0].rsplit(".", 1)[0] + ".0/24"
        return self

    def __exit__(self, *exc):
        cluster("down", self.prefix)

    def launch(self, work, bfm_args):
        """mpirun on node 0, one rank per node, TCP between the namespaces only."""
        hosts = os.path.join(work, "hosts")
        with open(hosts, "w") as f:
            f.write("".join(f"{a} slots=1\n" for a in self.addrs))
        return [CLUSTER, "run", self.prefix, "0", self.mpirun, "--hostfile", hosts, "-np", "2", "--map-by", "node",
                # Both "nodes" are this machine's cores: bound, each node's rank would take core 0.
                "--bind-to", "none",
                "--mca", "plm_rsh_agent", f"{CLUSTER} rsh {self.prefix}", "--mca", "btl", "self,tcp",
                "--mca", "btl_tcp_if_include", self.net, "--mca", "oob_tcp_if_include", self.net, *bfm_args]

    def pids_on(self, node):
        out = subprocess.run(["ip", "netns", "pids", f"{self.prefix}-node{node}"], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def weights(out):
    return open(os.path.join(out, "release", "model.safetensors"), "rb").read()


def wait_for_step(proc, step):
    text = ""
    for line in proc.stderr:
        text += line
        if re.search(rf"step +{step}/", line):
            return text
    raise AssertionError(f"the run ended before step {step}: {text[-2000:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    if os.geteuid() != 0 or not can_make_namespaces():
        print("skipped: this process may not make network, mount and UTS namespaces (root, CAP_SYS_ADMIN, iproute2)")
        sys.exit(77)
    os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    bfm = os.path.abspath(args.bfm)
    if os.path.abspath(args.workdir).startswith("/tmp/"):
        sys.exit("--workdir must be outside /tmp: every node has a /tmp of its own")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    work = os.path.abspath(args.workdir)
    steps = ["--set", "train.steps=600"]
    one_node = os.path.join(work, "one_node")
    subprocess.run([args.mpirun, "--oversubscribe", "-np", "2", bfm, "pretrain", *TINY, *steps, "--out", one_node],
                   check=True, capture_output=True, timeout=300)
    want = weights(one_node)
    cases = Cases()
    with TwoNodes(args.mpirun) as nodes:
        def two_nodes_equal_one():
            out = os.path.join(work, "two_nodes")
            proc = subprocess.run(nodes.launch(work, [bfm, "pretrain", *TINY, *steps, "--out", out]),
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "2 ranks" in proc.stderr, proc.stderr[-2000:]
            assert weights(out) == want, "2 nodes x 1 rank differ from 1 node x 2 ranks"

        def sigusr1_stops_both_nodes():
            out = os.path.join(work, "usr1")
            cmd = nodes.launch(work, [bfm, "pretrain", *TINY, *steps, "--out", out])
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            wait_for_step(proc, 200)
            # The cluster script execs (ip netns exec, unshare, sh) down to mpirun: proc.pid is mpirun by now.
            os.kill(proc.pid, signal.SIGUSR1)
            _, rest = proc.communicate(timeout=120)
            assert proc.returncode == 75, f"exit {proc.returncode}: {rest[-2000:]}"
            again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-2000:]
            assert weights(out) == want, "the resumed run differs"

        def a_lost_node_ends_the_job_and_the_rerun_resumes():
            out = os.path.join(work, "lost")
            cmd = nodes.launch(work, [bfm, "pretrain", *TINY, *steps, "--set", "train.collective_timeout_s=20",
                                      "--out", out])
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            wait_for_step(proc, 250)
            lost = time.time()
            for pid in nodes.pids_on(1):  # node 1 goes: its daemon and its rank, at once
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _, rest = proc.communicate(timeout=120)
            took = time.time() - lost
            assert proc.returncode != 0, "the job ended with status 0 after losing a node"
            assert took < 60, f"the job took {took:.0f} s to end after the node was lost"
            deadline = time.time() + 20
            while (nodes.pids_on(0) or nodes.pids_on(1)) and time.time() < deadline:
                time.sleep(0.2)
            left = [open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:80] for p in nodes.pids_on(0) + nodes.pids_on(1)
                    if os.path.exists(f"/proc/{p}")]
            assert not left, f"processes outlived the job: {left}"
            again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert again.returncode == 0, again.stderr[-2000:]
            m = re.search(r"resumed from \S+ckpt-(\d+)\.h5 at step (\d+)", again.stderr)
            assert m and int(m.group(2)) >= 200, again.stderr[-2000:]
            assert weights(out) == want, "the run resumed after a lost node differs from the uninterrupted one"

        cases.run("two_nodes_train_like_one", two_nodes_equal_one)
        cases.run("sigusr1_stops_both_nodes_and_the_rerun_is_identical", sigusr1_stops_both_nodes)
        cases.run("a_lost_node_ends_the_job_and_the_rerun_resumes", a_lost_node_ends_the_job_and_the_rerun_resumes)
    sys.exit(1 if cases.failed else 0)


if __name__ == "__main__":
    main()
