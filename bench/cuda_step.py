"""Time fastbp.cuda.CudaMLP's training step on a GPU (needs CuPy; PyTorch optional).

For each size the step (forward, softmax-xent, backward, SGD) is timed three ways:
  ours       CudaMLP.step with device inputs, no per-step sync (CUDA graph replay)
  ours+sync  the same, reading the loss back every step (what MLP.train_step does)
  floor      only the step's GEMMs (L forward, L dW, L-1 dX) with cuBLAS (CuPy, or
             PyTorch where CuPy cannot capture them) on preallocated arrays,
             captured in one CUDA graph: what no implementation of this step on
             cuBLAS can beat
and, if PyTorch is installed, the same step in PyTorch (autograd + SGD) eager and
captured in a CUDA graph (torch.cuda.graph). TF32 is off everywhere. Prints ms per
step and the ratios to the floor; then checks that two CudaMLPs from the same
start give bitwise-equal parameters after the same steps (run-to-run determinism).

    python bench/cuda_step.py [--sizes book,small] [--dtype float64] [--repeat 50]

Exit status: 0 when timed and deterministic, 1 when not deterministic, and 77
("skipped", automake's and CTest's convention) with a SKIPPED line on stderr
when there is nothing to time: no GPU, a build without FASTBP_CUDA=1, or no CuPy.
"""
import argparse
import sys

import numpy as np

SKIPPED = 77  # the exit status of a run with nothing to time

SIZES = {  # name: (batch, widths)
    "book": (100, [784, 50, 10]),
    "small": (32, [784, 100, 10]),
    "medium": (128, [784, 512, 512, 10]),
    "large": (256, [784, 1024, 1024, 10]),
    "wide": (512, [1024, 4096, 4096, 10]),
    "huge": (4096, [4096, 8192, 8192, 1000]),
}


def timed(fn, repeat, warmup, start, end, sync):
    """ms per call: the best of 3 runs of `repeat` calls between two events."""
    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(3):
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        best = min(best, end_ms(start, end) / repeat)
    return best


def end_ms(start, end):
    import cupy
    return cupy.cuda.get_elapsed_time(start, end)


