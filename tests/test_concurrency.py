"""fastbp from several Python threads at once, and across fork/spawn.

Every kernel releases the GIL, so Python threads run fastbp calls truly in
parallel, each of them possibly using fastbp's thread pool (one caller owns it
at a time; the others run on their own thread). Calls that share only read-only
inputs must give results bitwise equal to running them one after another;
separate MLP instances must train independently. See docs/threads.md.

The fork tests run in a child interpreter (never forking the pytest process):
a child forked after its parent ran parallel kernels starts its own workers
(csrc/threads.c's at-fork handler) and must finish with the parent's results.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbp

HERE = os.path.dirname(os.path.abspath(__file__))
DT = (np.float32, np.float64)

# Sizes: N * O = 134400, several reduction blocks and two GEMM blocks, so that with
# 2+ threads each kernel splits inside every Python thread that gets the pool
# (the suite splits every kernel that can: conftest.py).
N, I, O = 320, 32, 420


def _inputs(dtype, seed=3):
    """Shared read-only inputs for every worker."""
    rng = np.random.default_rng(seed)
    arrs = {
        "x": rng.standard_normal((N, I)),
        "W": rng.standard_normal((I, O)) / 8,
        "b": rng.standard_normal(O),
        "dy": rng.standard_normal((N, O)),
        "z": 3 * rng.standard_normal((N, O)),
        "t": rng.dirichlet(np.ones(O), N),
        "v": rng.standard_normal(N * O),
    }
    out = {k: v.astype(dtype) for k, v in arrs.items()}
    out["labels"] = rng.integers(0, O, N)
    for a in out.values():
        a.flags.writeable = False
    return out


def _kernels():
    """name -> work(inputs, seed) returning a list of results. seed varies the
    per-call data (scales, learning rates) so threads do not all compute the same."""
    def dense_forward(a, s):
        return [fastbp.dense_forward(a["x"] * (1 + s), a["W"], a["b"], act)
                for act in (None, "relu", "sigmoid", "tanh")]

    def dense_backward(a, s):
        res = []
        for act in (None, "relu", "sigmoid", "tanh"):
            y = fastbp.dense_forward(a["x"], a["W"], a["b"], act)
            res += fastbp.dense_backward(a["dy"] * (1 + s), a["x"], a["W"], y, act)
            dW, db = np.ones_like(a["W"]), np.ones_like(a["b"])
            res += fastbp.dense_backward(a["dy"], a["x"], a["W"], y, act, dW=dW, db=db,
                                         accumulate=True, need_dx=False)[1:]
        return res

    def activations(a, s):
        res = []
        for name in ("relu", "sigmoid", "tanh"):
            y = getattr(fastbp, f"{name}_forward")(a["v"] * (1 + s))
            res += [y, getattr(fastbp, f"{name}_backward")(a["v"], y)]
            buf = a["v"].copy()
            res.append(getattr(fastbp, f"{name}_forward")(buf, out=buf))
        return res

    def softmax_xent(a, s):
        l1, d1 = fastbp.softmax_cross_entropy(a["z"] * (1 + s), a["labels"])
        l2, d2 = fastbp.softmax_cross_entropy(a["z"], a["t"])
        return [l1, d1, l2, d2]

    def mse(a, s):
        return list(fastbp.mse_loss(a["z"] * (1 + s), a["dy"]))

    def sgd(a, s):
        p = a["v"].copy()
        fastbp.sgd_update(p, a["v"][::-1], 0.1 * (1 + s), 1e-3)
        return [p]

    def clipping(a, s):
        g1, g2 = a["v"] * (1 + s), a["z"].copy()
        n0 = fastbp.global_norm([g1, g2])
        fastbp.clip_by_value([g2], 0.5)
        n1 = fastbp.clip_by_global_norm([g1, g2], 10.0)
        big = [a["v"].astype(np.float64) * 1e200]  # the rescaled (overflow) path
        return [n0, n1, g1, g2, fastbp.global_norm(big)]

    return {f.__name__: f for f in (dense_forward, dense_backward, activations, softmax_xent,
                                    mse, sgd, clipping)}


KERNELS = list(_kernels())


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bitwise, NaN-safe
    else:
        assert a == b or (math.isnan(a) and math.isnan(b)), (a, b)


def _same_lists(seq, con):
    assert len(seq) == len(con)
    for s, c in zip(seq, con):
        assert len(s) == len(c)
        for a, b in zip(s, c):
            _same(a, b)


@pytest.fixture
def threads_2(restore_threads):
    """Two pool threads per call: Python threads x pool threads, oversubscribed
    on purpose."""
    fastbp.set_num_threads(2)


@pytest.mark.parametrize("workers", [4, 8])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DT, ids=["f32", "f64"])
def test_kernels_concurrent_equal_sequential(threads_2, dtype, kernel, workers):
    work = _kernels()[kernel]
    a = _inputs(dtype)
    seeds = list(range(workers))
    sequential = [work(a, s) for s in seeds]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        concurrent = list(ex.map(lambda s: work(a, s), seeds))
    _same_lists(sequential, concurrent)


def test_all_kernels_mixed_concurrently(threads_2):
    """Different kernels and dtypes interleaved on 8 threads, 3 rounds each."""
    ins = {dt: _inputs(dt) for dt in DT}
    jobs = [(k, dt, s) for k in KERNELS for dt in DT for s in range(2)]
    run = lambda job: _kernels()[job[0]](ins[job[1]], job[2])  # noqa: E731
    sequential = [run(j) for j in jobs]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as ex:
            concurrent = list(ex.map(run, jobs))
        _same_lists(sequential, concurrent)


def _train(seed, dtype, steps=8, fit=False):
    """A fresh MLP trained on its own data; returns its parameters and losses."""
    rng = np.random.default_rng(seed)
    model = fastbp.MLP([32, 256, 128, 10], "tanh", dtype=dtype, seed=seed)
    X = rng.standard_normal((256, 32)).astype(dtype)
    y = rng.integers(0, 10, 256)
    if fit:
        hist = model.fit(X, y, epochs=3, batch_size=64, lr=0.05, momentum=0.9,
                         clip_norm=5.0, progress=False, seed=seed)
        losses = hist["loss"]
    else:
        losses = [model.train_step(X, y, 0.05, weight_decay=1e-4, clip_norm=5.0, momentum=0.9)
                  for _ in range(steps)]
    return [np.asarray(losses)] + [model.params[k].copy() for k in sorted(model.params)]


@pytest.mark.parametrize("fit", [False, True], ids=["train_step", "fit"])
@pytest.mark.parametrize("dtype", DT, ids=["f32", "f64"])
def test_separate_models_train_concurrently(threads_2, dtype, fit):
    seeds = list(range(6))
    sequential = [_train(s, dtype, fit=fit) for s in seeds]
    with ThreadPoolExecutor(max_workers=6) as ex:
        concurrent = list(ex.map(lambda s: _train(s, dtype, fit=fit), seeds))
    _same_lists(sequential, concurrent)


def test_errors_in_threads_leave_others_intact(threads_2):
    """Invalid calls raising in some threads while valid ones run in others."""
    a = _inputs(np.float64)
    want = fastbp.dense_forward(a["x"], a["W"], a["b"], "relu")

    def job(i):
        if i % 2:
            with pytest.raises(ValueError, match="not aligned"):
                fastbp.dense_forward(a["x"], a["W"][1:], a["b"])
            with pytest.raises(ValueError, match="labels must be in"):
                fastbp.softmax_cross_entropy(a["z"], a["labels"] + O)
            return None
        return fastbp.dense_forward(a["x"], a["W"], a["b"], "relu")

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(job, range(16)))
    for r in results[::2]:
        _same(r, want)


# ---- the GIL is released -------------------------------------------------------------------

def _saw_half_written(call, arr, tries=20):
    """Run call() in a thread while this thread polls arr, which call() writes
    front to back (one thread) and which starts as 7.0 everywhere (a value
    the kernels below never write). Seeing arr[0] written while arr[-1] is still
    7.0 means this thread ran Python code in the middle of the kernel, which a
    kernel holding the GIL would not allow. No timing: only what can and cannot
    be observed. A kernel that holds the GIL fails every try."""
    for _ in range(tries):
        arr[...] = 7.0
        started = threading.Event()

        def run():
            started.set()
            call()
        t = threading.Thread(target=run)
        t.start()
        started.wait()
        seen = False
        while t.is_alive() and not seen:
            seen = arr[0] != 7.0 and arr[-1] == 7.0
        t.join()
        assert arr[-1] != 7.0  # the kernel did finish
        if seen:
            return True
    return False


@pytest.mark.parametrize("kernel", ["tanh_forward", "sgd_update"])
def test_gil_released_during_kernels(restore_threads, kernel):
    fastbp.set_num_threads(1)  # one thread: the array is written in order
    n = 1 << 24
    x = np.linspace(-2, 2, n, dtype=np.float32)  # x[0], x[-1] != 0
    arr = np.empty(n, np.float32)
    if kernel == "tanh_forward":
        call = lambda: fastbp.tanh_forward(x, out=arr)  # noqa: E731
    else:
        call = lambda: fastbp.sgd_update(arr, x, 0.5)  # noqa: E731
    assert _saw_half_written(call, arr), \
        f"{kernel}: never saw a half-written array from another thread; is the GIL held?"


# ---- fork and spawn ------------------------------------------------------------------------

_FORK_SCRIPT = textwrap.dedent("""
    import hashlib, json, multiprocessing as mp, sys, time
    import numpy as np
    import fastbp

    mode, timeout = sys.argv[1], float(sys.argv[2])
    X = np.linspace(-3, 3, 1 << 20)  # 2**20 elements: parallel with 2 threads

    def kernel(threads=None):
        # a digest of two parallel kernels' results: small enough for a Queue
        # that is read only after join
        if threads:
            fastbp.set_num_threads(threads)
        h = hashlib.sha256(fastbp.tanh_forward(X).tobytes())
        h.update(fastbp.dense_forward(X.reshape(1024, 1024)[:256], np.eye(1024)[:, :512],
                                      None, "relu").tobytes())
        return h.hexdigest()

    def child(q, threads):
        from fastbp import _core
        d = kernel(threads)
        q.put((d, _core.pool_info()["workers"]))

    res = {"mode": mode}
    fastbp.set_num_threads(2)
    if mode != "fork-unused":
        want = kernel()  # the parent runs parallel kernels (its pool has workers)
    else:
        want = None
    if mode in ("spawn", "forkserver"):
        ctx = mp.get_context(mode)
        with ctx.Pool(2) as pool:
            parts = pool.map(fastbp.tanh_forward, [X, X[::-1].copy()])
        res["finished"] = True
        res["equal"] = parts[0].tobytes() == fastbp.tanh_forward(X).tobytes() and \\
            parts[1].tobytes() == fastbp.tanh_forward(X[::-1].copy()).tobytes()
        res["child_threads"] = None
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        threads = 1 if mode == "fork-1thread" else 2
        p = ctx.Process(target=child, args=(q, threads))
        t0 = time.monotonic()
        p.start()
        p.join(timeout)
        res["finished"] = not p.is_alive()
        if p.is_alive():
            p.kill()
            p.join()
        else:
            got, workers = q.get(timeout=10)
            res["equal"] = got == (want if want is not None else kernel())
            res["child_workers"] = workers
        res["exitcode"] = p.exitcode
        res["child_threads"] = threads
        res["parent_still_works"] = kernel(2) == (want if want is not None else kernel(2))
    print(json.dumps(res))
""")


def _fork_experiment(mode, timeout=8.0):
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, mode, str(timeout)], cwd=HERE,
                       env=env, capture_output=True, text=True, timeout=timeout + 120)
    assert r.returncode == 0, f"status {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="uses the fork start method")


@linux_only
@pytest.mark.parametrize("mode", ["spawn", "forkserver"])
def test_spawn_and_forkserver_pools_after_parallel_parent(mode):
    res = _fork_experiment(mode)
    assert res["finished"] and res["equal"], res


@linux_only
@pytest.mark.parametrize("mode", ["fork", "fork-1thread", "fork-unused"])
def test_fork_child_after_parallel_parent(mode):
    """multiprocessing's fork start method: the child of a parent that ran
    parallel kernels (or not yet) gets the parent's results, with its own
    workers when it asks for 2 threads; the parent keeps working."""
    res = _fork_experiment(mode, timeout=20.0)
    assert res["finished"], f"{mode}: the forked child hung: {res}"
    assert res["equal"] and res["exitcode"] == 0 and res["parent_still_works"], res
    assert res["child_workers"] == (0 if mode == "fork-1thread" else 1), res
