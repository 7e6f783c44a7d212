"""fastbp.cuda: the optional CUDA extension.

(a) always: is_available() is a bool, and importing fastbp never imports
    fastbp._cuda (nor CuPy or PyTorch);
(b) opt-in build test (nvcc on PATH and FASTBP_TEST_CUDA_BUILD=1): a
    FASTBP_CUDA=1 build compiles, and its module links cuBLAS and the runtime;
(c) GPU tests (a device, the extension and CuPy): every kernel against
    fastbp.reference, the CPU's errors, and CudaMLP's step against the CPU step.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import MLP, cuda
from fastbp import reference as ref

from conftest import ACTS, DTYPES, SHAPES, dense_data, shape_id, tolerances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    """The environment for a child that must import the fastbp this process
    tests (the installed one in CI, src/ in a development tree)."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# ---- (a) always -----------------------------------------------------------------------

def test_is_available_is_a_bool():
    assert isinstance(cuda.is_available(), bool)
    assert isinstance(cuda.device_count(), int)


def test_importing_fastbp_imports_no_cuda():
    code = ("import sys, fastbp, fastbp.cuda; fastbp.cuda.__doc__; "
            "print(sorted(m for m in ('fastbp._cuda', 'cupy', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_numpy_arrays_are_refused_not_run_on_the_cpu():
    """fastbp.cuda's kernels are fastbp's own functions (fastbp._core) for CUDA
    arrays only: a NumPy array is a TypeError naming fastbp's CPU function."""
    x = np.ones((2, 3), np.float32)
    for name in cuda._KERNELS:
        assert getattr(cuda, name).__wrapped__ is getattr(fastbp, name), name
    with pytest.raises(TypeError, match=r"fastbp.cuda.relu_forward: expected CUDA arrays .* got "
                                        r"numpy.ndarray; for NumPy arrays call "
                                        r"fastbp.relu_forward"):
        cuda.relu_forward(x)
    with pytest.raises(TypeError, match="fastbp.cuda.dense_forward: expected CUDA arrays"):
        cuda.dense_forward(x, np.ones((3, 2), np.float32), None)
    with pytest.raises(TypeError, match="fastbp.cuda.global_norm: expected CUDA arrays"):
        cuda.global_norm([x])
    np.testing.assert_array_equal(fastbp.relu_forward(x), x)


def test_cuda_step_bench_exits_77_without_cuda(tmp_path):
    """bench/cuda_step.py without a usable GPU: a distinct exit status (77,
    "skipped"), not 0, and a line saying why."""
    if cuda.is_available():
        pytest.skip("a GPU is present")
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "cuda_step.py"),
                        "--sizes", "book"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(
                           os.path.dirname(fastbp.__file__))})
    assert r.returncode == 77, r
    assert r.stderr.startswith("SKIPPED: fastbp.cuda is not available"), r.stderr


def test_cuda_array_without_the_extension_says_so():
    """An object that looks like a CUDA array reaches fastbp.cuda's description;
    without fastbp._cuda (or a device) that fails with a clear error, not a crash."""
    class Fake:
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (4096, False),
                                    "version": 3, "strides": None}
    if cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises((RuntimeError, TypeError), match="relu_forward|fastbp.cuda"):
        fastbp.relu_forward(Fake())


@pytest.mark.skipif(cuda.is_available(), reason="a CUDA device is present")
def test_without_device_cuda_mlp_raises_runtime_error():
    with pytest.raises(RuntimeError, match="fastbp.cuda"):
        cuda.CudaMLP([np.ones((3, 2), np.float32)], [np.zeros(2, np.float32)], cap=4)


