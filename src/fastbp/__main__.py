"""fastbp's command line: train | predict | export | info | bench.

    fastbp train data.csv --target COLUMN [--save model.npz --plot curves.png ...]
    fastbp train --data digits|wine|breast_cancer|iris|diabetes|linnerud [...]
    fastbp predict model.npz rows.csv [-o predictions.csv] [--proba]
    fastbp export model.npz model.onnx [--check rows.csv]
    fastbp info [model.npz]
    fastbp bench [--sizes book small ... --out-dir DIR]
    fastbp bench --contention [--sizes digits book ...]
    fastbp bench --vs-sklearn [--datasets digits ... --threads N]

(``python -m fastbp`` is the same program.) The toy datasets are the ones
scikit-learn ships inside its package (no download). A data file is CSV or
Parquet (read with pandas; Parquet also needs pyarrow: pip install
'fastbp[data]'), or NumPy: an .npz holding "X" (n, features) and "y" (n,) and
optionally "feature_names", or an .npy matrix whose --target is a column index
(default: the last column). Model files are .npz archives of numbers and
strings (fastbp.bundle), read without pickle: the command line never loads
pickle or joblib files.
"""
import argparse
import math
import os
import sys
import time
import warnings

import numpy as np

from . import ops
from .bench import BLOCK, OPTIMIZERS, SIZES
from .model import epoch_order

DATASETS = {
    # name: (loader name, task, default learning rate)
    "digits": ("load_digits", "classification", 0.1),
    "breast_cancer": ("load_breast_cancer", "classification", 0.1),
    "iris": ("load_iris", "classification", 0.1),
    "wine": ("load_wine", "classification", 0.1),
    # MSE on 331 rows diverges at lr 0.1 (the NumPy reference does too)
    "diabetes": ("load_diabetes", "regression", 0.01),
    "linnerud": ("load_linnerud", "regression", 0.01),
}
DATA_EXTRA = "pip install 'fastbp[data]'"


class UsageError(Exception):
    """Bad input found after parsing (a data file's content): one line, exit 2."""


# ---- data ------------------------------------------------------------------------------

def _pandas(why):
    try:
        import pandas
    except ImportError:
        raise UsageError(f"{why} needs pandas: {DATA_EXTRA}") from None
    return pandas


def read_table(path, fn="train"):
    """A data file as a pandas DataFrame (CSV, Parquet) or a dict of NumPy
    columns (.npz, .npy): {name: (n,) array}, in order."""
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv", ".txt", ".gz"):
        pd = _pandas(f"reading {ext} files")
        try:
            return pd.read_csv(path, sep="\t" if ext == ".tsv" else ",")
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    if ext in (".parquet", ".pq"):
        pd = _pandas("reading Parquet files")
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise UsageError(f"reading Parquet files needs pyarrow: {DATA_EXTRA}") from None
        except (ValueError, OSError) as e:
            raise UsageError(f"{path}: not a readable Parquet file ({e})") from None
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z.files:
                    raise UsageError(f"{path}: an .npz data file holds 'X' (n, features) and "
                                     f"'y' (n,), got {sorted(z.files)}")
                X = z["X"]
                y = z["y"] if "y" in z.files else None
                names = [str(n) for n in z["feature_names"]] if "feature_names" in z.files \
                    else [f"x{j}" for j in range(X.shape[1] if X.ndim == 2 else 0)]
        except (ValueError, OSError) as e:
            raise UsageError(f"{path}: not a readable .npz file ({e})") from None
        if X.ndim != 2 or len(names) != X.shape[1]:
            raise UsageError(f"{path}: 'X' must be 2-D with one feature name per column, got "
                             f"shape {X.shape} and {len(names)} names")
        cols = {n: X[:, j] for j, n in enumerate(names)}
        if y is not None:
            cols["y"] = y
        return cols
    if ext == ".npy":
        try:
            A = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UsageError(f"{path}: not a readable .npy file ({e})") from None
        if A.ndim != 2:
            raise UsageError(f"{path}: an .npy data file must hold a 2-D matrix, got shape "
                             f"{A.shape}")
        return {str(j): A[:, j] for j in range(A.shape[1])}
    raise UsageError(f"{path}: unknown file type {ext or '(none)'!r}; expected .csv, .tsv, "
                     ".parquet, .npz or .npy")


def _columns(table):
    return [str(c) for c in (table.columns if hasattr(table, "columns") else table)]


def _column(table, name):
    return np.asarray(table[name]) if hasattr(table, "columns") else np.asarray(table[name])


