"""Data-parallel training (fastbp.distributed): sharding and epoch plans; the
NumPy twin reference.data_parallel_train_step against the single-process step;
the engine's part (mode BACKWARD, the gradient block, mode UPDATE) with the
ranks emulated in one process; a one-rank communicator against plain training;
and the multi-rank runs of tests/mpi_cases.py under ``mpiexec -n 2`` (parity
with the single-process run, bitwise-equal ranks, run-to-run determinism,
errors agreed by every rank, abort on an exception). The MPI parts are skipped
where mpi4py or mpiexec is missing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbp import MLP, _core, optim
from fastbp import distributed as dist
from fastbp import reference as ref
from fastbp.model import epoch_order

from conftest import DTYPES

TOL = {np.float32: 1e-5, np.float64: 1e-12}
HERE = Path(__file__).resolve().parent


def _mpi4py():
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI


def _mpiexec():
    """The mpiexec of the environment mpi4py runs in (mpich's wheel puts it beside
    python), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


needs_mpi4py = pytest.mark.skipif(_mpi4py() is None, reason="needs mpi4py")
needs_mpiexec = pytest.mark.skipif(_mpi4py() is None or _mpiexec() is None,
                                   reason="needs mpi4py and mpiexec")


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-300)


# ---- sharding, orders ------------------------------------------------------------------

@pytest.mark.parametrize("n,P", [(10, 1), (10, 3), (2, 4), (7, 7), (0, 2), (1000, 64)])
def test_shard_range_cuts_as_array_split(n, P):
    a = np.arange(n)
    parts = np.array_split(a, P)
    got = [a[slice(*dist.shard_range(n, rank=r, size=P))] for r in range(P)]
    for g, w in zip(got, parts):
        np.testing.assert_array_equal(g, w)
    assert np.concatenate(got).tolist() == a.tolist()


def test_shard_range_rejects_a_bad_rank():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        dist.shard_range(10, rank=2, size=2)


