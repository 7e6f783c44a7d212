"""Training-step benchmark: fastbp against its floor, NumPy and PyTorch.

A training step's matrix products already run at the BLAS's speed, so the floor
of a step is the time of those products alone: per layer the forward product
h·W, the weight gradient hᵀ·dz and (except for the first layer) the input
gradient dz·Wᵀ, called from C (no Python in the timing) as whole BLAS calls on
the BLAS's own threads, through every installed provider (OpenBLAS, MKL); the
table's floor is the best of them, the machine's limit. An optimizer with
state (momentum; Adam's two moments) must also stream that state once per step,
so its floor adds a parallel copy of the state's bytes. Everything above the
floor is overhead. All contenders run the same step (float32, ReLU hidden
layers, softmax-cross-entropy, the chosen optimizer) side by side in one
process, in interleaved rounds, and the table reports medians and ratios.

Used by ``python -m fastbp bench`` and by bench/bench_step.py.
"""
import ctypes
import functools
import io
import json
import os
import platform
import time

import numpy as np

SIZES = {
    # name: (batch, widths)
    "digits": (32, [64, 128, 10]),
    "book": (100, [784, 50, 10]),
    "small": (32, [784, 100, 10]),
    "medium": (128, [784, 512, 512, 10]),
    "large": (256, [784, 1024, 1024, 10]),
    "wide": (512, [1024, 4096, 4096, 10]),
}

#: the optimizers a step can be benchmarked with: name -> (fastbp.optim class,
#: keyword arguments; torch.optim takes the same, learning rate included), and the
#: state buffers it keeps per parameter. Every contender repeats steps on one
#: batch, so the learning rates are small enough that thousands of steps leave
#: the model far from fitting it: Adam moves each weight by about lr per step
#: whatever the gradient, and at lr 1e-4 it memorized the book batch within
#: 5000 steps, after which every contender's step ran 40% slower (exp and
#: gradients near underflow) and the numbers depended on how long each had run.
OPTIMIZERS = {
    "sgd": ("SGD", {"lr": 1e-4}, 0),
    "momentum": ("SGD", {"lr": 1e-4, "momentum": 0.9}, 1),
    "adam": ("Adam", {"lr": 1e-6}, 2),
    "adamw": ("AdamW", {"lr": 1e-6}, 2),
}


def make_optimizer(name, lib="fastbp"):
    """(class, kwargs) of optimizer name in fastbp.optim or torch.optim."""
    cls, kw, _ = OPTIMIZERS[name]
    if lib == "torch":
        import torch
        return getattr(torch.optim, cls), dict(kw)
    from . import optim
    return getattr(optim, cls), dict(kw)


@functools.cache
def _fbp_copy():
    from . import _core

    fn = ctypes.CDLL(_core.__file__).fbp_copy
    fn.argtypes = [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    return fn


def parallel_copy(src, dst):
    """dst[...] = src on fastbp's thread pool (csrc/runtime.c's fbp_copy): the
    floor of a memory-bound pass over the same bytes."""
    if src.nbytes != dst.nbytes or not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("parallel_copy: src and dst must be contiguous and of equal size")
    _fbp_copy()(src.nbytes, src.ctypes.data, dst.ctypes.data)
    return dst


def make_batch(size, dtype=np.float32, seed=0):
    N, widths = SIZES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, widths[0])).astype(dtype)
    labels = rng.integers(0, widths[-1], N).astype(np.int64)
    return x, labels


def _init_params(widths, dtype=np.float32, seed=0):
    import fastbp

    return fastbp.MLP(widths, "relu", dtype=dtype, seed=seed).params


# ---- contenders: each returns a zero-argument callable doing one training step ----

def fastbp_step(size, dtype=np.float32, optimizer="sgd"):
    import fastbp

    N, widths = SIZES[size]
    x, labels = make_batch(size, dtype)
    model = fastbp.MLP(widths, "relu", dtype=dtype, seed=0)
    cls, kw = make_optimizer(optimizer)
    opt = cls(**kw)
    model.train_step(x, labels, optimizer=opt)
    return lambda: model.train_step(x, labels, optimizer=opt)


#: the fit contender's data: at most this many bytes and 64 batches an epoch
#: (digits itself is 45), and epochs enough for about 512 steps a call where a
#: step is small, so that fit's work per call (its input checks) is under 1%
FIT_BYTES = 8 << 20