def features_and_target(table, target, path):
    """(X float64 (n, features), feature names, y (n,) raw) from a table, with
    every problem a one-line UsageError naming the column."""
    cols = _columns(table)
    if target is None:
        if path.lower().endswith(".npz") and "y" in cols:
            target = "y"
        elif path.lower().endswith(".npy"):
            target = cols[-1]
        else:
            raise UsageError(f"{path}: say which column is the target with --target COLUMN "
                             f"(columns: {', '.join(cols[:12])}{' ...' if len(cols) > 12 else ''})")
    if hasattr(table, "columns") and target not in table.columns and str(target) in cols:
        target = table.columns[cols.index(str(target))]
    if str(target) not in cols:
        raise UsageError(f"{path}: no column {target!r} for --target; the columns are "
                         f"{', '.join(cols[:12])}{' ...' if len(cols) > 12 else ''}")
    names = [c for c in cols if c != str(target)]
    if not names:
        raise UsageError(f"{path}: the target {target!r} is the only column: no features")
    X = []
    for c in names:
        key = table.columns[cols.index(c)] if hasattr(table, "columns") else c
        col = _column(table, key)
        if col.dtype.kind == "b":
            col = col.astype(np.float64)
        if col.dtype.kind not in "iuf":
            example = next((v for v in col if isinstance(v, str)), col[0] if len(col) else "")
            raise UsageError(f"{path}: feature column {c!r} is not numeric (dtype {col.dtype}, "
                             f"e.g. {example!r}); encode it as numbers or drop it")
        X.append(col.astype(np.float64))
    X = np.column_stack(X)
    y = _column(table, table.columns[cols.index(str(target))] if hasattr(table, "columns")
                else str(target))
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UsageError(f"{path}: feature column {names[c]!r} holds {X[r, c]} (row {r}; "
                         f"{int(bad.any(axis=1).sum())} row(s) with NaN or inf in all); impute "
                         "or drop them")
    missing = _missing(y)
    if missing.any():
        raise UsageError(f"{path}: the target {str(target)!r} is missing in "
                         f"{int(missing.sum())} row(s) (first: row {int(np.argmax(missing))}); "
                         "drop them")
    return X, names, y, str(target)


def _missing(y):
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and not math.isfinite(v))
                         for v in y], bool)
    return np.zeros(len(y), bool)


def infer_task(y, task):
    """(task, why): classification for strings, booleans and integers of few
    values; regression for other numbers. --task overrides."""
    if task is not None:
        return task, "--task"
    if y.dtype.kind in "OUSb":
        return "classification", "the target holds labels (text or booleans)"
    values = np.unique(y)
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(values == np.round(values))):
        if len(values) <= 20:
            return "classification", (f"the target holds {len(values)} distinct whole "
                                       "numbers")
        return "regression", f"the target holds {len(values)} distinct whole numbers (> 20)"
    return "regression", "the target holds real numbers"


def split_rows(n, y_codes, test_fraction, seed, stratify):
    """(train rows, test rows): a held-out fraction, stratified by class."""
    rng = np.random.default_rng([int(seed), 7])
    if stratify:
        test = []
        for c in np.unique(y_codes):
            rows = rng.permutation(np.flatnonzero(y_codes == c))
            k = int(round(test_fraction * len(rows)))
            test.extend(rows[:min(k, len(rows) - 1)])
        test = np.sort(np.asarray(test, np.int64))
    else:
        test = np.sort(rng.permutation(n)[:int(round(test_fraction * n))])
    return np.setdiff1d(np.arange(n), test), test


def load_dataset(name, seed=0, dtype=np.float32):
    """Train/test split (25%, stratified for classification) of a dataset that
    scikit-learn ships, scaled for SGD: digits to [0, 1], the others
    standardized with the training statistics (diabetes targets too)."""
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("fastbp train needs scikit-learn for its bundled datasets: "
                 "pip install 'fastbp[data]'")
    loader, task, _ = DATASETS[name]
    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    strat = y if task == "classification" else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=strat, random_state=seed)
    if name == "digits":
        Xtr, Xte = Xtr / 16.0, Xte / 16.0
    else:
        mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0) + 1e-12
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    if task == "regression":
        ymu, ysd = ytr.mean(), ytr.std()
        ytr, yte = ((ytr - ymu) / ysd).astype(dtype), ((yte - ymu) / ysd).astype(dtype)
    else:
        ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    return Xtr.astype(dtype), Xte.astype(dtype), ytr, yte, task


def _toy_table(name):
    """A scikit-learn dataset as (X, feature names, raw y, target name, task)."""
    try:
        import sklearn.datasets
    except ImportError:
        raise UsageError(f"the bundled datasets need scikit-learn: {DATA_EXTRA}") from None
    loader, task, _ = DATASETS[name]
    d = getattr(sklearn.datasets, loader)()
    names = [str(f) for f in d.feature_names]
    y = d.target
    if task == "classification" and "target_names" in d:
        y = np.asarray(d.target_names)[y]
    target = "target" if y.ndim == 1 else ",".join(map(str, d.get("target_names", [])))
    return np.asarray(d.data, np.float64), names, y, target, task


