#!/usr/bin/env python3
"""`--part I/N` and `--manifest-only` of bfm synth and bfm convert, without Slurm (what slurm/synth.sbatch and
slurm/convert.sbatch run in each array task and in the merge job):

  - bad values (3/2, 0/0, 2/2, x, -1/2, 1/2/3) and --part with --manifest-only: one error line naming the value, exit
    status 2, nothing written;
  - synth in 2 parts (one of them on 2 MPI ranks) and the merge: the corpus of one plain bfm synth (h5py);
  - the merge names the missing shards, refuses a shard of another corpus (other seed), and a part refuses a
    finished corpus without --overwrite;
  - convert in 2 parts over a 3-subject BIDS dataset (nibabel, the AICHA atlas) and the merge: the corpus of one
    plain bfm convert; the merge names what is missing; a part run again skips its finished shards; --overwrite on
    a part rewrites only its shards.

    /usr/bin/python3 tests/slurm/test_part_cli.py --bfm build/launch/bfm --workdir DIR [--mpirun mpirun]
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_slurm  # noqa: E402  (same_corpus, make_bids, AICHA)

SYNTH = ["--subjects", "7", "--subjects-per-shard", "2", "--parcels", "12", "--minutes", "0.5", "--studies", "3",
         "--stim-dim", "4", "--seed", "9"]


def run(argv, ok=True):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"{' '.join(argv)} succeeded, expected an error\n{proc.stderr[-3000:]}")
    return proc


def one_error(proc, *needles):
    lines = [l for l in proc.stderr.splitlines() if "error" in l]  # (bfm convert logs its atlas's label list first)
    assert len(lines) == 1 and lines[0].startswith("bfm: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert proc.returncode == 2, proc.returncode
    return lines[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mpirun", default=shutil.which("mpirun"))
    args = ap.parse_args()
    bfm, work = os.path.abspath(args.bfm), os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    # 1. bad values: one line, nothing written
    bids = os.path.join(work, "bids")
    for value, why in [("3/2", "I must be less than N"), ("0/0", "N must be at least 1"),
                       ("2/2", "I must be less than N"), ("x", "no '/'"), ("-1/2", "I is not a whole number"),
                       ("1/2/3", "N is not a whole number")]:
        out = os.path.join(work, "bad")
        one_error(run([bfm, "synth", *SYNTH, "--out", out, "--part", value], ok=False), f"--part {value}: {why}")
        one_error(run([bfm, "convert", "--bids", bids, "--atlas", test_slurm.AICHA, "--out", out, "--part", value],
                      ok=False), f"--part {value}: {why}")
        assert not os.path.exists(out), value
    one_error(run([bfm, "synth", *SYNTH, "--out", os.path.join(work, "bad"), "--part", "0/2", "--manifest-only"],
                  ok=False), "--part and --manifest-only exclude each other")
    one_error(run([bfm, "convert", "--bids", bids, "--atlas", test_slurm.AICHA, "--out", os.path.join(work, "bad"),
                   "--part", "0/2", "--manifest-only"], ok=False), "--part and --manifest-only exclude each other")
    print("--part: bad values and --part with --manifest-only are one error line naming them")

    # 2. synth in 2 parts (part 0 on 2 ranks) + merge == plain synth
    plain, parted = os.path.join(work, "synth_plain"), os.path.join(work, "synth_parts")
    run([bfm, "synth", *SYNTH, "--out", plain])
    mpi = [args.mpirun, "-np", "2", "--oversubscribe"] if args.mpirun else []
    p = run(mpi + [bfm, "synth", *SYNTH, "--out", parted, "--part", "0/2"])
    assert "part 0/2: 2 shard(s), 4 subjects" in p.stderr, p.stderr
    assert sorted(os.listdir(parted)) == ["shard-00000.h5", "shard-00002.h5"], os.listdir(parted)
    one_error(run([bfm, "synth", *SYNTH, "--out", parted, "--manifest-only"], ok=False),
              "missing shard-00001.h5, shard-00003.h5 (2 of 4 shards)")
    run([bfm, "synth", *SYNTH, "--out", parted, "--part", "1/2"])
    run([bfm, "synth", *SYNTH, "--out", parted, "--manifest-only"])
    test_slurm.same_corpus(plain, parted)
    print(f"synth: 2 parts{' (one on 2 ranks)' if mpi else ''} and the merge give the plain corpus")

    # 3. a finished corpus is replaced only with --overwrite; a shard of another corpus is named by the merge
    one_error(run([bfm, "synth", *SYNTH, "--out", parted, "--part", "1/2"], ok=False),
              "holds a finished corpus (manifest.json)", "--overwrite")
    other = [a if a != "9" else "10" for a in SYNTH]  # another seed
    run([bfm, "synth", *other, "--out", parted, "--part", "1/2", "--overwrite"])
    assert not os.path.exists(os.path.join(parted, "manifest.json"))
    one_error(run([bfm, "synth", *SYNTH, "--out", parted, "--manifest-only"], ok=False),
              "shard-00001.h5: not a shard of this corpus")
    run([bfm, "synth", *SYNTH, "--out", parted, "--part", "1/2"])
    run([bfm, "synth", *SYNTH, "--out", parted, "--manifest-only"])
    test_slurm.same_corpus(plain, parted)
    print("synth: --overwrite needed on a finished corpus; the merge names a foreign shard")

    # 4. convert in 2 parts + merge == plain convert; resume and --overwrite of one part
    test_slurm.make_bids(bids, n_subjects=3)
    base = ["--bids", bids, "--atlas", test_slurm.AICHA, "--subjects-per-shard", "1"]
    plain, parted = os.path.join(work, "convert_plain"), os.path.join(work, "convert_parts")
    run([bfm, "convert", *base, "--out", plain])
    p = run([bfm, "convert", *base, "--out", parted, "--part", "0/2"])
    assert "part 0/2: 2 shard(s) done" in p.stderr, p.stderr
    assert sorted(os.listdir(parted)) == ["shard-00000.h5", "shard-00002.h5"], os.listdir(parted)
    one_error(run([bfm, "convert", *base, "--out", parted, "--manifest-only"], ok=False),
              "missing shard-00001.h5 (1 of 3 shards)")
    run([bfm, "convert", *base, "--out", parted, "--part", "1/2"])
    run([bfm, "convert", *base, "--out", parted, "--manifest-only"])
    test_slurm.same_corpus(plain, parted)
    run([bfm, "inspect", parted, "--verify"])
    mtimes = {f: os.stat(os.path.join(parted, f)).st_mtime_ns for f in os.listdir(parted)}
    p = run([bfm, "convert", *base, "--out", parted, "--part", "0/2"])
    assert "resumed: 2 shard(s) already complete" in p.stderr, p.stderr
    run([bfm, "convert", *base, "--out", parted, "--part", "1/2", "--overwrite"])
    now = {f: os.stat(os.path.join(parted, f)).st_mtime_ns for f in os.listdir(parted)}
    assert sorted(now) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"], sorted(now)  # manifest removed
    assert now["shard-00000.h5"] == mtimes["shard-00000.h5"] and now["shard-00002.h5"] == mtimes["shard-00002.h5"]
    assert now["shard-00001.h5"] != mtimes["shard-00001.h5"]
    one_error(run([bfm, "convert", *base, "--out", parted, "--manifest-only", "--overwrite"], ok=False),
              "--manifest-only and --overwrite exclude each other")
    run([bfm, "convert", *base, "--out", parted, "--manifest-only"])
    test_slurm.same_corpus(plain, parted)
    print("convert: 2 parts and the merge give the plain corpus; the merge names what is missing; a part resumes, "
          "and --overwrite on a part rewrites only its shards")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
