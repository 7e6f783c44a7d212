"""fastbp's command line: train | bench | info.

    python -m fastbp train --data digits [--hidden 128 --activation relu
        --epochs 30 --batch-size 32 --lr 0.1 --threads N --compare-numpy]
    python -m fastbp bench [--sizes book small ... --json out.json --png out.png]
    python -m fastbp bench --contention [--sizes digits book ...]
    python -m fastbp bench --vs-sklearn [--datasets digits ... --threads N]
    python -m fastbp info

The datasets are the ones scikit-learn ships inside its package (no download).
"""
import argparse
import math
import os
import sys
import time

import numpy as np

from .bench import BLOCK, OPTIMIZERS, SIZES
from .model import epoch_order

DATASETS = {
    # name: (loader name, task, default learning rate)
    "digits": ("load_digits", "classification", 0.1),
    "breast_cancer": ("load_breast_cancer", "classification", 0.1),
    # MSE on 331 rows diverges at lr 0.1 (the NumPy reference does too)
    "diabetes": ("load_diabetes", "regression", 0.01),
}


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
    if not math.isfinite(score):
        return f"{metric} {score}", after
    for name, value in params.items():
        if not np.isfinite(value).all():
            return f"{name} not finite", after
    return None


def _stderr_is_terminal():
    """Whether a progress bar on stderr would be seen as one (in a log file
    or a pipe it is lines of carriage-return debris)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr (pythonw), or closed
        return False


def cmd_train(args):
    import fastbp

    if args.threads is not None:
        fastbp.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    if args.lr is None:
        args.lr = DATASETS[args.data][2]
    Xtr, Xte, ytr, yte, task = load_dataset(args.data, args.seed, dtype)
    classify = task == "classification"
    n_out = int(ytr.max()) + 1 if classify else 1
    loss = "softmax_cross_entropy" if classify else "mse"
    sizes = [Xtr.shape[1], *args.hidden, n_out]
    try:
        model = fastbp.MLP(sizes, args.activation, loss, dtype=dtype, seed=args.seed,
                           matmul_precision=args.matmul_precision)
    except TypeError as e:  # bfloat16 with --dtype float64
        print(f"fastbp train: {e}", file=sys.stderr)
        return 2
    init = {k: v.copy() for k, v in model.params.items()}
    print(f"fastbp {fastbp.__version__}: {args.data} ({task}), train {Xtr.shape[0]} / "
          f"test {Xte.shape[0]}, net {'-'.join(map(str, sizes))} {args.activation}, "
          f"{dtype.name}" + (f" (bfloat16 products, {fastbp.get_bf16_provider()})"
                             if args.matmul_precision == "bfloat16" else "") +
          f", {fastbp.get_num_threads()} thread(s)")
    t0 = time.perf_counter()
    progress = _stderr_is_terminal() if args.progress is None else args.progress
    hist = model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     weight_decay=args.weight_decay, momentum=args.momentum, seed=args.seed,
                     progress=progress)
    t_fast = time.perf_counter() - t0
    metric = "test accuracy" if classify else "test R^2"
    with np.errstate(all="ignore"):
        score = model.score(Xte, yte)
    print(f"fastbp     {metric} {score:.4f}   fit {t_fast * 1e3:8.1f} ms "
          f"({args.epochs} epochs, batch {args.batch_size}, lr {args.lr})")
    diverged = _divergence(hist["loss"], metric, score, model.params)
    if diverged:
        # nothing worth comparing or saving
        print("fastbp train: the loss diverged (%s) %s; lower --lr" % diverged, file=sys.stderr)
        return 1
    if args.compare_numpy:
        ref_model = fastbp.MLP(sizes, args.activation, loss, dtype=dtype, seed=args.seed,
                               matmul_precision=args.matmul_precision)
        for k, v in init.items():
            ref_model.params[k][...] = v
        t0 = time.perf_counter()
        params = _numpy_fit(ref_model, Xtr, ytr, args, loss)
        t_np = time.perf_counter() - t0
        for k, v in params.items():
            ref_model.params[k][...] = v
        print(f"NumPy ref  {metric} {ref_model.score(Xte, yte):.4f}   fit {t_np * 1e3:8.1f} ms "
              f"(fastbp.reference, same schedule)  -> fastbp is {t_np / t_fast:.1f}x faster")
    if args.save:
        print(f"saved to {model.save(args.save)}")
    return 0


def cmd_bench(args):
    if args.vs_sklearn:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            sys.exit("fastbp bench --vs-sklearn needs scikit-learn: pip install 'fastbp[sklearn]'")
        from .bench_sklearn import main as bench_main

        if args.json == STEP_JSON:  # the default names the step benchmark's file
            args.json = SKLEARN_JSON
        return bench_main(args)
    if args.contention:
        from .bench_contention import main as contention_main
        return contention_main(args)
    if args.matmul_precision == "bfloat16":
        from .bench_bf16 import main as bf16_main
        return bf16_main(args)
    from .bench import main as bench_main

    return bench_main(args)


def cmd_info(args):
    import fastbp

    fastbp.show_config()
    return 0


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
STEP_JSON, SKLEARN_JSON = "bench-results/step.json", "bench-results/sklearn.json"


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


def build_parser(prog=None):
    p = argparse.ArgumentParser(prog=prog or _prog(), description=__doc__.split("\n")[0],
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an MLP on a dataset scikit-learn ships",
                       description="Train an MLP on a dataset scikit-learn ships.",
                       formatter_class=_HelpFormatter)
    t.add_argument("--data", choices=sorted(DATASETS), default="digits", help="the dataset")
    t.add_argument("--hidden", type=_count, nargs="+", default=[128], metavar="WIDTH",
                   help="hidden layer widths, one per layer (default: 128)")
    t.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default="relu",
                   help="the hidden layers' activation")
    t.add_argument("--epochs", type=_count, default=30, help="passes over the training set")
    t.add_argument("--batch-size", type=_count, default=32, help="rows per SGD step")
    t.add_argument("--lr", type=_lr, default=None,
                   help="learning rate (default: 0.1; 0.01 for diabetes)")
    t.add_argument("--weight-decay", type=_weight_decay, default=0.0, help="L2 penalty")
    t.add_argument("--momentum", type=_momentum, default=0.0, help="SGD momentum")
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
                   help="also run the same schedule on fastbp.reference (pure NumPy)")
    bar = t.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true",
                     help="draw the progress bar even when stderr is no terminal "
                          "(default: only when it is one)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar")
    t.add_argument("--save", type=_model_path, metavar="PATH",
                   help="save the trained model to PATH (\".npz\" added if missing)")
    t.set_defaults(func=cmd_train, progress=None)

    b = sub.add_parser("bench", help="training-step speed vs the GEMM floor, NumPy, PyTorch",
                       description="The training step's speed against its GEMM floor, "
                                   "NumPy and PyTorch.", formatter_class=_HelpFormatter)
    b.add_argument("--sizes", type=_size, nargs="+", default=None, metavar="SIZE",
                   help=f"step sizes (default: all: {' '.join(SIZES)})")
    b.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd",
                   help="the optimizer every contender trains with; the floor adds a "
                        "parallel copy of its state's bytes")
    b.add_argument("--repeat", type=_count, default=None,
                   help="calls in each timed block (default: as many as take about "
                        f"{BLOCK} s); with --vs-sklearn, fits per estimator, the best "
                        "counted (default: 3 on the shipped datasets, 1 on the generated)")
    b.add_argument("--json", type=_output_path, default=STEP_JSON,
                   help="where to write the results as JSON ('' for nowhere; with "
                        f"--vs-sklearn the default is {SKLEARN_JSON})")
    b.add_argument("--png", type=_output_path, default="bench-results/step.png",
                   help="where to write the chart, a PNG (needs matplotlib; '' for nowhere)")
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

    i = sub.add_parser("info", help="print the build configuration",
                       description="Print the build configuration.",
                       formatter_class=_HelpFormatter)
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is cmd_bench and args.contention and args.vs_sklearn:
        parser.error("argument --contention: not allowed with argument --vs-sklearn")
    if getattr(args, "func", None) is cmd_bench and args.datasets and not args.vs_sklearn:
        parser.error("argument --datasets: expected --vs-sklearn with it (the step "
                     "benchmark takes --sizes)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
