"""How closely ONNX Runtime reproduces predict on graphs written by fastbp.onnx,
and how long one inference takes in each (needs onnx and onnxruntime).

Agreement: for each dtype, hidden activation and loss, a 784-128-64-10 MLP with
random parameters (biases too) and 1000 random rows; prints the largest error
of ORT's "output" and "probabilities" relative to the largest |predict| value.
Timing: model.predict against session.run on the same rows, in interleaved
rounds (best of `--rounds`), one row per size of docs/performance.md's table.

    python bench/onnx_agreement.py [--rounds 20]
"""
import argparse
import time

import numpy as np
import onnxruntime as ort

import fastbp
import fastbp.onnx as fonnx

SIZES = {"book": (100, [784, 50, 10]), "medium": (128, [784, 512, 512, 10])}


def random_mlp(sizes, activation, loss, dtype, seed=0):
    m = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    m.set_params({k: rng.standard_normal(v.shape) / np.sqrt(v.shape[0]) if v.ndim == 2
                  else rng.standard_normal(v.shape) for k, v in m.get_params().items()})
    return m


def session(model, probabilities=False, threads=0):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(fonnx.to_onnx(model, probabilities=probabilities)
                                .SerializeToString(), so, providers=["CPUExecutionProvider"])


def rel(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.max(np.abs(want)))


def agreement():
    print("dtype    activation loss                   output     probabilities")
    x64 = 2 * np.random.default_rng(2).standard_normal((1000, 784))
    for dtype in (np.float32, np.float64):
        x = x64.astype(dtype)
        for act in ("relu", "sigmoid", "tanh", "identity"):
            for loss in ("softmax_cross_entropy", "mse", "binary_cross_entropy"):
                m = random_mlp([784, 128, 64, 10], act, loss, dtype)
                proba = loss != "mse"
                got = session(m, proba).run(None, {"input": x})
                e_out = rel(got[0], m.predict(x))
                e_p = f"{rel(got[1], m.predict_proba(x)):.1e}" if proba else "-"
                print(f"{np.dtype(dtype).name:8} {act:10} {loss:22} {e_out:.1e}    {e_p}")


def timing(rounds):
    print(f"\nms per call, best of {rounds} interleaved rounds (fastbp threads: "
          f"{fastbp.get_num_threads()}, ORT: its default)")
    print("size    N    net                 dtype    fastbp   ORT      ORT/fastbp")
    for name, (N, sizes) in SIZES.items():
        for dtype in (np.float32, np.float64):
            m = random_mlp(sizes, "relu", "softmax_cross_entropy", dtype)
            s = session(m)
            x = np.random.default_rng(3).standard_normal((N, sizes[0])).astype(dtype)
            calls = {"fastbp": lambda: m.predict(x), "ort": lambda: s.run(None, {"input": x})}
            best = {k: float("inf") for k in calls}
            for _ in range(rounds):
                for k, fn in calls.items():
                    t = time.perf_counter()
                    for _ in range(10):
                        fn()
                    best[k] = min(best[k], (time.perf_counter() - t) / 10 * 1e3)
            net = "-".join(map(str, sizes))
            print(f"{name:7} {N:<4} {net:19} {np.dtype(dtype).name:8} {best['fastbp']:<8.3f} "
                  f"{best['ort']:<8.3f} {best['ort'] / best['fastbp']:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}, fastbp {fastbp.__version__}")
    agreement()
    timing(args.rounds)


if __name__ == "__main__":
    main()
