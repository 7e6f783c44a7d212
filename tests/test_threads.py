"""Thread-count determinism, set/get_num_threads, and GIL-free concurrency."""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import time

import numpy as np
import pytest

import fastbp

from conftest import DTYPES

THREADS = [1, 2, 3]


def _cases(dtype):
    """name -> callable(rng) returning a tuple of outputs; sizes large enough
    (>= 131072 elements) that every kernel goes parallel with 2+ threads."""
    def dense_fwd(rng):
        x = rng.standard_normal((512, 64)).astype(dtype)
        W = rng.standard_normal((64, 512)).astype(dtype)
        b = rng.standard_normal(512).astype(dtype)
        return tuple(fastbp.dense_forward(x, W, b, a) for a in [None, "relu", "sigmoid", "tanh"])

    def dense_bwd(rng):
        x = rng.standard_normal((512, 64)).astype(dtype)
        W = rng.standard_normal((64, 512)).astype(dtype)
        dy = rng.standard_normal((512, 512)).astype(dtype)
        out = []
        for a in [None, "relu", "sigmoid", "tanh"]:
            y = fastbp.dense_forward(x, W, None, a)
            out += fastbp.dense_backward(dy, x, W, y, a)
            dW = np.ones((64, 512), dtype)
            db = np.ones(512, dtype)
            out += fastbp.dense_backward(dy, x, W, y, a, dW=dW, db=db, accumulate=True)
        return tuple(out)

    def acts(rng):
        x = rng.standard_normal(300_000).astype(dtype)
        dy = rng.standard_normal(300_000).astype(dtype)
        out = []
        for n in ["relu", "sigmoid", "tanh"]:
            y = getattr(fastbp, f"{n}_forward")(x)
            out += [y, getattr(fastbp, f"{n}_backward")(dy, y)]
        return tuple(out)

    def xent_labels(rng):
        z = (3 * rng.standard_normal((1024, 1000))).astype(dtype)
        return fastbp.softmax_cross_entropy(z, rng.integers(0, 1000, 1024))

    def xent_probs(rng):
        z = (3 * rng.standard_normal((1024, 1000))).astype(dtype)
        t = rng.dirichlet(np.ones(1000), 1024).astype(dtype)
        return fastbp.softmax_cross_entropy(z, t)

    def mse(rng):
        y = rng.standard_normal((1000, 300)).astype(dtype)
        return fastbp.mse_loss(y, rng.standard_normal((1000, 300)).astype(dtype))

    def sgd(rng):
        p = rng.standard_normal(300_000).astype(dtype)
        return (fastbp.sgd_update(p, rng.standard_normal(300_000).astype(dtype), 0.1, 1e-3),)

    def clip_value(rng):
        g = rng.standard_normal(300_000).astype(dtype)
        fastbp.clip_by_value([g], 0.7)
        return (g,)

    def clip_norm(rng):
        gs = [rng.standard_normal(300_000).astype(dtype), rng.standard_normal((400, 500)).astype(dtype)]
        n = fastbp.clip_by_global_norm(gs, 1.0)
        return (n, fastbp.global_norm(gs), *gs)

    def huge_norm(rng):
        gs = [rng.standard_normal(300_000) * 1e200]
        return (fastbp.global_norm(gs), fastbp.clip_by_global_norm(gs, 1.0), *gs)

    def gemm_splits(rng):
        """Products just above and below the size where a GEMM is split over the
        pool (parts of >= 2^20 multiply-adds), row- and column-split, with the
        transposes of the backward pass."""
        out = []
        for N, I, O in [(100, 784, 50), (32, 784, 100), (27, 784, 100), (64, 300, 70),
                        (1000, 33, 65), (17, 2000, 61)]:
            x = rng.standard_normal((N, I)).astype(dtype)
            W = rng.standard_normal((I, O)).astype(dtype)
            y = fastbp.dense_forward(x, W, None, "tanh")
            out += [y, *fastbp.dense_backward(rng.standard_normal((N, O)).astype(dtype), x, W,
                                              y, "tanh")]
        return tuple(out)

    def steps(rng):
        """Training steps at the benchmark's book size: the fused SGD update goes
        through the GEMM's beta = 1 - lr wd; momentum and clipping do not."""
        x = rng.standard_normal((100, 784)).astype(dtype)
        y = rng.integers(0, 10, 100)
        out = []
        for kw in [dict(weight_decay=1e-3), dict(momentum=0.9, clip_norm=1.0)]:
            m = fastbp.MLP([784, 50, 10], dtype=dtype, seed=1)
            out += [m.train_step(x, y, 0.1, **kw) for _ in range(3)] + list(m.params.values())
        return tuple(out)

    return {f.__name__: f for f in [dense_fwd, dense_bwd, acts, xent_labels, xent_probs, mse,
                                     sgd, clip_value, clip_norm, huge_norm, gemm_splits, steps]}


