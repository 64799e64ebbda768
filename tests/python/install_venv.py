#!/usr/bin/python3
"""Makes a venv that sees Debian's numpy/torch/h5py (--system-site-packages) and installs bfm's python/ into it the
way a user does, `pip install ./python`, without the network (--no-index --no-build-isolation --no-deps); then
checks that the venv imports the installed copy, not the checkout, with the version pyproject.toml names.

    /usr/bin/python3 tests/python/install_venv.py --venv BUILD/tests/python/venv --package python

The package is copied first, so that setuptools' build/ and *.egg-info land in the build tree, not in the checkout.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"FAIL {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--package", required=True, help="bfm's python/ folder")
    args = ap.parse_args()
    venv, package = os.path.abspath(args.venv), os.path.abspath(args.package)
    source = venv + "-src"
    for path in (venv, source):
        shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run([sys.executable, "-m", "venv", "--system-site-packages", venv])
    python = os.path.join(venv, "bin", "python")
    run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps", "--quiet", source])

    # From a neutral folder, so that neither the checkout nor the copy is on sys.path.
    probe = ("import importlib.metadata, os, sys, bfm; "
             "print(os.path.realpath(bfm.__file__)); print(importlib.metadata.version('bfm')); "
             "print(all(hasattr(bfm, n) for n in ('BrainModel', 'TaskHead', 'preprocess', 'load_checkpoint')))")
    where, version, api = run([python, "-c", probe], cwd=os.path.dirname(venv)).stdout.split()
    site = os.path.realpath(os.path.join(venv, "lib"))
    assert where.startswith(site + os.sep), f"bfm imported from {where}, not from the venv's {site}"
    wanted = re.search(r'^version = "([^"]+)"', open(os.path.join(package, "pyproject.toml")).read(), re.M).group(1)
    assert version == wanted, f"installed bfm {version}, pyproject.toml says {wanted}"
    assert api == "True", "bfm lacks one of BrainModel, TaskHead, preprocess, load_checkpoint"
    usage = subprocess.run([python, "-m", "bfm"], capture_output=True, text=True, cwd=os.path.dirname(venv))
    assert usage.returncode == 2 and "usage: python3 -m bfm" in usage.stderr, (usage.returncode, usage.stderr)
    print(f"bfm {version} installed into {venv} (no network), imported from {where}")


if __name__ == "__main__":
    main()
