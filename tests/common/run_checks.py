"""Pieces the tests of whole runs share (tests/launch/cli/test_faults.py, tests/soak, tests/multinode): a tiny model,
the ranks of a running job, the training losses of a metrics.jsonl, and a runner that reports every case."""
import json
import os
import subprocess
import time


def tiny(d_model=8, decoder_d_model=8):
    """bfm --set arguments for a model that trains thousands of steps a second on one core."""
    return ["--set", "model.n_parcels=5", "--set", "model.window=12", "--set", "model.patch_len=4",
            "--set", f"model.d_model={d_model}", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
            "--set", f"model.decoder.d_model={decoder_d_model}", "--set", "model.decoder.n_heads=2",
            "--set", "model.decoder.n_layers=1"]


def rank_pids(out_dir):
    """{rank: pid} of the bfm processes whose command line names out_dir, from their Open MPI environment."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            if not cmd or not cmd[0].endswith(b"bfm") or out_dir.encode() not in cmd:
                continue
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                found[int(item.split(b"=")[1])] = int(entry)
    return found


def train_losses(metrics_path):
    """Every training line's step and losses (not its timings; a resumed run adds a held-out line where it resumed)."""
    keep = ("step", "loss", "mae", "grad_norm", "lr")
    lines = [json.loads(l) for l in open(metrics_path)]
    return [{k: v for k, v in l.items() if k in keep} for l in lines if l["split"] == "train"]


class Cases:
    """Runs test cases one after the other, printing `ok` or `FAIL` for each; `failed` counts the failures."""

    def __init__(self):
        self.failed = 0

    def run(self, name, fn, *args):
        t = time.time()
        try:
            fn(*args)
            print(f"ok   {name} ({time.time() - t:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every case
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def can_make_namespaces():
    """Whether this process may make network, mount and UTS namespaces (root with CAP_SYS_ADMIN and CAP_NET_ADMIN,
    not every container grants them): the multi-node tests skip themselves (77) where it may not."""
    probe = f"bfmprobe{os.getpid() % 100000}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=20).returncode == 0
        if made:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
        return made and subprocess.run(["unshare", "--mount", "--uts", "true"], capture_output=True,
                                       timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