CASE_NAMES = list(_cases(np.float64))


def _same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bitwise, NaN-safe
    else:
        assert (a == b) or (math.isnan(a) and math.isnan(b)), (a, b)


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_across_thread_counts(restore_threads, dtype, case):
    fn = _cases(dtype)[case]
    results = {}
    for nt in THREADS:
        fastbp.set_num_threads(nt)
        assert fastbp.get_num_threads() == nt
        results[nt] = fn(np.random.default_rng(7))
    for nt in THREADS[1:]:
        assert len(results[nt]) == len(results[1])
        for a, b in zip(results[1], results[nt]):
            _same(a, b)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_get_returns_what_was_set(restore_threads, n):
    fastbp.set_num_threads(n)
    assert fastbp.get_num_threads() == n
    fastbp.set_num_threads(np.int64(2))
    assert fastbp.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 4097, 2**40])
def test_set_num_threads_value_error(restore_threads, bad):
    fastbp.set_num_threads(2)
    with pytest.raises(ValueError, match=rf"n must be in \[1, 4096\], got {bad}"):
        fastbp.set_num_threads(bad)
    assert fastbp.get_num_threads() == 2


@pytest.mark.parametrize("bad", [1.5, "2", True, None, np.bool_(True)])
def test_set_num_threads_type_error(restore_threads, bad):
    with pytest.raises(TypeError, match="n must be an integer"):
        fastbp.set_num_threads(bad)


def test_threadpoolctl_lists_our_pool_and_our_blas(restore_threads):
    from threadpoolctl import threadpool_info

    fastbp.set_num_threads(3)
    ours = [p for p in threadpool_info() if p["internal_api"] == "fastbp"]
    assert len(ours) == 1 and ours[0]["user_api"] == "openmp"
    assert ours[0]["num_threads"] == 3 and ours[0]["version"] == fastbp.__version__
    blas = [p for p in threadpool_info() if "scipy_openblas32" in p["filepath"]]
    assert len(blas) == 1 and blas[0]["num_threads"] == 1  # GEMMs are split over our pool


def test_the_blas_stays_single_threaded(restore_threads):
    """Raising our BLAS's own thread count (threadpoolctl does, for every BLAS it
    finds) must not nest its pool inside ours: the next GEMM puts it back to 1."""
    from threadpoolctl import threadpool_limits

    from fastbp import _blas

    x = np.ones((64, 64), np.float32)
    with threadpool_limits(limits=4, user_api="blas"):
        fastbp.dense_forward(x, x, None)
        assert _blas.info()["threads"] == 1
    fastbp.set_num_threads(2)
    fastbp.dense_forward(x, x, None)
    assert _blas.info()["threads"] == 1


