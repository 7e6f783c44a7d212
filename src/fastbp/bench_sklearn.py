"""fastbp.sklearn against scikit-learn: the same fits, timed side by side.

Each workload fits sklearn.neural_network's estimator and fastbp.sklearn's with
the same parameters (scikit-learn's defaults: adam, batch_size "auto",
random_state 0; the hidden layers and max_iter below) on the same scaled
training split, with the same thread budget (fastbp's pool with n_threads,
scikit-learn's BLAS under threadpoolctl), and reports the fit times, their
ratio and the held-out scores (accuracy, or R^2). In float64 both run the same
epochs to the same weights (tests/test_sklearn.py holds them to 1e-9), so the
ratio compares equal work; the float32 rows time fastbp's dtype=np.float32 on
the same float64 data, beside scikit-learn on float64 data and on float32 data.

    python -m fastbp bench --vs-sklearn [--datasets digits ...] [--threads N]

Used by ``python -m fastbp bench --vs-sklearn`` and bench/bench_sklearn.py.
"""
import time
import warnings

import numpy as np

#: name: (loader, or generator and its arguments; task; hidden layers; max_iter)
WORKLOADS = {
    "digits": ("load_digits", {}, "classification", (100,), 200),
    "breast_cancer": ("load_breast_cancer", {}, "classification", (100,), 200),
    "wine": ("load_wine", {}, "classification", (100,), 200),
    "diabetes": ("load_diabetes", {}, "regression", (100,), 200),
    "classification_60k": ("make_classification",
                           dict(n_samples=80_000, n_features=100, n_informative=40,
                                n_classes=5, random_state=0),
                           "classification", (256, 256), 5),
    "regression_60k": ("make_regression",
                       dict(n_samples=80_000, n_features=100, n_informative=40, noise=10.0,
                            random_state=0),
                       "regression", (256, 256), 5),
}
SHIPPED = ["digits", "breast_cancer", "wine", "diabetes"]
GENERATED = ["classification_60k", "regression_60k"]