def _numpy_fit(model, X, y, args, loss):
    """The same schedule as MLP.fit (same permutations, same batches) with
    every step from fastbp.reference: the pure-NumPy baseline."""
    from . import reference as ref

    params = {k: v.copy() for k, v in model.params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()} if args.momentum else None
    n, B = X.shape[0], min(args.batch_size, X.shape[0])
    for epoch in range(args.epochs):
        order = epoch_order(n, args.seed, epoch)
        for s in range(0, n, B):
            idx = order[s:s + B]
            ref.mlp_train_step(params, X[idx], y[idx], args.lr, model.activation, loss,
                               weight_decay=args.weight_decay, momentum=args.momentum,
                               velocity=velocity, matmul_precision=model.matmul_precision)
    return params


def _divergence(losses, metric, score, params):
    """How training diverged, as (what, when), or None: a non-finite epoch loss,
    else a non-finite test score, else non-finite weights (the last update
    comes after the last loss is measured, and an accuracy stays finite
    whatever the outputs)."""
    for epoch, loss in enumerate(losses, 1):
        if not math.isfinite(loss):
            return f"{loss}", f"at epoch {epoch}"
    after = f"after epoch {len(losses)}"
    for name, value in params.items():
        if not np.isfinite(value).all():
            return f"{name} not finite", after
    if not math.isfinite(score):
        return f"{metric} {score}", after
    return None