def test_concurrent_calls_match_sequential():
    """4 Python threads at once on different data give the sequential results."""
    def work(seed):
        rng = np.random.default_rng(seed)
        dtype = np.float32 if seed % 2 else np.float64
        x = rng.standard_normal((256, 64)).astype(dtype)
        W = rng.standard_normal((64, 512)).astype(dtype)
        b = rng.standard_normal(512).astype(dtype)
        out = []
        for _ in range(3):
            y = fastbp.dense_forward(x, W, b, "tanh")
            loss, dz = fastbp.softmax_cross_entropy(y, rng.integers(0, 512, 256))
            dx, dW, db = fastbp.dense_backward(dz, x, W, y, "tanh")
            n = fastbp.clip_by_global_norm([dW, db], 0.5)
            fastbp.sgd_update(W, dW, 0.1, 1e-4)
            out += [y, loss, dx, dW, db, n, W.copy()]
        return out

    seeds = list(range(8))
    sequential = [work(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as ex:
        concurrent = list(ex.map(work, seeds))
    for seq, con in zip(sequential, concurrent):
        for a, b in zip(seq, con):
            _same(a, b)


def test_threadpoolctl_limits_our_threads_when_not_set():
    """Without set_num_threads, fastbp follows OMP_NUM_THREADS, and
    threadpoolctl's threadpool_limits (user_api="openmp", or all APIs) changes
    it. A fresh process, since other tests here call set_num_threads."""
    import os
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    code = ("import fastbp\n"
            "from threadpoolctl import threadpool_limits\n"
            "n0 = fastbp.get_num_threads()\n"
            "with threadpool_limits(limits=1, user_api='openmp'):\n"
            "    n1 = fastbp.get_num_threads()\n"
            "with threadpool_limits(limits=2):\n"
            "    n2 = fastbp.get_num_threads()\n"
            "print(n0, n1, n2, fastbp.get_num_threads())\n")
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="3",
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    # OMP_NUM_THREADS honoured, then limited, then restored
    assert out.stdout.split() == ["3", "1", "2", "3"]


# ---- the pool: threads the system cannot start, the environment -------------------------------

def _child(code, env=None, timeout=120):
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under ASan (tools/sanitize.sh) the sanitizer's own per-thread "
                           "mappings fail under the address-space limit and abort")
def test_threads_the_system_cannot_start_leave_a_smaller_pool():
    """set_num_threads(512) under an address-space limit: the workers that cannot
    start are not started (before: libgomp exited the process). The kernel runs
    on the workers that did, with the same result."""
    code = (
        "import resource, numpy as np, fastbp, hashlib\n"
        "x = np.linspace(-3, 3, 1 << 22)\n"
        "y = np.empty_like(x)\n"
        "want = hashlib.sha256(fastbp.tanh_forward(x, out=y).data).hexdigest()\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "with open('/proc/self/status') as f:\n"
        "    vm = [int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize')][0]\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), hard))\n"
        "fastbp.set_num_threads(512)\n"
        "got = hashlib.sha256(fastbp.tanh_forward(x, out=y).data).hexdigest()\n"
        "info = fastbp._core.pool_info()\n"
        "print(got == want, 0 < info['workers'] < 511, info['create_error'] != 0)\n")
    r = _child(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True", "True"], r.stdout


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2,1", ""])
def test_omp_num_threads_of_any_value_imports(value):
    r = _child("import fastbp; print(fastbp.get_num_threads())", {"OMP_NUM_THREADS": value})
    assert r.returncode == 0, r.stderr
    n = int(r.stdout)
    assert n == 2 if value == "2,1" else n >= 1


def test_local_threads_is_the_calling_threads_own(restore_threads):
    """local_threads sets a count for the calling thread only, nests, and
    restores what it found; another thread keeps the process-wide count."""
    fastbp.set_num_threads(2)
    seen = []
    with fastbp.local_threads(1):
        assert fastbp.get_num_threads() == 1
        with ThreadPoolExecutor(1) as ex:
            seen.append(ex.submit(fastbp.get_num_threads).result())
        with fastbp.local_threads(3):
            assert fastbp.get_num_threads() == 3
        assert fastbp.get_num_threads() == 1
        with fastbp.local_threads(None):
            assert fastbp.get_num_threads() == 1
    assert seen == [2]
    assert fastbp.get_num_threads() == 2
    with pytest.raises(ZeroDivisionError), fastbp.local_threads(1):
        1 / 0
    assert fastbp.get_num_threads() == 2


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (4097, ValueError), (True, TypeError),
                                      (1.5, TypeError), ("2", TypeError)])
def test_local_threads_refuses_bad_counts(bad, exc):
    with pytest.raises(exc, match="local_threads"):
        with fastbp.local_threads(bad):
            pass


def test_concurrent_local_threads_do_not_leak(restore_threads):
    """Eight threads each setting their own count, many times over: the process
    count is untouched afterwards (the race a set-and-restore of the global
    count had, issue 25)."""
    fastbp.set_num_threads(2)

    def job(i):
        for _ in range(200):
            with fastbp.local_threads(1 + i % 3):
                assert fastbp.get_num_threads() == 1 + i % 3
        return fastbp.get_num_threads()

    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(job, range(8))) == [2] * 8
    assert fastbp.get_num_threads() == 2


def _jobs_considered():
    """Parallel jobs run plus jobs the backoff kept on the caller: the loops that
    were large enough to split."""
    info = fastbp._core.pool_info()
    return info["jobs"] + info["jobs_backed_off"]


