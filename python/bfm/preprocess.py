"""The per-run preprocessing `bfm convert` applies to a parcel time series (io/run_preprocess.cpp), in numpy, so that
a new scan reaches a released checkpoint the way its training corpus did:

    x = bfm.preprocess(series, "ckpt/", tr=2.0)     # series [T, P]: parcel means of one run, in the atlas' order

In order: scrubbing (volumes whose framewise displacement exceeds scrub_fd are dropped, not interpolated), the
least-squares fit of [confounds, 1, t] over the kept volumes removed from every parcel (t their acquisition
indices, centred; the line only with detrend, the constant always when there is anything to fit), linear
resampling onto the grid k * target_tr (never past the last sample), then scaling per parcel: zscore (ddof 0)
or robust ((x - median) / (IQR / 1.349)); a constant parcel becomes zeros.

The parameters are the checkpoint's config.json key "data_provenance" (written by `bfm pretrain` from the corpus):
{"atlas", "atlas_sha256", "parcel_labels", "detrend", "scaling", "target_tr" (0 = none), "confounds" (none, motion6,
motion24, acompcor or a FILE.json), "scrub_fd" (0 = none), "tr"}. A checkpoint without it gets bfm convert's
defaults (linear detrend, zscore) and a warning.
"""
import json
import math
import os
import warnings

import numpy as np

DEFAULTS = {"detrend": True, "scaling": "zscore", "target_tr": 0.0, "confounds": "none", "scrub_fd": 0.0,
            "tr": None, "parcel_labels": []}
SCALINGS = ("zscore", "robust", "none")
MOTION_AXES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def provenance(config_or_folder):
    """The data_provenance dict (DEFAULTS filled in) of a checkpoint folder, a config.json path, a config dict or a
    provenance dict itself. Warns and returns DEFAULTS when a config has no data_provenance."""
    source = config_or_folder
    if isinstance(source, (str, os.PathLike)):
        path = os.path.join(source, "config.json") if os.path.isdir(source) else os.fspath(source)
        with open(path) as f:
            source = json.load(f)
        where = path
    else:
        where = "the config given"
    if not isinstance(source, dict):
        raise ValueError(f"{where}: not a checkpoint config or data_provenance dict")
    if "data_provenance" in source:
        given = source["data_provenance"] or {}
    elif "n_parcels" in source or "format" in source:  # a checkpoint config from before data_provenance
        warnings.warn(f"{where} has no data_provenance (a checkpoint written before bfm recorded it): using "
                      "bfm convert's defaults, linear detrend and zscore per parcel", stacklevel=3)
        given = {}
    else:
        given = source
    p = dict(DEFAULTS)
    p.update({k: v for k, v in given.items() if v is not None or k == "tr"})
    if p["scaling"] not in SCALINGS:
        raise ValueError(f"{where}: scaling {p['scaling']!r}, expected one of {SCALINGS}")
    return p


def confound_columns(spec):
    """bfm convert --confounds SPEC -> the fMRIPrep column names in the design's order (io/confounds.cpp)."""
    if not spec or spec == "none":
        return []
    if spec in ("motion6", "motion24"):
        columns = list(MOTION_AXES)
        if spec == "motion24":
            columns += [a + s for s in ("_derivative1", "_power2", "_derivative1_power2") for a in MOTION_AXES]
        return columns
    if spec == "acompcor":
        return [f"a_comp_cor_{i:02d}" for i in range(5)]
    if spec.endswith(".json") and os.path.isfile(spec):
        with open(spec) as f:
            return list(json.load(f)["columns"])
    raise ValueError(f"confounds {spec!r}: not none, motion6, motion24, acompcor or a FILE.json here; pass the "
                     "regressors as confounds=[T, C] instead")


def read_confounds(path, spec):
    """fMRIPrep's *_desc-confounds_timeseries.tsv -> (regressors [T, C] of --confounds SPEC, framewise displacement
    [T]); 'n/a' (the first row of derivatives) is 0, as bfm convert reads it."""
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]

    def column(name):
        if name not in header:
            raise ValueError(f"{path}:1: no column {name!r}")
        i = header.index(name)
        return np.array([0.0 if r[i] == "n/a" else float(r[i]) for r in rows])

    columns = confound_columns(spec)
    values = np.column_stack([column(c) for c in columns]) if columns else np.zeros((len(rows), 0))
    fd = column("framewise_displacement") if "framewise_displacement" in header else None
    return values, fd


def _residual(y, design):
    """y [K, P] minus its least-squares fit on design [K, D] (rank-deficient designs remove their span)."""
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ beta


