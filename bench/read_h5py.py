# h5py reading the windows bench_read read (bench/read.sh): the same (shard, run, start) list, one slice per window,
# as float32 [T, P], plus the window's rows of /runs/stim_embedding and /runs/label where the shard has them (the loader
# reads those too, for the batch's mean embedding and majority label). Prints "h5py windows=N bytes=B seconds=S"
# (the reads only, the files already open) and chunk_bytes=C: the bytes of /runs/timeseries chunks those windows
# touch (each read whole and checksummed by HDF5, by either reader).
#   /usr/bin/python3 bench/read_h5py.py WINDOW_LIST T
import sys, time
import h5py
import numpy as np

windows = [line.split() for line in open(sys.argv[1])]
T = int(sys.argv[2])
files, offsets, data, extra = {}, {}, {}, {}
for path, _, _ in windows:
    if path not in files:
        files[path] = h5py.File(path, "r")
        offsets[path] = files[path]["runs/offset"][:]
        data[path] = files[path]["runs/timeseries"]
        extra[path] = [files[path][n] for n in ("runs/stim_embedding", "runs/label") if n in files[path]]
nbytes, chunk_bytes = 0, 0
t0 = time.perf_counter()
for path, run, start in windows:
    o = offsets[path][int(run)] + int(start)
    x = data[path][o : o + T].astype(np.float32, copy=False)
    nbytes += x.nbytes
    for d in extra[path]:
        d[o : o + T]
seconds = time.perf_counter() - t0
for path, run, start in windows:
    o = offsets[path][int(run)] + int(start)
    rows, cols = data[path].chunks
    chunk_bytes += ((o + T - 1) // rows - o // rows + 1) * rows * cols * data[path].dtype.itemsize
print(f"h5py windows={len(windows)} bytes={nbytes} seconds={seconds:.4f} chunk_bytes={chunk_bytes}")
