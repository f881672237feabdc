#!/usr/bin/env python3
"""OpenCV peer for sparknet-bench's `data/jpeg256` benchmark.

Same work per image as sparknet-data's Transformer in TRAIN: decode a 256x256 JPEG (cv2.imdecode,
BGR), random 227x227 crop, random mirror, subtract a 3x256x256 mean image indexed at the crop
offset, output float32 CHW. One thread (cv2.setNumThreads(1)), files read into memory first.

Usage: python opencv_decode.py target/bench-data/jpeg256 [seconds]
"""
import glob
import os
import sys
import time

import cv2
import numpy as np


def main():
    folder = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    cv2.setNumThreads(1)
    files = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    if not files:
        sys.exit(f"no .jpg files in {folder}")
    blobs = [np.frombuffer(open(f, "rb").read(), dtype=np.uint8) for f in files]
    # The same deterministic mean image as the Rust bench: 100 + (i % 37), CHW.
    mean = (100.0 + (np.arange(3 * 256 * 256) % 37)).astype(np.float32).reshape(3, 256, 256)
    mean_hwc = np.ascontiguousarray(mean.transpose(1, 2, 0))
    rng = np.random.default_rng(0)
    k = 227

    def one(buf):
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # HxWx3 uint8, BGR
        h_off = int(rng.integers(0, img.shape[0] - k + 1))
        w_off = int(rng.integers(0, img.shape[1] - k + 1))
        crop = img[h_off:h_off + k, w_off:w_off + k].astype(np.float32)
        crop -= mean_hwc[h_off:h_off + k, w_off:w_off + k]
        if rng.integers(0, 2):
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop.transpose(2, 0, 1))

    for b in blobs:  # warm-up
        one(b)
    n, passes = 0, []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for b in blobs:
            one(b)
        passes.append(len(blobs) / (time.perf_counter() - t))
        n += len(blobs)
    total = time.perf_counter() - start
    passes.sort()
    print(f"opencv {cv2.__version__}: {len(blobs)} files, {n} images in {total:.2f} s: "
          f"mean {n / total:.1f} img/s, median pass {passes[len(passes) // 2]:.1f} img/s, "
          f"best pass {passes[-1]:.1f} img/s (1 thread)")


if __name__ == "__main__":
    main()