def _stderr_is_terminal():
    """Whether a progress bar on stderr would be seen as one (in a log file
    or a pipe it is lines of carriage-return debris)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr (pythonw), or closed
        return False


def _optimizer(args, default_lr):
    from . import optim

    if args.optimizer == "sgd":
        return None, args.lr if args.lr is not None else default_lr
    lr = args.lr if args.lr is not None else 1e-3
    cls = optim.Adam if args.optimizer == "adam" else optim.AdamW
    kw = {"weight_decay": args.weight_decay} if args.weight_decay else {}
    return cls(lr, **kw), lr


def cmd_train(args):
    import fastbp
    from .bundle import Bundle

    if args.threads is not None:
        fastbp.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    source = args.file if args.file is not None else args.data
    if args.optimizer != "sgd" and args.momentum:
        raise UsageError("--momentum is SGD's; Adam and AdamW have their own moments")
    if args.compare_numpy and args.optimizer != "sgd":
        raise UsageError("--compare-numpy replays SGD on fastbp.reference; drop --optimizer")
    # the data: a toy dataset (by name) or a file
    if source in DATASETS and not os.path.exists(source):
        X, names, y_raw, target, task = _toy_table(source)
        if args.target is not None:
            raise UsageError(f"--target names a column of a data file; {source!r} is a bundled "
                             "dataset with its own target")
        if args.task is not None and args.task != task:
            raise UsageError(f"{source!r} is a {task} dataset, not {args.task}")
        why = f"{source} is a {task} dataset"
        label = source
    else:
        if not os.path.exists(source):
            raise UsageError(f"no such file: {source!r} (nor one of the bundled datasets: "
                             f"{', '.join(sorted(DATASETS))})")
        table = read_table(source)
        X, names, y_raw, target = features_and_target(table, args.target, source)
        task, why = infer_task(y_raw, args.task)
        label = os.path.basename(source)
    n = X.shape[0]
    classify = task == "classification"
    if classify:
        if y_raw.ndim != 1:
            raise UsageError("classification needs one target column")
        classes, y = np.unique(y_raw.astype(str), return_inverse=True)
        if len(classes) < 2:
            raise UsageError(f"the target {target!r} has one class ({str(classes[0])!r}) in all "
                             f"{n} rows: nothing to learn")
        counts = np.bincount(y)
        if counts.min() < 2:
            raise UsageError(f"class {str(classes[np.argmin(counts)])!r} of the target {target!r} has "
                             f"{counts.min()} row; every class needs 2 or more")
    else:
        if y_raw.dtype.kind not in "biuf":
            raise UsageError(f"regression needs a numeric target; {target!r} holds "
                             f"{y_raw.dtype} values (e.g. {y_raw[0]!r}): --task classification?")
        y = y_raw.astype(np.float64)
        classes = None
    if n < 8:
        raise UsageError(f"{label}: {n} rows are too few to train and test on (8 or more)")
    tr, te = split_rows(n, y if classify else None, args.test_fraction, args.seed, classify)
    # standardization with the training rows' statistics (constant columns: scale 1)
    mean = X[tr].mean(axis=0)
    scale = X[tr].std(axis=0)
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    Xs = ((X - mean) / scale).astype(dtype)
    if classify:
        y_mean = y_scale = None
        yt = y.astype(np.int64)
        n_out, loss = len(classes), "softmax_cross_entropy"
    else:
        y2 = y.reshape(n, -1)
        y_mean, y_scale = y2[tr].mean(axis=0), y2[tr].std(axis=0)
        y_scale[~(y_scale > 0)] = 1.0
        yt = ((y2 - y_mean) / y_scale).astype(dtype)
        n_out, loss = y2.shape[1], "mse"
    sizes = [X.shape[1], *args.hidden, n_out]
    default_lr = DATASETS[source][2] if source in DATASETS else (0.1 if classify else 0.01)
    optimizer, lr = _optimizer(args, default_lr)
    try:
        model = fastbp.MLP(sizes, args.activation, loss, dtype=dtype, seed=args.seed,
                           dropout=args.dropout, matmul_precision=args.matmul_precision)
    except TypeError as e:  # bfloat16 with --dtype float64
        raise UsageError(str(e)) from None
    init = {k: v.copy() for k, v in model.params.items()}
    print(f"fastbp {fastbp.__version__}: {label}, {n} rows x {X.shape[1]} features, target "
          f"{target!r}: {task} ({why})")
    print(f"train {len(tr)} / test {len(te)} rows, net {'-'.join(map(str, sizes))} "
          f"{args.activation}, {args.optimizer} lr {lr:g}, {dtype.name}"
          + (f" (bfloat16 products, {fastbp.get_bf16_provider()})"
             if args.matmul_precision == "bfloat16" else "") + ", "
          f"{fastbp.get_num_threads()} thread(s)")
    progress = _stderr_is_terminal() if args.progress is None else args.progress
    verbose = 1 if args.verbose else (2 if progress else 0)
    fit_kw = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  verbose=verbose, log_grad_norms=bool(args.plot))
    if optimizer is None:
        fit_kw.update(lr=lr, weight_decay=args.weight_decay, momentum=args.momentum)
    else:
        fit_kw.update(optimizer=optimizer)
    if args.early_stopping:
        fit_kw.update(early_stopping=True, patience=args.patience,
                      validation_fraction=args.validation_fraction)
    else:  # the validation curve of --plot and -v: the test rows, watched, never used
        fit_kw.update(validation=(Xs[te], yt[te]))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fastbp.model.DivergedWarning)
        try:
            hist = model.fit(Xs[tr], yt[tr], **fit_kw)
        except KeyboardInterrupt:
            # fit leaves a consistent model (the last completed step's parameters):
            # keep what was trained
            return _interrupted(model, args, lambda: Bundle(
                model, names, mean, scale, task, target, classes, y_mean, y_scale).save(args.save))
    for w in caught:  # anything but the divergence, which is said below in one line
        if not isinstance(w.message, fastbp.model.DivergedWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    t_fast = time.perf_counter() - t0
    metric = "test accuracy" if classify else "test R^2"
    with np.errstate(all="ignore"):
        try:
            score = model.score(Xs[te], yt[te])
        except ValueError:  # a diverged model refuses to predict
            score = float("nan")
    diverged = _divergence(hist["loss"], metric, score, model.params)
    if diverged:
        # nothing worth comparing or saving
        print("fastbp train: the loss diverged (%s) %s; lower --lr" % diverged
              + f" (it was {lr:g}); nothing was saved", file=sys.stderr)
        return 1
    epochs_run = len(hist["loss"])
    stopped = f", stopped early after {epochs_run}" if epochs_run < args.epochs else ""
    print(f"fastbp     {metric} {score:.4f} on {len(te)} held-out rows   fit "
          f"{t_fast * 1e3:8.1f} ms ({args.epochs} epochs{stopped}, batch {args.batch_size})")
    if args.compare_numpy:
        ref_model = fastbp.MLP(sizes, args.activation, loss, dtype=dtype, seed=args.seed,
                               matmul_precision=args.matmul_precision)
        for k, v in init.items():
            ref_model.params[k][...] = v
        args.lr = lr
        t0 = time.perf_counter()
        params = _numpy_fit(ref_model, Xs[tr], yt[tr], args, loss)
        t_np = time.perf_counter() - t0
        for k, v in params.items():
            ref_model.params[k][...] = v
        print(f"NumPy ref  {metric} {ref_model.score(Xs[te], yt[te]):.4f}   fit "
              f"{t_np * 1e3:8.1f} ms (fastbp.reference, same schedule)  -> fastbp is "
              f"{t_np / t_fast:.1f}x faster")
    if args.save:
        bundle = Bundle(model, names, mean, scale, task, target, classes, y_mean, y_scale)
        path = bundle.save(args.save)
        # the file's own check: raw test rows through the saved preprocessing
        if classify:
            check = float(np.mean(bundle.predict(X[te]) == classes[y[te]]))
        else:
            check = bundle.score(X[te], y[te])
        print(f"saved to {path} (network + standardization + "
              f"{'class names' if classify else 'target scaling'}; on raw rows its "
              f"{metric} is {check:.4f})")
    if args.plot:
        from . import plot

        try:
            plot.plot_history(hist, args.plot, title=f"{label}: {'-'.join(map(str, sizes))} "
                                                     f"{args.activation}, {args.optimizer}")
        except ImportError as e:
            raise UsageError(str(e)) from None
        print(f"wrote {args.plot}")
    return 0


def _load_bundle(path):
    from . import bundle

    if not os.path.exists(path):
        raise UsageError(f"no such model file: {path!r}")
    if not bundle.is_bundle(path):
        raise UsageError(f"{path}: not a model file of fastbp train --save (an .npz with the "
                         "network and its preprocessing)")
    try:
        return bundle.load(path)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(str(e)) from None


def _rows(bundle, path):
    table = read_table(path, "predict")
    if isinstance(table, dict) and path.lower().endswith(".npy"):
        A = np.column_stack(list(table.values()))
        if A.shape[1] == len(bundle.feature_names) + 1:
            A = A[:, :-1]           # the target column, last, as train reads .npy
        return A
    try:
        return bundle.matrix(table)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None


def _write_csv(out, header, rows):
    import csv

    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def cmd_predict(args):
    bundle = _load_bundle(args.model)
    X = _rows(bundle, args.data)
    if args.proba:
        if bundle.task != "classification":
            raise UsageError("--proba: this model is a regression model; it predicts values")
        P = bundle.predict_proba(X)
        header = [f"proba_{c}" for c in bundle.classes]
        rows = [[f"{p:.6g}" for p in r] for r in P]
    else:
        pred = bundle.predict(X)
        if pred.ndim == 1:
            header, rows = [bundle.target], [[v if isinstance(v, str) else f"{v:.8g}"]
                                             for v in pred.tolist()]
        else:
            header = bundle.target.split(",") if "," in bundle.target else \
                [f"{bundle.target}_{j}" for j in range(pred.shape[1])]
            rows = [[f"{v:.8g}" for v in r] for r in pred]
    if args.output:
        with open(args.output, "w", newline="") as f:
            _write_csv(f, header, rows)
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    else:
        _write_csv(sys.stdout, header, rows)
    return 0


def cmd_export(args):
    import fastbp.onnx as fonnx

    bundle = _load_bundle(args.model)
    try:
        path = fonnx.export(bundle, args.output,
                            input_dtype=np.float64 if args.float64 else np.float32)
    except ImportError as e:
        raise UsageError(str(e)) from None
    dt = "float64" if args.float64 else "float32"
    print(f"wrote {path}: input 'input' (N, {len(bundle.feature_names)}) {dt}, raw rows "
          f"(the standardization is folded into the first layer); outputs "
          + ("'label' (class names), 'probabilities'" if bundle.task == "classification"
             else "'variable'"))
    if args.check:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError("--check runs the file in ONNX Runtime: pip install "
                             "'fastbp[onnx]'") from None
        X = _rows(bundle, args.check)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": X.astype(np.float64 if args.float64 else np.float32)})
        if bundle.task == "classification":
            want = bundle.predict_proba(X.astype(np.float32).astype(np.float64)
                                        if not args.float64 else X)
            err = float(np.max(np.abs(got[1] - want)))
            same = int(np.sum(got[0].astype(str) == bundle.predict(X)))
            ok = err <= 1e-5
            print(f"ONNX Runtime {ort.__version__} on {len(X)} rows of {args.check}: labels "
                  f"equal predict's on {same}/{len(X)}, probabilities within {err:.1e} "
                  f"({'agrees' if ok else 'DISAGREES'} to 1e-5)")
        else:
            want = bundle.predict(X)
            err = float(np.max(np.abs(got[0].reshape(want.shape) - want)) /
                        max(1e-30, float(np.max(np.abs(want)))))
            ok = err <= 1e-5
            print(f"ONNX Runtime {ort.__version__} on {len(X)} rows of {args.check}: values "
                  f"within {err:.1e} of predict's, relative ({'agrees' if ok else 'DISAGREES'} "
                  "to 1e-5)")
        return 0 if ok else 1
    return 0


def cmd_info(args):
    import fastbp

    if args.model is None:
        fastbp.show_config()
        return 0
    from . import bundle as _bundle

    if not os.path.exists(args.model):
        raise UsageError(f"no such model file: {args.model!r}")
    if _bundle.is_bundle(args.model):
        b = _load_bundle(args.model)
        print("\n".join(b.describe()))
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = fastbp.MLP.load(args.model)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise UsageError(str(e)) from None
    print("an MLP file of MLP.save (no preprocessing: it expects rows as it was trained on)")
    m.summary()
    return 0


def _interrupted(model, args, save):
    """Ctrl-C during train's fit: save the model (with its preprocessing: save()
    writes it) if --save was given and its parameters are finite, say so in one line, and return 130 (128 + SIGINT,
    the shell's status for an interrupted command)."""
    where = (f"fastbp train: interrupted in epoch {model.epoch_ + 1} of {args.epochs} "
             f"(after {model.step_} steps)")
    if not args.save:
        print(f"{where}; nothing saved (no --save)", file=sys.stderr)
    elif not all(np.isfinite(v).all() for v in model.params.values()):
        print(f"{where}; the parameters are not finite: nothing saved", file=sys.stderr)
    else:
        try:
            path = save()
        except KeyboardInterrupt:  # a second Ctrl-C: the save is atomic, the old file stays
            print(f"{where}; interrupted again while saving: {args.save} left as it was",
                  file=sys.stderr)
        else:
            print(f"{where}; saved the model to {path}", file=sys.stderr)
    return 130


def cmd_bench(args):
    if args.vs_sklearn:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            sys.exit("fastbp bench --vs-sklearn needs scikit-learn: pip install 'fastbp[sklearn]'")
        from .bench_sklearn import main as bench_main

        return bench_main(args)
    if args.contention:
        from .bench_contention import main as contention_main
        return contention_main(args)
    if args.matmul_precision == "bfloat16":
        from .bench_bf16 import main as bf16_main
        return bf16_main(args)
    from .bench import main as bench_main

    return bench_main(args)




# ---- argument types: each raises ArgumentTypeError (argparse's usage error, exit 2)
# saying what it expected and what it was given -------------------------------------------

def _integer(want, ok):
    """An int type accepting what ok() accepts; want says which, in the message."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected an integer {want}, got {text!r}")
        return value
    return parse


def _real(want, ok):
    """A float type accepting the finite values ok() accepts (never nan or inf)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected a finite number {want}, got {text!r}")
        return value
    return parse


_count = _integer(">= 1", lambda v: v >= 1)
_seed = _integer(">= 0", lambda v: v >= 0)
_threads = _integer("in [1, 4096]", lambda v: 1 <= v <= 4096)  # fastbp.set_num_threads's range
_lr = _real("> 0", lambda v: v > 0)
_momentum = _real("in [0, 1)", lambda v: 0 <= v < 1)
_weight_decay = _real(">= 0", lambda v: v >= 0)


#: bench --vs-sklearn's workloads (fastbp/bench_sklearn.py's WORKLOADS)
SKLEARN_WORKLOADS = ("digits", "breast_cancer", "wine", "diabetes", "classification_60k",
                     "regression_60k")


def _workload(text):
    if text not in SKLEARN_WORKLOADS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(SKLEARN_WORKLOADS)}; got {text!r}")
    return text


