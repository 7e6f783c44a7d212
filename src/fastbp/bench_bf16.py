"""``python -m fastbp bench --matmul-precision bfloat16``: the bfloat16 step.

Per size (default medium, large, wide; fastbp.bench.SIZES), contenders taking
turns in one process (fastbp.bench.time_steps), every one training with SGD:

* ``floor-bf16``: the step's products with bf16 operands, each one whole call of
  the bf16 provider (oneDNN) from C on fastbp's thread count: no rounding
  passes, no Python (fastbp._core.StepFloorBF16); absent on the emulated path
* ``fastbp-bf16``: fastbp's step, matmul_precision="bfloat16"
* ``torch-autocast``: PyTorch eager under torch.autocast("cpu", torch.bfloat16)
* ``fastbp-fp32`` and ``floor-fp32``: fastbp's float32 step and its floor
  through the float32 BLAS in use
"""
import numpy as np

from . import bench

SIZES = ("medium", "large", "wide")


class BF16Floor:
    """The bf16 floor of a size, timed in C (c_time) as bench.StepFloor is."""

    def __init__(self, size):
        from . import _core

        N, widths = bench.SIZES[size]
        self.floor = _core.StepFloorBF16(widths, N)

    def c_time(self, k):
        from . import _core

        return self.floor.run(k, _core.get_num_threads())

    def __call__(self):
        self.c_time(1)


def fastbp_bf16_step(size, optimizer="sgd"):
    import fastbp

    N, widths = bench.SIZES[size]
    x, labels = bench.make_batch(size)
    model = fastbp.MLP(widths, "relu", seed=0, matmul_precision="bfloat16")
    cls, kw = bench.make_optimizer(optimizer)
    opt = cls(**kw)
    model.train_step(x, labels, optimizer=opt)
    return lambda: model.train_step(x, labels, optimizer=opt)


def torch_autocast_step(size, optimizer="sgd"):
    """PyTorch CPU eager under torch.autocast("cpu", torch.bfloat16) (its bf16
    products go to oneDNN): fastbp.bench.torch_step with autocast."""
    return bench.torch_step(size, optimizer=optimizer, autocast=True)


def contenders(size, with_torch=None, only=None):
    """{name: callable} of every contender at size (or only the one named)."""
    from . import _bf16

    if with_torch is None:
        with_torch = bench.have_torch()
    makers = {}
    if _bf16.get_bf16_provider() == "onednn":
        makers["floor-bf16"] = lambda: BF16Floor(size)
    makers["fastbp-bf16"] = lambda: fastbp_bf16_step(size)
    if with_torch:
        makers["torch-autocast"] = lambda: torch_autocast_step(size)
    makers["fastbp-fp32"] = lambda: bench.fastbp_step(size)
    makers["floor-fp32"] = lambda: bench.floor_step(size)
    return {k: make() for k, make in makers.items() if only is None or k == only}


def run(sizes=None, repeat=None, threads=None, with_torch=None):
    import fastbp

    if threads is not None:
        fastbp.set_num_threads(threads)
    rows = []
    for size in sizes or SIZES:
        t = bench.time_steps(contenders(size, with_torch), repeat)
        rows.append({"size": size, "batch": bench.SIZES[size][0],
                     "widths": bench.SIZES[size][1], "ms": {k: v * 1e3 for k, v in t.items()}})
    return rows


def format_table(rows):
    names = ("floor-bf16", "fastbp-bf16", "torch-autocast", "fastbp-fp32", "floor-fp32")
    head = f"{'size':<7} {'net':<22}" + "".join(f" {n:>14}" for n in names) + \
        f" {'bf16/floor':>11} {'vs autocast':>12} {'vs fp32':>8}"
    lines = [head + "   (ms per step)", "-" * len(head)]
    for r in rows:
        ms = r["ms"]
        net = f"{r['batch']}x" + "-".join(map(str, r["widths"]))
        line = f"{r['size']:<7} {net:<22}" + "".join(
            f" {ms[n]:>14.3f}" if n in ms else f" {'-':>14}" for n in names)
        b = ms["fastbp-bf16"]
        line += f" {b / ms['floor-bf16']:>10.2f}x" if "floor-bf16" in ms else f" {'-':>11}"
        line += f" {ms['torch-autocast'] / b:>11.2f}x" if "torch-autocast" in ms else \
            f" {'-':>12}"
        line += f" {ms['fastbp-fp32'] / b:>7.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main(args):
    import fastbp

    from . import _bf16

    sizes = args.sizes or list(SIZES)
    rows = run(sizes, args.repeat, args.threads)
    info = _bf16.info()
    print(f"bfloat16 path: {info['path']} ({info['note']}); fastbp threads "
          f"{fastbp.get_num_threads()}")
    if bench.have_torch():
        import torch
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_table(rows))
    if args.json:
        path = args.json.replace(".json", "-bf16.json") if args.json == "bench-results/step.json" \
            else args.json
        bench.write_json(path, rows)
    return 0