def test_measured_costs_keep_a_small_loop_on_the_caller(measured_costs, restore_threads):
    """A loop of a few microseconds is not worth a hand-off on any machine; a loop
    of milliseconds is, at a quiet machine's hand-off latency (the latency a
    loaded host leaves is the next test's)."""
    fastbp.set_num_threads(2)
    big = np.linspace(-1, 1, 1 << 22, dtype=np.float32)
    fastbp.relu_forward(big, out=np.empty_like(big))  # workers started, costs measured
    # about 4 us of work by the pool's own measure (also in a sanitizer build,
    # where every pass is slower): below any hand-off floor (>= 10 us per thread)
    n = max(64, int(4000 / fastbp._core.pool_info()["pass_ns"]))
    small = np.linspace(-1, 1, n, dtype=np.float32)
    before = _jobs_considered()
    for _ in range(20):
        fastbp.relu_forward(small, out=np.empty_like(small))
    assert _jobs_considered() == before
    fastbp._core._set_handoff_us(2.0)
    fastbp.tanh_forward(big, out=np.empty_like(big))
    assert _jobs_considered() == before + 1, fastbp._core.pool_info()


def test_a_high_latency_left_by_load_is_measured_again(measured_costs, restore_threads):
    """A hand-off latency is measured only by jobs that run; one that a spell of
    load raised would keep every job it rules out on the caller for good. The
    pool probes it now and then (every 0.1 s at most), and the probe's jobs
    measure it again."""
    fastbp.set_num_threads(2)
    big = np.linspace(-1, 1, 1 << 22, dtype=np.float32)
    fastbp.relu_forward(big, out=np.empty_like(big))  # workers started, costs measured
    # a loop of about 100 us: worth splitting at the quiet floor (4 x 5 us), not
    # at a hand-off latency of 1 ms
    x = np.linspace(-1, 1, int(1e5 / fastbp._core.pool_info()["pass_ns"]), dtype=np.float32)
    out = np.empty_like(x)
    time.sleep(fastbp._core.pool_info()["backoff_ms"] / 1e3)  # no probe while it holds
    fastbp._core._set_handoff_us(1000.0)
    before = _jobs_considered()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0 and fastbp._core.pool_info()["handoff_us"] >= 1000.0:
        fastbp.relu_forward(x, out=out)
    info = fastbp._core.pool_info()
    assert _jobs_considered() > before, info
    assert info["handoff_us"] < 1000.0, info


def test_pool_measures_its_costs(measured_costs, restore_threads):
    fastbp.set_num_threads(2)
    x = np.linspace(-1, 1, 1 << 22)
    for _ in range(3):
        fastbp.tanh_forward(x, out=np.empty_like(x))
    info = fastbp._core.pool_info()
    assert 0 < info["pass_ns"] < 100
    assert 0 < info["handoff_us"] and 0 < info["wake_us"]


def test_workers_stay_awake_through_the_callers_rhythm(measured_costs, restore_threads):
    """A sequence of jobs with 300 us of the caller's own work between them (a
    user's loop between two steps) keeps finding the worker awake: its spin
    follows the caller's recent gaps (up to 1 ms) instead of a fixed 50 us,
    after which each job paid a wake-up."""
    fastbp.set_num_threads(2)
    x = np.linspace(-1, 1, 1 << 16, dtype=np.float32)
    out = np.empty_like(x)
    previous = fastbp._core._force_parallel(True)
    try:
        def gap(us):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < us * 1e-6:
                pass
        for _ in range(10):  # the rhythm learned
            fastbp.relu_forward(x, out=out)
            gap(300)
        woke = fastbp._core.pool_info()["jobs_woke"]
        for _ in range(40):
            fastbp.relu_forward(x, out=out)
            gap(300)
        woke = fastbp._core.pool_info()["jobs_woke"] - woke
        # a fixed 50 us window wakes the worker for all 40; a preempted gap may still
        assert woke <= 10, fastbp._core.pool_info()
        # and after a pause of 3 ms (past 1 ms, the longest gap followed) it sleeps
        fastbp.relu_forward(x, out=out)
        time.sleep(0.003)
        woke = fastbp._core.pool_info()["jobs_woke"]
        fastbp.relu_forward(x, out=out)
        assert fastbp._core.pool_info()["jobs_woke"] == woke + 1
    finally:
        fastbp._core._force_parallel(previous)