def _size(text):
    if text not in SIZES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SIZES)}; got {text!r}")
    return text


def _unwritable(path, make_dirs):
    """Why path cannot be written as a file, or None if it can: it is no
    directory, and its directory exists (or, with make_dirs, its nearest
    existing ancestor is one) and is writable."""
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or os.path.isdir(path):
        return f"{path!r} is a directory"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} is not writable"
    parent = os.path.dirname(path) or "."
    if make_dirs:
        while not os.path.lexists(parent) and os.path.dirname(parent) not in ("", parent):
            parent = os.path.dirname(parent)
        if not os.path.lexists(parent):
            parent = "."
    if not os.path.exists(parent):
        return f"cannot write {path!r}: directory {parent!r} does not exist"
    if not os.path.isdir(parent):
        return f"cannot write {path!r}: {parent!r} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write {path!r}: directory {parent!r} is not writable"
    return None


def _model_path(text):
    """--save: the file MLP.save will write (text, or text + ".npz") must be writable
    in an existing directory."""
    from ._checkpoint import npz_path

    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    why = _unwritable(text, False) if os.path.isdir(text) else _unwritable(npz_path(text), False)
    if why:
        raise argparse.ArgumentTypeError(why)
    return text


def _output_path(text):
    """bench --json/--png: a writable file path; missing directories are created
    when written (as for the default, bench-results/). '' writes nothing."""
    why = text and _unwritable(text, True)
    if why:
        raise argparse.ArgumentTypeError(why)
    return text


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already says
    it or there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        help = action.help or ""
        if "(default" in help or action.default is None or action.default is False:
            return help
        return super()._get_help_string(action)