@pytest.mark.parametrize("counts,B", [([10], 4), ([10, 7], 4), ([5, 9, 1], 3), ([4, 4], 8)])
def test_epoch_plan_visits_every_row_once(counts, B):
    plan = dist.epoch_plan(counts, B, seed=3, epoch=2)
    rows = np.concatenate(plan)
    assert sorted(rows.tolist()) == list(range(sum(counts)))
    assert len(plan) == max(-(-c // B) for c in counts)
    edges = np.concatenate([[0], np.cumsum(counts)])
    for s, idx in enumerate(plan):  # step s: rank 0's batch s, then rank 1's, ...
        owner = np.searchsorted(edges, idx, side="right") - 1
        assert np.all(np.diff(owner) >= 0)
        for q, c in enumerate(counts):
            assert np.sum(owner == q) == max(0, min(B, c - s * B))


def test_epoch_plan_of_one_rank_is_the_plain_fit():
    order = epoch_order(23, 5, 4)
    plan = dist.epoch_plan([23], 6, seed=5, epoch=4)
    np.testing.assert_array_equal(np.concatenate(plan), order)
    assert [len(b) for b in plan] == [6, 6, 6, 5]
    assert dist.local_order(23, 5, 4, rank=1).tolist() != order.tolist()
    np.testing.assert_array_equal(dist.local_order(23, 5, 4, rank=1, shuffle=False),
                                  np.arange(23))


# ---- the NumPy twin -------------------------------------------------------------------

def _net(dtype, loss="softmax_cross_entropy", sizes=(5, 9, 4), seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for l, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        params[f"W{l}"] = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
        params[f"b{l}"] = (0.1 * rng.standard_normal(o)).astype(dtype)
    return params


def _batch(dtype, loss, N, C, I, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, I)).astype(dtype)
    if loss == "softmax_cross_entropy":
        t = rng.integers(0, C, N)
    elif loss == "mse":
        t = rng.standard_normal((N, C)).astype(dtype)
    else:
        t = (rng.random((N, C)) < 0.5).astype(dtype)
    return x, t, rng.uniform(0.1, 2.0, N).astype(dtype)


OPTIMIZERS = [
    {"name": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"name": "Adam", "lr": 1e-2, "weight_decay": 1e-3},
    {"name": "AdamW", "lr": 1e-2, "weight_decay": 1e-2},
]


def _state(params):
    return {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "binary_cross_entropy"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=[o["name"] for o in OPTIMIZERS])
def test_reference_twin_equals_the_step_on_the_concatenation(loss, opt):
    """Gradients of the shards with the global normalizer, summed, then one update:
    the single-process step on the concatenated batch (dropout masks included)."""
    dtype = np.float64
    counts = [5, 0, 8, 3]
    x, t, w = _batch(dtype, loss, sum(counts), 4, 5, seed=1)
    edges = np.concatenate([[0], np.cumsum(counts)])
    shards = [(x[a:b], t[a:b], w[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    a, b = _net(dtype), _net(dtype)
    sa, sb = _state(a), _state(b)
    kw = dict(optimizer=opt, clip_value=0.5, clip_norm=0.8, dropout=[0.3],
              drop_key=(7, 2, 0))
    for step in (1, 2):
        la = ref.data_parallel_train_step(a, shards, "tanh", loss, state=sa, step=step, **kw)
        lb = ref.mlp_train_step(b, x, t, None, "tanh", loss, state=sb, step=step,
                                sample_weight=w, **kw)
        assert rel_err(la, lb) < 1e-12
    for k in a:
        assert rel_err(a[k], b[k]) < 1e-12, k


# ---- the engine: BACKWARD, the gradient block, UPDATE ----------------------------------

def test_gradient_block_holds_every_gradient_last_layer_first():
    W = [np.zeros((5, 9)), np.zeros((9, 3)), np.zeros((3, 2))]
    b = [np.zeros(9), np.zeros(3), np.zeros(2)]
    ws = _core.MLPWorkspace(W, b, "relu", "mse", 4)
    g = ws.grad
    assert g.ndim == 1 and g.dtype == np.float64 and g.flags.c_contiguous
    starts = []
    for dW, db in zip(ws.dW, ws.db):
        assert np.shares_memory(dW, g) and np.shares_memory(db, g)
        assert dW.ctypes.data % 64 == 0 and db.ctypes.data % 64 == 0
        starts.append(dW.ctypes.data)
    assert starts == sorted(starts, reverse=True)  # the last layer's first
    assert g.ctypes.data == ws.dW[-1].ctypes.data
    assert g.size * 8 >= sum(a.nbytes for a in W + b)


def _emulated_ranks(dtype, loss, counts, opt_kw, clip, dropout, weighted, steps=3):
    """P ranks emulated in one process with the engine's calls (what
    fastbp.distributed does around the collective calls): each its own copy of the
    parameters and state, BACKWARD with the global normalizer and row offset, the
    gradient blocks summed in rank order, UPDATE on each; against the twin and
    against MLP.train_step on the concatenation."""
    sizes = [6, 10, 3]
    P = len(counts)
    model = MLP(sizes, "tanh", loss, dtype, seed=4, dropout=dropout)
    base = model.get_params()
    L = len(sizes) - 1
    opt = dict(opt_kw)
    name = opt.pop("name")
    o = getattr(optim, name)(**opt)
    ranks = []
    for q in range(P):
        W = [base[f"W{l + 1}"].copy() for l in range(L)]
        b = [base[f"b{l + 1}"].copy() for l in range(L)]
        state = {k: [np.zeros_like(a) for a in (W if k.endswith("W") else b)]
                 for kind in o.state for k in {"v": ("vW", "vb"), "s": ("sW", "sb")}[kind]}
        ws = _core.MLPWorkspace(W, b, ["tanh", "identity"], loss, 64, state,
                                [dropout, 0.0] if dropout else None)
        ranks.append((W, b, ws))
    twin = {k: v.copy() for k, v in base.items()}
    twin_state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in twin.items()}
    for step in range(steps):
        x, t, w = _batch(dtype, loss, sum(counts), sizes[-1], sizes[0], seed=10 + step)
        w = w if weighted else None
        edges = np.concatenate([[0], np.cumsum(counts)])
        Wtot = float(sum(counts) if w is None else w.astype(np.float64).sum())
        opts = [_core.StepOptions(_core.STEP_BACKWARD, clip_norm=clip[0], clip_value=clip[1],
                                  seed=4, step=step, t=step + 1, norm=Wtot, row0=int(edges[q]),
                                  **o.options()) for q in range(P)]
        total = 0.0
        for q, (W, b, ws) in enumerate(ranks):
            if counts[q] == 0:
                ws.grad.fill(0)
                continue
            sl = slice(edges[q], edges[q + 1])
            before = [a.copy() for a in W]
            loss_q, reg, _, _ = _core.mlp_step(ws, x[sl], t[sl], opts[q],
                                               None if w is None else w[sl])
            assert all(np.array_equal(u, v) for u, v in zip(before, W))  # no update
            total += loss_q
        summed = sum(ws.grad.astype(np.float64) for _, _, ws in ranks).astype(dtype)
        for q, (W, b, ws) in enumerate(ranks):
            ws.grad[...] = summed
            opts[q].mode = _core.STEP_UPDATE
            _core.mlp_step(ws, None, None, opts[q])
        got_loss = total + reg
        want_loss = model.train_step(x, t, optimizer=o, clip_norm=clip[0] or None,
                                     clip_value=clip[1] or None, sample_weight=w)
        shards = [(x[a:c], t[a:c], None if w is None else w[a:c])
                  for a, c in zip(edges[:-1], edges[1:]) if c > a]
        twin_loss = ref.data_parallel_train_step(
            twin, shards, ["tanh"], loss, optimizer=opt_kw,
            state=twin_state, step=step + 1, clip_value=clip[1] or None,
            clip_norm=clip[0] or None, dropout=[dropout], drop_key=(4, step, 0))
        assert rel_err(got_loss, want_loss) <= TOL[dtype]
        assert rel_err(twin_loss, want_loss) <= TOL[dtype]
    for q, (W, b, ws) in enumerate(ranks):
        for l in range(L):
            assert np.array_equal(W[l], ranks[0][0][l]) and np.array_equal(b[l], ranks[0][1][l])
            assert rel_err(W[l], model.params[f"W{l + 1}"]) <= TOL[dtype]
            assert rel_err(b[l], model.params[f"b{l + 1}"]) <= TOL[dtype]
            assert rel_err(W[l], twin[f"W{l + 1}"]) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "binary_cross_entropy"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=[o["name"] for o in OPTIMIZERS])
@pytest.mark.parametrize("variant", ["plain", "clip-dropout-weights"])
def test_engine_data_parallel_step_equals_the_concatenated_step(dtype, loss, opt, variant):
    if variant == "plain":
        _emulated_ranks(dtype, loss, [7, 5], opt, (0.0, 0.0), 0.0, False)
    else:
        _emulated_ranks(dtype, loss, [4, 0, 9], opt, (0.7, 0.2), 0.3, True)


def test_backward_mode_is_the_loss_gradient():
    """BACKWARD without dropout: GRAD's gradient without the decay term, and the
    decay term reported; nothing updated."""
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((4, 6)), rng.standard_normal((6, 3))]
    b = [rng.standard_normal(6), rng.standard_normal(3)]
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    ws = _core.MLPWorkspace(W, b, "relu", "softmax_cross_entropy", 5)
    loss, reg, _, _ = _core.mlp_step(ws, x, t, _core.StepOptions(_core.STEP_BACKWARD,
                                                                 weight_decay=0.1, lr=1.0))
    got = ws.grad.copy()
    _, _, _, _ = _core.mlp_step(ws, x, t, _core.StepOptions(_core.STEP_GRAD))
    np.testing.assert_array_equal(got, ws.grad)
    assert reg == pytest.approx(0.05 * sum(float(np.sum(a * a)) for a in W), rel=1e-14)
    params = {"W1": W[0], "b1": b[0], "W2": W[1], "b2": b[1]}
    want_loss, _ = ref.mlp_loss_and_grads(params, x, t, "relu", "softmax_cross_entropy")
    assert loss == pytest.approx(want_loss, rel=1e-13)


def test_check_only_validates_and_runs_nothing():
    W, b = [np.ones((3, 2))], [np.zeros(2)]
    ws = _core.MLPWorkspace(W, b, "relu", "softmax_cross_entropy", 4)
    opts = _core.StepOptions(_core.STEP_BACKWARD)
    x = np.ones((2, 3))
    assert _core.mlp_step(ws, x, np.array([0, 1]), opts, check_only=True) is None
    assert not ws.h[0].any() and not ws.grad.any()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        _core.mlp_step(ws, x, np.array([0, 2]), opts, check_only=True)
    with pytest.raises(TypeError, match="float32"):
        _core.mlp_step(ws, x.astype(np.float32), np.array([0, 1]), opts, check_only=True)


# ---- one rank ---------------------------------------------------------------------------

@needs_mpi4py
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_rank_communicator_equals_plain_training(dtype):
    MPI = _mpi4py()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 8)).astype(dtype)
    y = rng.integers(0, 3, 90)
    w = rng.uniform(0.5, 1.5, 90).astype(dtype)
    for kw in (dict(lr=0.1), dict(optimizer=optim.Adam(1e-2, weight_decay=1e-3), clip_norm=0.5),
               dict(lr=0.1, momentum=0.9, clip_value=0.1)):
        a = MLP([8, 16, 3], dtype=dtype, seed=1, dropout=0.2)
        b = MLP([8, 16, 3], dtype=dtype, seed=1, dropout=0.2)
        for s in range(3):
            la = a.train_step(X[:40], y[:40], sample_weight=w[:40], **kw)
            lb = b.train_step(X[:40], y[:40], sample_weight=w[:40], comm=MPI.COMM_SELF, **kw)
            assert rel_err(lb, la) <= TOL[dtype] and type(lb) is float
        ha = a.fit(X, y, epochs=2, batch_size=16, seed=3, validation=(X[:20], y[:20]),
                   class_weight="balanced", **kw)
        hb = b.fit(X, y, epochs=2, batch_size=16, seed=3, validation=(X[:20], y[:20]),
                   class_weight="balanced", comm=MPI.COMM_SELF, **kw)
        assert list(ha) == list(hb)
        for k in ha:
            assert rel_err(hb[k], ha[k]) <= TOL[dtype], k
        for k in a.params:
            assert rel_err(b.params[k], a.params[k]) <= TOL[dtype], k
        assert (a.step_, a.epoch_, a._opt_t) == (b.step_, b.epoch_, b._opt_t)