def gemm_floor(cp, N, sizes, dtype, repeat):
    """The step's GEMMs alone, in one CUDA graph (eager if capture fails)."""
    L = len(sizes) - 1
    x = cp.ones((N, sizes[0]), dtype)
    W = [cp.full((sizes[l], sizes[l + 1]), 0.01, dtype) for l in range(L)]
    dW = [cp.empty_like(w) for w in W]
    h = [cp.empty((N, sizes[l + 1]), dtype) for l in range(L)]
    dh = [cp.ones((N, sizes[l + 1]), dtype) for l in range(L)]

    def gemms():
        for l in range(L):
            cp.matmul(h[l - 1] if l else x, W[l], out=h[l])
        for l in reversed(range(L)):
            if l:
                cp.matmul(dh[l], W[l].T, out=dh[l - 1])
            cp.matmul((h[l - 1] if l else x).T, dh[l], out=dW[l])

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gemms()  # cuBLAS initialized outside the capture
        stream.synchronize()
        try:
            stream.begin_capture()
            gemms()
            graph = stream.end_capture()
            run, how = (lambda: graph.launch(stream)), "graph"
        except Exception as e:
            print(f"CuPy could not capture the floor's GEMMs: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            if stream.is_capturing():
                stream.end_capture()
            run, how = gemms, "eager"
        start, end = cp.cuda.Event(), cp.cuda.Event()
        ms = timed(run, repeat, 3, start, end, stream.synchronize)
    return ms, how


def torch_floor(N, sizes, dtype, repeat):
    """The step's GEMMs alone (cuBLAS through torch.mm into preallocated outputs),
    captured in one CUDA graph; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    dev = torch.device("cuda")
    L = len(sizes) - 1
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(N, sizes[0], device=dev, dtype=tdt, generator=g)
    W = [torch.randn(sizes[l], sizes[l + 1], device=dev, dtype=tdt, generator=g) * 0.01
         for l in range(L)]
    h = [torch.empty(N, sizes[l + 1], device=dev, dtype=tdt) for l in range(L)]
    dh = [torch.randn(N, sizes[l + 1], device=dev, dtype=tdt, generator=g) for l in range(L)]
    dW = [torch.empty_like(w) for w in W]

    def gemms():
        for l in range(L):
            torch.mm(h[l - 1] if l else x, W[l], out=h[l])
        for l in reversed(range(L)):
            if l:
                torch.mm(dh[l], W[l].t(), out=dh[l - 1])
            torch.mm((h[l - 1] if l else x).t(), dh[l], out=dW[l])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            gemms()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gemms()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        start.record()
        for _ in range(repeat):
            graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / repeat)
    return best


def torch_steps(N, sizes, dtype, repeat, W0):
    """(eager ms, CUDA-graph ms) of the PyTorch step, or None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    dev = torch.device("cuda")
    Ws = [torch.tensor(w, device=dev, requires_grad=True) for w in W0]
    bs = [torch.zeros(w.shape[1], device=dev, dtype=tdt, requires_grad=True) for w in W0]
    params = [p for pair in zip(Ws, bs) for p in pair]
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(N, sizes[0], device=dev, dtype=tdt, generator=gen)
    y = torch.randint(0, sizes[-1], (N,), device=dev, generator=gen)

    def step():
        h = x
        for l, (w, b) in enumerate(zip(Ws, bs)):
            h = torch.addmm(b, h, w)
            if l < len(Ws) - 1:
                h = F.relu(h)
        loss = F.cross_entropy(h, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-0.01)

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def best_of(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(3):
            start.record()
            for _ in range(repeat):
                fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / repeat)
        return best
    eager = best_of(step)
    side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graph asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        graphed = best_of(graph.replay)
    except Exception as e:  # report, do not hide: the column says why it is missing
        print(f"torch CUDA graph capture failed: {e}", flush=True)
        graphed = None
    return eager, graphed


def determinism(dtype):
    """Two CudaMLPs from one start, the same 20 steps (eager and graph replays):
    bitwise-equal parameters, run to run."""
    import cupy as cp
    from fastbp import cuda

    rng = np.random.default_rng(1)
    sizes, N = [784, 512, 512, 10], 128
    W0 = [(rng.standard_normal((i, o)) * 0.05).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    b0 = [np.zeros(o, dtype) for o in sizes[1:]]
    xs = [cp.asarray(rng.standard_normal((N, 784)).astype(dtype)) for _ in range(4)]
    ys = [cp.asarray(rng.integers(0, 10, N)) for _ in range(4)]
    got = []
    for _ in range(2):
        m = cuda.CudaMLP(W0, b0, "relu", "softmax_cross_entropy", N, graph=True)
        for s in range(20):
            m.step(xs[s % 4], ys[s % 4], cuda.STEP_TRAIN, 0.05, weight_decay=1e-4,
                   clip_norm=5.0, momentum=0.9)
        got.append(m.get_params())
    same = all(np.array_equal(a, b) for la, lb in zip(got[0], got[1]) for a, b in zip(la, lb))
    print(f"determinism ({np.dtype(dtype).name}, 20 steps with momentum, clipping, graphs): "
          f"{'bitwise equal' if same else 'DIFFERENT'}", flush=True)
    return same


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    from fastbp import cuda
    if not cuda.is_available():
        print("SKIPPED: fastbp.cuda is not available (no GPU, or fastbp built without "
              "FASTBP_CUDA=1); nothing was timed", file=sys.stderr)
        return SKIPPED
    try:
        import cupy as cp
    except ImportError:
        print("SKIPPED: bench/cuda_step.py needs CuPy; nothing was timed", file=sys.stderr)
        return SKIPPED
    dtype = np.dtype(args.dtype)
    print(f"{cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, {dtype}, "
          "ms per training step (lower is better)")
    head = (f"{'size':7} {'batch':>5} {'widths':24} {'ours':>8} {'ours+sync':>9} {'floor':>8} "
            f"{'ours/floor':>10} {'torch':>8} {'torch/floor':>11} {'torchgraph':>10} "
            f"{'tgraph/floor':>12}")
    print(head)
    print("-" * len(head))
    for name in args.sizes.split(","):
        N, sizes = SIZES[name]
        rng = np.random.default_rng(0)
        W0 = [(rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype)
              for i, o in zip(sizes[:-1], sizes[1:])]
        b0 = [np.zeros(o, dtype) for o in sizes[1:]]
        repeat = max(3, args.repeat // (10 if name == "huge" else 1))
        m = cuda.CudaMLP(W0, b0, "relu", "softmax_cross_entropy", N, graph=True)
        x = cp.asarray(rng.standard_normal((N, sizes[0])).astype(dtype))
        y = cp.asarray(rng.integers(0, sizes[-1], N))
        m.step(x, y, cuda.STEP_TRAIN, 0.0)  # labels checked once; the timed steps skip it
        start, end = cp.cuda.Event(), cp.cuda.Event()
        ours = timed(lambda: m.step(x, y, cuda.STEP_TRAIN, 0.01, check_labels=False, sync=False),
                     repeat, 3, start, end, cp.cuda.Device().synchronize)
        ours_sync = timed(lambda: m.step(x, y, cuda.STEP_TRAIN, 0.01, check_labels=False),
                          repeat, 3, start, end, cp.cuda.Device().synchronize)
        floor, how = gemm_floor(cp, N, sizes, dtype, repeat)
        if how != "graph":  # CuPy could not capture its matmuls: PyTorch's, in a graph
            tf = torch_floor(N, sizes, dtype, repeat)
            if tf is not None:
                floor, how = tf, "graph"
        del m
        tt = torch_steps(N, sizes, dtype, repeat, W0) or (None, None)
        widths = "-".join(map(str, sizes))
        torch_cols = (f"{tt[0]:8.3f} {tt[0] / floor:11.2f}" if tt[0] else f"{'-':>8} {'-':>11}")
        torch_cols += (f" {tt[1]:10.3f} {tt[1] / floor:12.2f}" if tt[1] else f" {'-':>10} {'-':>12}")
        print(f"{name:7} {N:5d} {widths:24} {ours:8.3f} {ours_sync:9.3f} {floor:8.3f}"
              f"{'' if how == 'graph' else '*'} {ours / floor:10.2f} {torch_cols}", flush=True)
    print("floor: the step's GEMMs in one CUDA graph (* eager: capture failed)")
    return 0 if determinism(dtype) else 1


if __name__ == "__main__":
    sys.exit(main())
