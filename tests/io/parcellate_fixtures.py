# Fixtures for tests/io/test_parcellate.cpp, run with Debian's /usr/bin/python3 (nibabel, numpy): writes NIfTI scans and
# atlases into DIR and, for each case, NAME.ref with the parcel means computed independently here in numpy
# (format: "P T", labels, voxel counts, then T rows of P values).
# usage: parcellate_fixtures.py DIR
import sys, os, numpy as np, nibabel as nib
out = sys.argv[1]
rng = np.random.default_rng(7)
def save(img, name): nib.save(img, os.path.join(out, name))

def parcel_means(scan, atlas):
    """The reference: every scan voxel centre -> world (scan affine) -> nearest atlas voxel (inverse atlas affine),
    floor(x + 0.5); mean of finite values per label per time point (nan where none)."""
    data = scan.get_fdata(dtype=np.float64)  # scl_slope/scl_inter applied by nibabel
    lab = np.asarray(atlas.dataobj).astype(np.int64)
    nx, ny, nz, T = data.shape
    ii, jj, kk = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    world = scan.affine @ ijk
    a = np.floor(np.linalg.inv(atlas.affine) @ world + 0.5)[:3].astype(np.int64)
    inside = np.all((a >= 0) & (a < np.array(lab.shape)[:, None]), axis=0)
    vox_label = np.zeros(ii.size, np.int64)
    vox_label[inside] = lab[a[0, inside], a[1, inside], a[2, inside]]
    labels = np.unique(lab[lab > 0])
    flat = data.reshape(-1, T)
    means = np.zeros((T, len(labels))); counts = []
    for p, l in enumerate(labels):
        v = flat[vox_label == l]
        counts.append(len(v))
        with np.errstate(all="ignore"):
            means[:, p] = np.nanmean(v, axis=0) if len(v) else np.nan
    return labels, np.array(counts), means

def write_ref(name, labels, counts, x):
    with open(os.path.join(out, name + ".ref"), "w") as f:
        f.write(f"{x.shape[1]} {x.shape[0]}\n" + " ".join(map(str, labels)) + "\n" + " ".join(map(str, counts)) + "\n")
        for row in x: f.write(" ".join(repr(float(v)) for v in row) + "\n")

def detrend(x):
    t = np.arange(len(x)); y = x.copy()
    for p in range(x.shape[1]):
        b, a = np.polyfit(t, x[:, p], 1); y[:, p] = x[:, p] - (a + b * t)
    return y
def zscore(x):
    s = x.std(axis=0); return np.where(s > 1e-12, (x - x.mean(axis=0)) / np.where(s > 0, s, 1), 0)
def robust(x):
    q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=0); s = (q75 - q25) / 1.349
    return np.where(s > 1e-12, (x - q50) / np.where(s > 0, s, 1), 0)
def resample(x, tr, target):
    K = int(np.floor((len(x) - 1) * tr / target + 1e-9)) + 1
    t_src, t_dst = np.arange(len(x)) * tr, np.arange(K) * target
    return np.stack([np.interp(t_dst, t_src, x[:, p]) for p in range(x.shape[1])], axis=1)

# --- 1. MNI-like 2 mm int16 scan (scl_slope/inter), 3 mm int16 atlas on a shifted grid, one label out of reach
T = 30
sa = np.diag([-2.0, 2.0, 2.0, 1.0]); sa[:3, 3] = [20.3, -25.7, -15.1]
base = rng.integers(200, 800, size=(20, 22, 18, 1))
drift = np.linspace(0, 1, T)[None, None, None, :] * rng.integers(-50, 50, size=(20, 22, 18, 1))
raw = (base + drift + rng.normal(0, 30, size=(20, 22, 18, T))).astype(np.int16)
scan = nib.Nifti1Image(raw, sa); scan.header.set_data_dtype(np.int16)
scan.header.set_slope_inter(0.5, 3.0); scan.header.set_xyzt_units("mm", "sec")
scan.header.set_zooms((2, 2, 2, 1.5)); scan.set_sform(sa, code=4)
qdecoy = sa.copy(); qdecoy[:3, 3] += 100; scan.set_qform(qdecoy, code=1)  # sform wins when both are set
save(scan, "scan_mni.nii.gz")
scan = nib.load(os.path.join(out, "scan_mni.nii.gz"))
assert np.allclose(scan.affine, sa) and scan.header["qform_code"] == 1
aa = np.diag([3.0, 3.0, 3.0, 1.0]); aa[:3, 3] = [-27.4, -30.2, -20.9]
lab = np.zeros((19, 20, 16), np.int16)
for l, (x0, y0, z0) in enumerate([(2, 3, 2), (6, 6, 4), (10, 3, 8), (4, 12, 6), (9, 10, 2), (12, 13, 9)], start=1):
    lab[x0:x0 + 4, y0:y0 + 5, z0:z0 + 4] = l * 3  # labels 3, 6, ..., 18 (not contiguous)
lab[17:19, 18:20, 14:16] = 40                   # beyond the scan's field of view: an empty parcel
atlas = nib.Nifti1Image(lab, aa); atlas.set_sform(aa, code=4); save(atlas, "atlas_3mm.nii.gz")
labels, counts, m = parcel_means(scan, atlas)
assert counts[-1] == 0 and counts[:-1].min() > 0
write_ref("mni_raw", labels, counts, np.nan_to_num(m))
tr = 1.5
write_ref("mni_detrend_zscore", labels, counts, zscore(detrend(np.nan_to_num(m))))
write_ref("mni_detrend_robust", labels, counts, robust(detrend(np.nan_to_num(m))))
write_ref("mni_detrend_resample_zscore", labels, counts, zscore(resample(detrend(np.nan_to_num(m)), tr, 2.0)))