_W, _b = np.ones((3, 4)), np.zeros(4)
BAD_LAYERS = [
    (([_W], [], "relu", "mse", 4), ValueError, "f: need one W and one b per layer, got 1 and 0"),
    (([_W, _W], [_b, _b], ["relu"], "mse", 4), ValueError,
     "f: need one activation per layer (2), got 1"),
    (([_W], [_b], "relu", "hinge", 4), ValueError, "f: unknown loss 'hinge'"),
    (([_W], [_b], "relu", "mse", 0), ValueError, "f: cap must be >= 1, got 0"),
    (([[1.0]], [_b], "relu", "mse", 4), TypeError,
     "f: parameters must be float32 or float64 arrays, got list"),
    (([_W.astype(int)], [_b], "relu", "mse", 4), TypeError,
     "f: parameters must be 2-D float32 or float64 arrays, got int64 of 2 dimensions"),
    (([np.ones(3)], [_b], "relu", "mse", 4), TypeError,
     "f: parameters must be 2-D float32 or float64 arrays, got float64 of 1 dimensions"),
    (([_W, np.ones((4, 2), np.float32)], [_b, np.zeros(2)], "relu", "mse", 4), TypeError,
     "f: W[1] must be a float64 array"),
    (([_W], [np.zeros(3)], "relu", "mse", 4), ValueError, "f: b[0] must have shape (4,), got (3,)"),
    (([_W, np.ones((3, 2))], [_b, np.zeros(2)], "relu", "mse", 4), ValueError,
     "f: W[1] must have shape (4, 2), got (3, 2)"),
]


@pytest.mark.parametrize("args,exc,msg", BAD_LAYERS, ids=[b[2] for b in BAD_LAYERS])
@pytest.mark.parametrize("backend", ["cpu", "cuda_step"])
def test_cpu_and_gpu_workspaces_check_layers_in_one_place(args, exc, msg, backend):
    """MLPWorkspace and CudaMLP check W, b, the activations, the loss and cap
    with one function (fastbp._core._check_mlp): the same messages."""
    with pytest.raises(exc, match=re.escape(msg)):
        fastbp._core._check_mlp("f", *args, backend)
    if backend == "cpu":
        with pytest.raises(exc, match=re.escape(msg.replace("f:", "MLPWorkspace:"))):
            fastbp._core.MLPWorkspace(*args)


def test_gpu_layers_are_copied_in_so_need_not_be_writable():
    W, b = _W.copy(), _b.copy()
    W.flags.writeable = False
    with pytest.raises(ValueError, match=r"f: W\[0\] is read-only"):
        fastbp._core._check_mlp("f", [W], [b], "relu", "mse", 4, "cpu")
    sizes, acts, dt = fastbp._core._check_mlp("f", [W], [b], "relu", "mse", 4, "cuda_step")
    assert (sizes, dt) == ([3, 4], np.float64)
    # no memory behind them (zero strides): only the shapes are read
    big = 2**31
    Wb = np.lib.stride_tricks.as_strided(np.zeros(1), (3, big), (0, 0))
    bb = np.lib.stride_tricks.as_strided(np.zeros(1), (big,), (0,))
    with pytest.raises(ValueError, match="f: width 1 = 2147483648 exceeds the BLAS 32-bit"):
        fastbp._core._check_mlp("f", [Wb], [bb], "relu", "mse", 4, "cuda_step")


def test_gpu_layers_refuse_what_the_gpu_step_lacks():
    with pytest.raises(NotImplementedError, match="f: loss 'binary_cross_entropy' is not "
                                                  "supported on the GPU yet"):
        fastbp._core._check_mlp("f", [_W], [_b], "relu", "binary_cross_entropy", 4, "cuda_step")
    fastbp._core._check_mlp("f", [_W], [_b], "relu", "binary_cross_entropy", 4, "cpu")


# ---- (b) the build -----------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None or os.environ.get("FASTBP_TEST_CUDA_BUILD") != "1",
                    reason="needs nvcc on PATH and FASTBP_TEST_CUDA_BUILD=1")
def test_cuda_build_compiles_and_links(tmp_path):
    lib, tmp = tmp_path / "lib", tmp_path / "tmp"
    env = dict(os.environ, FASTBP_CUDA="1")
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "-b", str(lib), "-t", str(tmp)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    sos = glob.glob(str(lib / "fastbp" / "_cuda*.so"))
    assert len(sos) == 1, os.listdir(lib / "fastbp")
    so = sos[0]
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout
        needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
        assert any(n.startswith("libcublas.so") for n in needed), needed
        assert any(n.startswith("libcudart.so") for n in needed), needed
    if shutil.which("cuobjdump"):
        elfs = subprocess.run(["cuobjdump", "--list-elf", so], capture_output=True, text=True).stdout
        assert "sm_80" in elfs and "sm_90" in elfs, elfs
        ptx = subprocess.run(["cuobjdump", "--list-ptx", so], capture_output=True, text=True).stdout
        assert "sm_90" in ptx, ptx
    # the module loads (its libraries resolve) and answers without a device too;
    # loaded from its file, since an installed fastbp would shadow lib/fastbp
    code = ("import importlib.util, sys, fastbp; "
            f"spec = importlib.util.spec_from_file_location('fastbp._cuda', {so!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(m.device_count())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 0


# ---- (c) on a GPU -----------------------------------------------------------------------

def _cupy():
    try:
        import cupy
        return cupy
    except Exception:
        return None


cp = _cupy() if cuda.is_available() else None
gpu = pytest.mark.skipif(cp is None, reason="needs a CUDA device, the CUDA extension and CuPy")


def close(got, want, dtype, scale=1.0):
    """got (a CuPy array) ~= want (NumPy) at the CPU tests' tolerances."""
    assert isinstance(got, cp.ndarray), type(got)
    got = cp.asnumpy(got)
    want = np.asarray(want)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape, (got.dtype, got.shape)
    rtol, atol = tolerances(want, dtype)
    np.testing.assert_allclose(got, want, rtol=rtol * scale, atol=atol * scale)


def loss_close(got, want, dtype):
    assert type(got) is float
    rtol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2)