def _scale(x, scaling):
    if scaling == "none" or len(x) == 0:
        return x
    if scaling == "zscore":
        centre, spread = x.mean(axis=0), x.std(axis=0)
    else:
        q25, centre, q75 = np.percentile(x, [25, 50, 75], axis=0)
        spread = (q75 - q25) / 1.349
    constant = ~(spread > 1e-12 * np.maximum(1.0, np.abs(centre)))
    return np.where(constant, 0.0, (x - centre) / np.where(constant, 1.0, spread))


def preprocess(x, config_or_folder=None, *, tr=None, confounds=None, framewise_displacement=None):
    """One run's parcel series x [T, P] -> the series bfm convert would store [T', P] (float64).

    config_or_folder: a checkpoint folder, its config.json, a config dict or a data_provenance dict (None: the
    defaults, with a warning). tr: the run's TR in seconds, needed when the provenance resamples (target_tr > 0).
    confounds: the run's regressors [T, C], or the path of its fMRIPrep confounds TSV (the provenance's column set
    is read from it, and its framewise_displacement for scrubbing). framewise_displacement: [T] (NaN = 0).
    """
    if config_or_folder is None:
        warnings.warn("no checkpoint given: using bfm convert's defaults, linear detrend and zscore per parcel",
                      stacklevel=2)
    p = provenance(DEFAULTS if config_or_folder is None else config_or_folder)
    x = np.array(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x has shape {x.shape}, expected [T, P] (time points, parcels)")
    T, P = x.shape
    if p["parcel_labels"] and len(p["parcel_labels"]) != P:
        raise ValueError(f"x has {P} parcels, the checkpoint's atlas {p.get('atlas', '')!r} has "
                         f"{len(p['parcel_labels'])}")
    spec = p["confounds"] or "none"
    if isinstance(confounds, (str, os.PathLike)):
        confounds, fd_read = read_confounds(os.fspath(confounds), spec)
        framewise_displacement = fd_read if framewise_displacement is None else framewise_displacement
    if confounds is None and spec != "none":
        warnings.warn(f"the checkpoint's corpus had confounds {spec!r} regressed out; none given (confounds=), so "
                      "none are", stacklevel=2)
    C = np.zeros((T, 0)) if confounds is None else np.asarray(confounds, dtype=np.float64)
    C = C[:, None] if C.ndim == 1 else C
    if C.ndim != 2 or C.shape[0] != T:
        raise ValueError(f"confounds have shape {C.shape}, expected [{T}, C]: a row per time point of x")

    keep = None
    if p["scrub_fd"] and p["scrub_fd"] > 0:
        if framewise_displacement is None:
            warnings.warn(f"the checkpoint's corpus was scrubbed at framewise displacement {p['scrub_fd']}; no "
                          "framewise_displacement given, so no volume is dropped", stacklevel=2)
        else:
            fd = np.nan_to_num(np.asarray(framewise_displacement, dtype=np.float64))
            if fd.shape != (T,):
                raise ValueError(f"framewise_displacement has shape {fd.shape}, expected [{T}]")
            keep = fd <= p["scrub_fd"]
    target_tr = float(p["target_tr"] or 0)
    resample = target_tr > 0 and (tr is None or abs(target_tr - tr) > 1e-9 * tr)
    if resample and tr is None:
        raise ValueError(f"the checkpoint's corpus was resampled to TR {target_tr} s: pass tr= (this run's TR)")
    if resample and keep is not None:
        raise ValueError("scrubbing and resampling to a target TR exclude each other (as in bfm convert)")
    if not resample and target_tr == 0 and p["tr"] and tr and not math.isclose(p["tr"], tr, rel_tol=1e-6):
        warnings.warn(f"this run's TR is {tr} s, the checkpoint's corpus had TR {p['tr']} s", stacklevel=2)

    rows = np.arange(T) if keep is None else np.nonzero(keep)[0]
    x = x[rows]
    columns = [C[rows], np.ones((len(rows), 1))]
    if p["detrend"]:
        columns.append((rows - rows.mean())[:, None] if len(rows) else np.zeros((0, 1)))
    # Scrubbing alone without detrend only drops volumes; otherwise one least squares of [confounds, 1, t].
    if p["detrend"] or C.shape[1] > 0:
        x = _residual(x, np.hstack(columns))

    if resample:
        n = len(x)
        K = int(math.floor((n - 1) * tr / target_tr + 1e-9)) + 1
        at = np.arange(K) * target_tr / tr  # in source samples
        x = np.column_stack([np.interp(at, np.arange(n), x[:, j]) for j in range(P)]).reshape(K, P)
    return _scale(x, p["scaling"])