def fastbp_fit(size, dtype=np.float32, optimizer="sgd"):
    """fastbp's fit: `steps` training steps per call (epochs of up to 64
    shuffled batches of the size's shape), one native loop: the step a user's
    fit runs, row gathering included. time_steps divides its time by `steps`."""
    import fastbp

    N, widths = SIZES[size]
    batches = int(min(64, max(4, FIT_BYTES // (N * widths[0] * np.dtype(dtype).itemsize))))
    flops = 6.0 * N * sum(i * o for i, o in zip(widths[:-1], widths[1:]))
    epochs = int(min(512 // batches, max(1, 5e9 / flops // batches)))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N * batches, widths[0])).astype(dtype)
    y = rng.integers(0, widths[-1], N * batches)
    model = fastbp.MLP(widths, "relu", dtype=dtype, seed=0)
    cls, kw = make_optimizer(optimizer)
    opt = cls(**kw)

    def fit():
        model.fit(X, y, epochs=epochs, batch_size=N, optimizer=opt, progress=False)
    fit.steps = batches * epochs
    fit()
    return fit


def numpy_step(size, dtype=np.float32, optimizer="sgd"):
    from . import reference as ref

    N, widths = SIZES[size]
    x, labels = make_batch(size, dtype)
    params = {k: v.copy() for k, v in _init_params(widths, dtype).items()}
    cls, kw = make_optimizer(optimizer)
    opt = cls(**kw).options()
    opt["name"] = opt.pop("optimizer")
    state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}
    t = [0]

    def step():
        t[0] += 1
        return ref.mlp_train_step(params, x, labels, opt["lr"], "relu", "softmax_cross_entropy",
                                  optimizer=opt, state=state, step=t[0])
    return step


class StepFloor:
    """The step's products alone, called from C through one BLAS provider (the
    one in use unless named), each one whole BLAS call on as many of the BLAS's
    own threads as fastbp uses, and for an optimizer with state a parallel copy
    of the state's bytes: no Python in the timing (fastbp._core.StepFloor).
    Calling it runs `steps` steps (pytest-benchmark); c_time(k) times k steps in C."""

    def __init__(self, size, dtype=np.float32, optimizer="sgd", provider=None):
        from . import _core

        N, widths = SIZES[size]
        n_state = OPTIMIZERS[optimizer][2] * sum(i * o + o for i, o in
                                                 zip(widths[:-1], widths[1:]))
        self.floor = _core.StepFloor(widths, N, dtype, n_state)
        self.provider = provider
        # steps a call runs: pytest-benchmark's harness times calls from Python,
        # and a call of about 0.2 GFLOP or more keeps that call out of the floor
        flops = 6.0 * N * sum(i * o for i, o in zip(widths[:-1], widths[1:]))
        self.steps = int(min(64, max(1, 2e8 // flops)))

    def c_time(self, k):
        """Seconds per step, the mean of k steps timed in C."""
        from . import _blas, _core

        own = _blas.get_blas()
        if self.provider and self.provider != own:
            _core._set_gemm(*_blas._provider(self.provider).addrs)
        try:
            return self.floor.run(k, _core.get_num_threads())
        finally:
            if self.provider and self.provider != own:
                _core._set_gemm(*_blas._provider(own).addrs)

    def __call__(self):
        self.c_time(self.steps)


def _core_floor(widths, N, dtype=np.float32, n_state=0):
    """fastbp._core.StepFloor for any net (bench/'s whole-fit floor)."""
    from . import _core

    return _core.StepFloor(widths, N, dtype, n_state)


def floor_step(size, dtype=np.float32, optimizer="sgd", provider=None):
    """The step's products from C through a provider (default: fastbp's)."""
    return StepFloor(size, dtype, optimizer, provider)


def floor_contenders(size, dtype=np.float32, optimizer="sgd"):
    """A floor per installed BLAS provider: {"floor-openblas": ..., ...}."""
    from . import _blas

    return {f"floor-{p}": StepFloor(size, dtype, optimizer, p) for p in _blas.available()}


def torch_step(size, dtype=np.float32, optimizer="sgd", autocast=False):
    """PyTorch CPU eager: nn.Linear/ReLU, CrossEntropyLoss, torch.optim, on
    fastbp's thread count; autocast: the forward and loss under
    torch.autocast("cpu", torch.bfloat16) (float32 parameters and optimizer,
    PyTorch's mixed-precision recipe)."""
    import contextlib

    import torch

    import fastbp

    # as many threads as fastbp's: once MKL is loaded (FASTBP_BLAS=auto measures
    # it), torch starts with one
    torch.set_num_threads(fastbp.get_num_threads())
    N, widths = SIZES[size]
    x, labels = make_batch(size, dtype)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    layers = []
    for l in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[l], widths[l + 1]))
        if l < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    if dtype == np.float64:
        net = net.double()
    cls, kw = make_optimizer(optimizer, "torch")
    opt = cls(net.parameters(), **kw)
    lossf = torch.nn.CrossEntropyLoss()

    def context():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
                else contextlib.nullcontext())

    def step():
        opt.zero_grad(set_to_none=False)
        with context():
            loss = lossf(net(xt), yt)
        loss.backward()
        opt.step()
    step()
    return step


CONTENDERS = {"fastbp": fastbp_step, "fastbp-fit": fastbp_fit, "floor": floor_step,
              "numpy": numpy_step, "torch": torch_step}
#: the contenders of a table row besides the floors, which come one per provider
STEP_CONTENDERS = ("fastbp", "fastbp-fit", "numpy", "torch")


def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


SETTLE = 0.3  # s: OpenBLAS's idle workers yield for about 0.1 s after a call
BLOCK = 0.2   # s of calls per timed block
ROUNDS = 5


def calls_per_block(fn, block=BLOCK, warmup=0.05):
    """Warm fn up for ``warmup`` seconds, then how many calls fill ``block`` seconds.
    Shared with bench/ (pytest-benchmark), so both harnesses time the same blocks."""
    t0 = time.perf_counter()
    fn()
    while time.perf_counter() - t0 < warmup:
        fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(block / max(time.perf_counter() - t0, 1e-7)))


def time_steps(fns, repeat=None, block=BLOCK, settle=SETTLE, rounds=ROUNDS):
    """Median seconds per call of each fn (per step for one with a `steps`
    attribute, which runs that many steps a call).

    Contenders take turns in rounds; each turn sleeps ``settle`` seconds first,
    so that the previous contender's thread pools (NumPy's, PyTorch's, the BLAS
    copies each loads) go idle, warms up, and times a block of calls lasting
    about ``block`` seconds (or ``repeat`` calls).
    """
    samples = {name: [] for name in fns}
    calls = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle)
            k = calls_per_block(fn, block)
            k = calls.setdefault(name, repeat or k)
            if hasattr(fn, "c_time"):  # timed in C: no Python call per step
                samples[name].append(fn.c_time(k * getattr(fn, "steps", 1)))
                continue
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k / getattr(fn, "steps", 1))
    return {name: float(np.median(s)) for name, s in samples.items()}


def run(sizes=None, repeat=None, threads=None, with_torch=None, optimizer="sgd",
        dtype=np.float32):
    """Time every contender at every size, each training with optimizer (a key
    of OPTIMIZERS) in dtype; returns a list of result rows."""
    import fastbp

    if threads is not None:
        fastbp.set_num_threads(threads)
    if with_torch is None:
        with_torch = have_torch()
    from . import _blas

    rows = []
    for size in sizes or list(SIZES):
        fns = {name: CONTENDERS[name](size, dtype, optimizer=optimizer)
               for name in STEP_CONTENDERS if name != "torch" or with_torch}
        fns.update(floor_contenders(size, dtype, optimizer=optimizer))
        t = time_steps(fns, repeat)
        floors = {k[len("floor-"):]: v for k, v in t.items() if k.startswith("floor-")}
        best = min(floors, key=floors.get)
        t["floor"] = floors[best]
        row = {"size": size, "batch": SIZES[size][0], "widths": SIZES[size][1],
               "optimizer": optimizer, "dtype": np.dtype(dtype).name, "floor_provider": best,
               "fastbp_provider": _blas.get_blas(),
               "ms": {k: v * 1e3 for k, v in t.items()}}
        row["ratio_to_floor"] = {k: v / t["floor"] for k, v in t.items()}
        rows.append(row)
    return rows


def format_table(rows):
    """The step table: the floor is the best installed provider's (named), and
    "own floor" is the floor through the provider fastbp uses."""
    has_torch = any("torch" in r["ms"] for r in rows)
    head = f"{'size':<7} {'net':<22} {'floor ms':>9} {'by':>9} {'own floor':>10} " \
           f"{'fastbp ms':>10} {'fastbp/floor':>13} {'fit/floor':>10} " \
           f"{'numpy/floor':>12}" + (f" {'torch/floor':>12}" if has_torch else "") + \
           f" {'vs numpy':>9}" + (f" {'vs torch':>9}" if has_torch else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        ms, q = r["ms"], r["ratio_to_floor"]
        net = f"{r['batch']}x" + "-".join(map(str, r["widths"]))
        own = ms.get(f"floor-{r.get('fastbp_provider')}", ms["floor"])
        line = f"{r['size']:<7} {net:<22} {ms['floor']:>9.3f} " \
               f"{r.get('floor_provider', ''):>9} {own:>10.3f} {ms['fastbp']:>10.3f} " \
               f"{q['fastbp']:>12.2f}x " + \
               (f"{q['fastbp-fit']:>9.2f}x" if "fastbp-fit" in q else f"{'-':>10}") + \
               f" {q['numpy']:>11.2f}x"
        if has_torch:
            line += f" {q['torch']:>11.2f}x" if "torch" in q else f" {'-':>12}"
        line += f" {ms['numpy'] / ms['fastbp']:>8.2f}x"
        if has_torch:
            line += f" {ms['torch'] / ms['fastbp']:>8.2f}x" if "torch" in ms else f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def environment():
    import fastbp
    from ._config import config

    env = {"machine": platform.machine(), "processor": platform.processor(),
           "cpus": os.cpu_count(), "fastbp": fastbp.__version__, "numpy": np.__version__,
           "config": config()}
    if have_torch():
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    return env


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [n for n in ("fastbp", "numpy", "torch") if n in rows[0]["ratio_to_floor"]]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(xs + i * w, [r["ratio_to_floor"][n] for r in rows], w, label=n)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="GEMM floor")
    ax.set_xticks(xs + w * (len(names) - 1) / 2, [r["size"] for r in rows])
    ax.set_ylabel("time / GEMM floor")
    ax.set_title(f"Training step, float32, ReLU MLP + softmax-xent + "
                 f"{rows[0].get('optimizer', 'sgd')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def write_json(path, rows):
    """rows and the environment as JSON at path (its folder made if needed)."""
    from ._atomic import write_bytes

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = json.dumps({"environment": environment(), "rows": rows}, indent=1)
    write_bytes(path, text.encode())
    print(f"wrote {path}")


def main(args):
    import fastbp

    optimizer = getattr(args, "optimizer", "sgd")
    dtype = np.dtype(getattr(args, "dtype", "float32"))
    rows = run(args.sizes, args.repeat, args.threads, optimizer=optimizer, dtype=dtype)
    from ._blas import info

    cls, kw, n_state = OPTIMIZERS[optimizer]
    floor = "the step's products from C, whole BLAS calls on " \
            f"{fastbp.get_num_threads()} BLAS thread(s), through each installed provider " \
            f"({', '.join(info()['available'])})" + \
            (f", + a parallel copy of the {n_state} state buffer(s)" if n_state else "")
    print(f"{dtype.name}, optimizer: {cls}({', '.join(f'{k}={v}' for k, v in kw.items())}); "
          f"fastbp's BLAS: {info()['provider']} ({info()['version'].split(' DYNAMIC')[0]})")
    print(f"floor: {floor}")
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    if args.png:
        # Into memory first, as PNG whatever the name's extension (savefig would
        # add ".png" to a name without one): the file is then exactly args.png.
        chart, drawn = io.BytesIO(), False
        try:
            import matplotlib
        except ImportError:
            pass
        else:
            with matplotlib.rc_context({"savefig.format": "png"}):
                drawn = plot(rows, chart)
        if drawn:
            os.makedirs(os.path.dirname(args.png) or ".", exist_ok=True)
            from ._atomic import write_bytes

            write_bytes(args.png, chart.getvalue())
            print(f"wrote {args.png}")
        else:
            print("matplotlib is not installed: no chart")
    return 0