GEMM = 4.0  # float32 GEMMs sum in another order than NumPy's BLAS


@gpu
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations(rng, name, dtype):
    x = (rng.standard_normal((37, 13)) * 5).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    fwd, bwd = getattr(cuda, f"{name}_forward"), getattr(cuda, f"{name}_backward")
    rfwd, rbwd = ref.ACTIVATIONS[name]
    y = rfwd(x)
    close(fwd(cp.asarray(x)), y, dtype)
    close(bwd(cp.asarray(dy), cp.asarray(y)), rbwd(dy, y), dtype)
    xd = cp.asarray(x)
    assert fwd(xd, out=xd) is xd  # in place
    close(xd, y, dtype)
    close(fwd(cp.asarray(x)[:, ::2]), rfwd(x[:, ::2]), dtype)  # strided input


@gpu
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward(rng, dtype, activation, shape):
    N, I, O = shape
    x, W, b, _, _ = dense_data(rng, N, I, O, dtype)
    got = cuda.dense_forward(cp.asarray(x), cp.asarray(W), cp.asarray(b), activation)
    close(got, ref.dense_forward(x, W, b, activation), dtype, GEMM)
    got = cuda.dense_forward(cp.asarray(x), cp.asarray(W), None, activation)
    close(got, ref.dense_forward(x, W, None, activation), dtype, GEMM)


@gpu
@pytest.mark.parametrize("shape", SHAPES + [(512, 64, 300)], ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward(rng, dtype, activation, shape):
    N, I, O = shape
    x, W, b, dy, y = dense_data(rng, N, I, O, dtype, activation)
    want = ref.dense_backward(dy, x, W, y, activation)
    d = [cp.asarray(a) for a in (dy, x, W, y)]
    dx, dW, db = cuda.dense_backward(*d, activation)
    for g, w in zip((dx, dW, db), want):
        close(g, w, dtype, GEMM * (N / 64 + 1))
    # accumulate into given buffers, no dx
    dW2, db2 = cp.asarray(want[1]), cp.asarray(want[2])
    dx3, dW3, db3 = cuda.dense_backward(*d, activation, dW=dW2, db=db2, accumulate=True,
                                        need_dx=False)
    assert dx3 is None and dW3 is dW2 and db3 is db2
    close(dW2, 2 * want[1], dtype, GEMM * (N / 64 + 1))
    close(db2, 2 * want[2], dtype, GEMM * (N / 64 + 1))


@gpu
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (300, 10), (5, 257), (4, 1000)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(rng, dtype, shape):
    N, C = shape
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, C, N)
    probs = rng.random(shape).astype(dtype)
    probs /= probs.sum(axis=1, keepdims=True)
    for t in (labels, probs):
        want_loss, want = ref.softmax_cross_entropy(z, t)
        loss, dz = cuda.softmax_cross_entropy(cp.asarray(z), cp.asarray(t))
        loss_close(loss, want_loss, dtype)
        close(dz, want, dtype)
    zd = cp.asarray(z)
    loss, out = cuda.softmax_cross_entropy(zd, cp.asarray(labels.astype(np.int32)), out=zd)
    assert out is zd
    close(zd, ref.softmax_cross_entropy(z, labels)[1], dtype)
    loss, _ = cuda.softmax_cross_entropy(cp.zeros((0, C), dtype), cp.zeros(0, np.int64))
    assert np.isnan(loss)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_labels_out_of_range_raise_before_any_launch(rng, dtype):
    z = rng.standard_normal((6, 4)).astype(dtype)
    out = cp.full(z.shape, 7, dtype)
    for bad in ([0, 1, 4, 2, 3, 0], [0, -1, 2, 3, 1, 1]):
        with pytest.raises(ValueError) as e_cpu:
            fastbp.softmax_cross_entropy(z, np.array(bad))
        with pytest.raises(ValueError) as e_gpu:
            cuda.softmax_cross_entropy(cp.asarray(z), cp.asarray(bad), out=out)
        assert str(e_gpu.value) == str(e_cpu.value)
        assert bool((out == 7).all())  # nothing ran
    with pytest.raises(TypeError, match="integer class labels"):
        cuda.softmax_cross_entropy(cp.asarray(z), cp.zeros(6, dtype))


