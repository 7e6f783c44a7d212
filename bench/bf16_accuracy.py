"""Held-out score of matmul_precision="bfloat16" against float32 (issue 22).

    PYTHONPATH=src python bench/bf16_accuracy.py [--seeds 5]

Per data set and seed, two models from the same initial weights and the same
batch order, one with float32 products and one with bfloat16 operands
(float32 accumulation), fit with fastbp.MLP.fit; prints the held-out accuracy
of each, their difference, and how many test predictions differ. Data sets:
digits and breast_cancer (fastbp's CLI split, 25% held out, stratified) and a
synthetic 60,000 x 100 10-class set (sklearn.datasets.make_classification,
10,000 rows held out).
"""
import argparse
import time

import numpy as np

import fastbp
from fastbp.__main__ import load_dataset

# name: (hidden widths, epochs, batch, lr)
RUNS = {
    "digits": ([128], 30, 32, 0.1),
    "breast_cancer": ([64], 30, 32, 0.05),
    "synthetic-60k": ([256, 256], 10, 128, 0.05),
}


def synthetic(seed):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=60_000, n_features=100, n_informative=60,
                               n_redundant=20, n_classes=10, n_clusters_per_class=2,
                               class_sep=1.5, random_state=seed)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=10_000, stratify=y, random_state=seed)
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    return ((Xtr - mu) / sd).astype(np.float32), ((Xte - mu) / sd).astype(np.float32), \
        ytr.astype(np.int64), yte.astype(np.int64)


def data(name, seed):
    if name == "synthetic-60k":
        return synthetic(seed)
    Xtr, Xte, ytr, yte, _ = load_dataset(name, seed)
    return Xtr, Xte, ytr, yte


def one(name, seed):
    hidden, epochs, batch, lr = RUNS[name]
    Xtr, Xte, ytr, yte = data(name, seed)
    sizes = [Xtr.shape[1], *hidden, int(ytr.max()) + 1]
    out = {}
    for mm in ("float32", "bfloat16"):
        m = fastbp.MLP(sizes, "relu", seed=seed, matmul_precision=mm)
        t0 = time.perf_counter()
        m.fit(Xtr, ytr, epochs=epochs, batch_size=batch, lr=lr, momentum=0.9, seed=seed)
        out[mm] = (m.score(Xte, yte), m.predict(Xte).argmax(axis=1),
                   time.perf_counter() - t0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=list(RUNS))
    args = p.parse_args()
    print(f"bfloat16 path: {fastbp.get_bf16_provider()}; {fastbp.get_num_threads()} threads")
    print(f"{'data set':<15} {'net':<18} {'seeds':>5} {'fp32 acc':>9} {'bf16 acc':>9} "
          f"{'bf16-fp32':>10} {'worst |d|':>10} {'preds differ':>13}")
    for name in args.datasets:
        accs, diffs, n = [], 0, 0
        for seed in range(args.seeds):
            r = one(name, seed)
            accs.append((r["float32"][0], r["bfloat16"][0]))
            diffs += int((r["float32"][1] != r["bfloat16"][1]).sum())
            n += len(r["float32"][1])
        a = np.array(accs)
        hidden, epochs, batch, lr = RUNS[name]
        net = "-".join(map(str, hidden)) + f" {epochs}ep b{batch}"
        print(f"{name:<15} {net:<18} {args.seeds:>5} {a[:, 0].mean():>9.4f} "
              f"{a[:, 1].mean():>9.4f} {a[:, 1].mean() - a[:, 0].mean():>+10.4f} "
              f"{np.abs(a[:, 1] - a[:, 0]).max():>10.4f} {diffs:>6} / {n:<6}")


if __name__ == "__main__":
    main()