# --- 2. float32 scan with qform only (a decoy sform with code 0), atlas with a rotated (oblique) sform
th = 0.3
R = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
qa = np.eye(4); qa[:3, :3] = R @ np.diag([2.5, 2.5, 3.0]); qa[:3, 3] = [-11.1, -13.3, -9.7]
data = rng.normal(100, 10, size=(12, 11, 9, 8)).astype(np.float32)
scan2 = nib.Nifti1Image(data, qa); scan2.set_qform(qa, code=1)
decoy = np.diag([7.0, 7.0, 7.0, 1.0]); decoy[:3, 3] = 500
scan2.set_sform(decoy, code=0); scan2.header.set_zooms((2.5, 2.5, 3.0, 2000.0)); scan2.header.set_xyzt_units("mm", "msec")
save(scan2, "scan_qform.nii")
scan2 = nib.load(os.path.join(out, "scan_qform.nii"))
assert np.allclose(scan2.affine, qa, atol=1e-4)
ob = np.eye(4); ob[:3, :3] = np.array([[np.cos(-0.5), 0, np.sin(-0.5)], [0, 1, 0], [-np.sin(-0.5), 0, np.cos(-0.5)]]) * 1.7
ob[:3, 3] = [-14.2, -16.9, -8.3]
lab2 = rng.integers(0, 6, size=(18, 20, 16)).astype(np.float32)  # float-typed atlas with integral values
atlas2 = nib.Nifti1Image(lab2, ob); atlas2.set_sform(ob, code=2); save(atlas2, "atlas_oblique.nii.gz")
labels, counts, m = parcel_means(scan2, atlas2)
write_ref("oblique_raw", labels, counts, np.nan_to_num(m))

# --- 3. NaN voxels: scan on the atlas's own grid
lab3 = np.zeros((6, 5, 4), np.uint8); lab3[:3] = 1; lab3[3:5] = 2; lab3[5, :, :2] = 3; lab3[5, :, 2:] = 4
aff3 = np.diag([2.0, 2.0, 2.0, 1.0])
d3 = rng.normal(0, 1, size=(6, 5, 4, 10)).astype(np.float32)
d3[0, 0, 0, :] = np.nan            # one voxel of parcel 1 NaN throughout
d3[1, 2, 3, 4] = np.nan            # one value of parcel 1 NaN at t=4
d3[3, 1, 1, 7] = np.inf            # one value of parcel 2 inf at t=7
d3[5, :, :2, :] = np.nan           # parcel 3 entirely NaN: empty
nib.save(nib.Nifti1Image(lab3, aff3), os.path.join(out, "atlas_own.nii.gz"))
s3 = nib.Nifti1Image(d3, aff3); s3.header.set_zooms((2, 2, 2, 1.0)); s3.header.set_xyzt_units("mm", "sec")
save(s3, "scan_nan.nii.gz")
d3m = np.where(np.isfinite(d3), d3, np.nan).astype(np.float64)
means = np.stack([np.nanmean(d3m[lab3 == l], axis=0) if l != 3 else np.zeros(10) for l in (1, 2, 3, 4)], axis=1)
write_ref("nan_raw", [1, 2, 3, 4], [int((lab3 == l).sum()) for l in (1, 2, 3, 4)], means)
d4 = d3.copy(); d4[5, :, 2:, 6] = np.nan  # parcel 4 all NaN at t=6 only
s4 = nib.Nifti1Image(d4, aff3); s4.header.set_zooms((2, 2, 2, 1.0)); save(s4, "scan_nan_hole.nii.gz")

# --- 4. the real scan (nitime) with a label image on its own grid
real = nib.load("/usr/lib/python3/dist-packages/nitime/data/fmri1.nii.gz")
nx, ny, nz = real.shape[:3]
ii, jj, kk = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
own = (1 + (ii // 4) + 3 * (jj // 4) + 9 * (kk // 6)).astype(np.int16)
own[0, 0, :] = 0
own_img = nib.Nifti1Image(own, real.affine); own_img.set_sform(real.affine, code=1); save(own_img, "atlas_real_grid.nii.gz")
labels, counts, m = parcel_means(real, nib.load(os.path.join(out, "atlas_real_grid.nii.gz")))
write_ref("real_raw", labels, counts, m)

# --- 5. error cases
save(nib.Nifti1Image(data[..., 0], qa), "scan_3d.nii.gz")
save(nib.Nifti1Image(np.stack([lab, lab], axis=-1), aa), "atlas_4d.nii.gz")
save(nib.Nifti1Image(lab2 + 0.5, ob), "atlas_fractional.nii.gz")
z = nib.Nifti1Image(data, qa); z.header.set_zooms((2.5, 2.5, 3.0, 0.0)); save(z, "scan_no_tr.nii.gz")
n = nib.Nifti1Image(data, None); n.set_sform(None, code=0); n.set_qform(None, code=0); save(n, "scan_no_affine.nii")
blob = open(os.path.join(out, "scan_qform.nii"), "rb").read()
open(os.path.join(out, "scan_truncated.nii"), "wb").write(blob[: len(blob) // 2])
import gzip
gz = gzip.compress(blob)
open(os.path.join(out, "scan_truncated.nii.gz"), "wb").write(gz[: len(gz) * 2 // 3])
open(os.path.join(out, "not_nifti.nii"), "wb").write(b"hello" * 100)
print("ok")