def _prog():
    """The program as it was called: "python -m fastbp" for ``python -m``, else
    the script's name (the console script: "fastbp")."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0.endswith("__main__.py") or argv0 in ("", "-c", "-m"):
        return "python -m fastbp"
    return os.path.basename(argv0)


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        v = None
    if v is None or not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return v


def _dropout(text):
    try:
        v = float(text)
    except ValueError:
        v = None
    if v is None or not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}")
    return v


def _png_path(text):
    why = not text and "expected a file path, got ''" or _unwritable(text, False)
    if why:
        raise argparse.ArgumentTypeError(why)
    return text


def _bench_dir():
    """Where bench writes by default: $FASTBP_BENCH_DIR, else the user's cache
    directory ($XDG_CACHE_HOME or ~/.cache, /fastbp/bench-results), never the
    working directory."""
    if os.environ.get("FASTBP_BENCH_DIR"):
        return os.environ["FASTBP_BENCH_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fastbp", "bench-results")


def build_parser(prog=None):
    p = argparse.ArgumentParser(prog=prog or _prog(), description=__doc__.split("\n")[0],
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an MLP on a data file or a bundled dataset",
                       description="Train an MLP on a data file (CSV, Parquet, .npz, .npy) or "
                                   "on a dataset scikit-learn ships; print its held-out score.",
                       formatter_class=_HelpFormatter)
    t.add_argument("file", nargs="?", default=None, metavar="DATA",
                   help="a data file (.csv, .tsv, .parquet, .npz, .npy) or a bundled dataset's "
                        f"name ({', '.join(sorted(DATASETS))})")
    t.add_argument("--data", default="digits", metavar="NAME",
                   help="a bundled dataset (or a file), when DATA is not given: "
                        f"{', '.join(sorted(DATASETS))}")
    t.add_argument("--target", metavar="COLUMN",
                   help="the target column of a data file (.npz: 'y'; .npy: a column "
                        "index, default the last)")
    t.add_argument("--task", choices=["classification", "regression"], default=None,
                   help="default: inferred from the target (text, booleans or at most 20 "
                        "distinct whole numbers: classification), and said")
    t.add_argument("--hidden", type=_count, nargs="+", default=[128], metavar="WIDTH",
                   help="hidden layer widths, one per layer (default: 128)")
    t.add_argument("--activation", choices=[a for a in ops.hidden_names() if a != "identity"],
                   default="relu",
                   help="the hidden layers' activation")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                   help="the optimizer")
    t.add_argument("--epochs", type=_count, default=30, help="passes over the training set")
    t.add_argument("--batch-size", type=_count, default=32, help="rows per step")
    t.add_argument("--lr", type=_lr, default=None,
                   help="learning rate (default: 0.1; 0.01 for diabetes) for sgd; on a data "
                        "file 0.1 for classification, 0.01 for regression; adam, adamw: 0.001")
    t.add_argument("--weight-decay", type=_weight_decay, default=0.0, help="L2 penalty")
    t.add_argument("--momentum", type=_momentum, default=0.0, help="SGD momentum")
    t.add_argument("--dropout", type=_dropout, default=0.0,
                   help="dropout rate on the hidden layers")
    t.add_argument("--early-stopping", action="store_true",
                   help="hold out --validation-fraction of the training rows and stop when "
                        "their loss has not improved for --patience epochs (the best "
                        "epoch's weights are kept)")
    t.add_argument("--patience", type=_count, default=10, help="with --early-stopping")
    t.add_argument("--validation-fraction", type=_fraction, default=0.1,
                   help="with --early-stopping")
    t.add_argument("--test-fraction", type=_fraction, default=0.25,
                   help="rows held out for the test score (stratified by class)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the model's floating-point type")
    t.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: every product's operands rounded to bfloat16, "
                        "accumulated in float32 (float32 models)")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seed of the split, the initial weights and the batch order")
    t.add_argument("--threads", type=_threads, default=None,
                   help="fastbp's threads (default: OMP_NUM_THREADS, else the CPUs "
                        "this process may run on)")
    t.add_argument("--compare-numpy", action="store_true",
                   help="also run the same schedule on fastbp.reference (pure NumPy; sgd)")
    t.add_argument("-v", "--verbose", action="store_true",
                   help="print one line per epoch (loss, accuracy, validation, time)")
    bar = t.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true",
                     help="draw the progress bar even when stderr is no terminal "
                          "(default: only when it is one)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar")
    t.add_argument("--save", type=_model_path, metavar="PATH",
                   help="save the model with its preprocessing (feature names, "
                        "standardization, class names) to PATH, an .npz (\".npz\" added if "
                        "missing); fastbp predict/export/info read it")
    t.add_argument("--plot", type=_png_path, metavar="PNG",
                   help="draw the loss curves and the per-layer gradient norms to PNG "
                        "(needs matplotlib: pip install 'fastbp[plot]')")
    t.set_defaults(func=cmd_train, progress=None)

    pr = sub.add_parser("predict", help="predict with a saved model on a data file",
                        description="Predict with a model saved by train --save, on the raw "
                                    "rows of a data file (its feature columns by name; other "
                                    "columns ignored). Writes CSV: one column named after the "
                                    "target (class names or values), or with --proba one "
                                    "probability column per class.",
                        formatter_class=_HelpFormatter)
    pr.add_argument("model", metavar="MODEL", help="a model file of train --save")
    pr.add_argument("data", metavar="DATA", help="rows to predict (.csv, .parquet, .npz, .npy)")
    pr.add_argument("-o", "--output", type=_png_path, metavar="CSV",
                    help="write the predictions there (default: standard output)")
    pr.add_argument("--proba", action="store_true", help="class probabilities instead")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write a saved model as an ONNX file",
                        description="Write a model saved by train --save as an ONNX graph "
                                    "that takes raw rows (the standardization folded into "
                                    "the first layer) and gives class names and "
                                    "probabilities, or values. Needs onnx: pip install "
                                    "'fastbp[onnx]'.", formatter_class=_HelpFormatter)
    ex.add_argument("model", metavar="MODEL", help="a model file of train --save")
    ex.add_argument("output", type=_png_path, metavar="ONNX", help="the file to write")
    ex.add_argument("--float64", action="store_true",
                    help="a float64 input (default: float32)")
    ex.add_argument("--check", metavar="DATA",
                    help="run the file in ONNX Runtime on these rows and compare it with "
                         "predict (exit 1 if they differ by more than 1e-5)")
    ex.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="training-step speed vs the GEMM floor, NumPy, PyTorch",
                       description="The training step's speed against its GEMM floor, "
                                   "NumPy and PyTorch.", formatter_class=_HelpFormatter)
    b.add_argument("--sizes", type=_size, nargs="+", default=None, metavar="SIZE",
                   help=f"step sizes (default: all: {' '.join(SIZES)})")
    b.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd",
                   help="the optimizer every contender trains with; the floor adds a "
                        "parallel copy of its state's bytes")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the step table's floating-point type (every contender's, and "
                        "the floors')")
    b.add_argument("--repeat", type=_count, default=None,
                   help="calls in each timed block (default: as many as take about "
                        f"{BLOCK} s); with --vs-sklearn, fits per estimator, the best "
                        "counted (default: 3 on the shipped datasets, 1 on the generated)")
    b.add_argument("--out-dir", default=None, metavar="DIR",
                   help="the directory of the default outputs (default: $FASTBP_BENCH_DIR, "
                        "else ~/.cache/fastbp/bench-results, $XDG_CACHE_HOME respected; "
                        "never the working directory)")
    b.add_argument("--json", type=_output_path, default=None,
                   help="where to write the results as JSON ('' for nowhere; "
                        "default: DIR/step.json, with --vs-sklearn DIR/sklearn.json)")
    b.add_argument("--png", type=_output_path, default=None,
                   help="where to write the chart, a PNG (needs matplotlib; '' for nowhere; "
                        "default: DIR/step.png)")
    b.add_argument("--threads", type=_threads, default=None,
                   help="fastbp's threads (default: OMP_NUM_THREADS, else the CPUs "
                        "this process may run on)")
    b.add_argument("--vs-sklearn", action="store_true",
                   help="instead: fit fastbp.sklearn's MLPClassifier/MLPRegressor and "
                        "scikit-learn's side by side (same data, parameters and threads) "
                        "and print times, speed-ups and held-out scores")
    b.add_argument("--contention", action="store_true",
                   help="instead: the step on a busy machine (back to back, with 200 us of "
                        "the caller's work between steps, with a NumPy matmul between "
                        "steps, beside a busy process) for fastbp at its default threads "
                        "and on one thread, NumPy's step and PyTorch's")
    b.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: instead, the bfloat16 step (medium, large, wide by "
                        "default) against its bf16 floor, torch.autocast and the float32 step")
    b.add_argument("--datasets", type=_workload, nargs="+", default=None, metavar="NAME",
                   help=f"--vs-sklearn's workloads (default: all: "
                        f"{' '.join(SKLEARN_WORKLOADS)})")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="the build configuration, or a saved model",
                       description="Print the build configuration, or describe a model "
                                   "file (its task, features, classes and layers).",
                       formatter_class=_HelpFormatter)
    i.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="a model file of train --save (or MLP.save)")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is cmd_bench:
        if args.contention and args.vs_sklearn:
            parser.error("argument --contention: not allowed with argument --vs-sklearn")
        if args.datasets and not args.vs_sklearn:
            parser.error("argument --datasets: expected --vs-sklearn with it (the step "
                         "benchmark takes --sizes)")
        out_dir = args.out_dir if args.out_dir is not None else _bench_dir()
        if args.json is None:
            args.json = os.path.join(out_dir, "sklearn.json" if args.vs_sklearn else "step.json")
        if args.png is None:
            args.png = os.path.join(out_dir, "step.png")
        for name in ("json", "png"):
            why = getattr(args, name) and _unwritable(getattr(args, name), True)
            if why:
                parser.error(f"argument --{name}: {why}")
    try:
        return args.func(args)
    except KeyboardInterrupt:  # anywhere else (loading data, a benchmark): no traceback
        print(f"{parser.prog} {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        # one line, argparse's usage-error form and exit status
        parser.prog = f"{parser.prog} {args.cmd}"
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