@gpu
def test_errors_match_the_cpu(rng):
    x32 = rng.standard_normal((3, 4)).astype(np.float32)
    W64 = rng.standard_normal((4, 2))
    W32 = W64.astype(np.float32)
    cases = [
        lambda m, a: m.dense_forward(a(x32), a(W64), None),            # dtype mismatch
        lambda m, a: m.dense_forward(a(x32), a(W32[:3]), None),        # not aligned
        lambda m, a: m.dense_forward(a(x32), a(W32), a(W32[:, 0])),    # bias shape
        lambda m, a: m.dense_forward(a(x32), a(W32), None, "swish"),   # activation
        lambda m, a: m.relu_forward(a(x32.astype(np.int32))),          # not float
        lambda m, a: m.mse_loss(a(x32), a(x32[:2])),                    # shapes
        lambda m, a: m.relu_backward(a(x32), a(x32[:2])),
        lambda m, a: m.dense_backward(a(x32[:, :2]), a(x32), a(W32), None, "relu"),
        lambda m, a: m.clip_by_value([a(x32)], -1.0),
    ]
    for case in cases:
        with pytest.raises((TypeError, ValueError)) as e_cpu:
            case(fastbp, np.asarray)
        with pytest.raises(type(e_cpu.value)) as e_gpu:
            case(cuda, cp.asarray)
        assert str(e_gpu.value) == str(e_cpu.value)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_loss(rng, dtype):
    y = rng.standard_normal((33, 5)).astype(dtype)
    t = rng.standard_normal((33, 5)).astype(dtype)
    want_loss, want = ref.mse_loss(y, t)
    loss, dy = cuda.mse_loss(cp.asarray(y), cp.asarray(t))
    loss_close(loss, want_loss, dtype)
    close(dy, want, dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_and_clipping(rng, dtype):
    p = rng.standard_normal((17, 9)).astype(dtype)
    g = rng.standard_normal((17, 9)).astype(dtype)
    pd = cp.asarray(p)
    assert cuda.sgd_update(pd, cp.asarray(g), 0.1, weight_decay=0.01) is pd
    close(pd, ref.sgd_update(p.copy(), g, 0.1, 0.01), dtype)

    gs = [rng.standard_normal(s).astype(dtype) * 3 for s in ((5, 7), (7,), (70000,))]
    gd = [cp.asarray(a) for a in gs]
    cuda.clip_by_value(gd, 1.5)
    want = [a.copy() for a in gs]
    ref.clip_by_value(want, 1.5)
    for a, w in zip(gd, want):
        close(a, w, dtype)

    gd = [cp.asarray(a) for a in gs]
    want = [a.copy() for a in gs]
    total = cuda.clip_by_global_norm(gd, 2.0)
    loss_close(total, ref.clip_by_global_norm(want, 2.0), dtype)
    for a, w in zip(gd, want):
        close(a, w, dtype)
    loss_close(cuda.global_norm(gd), 2.0, dtype)

    bad = [cp.asarray(np.array([np.inf, 1.0], dtype))]
    assert cuda.clip_by_global_norm(bad, 1.0) == np.inf
    assert float(bad[0][1]) == 1.0  # a non-finite norm leaves them alone


@gpu
def test_global_norm_overflow_is_rescaled():
    g = [cp.asarray(np.full(4, 1e200)), cp.asarray(np.array([3e200]))]
    want = fastbp.global_norm([cp.asnumpy(a) for a in g])
    np.testing.assert_allclose(cuda.global_norm(g), want, rtol=1e-12)


@gpu
def test_reductions_are_deterministic(rng):
    N, O = 4096, 300
    dy = cp.asarray(rng.standard_normal((N, O)).astype(np.float32))
    y = cp.asarray(rng.random((N, O)).astype(np.float32))
    x = cp.asarray(rng.standard_normal((N, 8)).astype(np.float32))
    W = cp.asarray(rng.standard_normal((8, O)).astype(np.float32))
    r1 = cuda.dense_backward(dy, x, W, y, "sigmoid")
    r2 = cuda.dense_backward(dy, x, W, y, "sigmoid")
    assert all(bool((a == b).all()) for a, b in zip(r1, r2))
    labels = cp.asarray(rng.integers(0, O, N))
    (l1, d1), (l2, d2) = (cuda.softmax_cross_entropy(dy, labels) for _ in range(2))
    assert l1 == l2 and bool((d1 == d2).all())
    assert cuda.global_norm([dy, y]) == cuda.global_norm([dy, y])


# ---- CudaMLP against the CPU step ----------------------------------------------------------------

STEP_CASES = [
    dict(loss="softmax_cross_entropy", activation="relu"),
    dict(loss="softmax_cross_entropy", activation="tanh", weight_decay=1e-3),
    dict(loss="softmax_cross_entropy", activation="relu", clip_norm=0.05),
    dict(loss="softmax_cross_entropy", activation="sigmoid", momentum=0.9, weight_decay=1e-3),
    dict(loss="mse", activation="tanh", clip_norm=0.5, momentum=0.5),
]


def _pair(dtype, sizes, loss, activation, cap, graph=True):
    cpu = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=3)
    L = len(sizes) - 1
    W = [cpu.params[f"W{l}"] for l in range(1, L + 1)]
    b = [cpu.params[f"b{l}"] for l in range(1, L + 1)]
    return cpu, cuda.CudaMLP(W, b, activation, loss, cap, graph=graph)


