#!/usr/bin/python3
"""A BIDS study made outside bfm's generator, to evaluate bfm on data it was not built around (issue 17: "an
independent study generated outside this project will be evaluated the same way").

Written with BIDS conventions and nibabel only; its generative model shares nothing with `bfm synth`:
- voxels, not parcels: a 10 x 10 x 8 grid (4 mm) with an ellipsoid brain mask; the atlas (atlas.nii.gz, written
  beside the dataset) is a Voronoi partition of the mask into --parcels regions, so parcels average 6-15 voxels,
  each with its own noise;
- 6 networks whose parcel loadings vary a lot from subject to subject: a group map plus a subject perturbation of
  sd 0.35 and, for each subject, 20 % of the parcels moved to another network (idiosyncratic topography);
- stimulus responses are non-linear in the stimulus features (tanh of a random map of the 12 features, one amplitude
  per network), boxcars of each clip's duration convolved with SPM's double-gamma HRF at the subject's TR;
- intrinsic network activity AR(1); per-voxel AR(1) noise, slow drift, a smooth site gain field;
- 3 sites with TR 0.8, 1.5 and 2.0 s and different noise levels, one task run per subject (events.tsv with onset,
  duration, trial_type = the clip's category, stim_file), some subjects with a rest run too;
- traits: diagnosis ("patient") adds a shared component to networks 0 and 1 and lowers network 2's amplitude; age
  slows network 3 (AR coefficient) ; score is the coupling of networks 4 and 5; sex shifts network 5's gain.

    /usr/bin/python3 bench/independent_study.py --out DIR [--subjects 120] [--parcels 48] [--clips 150] [--seed 1]

Writes DIR/bids (dataset_description.json, participants.tsv, task-movie_bold.json per site in each subject's
sidecar, sub-*/func/*_bold.nii.gz and *_events.tsv), DIR/atlas.nii.gz and DIR/stimuli.tsv (stim_file + 12 features).
"""
import argparse
import json
import math
import os

import nibabel as nib
import numpy as np

GRID = (10, 10, 8)
VOX = 4.0
K = 6          # networks
S = 12         # stimulus features
CATEGORIES = 4
SITES = [(0.8, 0.9), (1.5, 1.0), (2.0, 1.2)]  # (TR, noise level)