class _HalfComm:
    """Has some of a communicator's methods (Get_rank, Get_size) but not all."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


@pytest.mark.parametrize("comm", [object(), _HalfComm(), "COMM_WORLD"],
                         ids=["object", "half", "str"])
def test_a_bad_communicator_is_the_same_type_error_in_fit_and_train_step(comm):
    """fit raised AttributeError ('object' has no 'Get_size') where train_step
    raised TypeError; both now check comm first, with the same message. Needs
    no mpi4py."""
    m = MLP([3, 4, 2], dtype=np.float64)
    before = m.get_params()
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    name = type(comm).__name__
    for call, fn in ((lambda: m.fit(X, y, epochs=1, comm=comm), "fit"),
                     (lambda: m.train_step(X, y, lr=0.1, comm=comm), "train_step")):
        with pytest.raises(TypeError, match=rf"^{fn}: comm must be an mpi4py communicator, "
                                            rf"got {name} \(it has no (Get_rank|Allreduce)\); "
                                            r"pass an mpi4py.MPI.Comm, or None$"):
            call()
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
    assert (m.step_, m.epoch_) == (0, 0)


@needs_mpi4py
def test_one_rank_errors_raise_and_change_nothing():
    MPI = _mpi4py()
    m = MLP([3, 4, 2], dtype=np.float64)
    before = m.get_params()
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"rank 0 of 1: mlp_step: labels must be in \[0, 2\)"):
        m.train_step(x, np.array([0, 5]), lr=0.1, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="empty batch on every rank"):
        m.train_step(np.ones((0, 3)), np.zeros(0, np.int64), lr=0.1, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="sum to 0"):
        m.train_step(x, np.array([0, 1]), lr=0.1, sample_weight=np.zeros(2),
                     comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="rank 0 of 1: X must have shape"):
        m.fit(np.ones((5, 4)), np.zeros(5, np.int64), comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="mpi4py communicator, got object"):
        m.train_step(x, np.array([0, 1]), lr=0.1, comm=object())
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
    assert m.step_ == 0
    # a refused step that switches the kind of optimizer keeps the old state
    m.train_step(x, np.array([0, 1]), lr=0.1, momentum=0.9, comm=MPI.COMM_SELF)
    state = m.optimizer_state
    with pytest.raises(ValueError, match="labels must be in"):
        m.train_step(x, np.array([0, 9]), optimizer=optim.Adam(), comm=MPI.COMM_SELF)
    after = m.optimizer_state
    assert after["optimizer"] == "SGD" and after["t"] == 1 and "sW" not in after
    np.testing.assert_array_equal(after["vW"][0], state["vW"][0])


@needs_mpi4py
def test_broadcast_model_on_one_rank_keeps_the_model():
    MPI = _mpi4py()
    m = MLP([3, 4, 2], seed=3)
    m.train_step(np.ones((2, 3), np.float32), np.array([0, 1]), optimizer=optim.Adam())
    before = m.get_params()
    dist.broadcast_model(m, MPI.COMM_SELF)
    assert dist.is_synced(m, MPI.COMM_SELF)
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
    assert m.optimizer_state["t"] == 1 and m.step_ == 1


# ---- several ranks: tests/mpi_cases.py under mpiexec --------------------------------------

def _run(script, *args, n=2, timeout=180, env=None):
    """mpiexec -n n python script args, with this fastbp, one thread per rank, bounded."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env or {}))
    src = str(Path(__import__("fastbp").__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _launch(*cases, timeout=180, env=None):
    return _run(HERE / "mpi_cases.py", *cases, timeout=timeout, env=env)


@needs_mpiexec
def test_two_ranks_equal_the_single_process_run():
    """train_step and fit on 2 ranks (uneven shards, every optimizer, clipping,
    weights, dropout, the three losses, early stopping) against the single-process
    run on the concatenation: 1e-12 (float64), 1e-5 (float32); the ranks'
    parameters and optimizer states bitwise equal; mismatches agreed on."""
    cases = ["steps", "fit", "fit_full_batch", "mismatch"]
    r = _launch(*cases)
    assert r.returncode == 0, r.stdout + r.stderr
    for c in cases:
        assert f"ok {c}:" in r.stdout, r.stdout + r.stderr


@needs_mpiexec
def test_two_ranks_are_deterministic_run_to_run():
    runs = [_launch("digest") for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    digests = [r.stdout.split("ok digest: ")[1].split()[0] for r in runs]
    assert digests[0] == digests[1]


@needs_mpiexec
def test_an_exception_on_one_rank_aborts_the_job(tmp_path):
    """The failing rank's report, read from the file its stderr goes to: what
    mpiexec forwards of a rank's stderr is a race with MPI_Abort killing the job
    (MPICH's hydra proxy can be torn down before it forwards the last write,
    which once left this test with empty output), while a write to a file is
    done when the rank's flush returns, before it calls MPI_Abort."""
    r = _launch("abort", timeout=60, env={"FASTBP_TEST_STDERR_DIR": str(tmp_path)})
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    err = (tmp_path / "rank1.err").read_text()
    assert "fastbp.distributed: rank 1 of 2 failed; aborting the MPI job" in err, (err, out)
    assert "RuntimeError: boom from rank 1" in err
    assert "not aborted" not in out + err + (tmp_path / "rank0.err").read_text()


@needs_mpiexec
def test_example_train_mpi_runs():
    pytest.importorskip("sklearn")
    r = _run(HERE.parent / "examples" / "train_mpi.py", "--epochs", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 ranks, 3 epochs" in r.stdout and "identical on every rank: True" in r.stdout


@needs_mpi4py
def test_a_data_parallel_fit_continues_the_early_stopping_run_and_the_plan():
    """The early-stopping run (with its best parameters) and the named
    schedule's plan travel with rank 0's model (_sync): a run split over two
    fits with comm equals the uninterrupted single-process run, bitwise."""
    from test_checkpoint import ES, assert_same_model, es_data, es_model

    MPI = _mpi4py()
    X, y = es_data()
    kw = dict(optimizer=optim.Adam(0.01), lr_schedule="cosine")
    whole = es_model()
    hw = whole.fit(X, y, epochs=60, total_epochs=60, **kw, **ES)
    part = es_model()
    h1 = part.fit(X, y, epochs=10, total_epochs=60, comm=MPI.COMM_SELF, **kw,
                  **dict(ES, restore_best=False))
    assert part.early_stopping_state["wait"] == 1 and part.lr_schedule_ == ("cosine", 60)
    h2 = part.fit(X, y, epochs=50, comm=MPI.COMM_SELF, **kw, **ES)
    assert h1["val_loss"] + h2["val_loss"] == hw["val_loss"] and h1["lr"] + h2["lr"] == hw["lr"]
    assert_same_model(part, whole)
