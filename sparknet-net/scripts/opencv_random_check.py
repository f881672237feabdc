#!/usr/bin/env python3
"""Dev check (not a cargo test): nets shipped without weights, built with seeded random weights.

For each deploy net: `sparknet-net export --seed S` writes a caffemodel (fillers as Caffe's layers
choose them; `--bn-unit` gives BatchNorm unit statistics so deep nets stay finite), a seeded
random input is fed to `sparknet-net forward` and to OpenCV's independent Caffe importer
(../shared/peers/opencv_caffe_ref.py), and the outputs are compared with
max|a-b| / max|b|. Needs `pip install "opencv-python-headless<5" numpy`; run from the workspace
root with BIN pointing at the sparknet-net binary. Writes nothing into the repository.

  BIN=target/net/debug/sparknet-net python sparknet-net/scripts/opencv_random_check.py [NAME ...]

With GOLDEN=DIR the input is the formula x[i] = sin(0.001 * i) (C order, batch 1), which the Rust
test recomputes, and OpenCV's output is written to DIR/<name>.json (the committed goldens of
tests/it/golden.rs: seed + outputs, never weights).
"""
import json, os, subprocess, sys, tempfile
import numpy as np

A = os.environ.get("SPARKNET_ASSETS", "../shared/assets")
BIN = os.environ.get("BIN", "target/net/debug/sparknet-net")
PEER = os.path.join(os.path.dirname(A.rstrip("/")), "peers", "opencv_caffe_ref.py")
NETS = {
    "alexnet": ("prototxt/bvlc_caffe/models/bvlc_alexnet/deploy.prototxt", "prob"),
    "caffenet": ("prototxt/bvlc_caffe/models/bvlc_reference_caffenet/deploy.prototxt", "prob"),
    "googlenet": ("prototxt/bvlc_caffe/models/bvlc_googlenet/deploy.prototxt", "prob"),
    "squeezenet": ("prototxt/squeezenet/SqueezeNet_v1.1/deploy.prototxt", "prob"),
    "mobilenet": ("prototxt/mobilenet_caffe/mobilenet_deploy.prototxt", "prob"),
    "mobilenet_v2": ("prototxt/mobilenet_caffe/mobilenet_v2_deploy.prototxt", "fc7"),
    "resnet50": ("prototxt/resnet/ResNet-50-deploy.prototxt", "fc1000"),
    "fcn8s": ("prototxt/fcn/voc-fcn8s/deploy.prototxt", "score"),
}

def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout

def main():
    names = sys.argv[1:] or list(NETS)
    seed = 1
    for name in names:
        proto, blob = NETS[name]
        proto = os.path.join(A, proto)
        with tempfile.TemporaryDirectory() as d:
            info = json.loads(run([BIN, "inspect", proto, "--json"]))
            shape = next(t["shape"] for l in info["layers"] if l["type"] == "Input" for t in l["tops"])
            shape = [1] + shape[1:]
            golden = os.environ.get("GOLDEN")
            if golden:
                x = np.sin(0.001 * np.arange(int(np.prod(shape)), dtype=np.float64)).astype(np.float32).reshape(shape)
            else:
                x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
            np.save(f"{d}/in.npy", x)
            run([BIN, "export", "--model", proto, "--seed", str(seed), "--bn-unit", "--fill-missing", "--to", f"{d}/w.caffemodel"])
            run([BIN, "forward", "--model", proto, "--weights", f"{d}/w.caffemodel", "--input",
                 f"{info['inputs'][0]}={d}/in.npy", "--blobs", blob, "--out", f"{d}/ours"])
            run([sys.executable, PEER, "--prototxt", proto, "--model", f"{d}/w.caffemodel", "--input",
                 f"{d}/in.npy", "--blobs", blob, "--out", f"{d}/cv"])
            a, b = np.load(f"{d}/ours/{blob}.npy"), np.load(f"{d}/cv/{blob}.npy")
            if golden:
                with open(os.path.join(golden, f"{name}.json"), "w") as f:
                    json.dump({"net": name, "prototxt": NETS[name][0], "seed": seed, "fill_missing": True,
                               "bn_unit": True, "input": "sin(0.001 * i)", "input_shape": shape, "blob": blob,
                               "producer": "OpenCV " + run([sys.executable, "-c", "import cv2; print(cv2.__version__)"]).strip(),
                               "shape": list(b.shape), "values": [float(v) for v in b.ravel()]}, f)
            rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
            print(json.dumps({"net": name, "seed": seed, "blob": blob, "shape": list(a.shape),
                              "ref_std": float(b.std()),
                              "max_rel_err": rel, "argmax_equal": bool((a.reshape(a.shape[0], -1).argmax(1) == b.reshape(b.shape[0], -1).argmax(1)).all())}), flush=True)

if __name__ == "__main__":
    main()