def load(name, n_samples=None):
    """(Xtr, Xte, ytr, yte, task): a 25% held-out split (stratified for
    classification), X standardized with the training statistics, regression
    targets too. The generated sets have 80k rows: 60k to train. n_samples: fewer
    rows (the tests' quick runs)."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    fn, kw, task, _, _ = WORKLOADS[name]
    if fn.startswith("load_"):
        X, y = getattr(sklearn.datasets, fn)(return_X_y=True)
        if n_samples is not None:
            X, y = X[:n_samples], y[:n_samples]
    else:
        X, y = getattr(sklearn.datasets, fn)(**dict(kw, n_samples=n_samples or kw["n_samples"]))
    strat = y if task == "classification" else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=strat, random_state=0)
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0) + 1e-12
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    if task == "regression":
        ymu, ysd = ytr.mean(), ytr.std()
        ytr, yte = (ytr - ymu) / ysd, (yte - ymu) / ysd
    return Xtr, Xte, ytr, yte, task


def estimators(name, max_iter=None, **extra):
    """(scikit-learn's estimator, fastbp's) for workload name; extra: fastbp's
    extras (dtype, n_threads)."""
    import sklearn.neural_network as sknn

    from . import sklearn as fsk

    _, _, task, hidden, iters = WORKLOADS[name]
    params = dict(hidden_layer_sizes=hidden, max_iter=max_iter or iters, random_state=0)
    if task == "classification":
        return sknn.MLPClassifier(**params), fsk.MLPClassifier(**params, **extra)
    return sknn.MLPRegressor(**params), fsk.MLPRegressor(**params, **extra)


def timed_fits(fits, threads, repeat=1):
    """{name: best seconds of repeat fits} for fits {name: (estimator, X, y)}, the
    contenders taking turns round by round (a load spike then hits them alike),
    scikit-learn's BLAS and fastbp's pool at threads; the estimators are left
    fitted."""
    from threadpoolctl import threadpool_limits

    best = {name: np.inf for name in fits}
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached: the same for both
        for _ in range(repeat):
            for name, (est, X, y) in fits.items():
                time.sleep(0.2)  # idle BLAS workers of the previous fit go to sleep
                t0 = time.perf_counter()
                est.fit(X, y)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run(names=None, threads=None, repeat=None, n_samples=None, max_iter=None):
    """Rows of results, one per workload and fastbp dtype."""
    import fastbp

    threads = threads or fastbp.get_num_threads()
    rows = []
    for name in names or list(WORKLOADS):
        Xtr, Xte, ytr, yte, task = load(name, n_samples)
        sk, fb = estimators(name, max_iter, n_threads=threads)
        fits = {"sklearn": (sk, Xtr, ytr), "fastbp": (fb, Xtr, ytr)}
        if name in GENERATED:
            sk32, fb32 = estimators(name, max_iter, n_threads=threads, dtype=np.float32)
            fits.update({"sklearn32": (sk32, Xtr.astype(np.float32), ytr),
                         "fastbp32": (fb32, Xtr, ytr)})
        t = timed_fits(fits, threads, repeat or (3 if name in SHIPPED else 1))
        row = {"dataset": name, "task": task, "rows": Xtr.shape[0], "features": Xtr.shape[1],
               "hidden": list(WORKLOADS[name][3]), "dtype": "float64", "threads": threads,
               "sklearn_s": t["sklearn"], "fastbp_s": t["fastbp"],
               "speedup": t["sklearn"] / t["fastbp"],
               "sklearn_iter": int(sk.n_iter_), "fastbp_iter": int(fb.n_iter_),
               "sklearn_score": float(sk.score(Xte, yte)),
               "fastbp_score": float(fb.score(Xte, yte))}
        rows.append(row)
        if name in GENERATED:
            rows.append(dict(row, dtype="float32", fastbp_s=t["fastbp32"],
                             speedup=t["sklearn"] / t["fastbp32"], sklearn32_s=t["sklearn32"],
                             speedup_vs_sklearn32=t["sklearn32"] / t["fastbp32"],
                             fastbp_iter=int(fb32.n_iter_),
                             fastbp_score=float(fb32.score(Xte, yte))))
    return rows


def format_table(rows):
    head = (f"{'dataset':<19} {'rows x feat':>12} {'hidden':>10} {'dtype':>7} {'iter':>7} "
            f"{'sklearn s':>10} {'fastbp s':>9} {'speedup':>8} {'sk score':>9} "
            f"{'fb score':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        it = (str(r["fastbp_iter"]) if r["fastbp_iter"] == r["sklearn_iter"]
              else f"{r['sklearn_iter']}/{r['fastbp_iter']}")
        lines.append(
            f"{r['dataset']:<19} {r['rows']:>6}x{r['features']:<5} "
            f"{'-'.join(map(str, r['hidden'])):>10} {r['dtype']:>7} {it:>7} "
            f"{r['sklearn_s']:>10.3f} {r['fastbp_s']:>9.3f} {r['speedup']:>7.2f}x "
            f"{r['sklearn_score']:>9.4f} {r['fastbp_score']:>9.4f}")
        if "sklearn32_s" in r:
            lines.append(f"{'':<19} {'':>12} {'':>10} {'':>7} {'':>7} "
                         f"{r['sklearn32_s']:>10.3f} {'':>9} {r['speedup_vs_sklearn32']:>7.2f}x"
                         f"   (scikit-learn on float32 X)")
    return "\n".join(lines)


def main(args):
    from .bench import write_json

    rows = run(args.datasets, args.threads, args.repeat)
    print(f"fastbp.sklearn vs sklearn.neural_network: adam, random_state=0, "
          f"{rows[0]['threads']} thread(s) each; times are the best of "
          f"{args.repeat or '3 (shipped) / 1 (generated)'} fit(s); scores on a 25% held-out split")
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    return 0