def _data(rng, dtype, N, sizes, loss):
    x = rng.standard_normal((N, sizes[0])).astype(dtype)
    if loss == "mse":
        return x, rng.standard_normal((N, sizes[-1])).astype(dtype)
    return x, rng.integers(0, sizes[-1], N)


@gpu
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_train_step_matches_cpu(rng, dtype, case):
    case = dict(case)
    loss, act = case.pop("loss"), case.pop("activation")
    sizes = [20, 33, 17, 5]
    cpu, dev = _pair(dtype, sizes, loss, act, cap=16)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for step in range(6):
        x, t = _data(rng, dtype, 16 if step < 5 else 9, sizes, loss)  # last batch partial
        want = cpu.train_step(x, t, 0.1, **case)
        on_device = step % 2 == 0  # host and device inputs both work
        got, _, _ = dev.step(cp.asarray(x) if on_device else x,
                             cp.asarray(t) if on_device else t, cuda.STEP_TRAIN, 0.1,
                             case.get("weight_decay", 0.0), case.get("clip_norm", 0.0),
                             case.get("momentum", 0.0))
        np.testing.assert_allclose(got, want, rtol=tol)
    W, b = dev.get_params()
    for l in range(len(sizes) - 1):
        np.testing.assert_allclose(W[l], cpu.params[f"W{l + 1}"], rtol=tol, atol=tol)
        np.testing.assert_allclose(b[l], cpu.params[f"b{l + 1}"], rtol=tol, atol=tol)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_step_matches_cpu_gradient(rng, dtype):
    sizes = [12, 300, 7]  # 300: two column blocks of the bias-gradient kernel
    cpu, dev = _pair(dtype, sizes, "softmax_cross_entropy", "relu", cap=40)
    x, t = _data(rng, dtype, 40, sizes, "softmax_cross_entropy")
    loss, norm, hits = dev.step(cp.asarray(x), cp.asarray(t), cuda.STEP_GRAD, weight_decay=0.01,
                                count_correct=True)
    np.testing.assert_allclose(loss, cpu.loss(x, t, weight_decay=0.01),
                               rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert norm == -1.0
    logits = cpu.predict(x)
    assert hits == int((logits.argmax(axis=1) == t).sum())
    grads = cpu.gradient(x, t, weight_decay=0.01)
    for l in range(len(sizes) - 1):
        close(cp.asarray(dev.dW[l]), grads[f"W{l + 1}"], dtype, GEMM * 4)
        close(cp.asarray(dev.db[l]), grads[f"b{l + 1}"], dtype, GEMM * 4)
    close(cp.asarray(dev.output(40)), logits, dtype, GEMM)


@gpu
def test_graph_replay_is_bitwise_the_eager_step(rng):
    sizes = [30, 64, 10]
    _, a = _pair(np.float32, sizes, "softmax_cross_entropy", "relu", cap=32, graph=True)
    _, b = _pair(np.float32, sizes, "softmax_cross_entropy", "relu", cap=32, graph=False)
    x, t = (cp.asarray(v) for v in _data(rng, np.float32, 32, sizes, "softmax_cross_entropy"))
    for _ in range(5):
        la = a.step(x, t, cuda.STEP_TRAIN, 0.05, clip_norm=1.0, momentum=0.9)
        lb = b.step(x, t, cuda.STEP_TRAIN, 0.05, clip_norm=1.0, momentum=0.9)
        assert la == lb
    assert a.stats() == {"eager": 1, "captured": 1, "replayed": 4}
    assert b.stats()["replayed"] == 0
    for wa, wb in zip(a.get_params()[0], b.get_params()[0]):
        assert np.array_equal(wa, wb)
    assert a.step(x, t, cuda.STEP_TRAIN, 0.05, sync=False) is None
    assert a.read_out()[0] > 0


@gpu
def test_step_rejects_bad_labels_before_launch(rng):
    sizes = [6, 8, 3]
    _, dev = _pair(np.float64, sizes, "softmax_cross_entropy", "relu", cap=4)
    W0 = dev.get_params()[0][0]
    x = rng.standard_normal((4, 6))
    for labels in (np.array([0, 1, 3, 2]), cp.asarray([0, 1, 3, 2])):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got 3 at index 2"):
            dev.step(cp.asarray(x), labels, cuda.STEP_TRAIN, 0.1)
    assert np.array_equal(dev.get_params()[0][0], W0)
    with pytest.raises(ValueError, match="exceeds the workspace capacity 4"):
        dev.step(np.zeros((5, 6)), np.zeros(5, np.int64), cuda.STEP_TRAIN, 0.1)
    with pytest.raises(TypeError, match="fastbp never casts silently"):
        dev.step(cp.zeros((4, 6), np.float32), cp.zeros(4, np.int64), cuda.STEP_TRAIN, 0.1)


@gpu
def test_grow_keeps_parameters_and_momentum(rng):
    sizes = [5, 7, 3]
    _, dev = _pair(np.float64, sizes, "softmax_cross_entropy", "tanh", cap=4)
    x, t = _data(rng, np.float64, 4, sizes, "softmax_cross_entropy")
    dev.step(x, t, cuda.STEP_TRAIN, 0.1, momentum=0.9)
    big = dev.grow(16)
    assert big.cap == 16
    for a, b in zip(dev.get_params()[0] + [v.get() for v in dev.vW],
                    big.get_params()[0] + [v.get() for v in big.vW]):
        assert np.array_equal(a, b)


@gpu
def test_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    x = torch.randn(9, 4, device="cuda", dtype=torch.float64, requires_grad=True)
    W = torch.randn(4, 3, device="cuda", dtype=torch.float64)
    y = cuda.dense_forward(x, W, None, "tanh")
    assert isinstance(y, torch.Tensor) and y.device == x.device
    want = ref.dense_forward(x.detach().cpu().numpy(), W.cpu().numpy(), None, "tanh")
    np.testing.assert_allclose(y.cpu().numpy(), want, rtol=1e-12, atol=1e-12)


# ---- the training engine's options the GPU step lacks ------------------------------------
# _core.mlp_step refuses them by name (_gpu_unsupported) for any workspace on a device,
# before it reads an input: checked here on the CPU with a stand-in workspace, and on a
# GPU through MLP(device="cuda").

class _FakeGpuWorkspace:
    """What mlp_step reads of a fastbp._cuda workspace, on "device 0"."""
    device, sizes, cap, dtype = 0, (3, 2), 4, np.dtype(np.float64)
    loss_code = fastbp._core.LOSSES["softmax_cross_entropy"]

    def run(self, *args):
        self.ran = args
        return "ran"


UNSUPPORTED = [
    (dict(optimizer="Adam", lr=0.1), None, "optimizer 'Adam'"),
    (dict(optimizer="AdamW", lr=0.1), None, "optimizer 'AdamW'"),
    (dict(lr=0.1, momentum=0.9, nesterov=True), None, "nesterov=True"),
    (dict(lr=0.1, momentum=0.9, dampening=0.5), None, "dampening"),
    (dict(lr=0.1, clip_value=1.0), None, "clip_value"),
    (dict(lr=0.1, norm=8.0), None, "a data-parallel normalization (norm)"),
    (dict(lr=0.1), np.ones(4), "sample_weight"),
    (dict(mode=fastbp._core.STEP_UPDATE, lr=0.1), None, "a step from given gradients"),
    # fastbp.sklearn's
    (dict(optimizer="sklearn_sgd", lr=0.1), None, "optimizer 'sklearn_sgd'"),
    (dict(optimizer="sklearn_adam", lr=0.1), None, "optimizer 'sklearn_adam'"),
    (dict(lr=0.1, alpha=1e-4), None, "alpha (scikit-learn's L2 term)"),
    (dict(lr=0.1, loss_eps=1e-7), None, "loss_eps (scikit-learn's clipped log-loss)"),
]


@pytest.mark.parametrize("kw,weights,what", UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_gpu_step_names_what_it_does_not_support(kw, weights, what):
    ws = _FakeGpuWorkspace()
    opts = fastbp._core.StepOptions(**{"mode": fastbp._core.STEP_TRAIN, **kw})
    with pytest.raises(NotImplementedError,
                       match=re.escape(f"mlp_step: {what}") + ".* not supported on the GPU yet"):
        fastbp._core.mlp_step(ws, np.zeros((4, 3)), np.zeros(4, np.int64), opts, weights)
    assert not hasattr(ws, "ran") and opts.t == 1 and opts.step == 0


def test_gpu_step_runs_what_it_supports():
    """SGD with momentum, weight decay and clip_norm reach the GPU workspace, and
    the step advances the options' counters as on the CPU."""
    ws = _FakeGpuWorkspace()
    opts = fastbp._core.StepOptions(fastbp._core.STEP_TRAIN, lr=0.1, momentum=0.9,
                                    weight_decay=0.01, clip_norm=1.0)
    assert fastbp._core.mlp_step(ws, np.zeros((4, 3)), np.zeros(4, np.int64), opts) == "ran"
    assert ws.ran[1] == 4 and (opts.t, opts.step) == (2, 1)


@gpu
@pytest.mark.parametrize("kw,what", [
    (dict(optimizer=fastbp.optim.Adam(1e-3)), "optimizer 'Adam'"),
    (dict(optimizer=fastbp.optim.AdamW(1e-3)), "optimizer 'AdamW'"),
    (dict(optimizer=fastbp.optim.SGD(0.1, momentum=0.9, nesterov=True)), "nesterov=True"),
    (dict(optimizer=fastbp.optim.SGD(0.1, momentum=0.9, dampening=0.1)), "dampening"),
    (dict(lr=0.1, clip_value=0.5), "clip_value"),
    (dict(lr=0.1, sample_weight=np.ones(8)), "sample_weight"),
], ids=["adam", "adamw", "nesterov", "dampening", "clip_value", "sample_weight"])
def test_mlp_on_cuda_refuses_unsupported_options_by_name(rng, kw, what):
    model = MLP([6, 9, 4], "tanh", dtype=np.float64, seed=1, device="cuda")
    before = model.get_params()
    x, t = rng.standard_normal((8, 6)), rng.integers(0, 4, 8)
    with pytest.raises(NotImplementedError, match=re.escape(what)):
        model.train_step(x, t, **kw)
    with pytest.raises(NotImplementedError, match=re.escape(what)):
        model.fit(x, t, epochs=1, batch_size=4, **kw)
    after = model.get_params()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model.step_ == 0 and model.epoch_ == 0


@gpu
def test_mlp_on_cuda_refuses_dropout_and_bce_by_name():
    with pytest.raises(NotImplementedError, match="dropout is not supported on the GPU"):
        MLP([6, 9, 4], dropout=0.5, device="cuda")
    with pytest.raises(NotImplementedError, match="'binary_cross_entropy' is not supported on "
                                                  "the GPU"):
        MLP([6, 9, 4], loss="binary_cross_entropy", device="cuda")