def hrf(tr, length=32.0):
    """SPM's canonical double-gamma HRF sampled at tr, unit sum."""
    t = np.arange(0, length, tr)
    g = lambda t, a: t ** (a - 1) * np.exp(-t) / math.gamma(a)
    h = g(t, 6.0) - g(t, 16.0) / 6.0
    return h / h.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--subjects", type=int, default=120)
    ap.add_argument("--parcels", type=int, default=48)
    ap.add_argument("--clips", type=int, default=150)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    root = os.path.join(a.out, "bids")
    os.makedirs(root, exist_ok=True)
    json.dump({"Name": "independent", "BIDSVersion": "1.8.0", "DatasetType": "raw"},
              open(os.path.join(root, "dataset_description.json"), "w"))

    # ---- space: mask, atlas
    idx = np.indices(GRID).reshape(3, -1).T.astype(float)
    centre = (np.array(GRID) - 1) / 2
    inside = (((idx - centre) / (np.array(GRID) / 2)) ** 2).sum(1) <= 1.0
    vox = idx[inside]
    seeds = vox[rng.choice(len(vox), a.parcels, replace=False)]
    parcel_of = np.argmin(((vox[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    present = np.unique(parcel_of)
    parcel_of = np.searchsorted(present, parcel_of)
    P = len(present)
    affine = np.diag([VOX, VOX, VOX, 1.0])
    affine[:3, 3] = -centre * VOX
    labels = np.zeros(GRID, np.int16)
    labels.reshape(-1)[np.flatnonzero(inside)] = parcel_of + 1
    nib.save(nib.Nifti1Image(labels, affine), os.path.join(a.out, "atlas.nii.gz"))

    # ---- stimuli: features, categories, the non-linear map to network amplitudes
    feats = rng.normal(size=(a.clips, S))
    category = np.argmax(feats @ rng.normal(size=(S, CATEGORIES)), axis=1)
    names = [f"stim/clip{i:03d}.mp4" for i in range(a.clips)]
    with open(os.path.join(a.out, "stimuli.tsv"), "w") as f:
        f.write("stimulus\t" + "\t".join(f"f{j}" for j in range(S)) + "\n")
        for n, v in zip(names, feats):
            f.write(n + "\t" + "\t".join(f"{x:.5f}" for x in v) + "\n")
    w_evoked = rng.normal(size=(S, K)) / math.sqrt(S) * 2.0
    amplitude = np.tanh(feats @ w_evoked)  # [clips, K]

    # ---- group network map: each parcel mostly in one network
    group_map = np.zeros((P, K))
    group_map[np.arange(P), rng.integers(0, K, P)] = 1.0
    group_map += 0.15 * rng.normal(size=(P, K))
    voxel_gain = 0.6 + 0.4 * rng.random(len(vox))  # how well each voxel follows its parcel

    rows = []
    for s in range(1, a.subjects + 1):
        sub = f"sub-{s:03d}"
        site = (s - 1) % len(SITES)
        tr, noise = SITES[site]
        patient = rng.random() < 0.4
        age = float(rng.uniform(18, 80))
        sex = "F" if rng.random() < 0.5 else "M"
        score = float(rng.normal())
        # the subject's networks: perturbed map, 20 % of parcels moved to another network
        m = group_map + 0.35 * rng.normal(size=(P, K))
        moved = rng.choice(P, int(0.2 * P), replace=False)
        for p in moved:
            m[p] = np.roll(m[p], int(rng.integers(1, K)))
        n_t = int(a.minutes * 60 / tr)
        # intrinsic activity, AR(1); age slows network 3, score couples 4 and 5, patients share a component in 0/1
        phi = np.full(K, 0.5)
        phi[3] = 0.3 + 0.6 * (age - 18) / 62
        z = np.zeros((n_t, K))
        e = rng.normal(size=(n_t, K))
        for t in range(1, n_t):
            z[t] = phi * z[t - 1] + np.sqrt(1 - phi ** 2) * e[t]
        c = 0.45 * np.tanh(score)
        z[:, 5] = c * z[:, 4] + math.sqrt(1 - c * c) * z[:, 5]
        if patient:
            shared = rng.normal(size=n_t)
            z[:, 0] = 0.6 * z[:, 0] + 0.8 * shared
            z[:, 1] = 0.6 * z[:, 1] + 0.8 * shared
        if sex == "F":
            z[:, 5] *= 1.3
        # evoked responses: clips of 3-6 s with 1-3 s between, shown in a random order (with repeats)
        events, t = [], 2.0
        boxes = np.zeros((n_t, K))
        while t < n_t * tr - 8:
            clip = int(rng.integers(a.clips))
            dur = float(rng.uniform(3, 6))
            events.append((t, dur, int(category[clip]), names[clip]))
            k0, k1 = int(t / tr), min(n_t, int(math.ceil((t + dur) / tr)))
            boxes[k0:k1] += amplitude[clip]
            t += dur + float(rng.uniform(1, 3))
        h = hrf(tr)
        evoked = np.stack([np.convolve(boxes[:, k], h)[:n_t] for k in range(K)], 1) * 3.0
        if patient:
            evoked[:, 2] *= 0.5
        net = 0.6 * z + evoked  # [n_t, K]
        parcel = net @ m.T  # [n_t, P]
        parcel += 0.5 * rng.normal(size=parcel.shape)
        # voxels: their parcel's signal, a site gain field, AR(1) noise, a slow drift
        field = 1.0 + 0.2 * np.sin(vox[:, 0] / 3 + site) * np.cos(vox[:, 1] / 4 - site)
        sig = parcel[:, parcel_of] * (voxel_gain * field)
        nz = np.zeros_like(sig)
        ev = rng.normal(size=sig.shape) * noise
        for t in range(1, n_t):
            nz[t] = 0.4 * nz[t - 1] + ev[t]
        drift = np.outer(np.linspace(-1, 1, n_t), rng.normal(size=len(vox)) * 0.5)
        data = np.zeros(GRID + (n_t,), np.float32)
        flat = data.reshape(-1, n_t)
        flat[np.flatnonzero(inside)] = (100 + sig + nz + drift).T
        func = os.path.join(root, sub, "func")
        os.makedirs(func, exist_ok=True)
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
        base = f"{sub}_task-movie_run-1"
        nib.save(img, os.path.join(func, base + "_bold.nii.gz"))
        json.dump({"RepetitionTime": tr, "TaskName": "movie"}, open(os.path.join(func, base + "_bold.json"), "w"))
        with open(os.path.join(func, base + "_events.tsv"), "w") as f:
            f.write("onset\tduration\ttrial_type\tstim_file\n")
            for on, dur, cat, name in events:
                f.write(f"{on:.3f}\t{dur:.3f}\tcat{cat}\t{name}\n")
        rows.append((sub, f"{age:.1f}", sex, "patient" if patient else "control", f"{score:.4f}", site))
        print(f"independent_study: {sub} site {site} TR {tr} {n_t} volumes {len(events)} events", flush=True)
    with open(os.path.join(root, "participants.tsv"), "w") as f:
        f.write("participant_id\tage\tsex\tdiagnosis\tscore\n")
        for r in rows:
            f.write("\t".join(r[:5]) + "\n")
    print(f"independent_study: {len(rows)} subjects, {P} parcels -> {root}, {a.out}/atlas.nii.gz, {a.out}/stimuli.tsv")


if __name__ == "__main__":
    main()
