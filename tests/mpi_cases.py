"""Data-parallel checks that need several MPI ranks, launched by
tests/test_distributed.py as

    mpiexec -n 2 python tests/mpi_cases.py CASE [CASE ...]

Every rank builds the same data, keeps its own rows, and checks the P-rank run
against the single-process run on the concatenation, which it computes itself
(fastbp.distributed.epoch_plan says which run that is). A failed check on any
rank aborts the job (abort_on_error); rank 0 prints "ok CASE" for each case
that passed. Not collected by pytest (no test_ prefix).
"""
import hashlib
import sys

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp import MLP, optim
from fastbp import distributed as dist

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
TOL = {np.float64: 1e-12, np.float32: 1e-5}

#: (name, train_step keyword arguments); each is run with and without dropout,
#: sample weights and each loss below
STEP_SETTINGS = [
    ("sgd", lambda: dict(lr=0.1)),
    ("sgd-momentum-wd", lambda: dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("sgd-nesterov-dampening-clipnorm", lambda: dict(
        optimizer=optim.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        clip_norm=0.3)),
    ("sgd-dampening", lambda: dict(optimizer=optim.SGD(0.05, momentum=0.9, dampening=0.2))),
    ("adam-clipnorm", lambda: dict(optimizer=optim.Adam(1e-2, weight_decay=1e-3), clip_norm=0.5)),
    ("adamw-clipvalue", lambda: dict(optimizer=optim.AdamW(1e-2, weight_decay=1e-2),
                                     clip_value=0.05)),
]
LOSSES = ["softmax_cross_entropy", "mse", "binary_cross_entropy"]


def data(n, sizes, loss, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    C = sizes[-1]
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, C, n)
    elif loss == "mse":
        y = rng.standard_normal((n, C)).astype(dtype)
    else:
        y = (rng.random((n, C)) < 0.5).astype(dtype)
    w = rng.uniform(0.2, 2.0, n).astype(dtype)
    return X, y, w


def close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"
    return err


def same_models(a, ref, dtype, what):
    """a's parameters and optimizer state against ref's; and bitwise equal on every rank."""
    worst = 0.0
    for k in ref.params:
        worst = max(worst, close(a.params[k], ref.params[k], dtype, f"{what}: {k}"))
    st, rst = a.optimizer_state, ref.optimizer_state
    assert st["optimizer"] == rst["optimizer"] and st["t"] == rst["t"], (what, st, rst)
    for k in ("vW", "vb", "sW", "sb"):
        assert (k in st) == (k in rst), (what, k)
        for l, (u, v) in enumerate(zip(st.get(k, ()), rst.get(k, ()))):
            worst = max(worst, close(u, v, dtype, f"{what}: {k}{l + 1}"))
    assert (a.step_, a.epoch_) == (ref.step_, ref.epoch_), what
    assert dist.is_synced(a, comm), f"{what}: the ranks' models differ"
    return worst


def split(n, counts):
    """Explicit uneven shards: rank q's rows."""
    edges = np.concatenate([[0], np.cumsum(counts)])
    return np.arange(edges[rank], edges[rank + 1])


# ---- cases ---------------------------------------------------------------------------------

def case_steps():
    """train_step: every optimizer, clipping, weight decay, sample weights, dropout, the
    three losses, uneven batches (and an empty one), models built with other seeds."""
    worst = {np.float32: 0.0, np.float64: 0.0}
    sizes = [7, 12, 9, 4]
    # rows of each rank in each step: uneven, one rank with none; in the last step
    # rank 0's rows weigh nothing (when weighted)
    plan = ([[11, 6], [5, 9], [8, 0], [3, 3], [4, 5]] if P == 2 else
            [[4 + q + s for q in range(P)] for s in range(5)])
    for dtype in (np.float64, np.float32):
        for loss in LOSSES:
            for name, make in STEP_SETTINGS:
                for dropout, weighted in ((0.0, False), (0.3, True)):
                    what = f"{dtype.__name__} {loss} {name} dropout={dropout} w={weighted}"
                    n = sum(map(sum, plan))
                    X, y, w = data(n, sizes, loss, dtype, seed=len(what))
                    w[n - sum(plan[-1]):n - sum(plan[-1]) + plan[-1][0]] = 0
                    m = MLP(sizes, "tanh", loss, dtype, seed=10 + rank, dropout=dropout)
                    ref = MLP(sizes, "tanh", loss, dtype, seed=10, dropout=dropout)
                    start = 0
                    for counts in plan:
                        rows = np.arange(start, start + sum(counts))
                        mine = rows[sum(counts[:rank]):sum(counts[:rank + 1])]
                        start += sum(counts)
                        kw, kr = make(), make()
                        if weighted:
                            kw["sample_weight"], kr["sample_weight"] = w[mine], w[rows]
                        got = m.train_step(X[mine], y[mine], comm=comm, **kw)
                        want = ref.train_step(X[rows], y[rows], **kr)
                        close(got, want, dtype, f"{what}: loss")
                        assert comm.allgather(got) == [got] * P, f"{what}: the losses differ"
                    worst[dtype] = max(worst[dtype], same_models(m, ref, dtype, what))
    return worst


def plain_run(ref, Xc, yc, wc, counts, B, seed, epochs, kw):
    """The single-process run a data-parallel fit equals: train_step on each batch
    of epoch_plan; returns each epoch's mean loss."""
    losses = []
    for e in range(epochs):
        total = weight = 0.0
        for idx in dist.epoch_plan(counts, B, seed, ref.epoch_, shuffle=True):
            k = dict(kw)
            if wc is not None:
                k["sample_weight"] = wc[idx]
            bw = float(len(idx) if wc is None else wc[idx].astype(np.float64).sum())
            total += ref.train_step(Xc[idx], yc[idx], **k) * bw
            weight += bw
        ref.epoch_ += 1
        losses.append(total / weight)
    return losses


def case_fit():
    """fit on uneven shards, shuffled minibatches, against train_step on epoch_plan's
    batches; with dropout, Adam, clipping, balanced class weights."""
    worst = {np.float32: 0.0, np.float64: 0.0}
    sizes = [10, 24, 4]
    counts = [57, 38] + [20] * (P - 2)
    n = sum(counts)
    for dtype in (np.float64, np.float32):
        for loss, weights in (("softmax_cross_entropy", "balanced"), ("mse", "sample"),
                              ("binary_cross_entropy", None)):
            what = f"fit {dtype.__name__} {loss} {weights}"
            X, y, w = data(n, sizes, loss, dtype, seed=3)
            mine = split(n, counts)
            kw = dict(optimizer=optim.Adam(5e-3, weight_decay=1e-4), clip_norm=1.0)
            m = MLP(sizes, "relu", loss, dtype, seed=100 + rank, dropout=0.2)
            ref = MLP(sizes, "relu", loss, dtype, seed=100, dropout=0.2)
            fk = dict(kw)
            wc = None
            if weights == "balanced":
                fk["class_weight"] = "balanced"
                wc = ref._sample_weights("fit", y, None, "balanced")
            elif weights == "sample":
                fk["sample_weight"] = w[mine]
                wc = w
            h = m.fit(X[mine], y[mine], epochs=3, batch_size=16, seed=5, comm=comm, **fk)
            want = plain_run(ref, X, y, wc, counts, 16, 5, 3, kw)
            close(h["loss"], want, dtype, f"{what}: loss history")
            assert all(type(v) is float for v in h["loss"]), h["loss"]
            worst[dtype] = max(worst[dtype], same_models(m, ref, dtype, what))
    return worst


def case_fit_full_batch():
    """One global batch per epoch (batch_size >= every shard, no shuffle): the
    data-parallel fit is the plain fit on the concatenation, history and all:
    accuracy, validation loss and score, grad norms, early stopping, restore_best."""
    worst = {np.float32: 0.0, np.float64: 0.0}
    sizes = [6, 16, 3]
    counts = [31, 18] + [9] * (P - 2)
    vcounts = [13, 20] + [5] * (P - 2)
    n, nv = sum(counts), sum(vcounts)
    for dtype in (np.float64, np.float32):
        for loss, key in (("softmax_cross_entropy", "val_accuracy"), ("mse", "val_r2"),
                          ("binary_cross_entropy", "val_accuracy")):
            what = f"full batch {dtype.__name__} {loss}"
            X, y, w = data(n, sizes, loss, dtype, seed=11)
            Xv, yv, _ = data(nv, sizes, loss, dtype, seed=12)
            mine, vmine = split(n, counts), split(nv, vcounts)
            kw = dict(epochs=12, batch_size=64, shuffle=False, lr=0.5, momentum=0.5,
                      early_stopping=True, patience=2, min_delta=0.01, log_grad_norms=True)
            m = MLP(sizes, "sigmoid", loss, dtype, seed=rank, dropout=0.25)
            ref = MLP(sizes, "sigmoid", loss, dtype, seed=0, dropout=0.25)
            h = m.fit(X[mine], y[mine], validation=(Xv[vmine], yv[vmine]), comm=comm, **kw)
            r = ref.fit(X, y, validation=(Xv, yv), **kw)
            assert list(h) == list(r) and len(h["loss"]) == len(r["loss"]), (what, h, r)
            for k in ("loss", "accuracy", "val_loss", key):
                if k in r:
                    close(h[k], r[k], dtype, f"{what}: {k}")
            for gh, gr in zip(h["grad_norms"], r["grad_norms"]):
                close([gh[k] for k in gr], list(gr.values()), dtype, f"{what}: grad_norms")
            worst[dtype] = max(worst[dtype], same_models(m, ref, dtype, what))
    return worst


def case_digest():
    """A fixed data-parallel fit; rank 0 prints its parameters' digest (the test
    compares two launches: identical run to run)."""
    sizes = [8, 32, 5]
    X, y, _ = data(300, sizes, "softmax_cross_entropy", np.float32, seed=2)
    m = MLP(sizes, "relu", dtype=np.float32, seed=rank, dropout=0.1)
    m.fit(dist.shard(X, comm), dist.shard(y, comm), epochs=2, batch_size=10,
          optimizer=optim.Adam(1e-2), comm=comm)
    h = hashlib.sha256(b"".join(v.tobytes() for v in m.params.values())).hexdigest()
    assert dist.is_synced(m, comm)
    return h


def expect_error(fn, *words):
    """fn() must raise ValueError (on every rank) whose message has every word."""
    try:
        fn()
    except ValueError as e:
        msg = str(e)
        assert all(wd in msg for wd in words), (msg, words)
        return msg
    raise AssertionError(f"no error; expected one saying {words}")


def case_mismatch():
    """Mismatched networks and settings, and bad inputs on one rank, are found before
    anything runs, and every rank raises the same error (no hang, nothing changed)."""
    X, y, _ = data(20, [4, 8, 3], "softmax_cross_entropy", np.float64)
    msgs = []
    m = MLP([4, 8 + rank, 3], seed=0, dtype=np.float64)
    msgs.append(expect_error(lambda: m.fit(X, y, epochs=1, comm=comm), "disagree on sizes"))
    m = MLP([4, 8, 3], seed=0, dtype=np.float64 if rank else np.float32)
    msgs.append(expect_error(lambda: m.train_step(X.astype(m.dtype), y, lr=0.1, comm=comm),
                             "disagree on dtype"))
    m = MLP([4, 8, 3], seed=0, dtype=np.float64)
    before = {k: v.copy() for k, v in m.params.items()}
    msgs.append(expect_error(lambda: m.train_step(X, y, lr=0.1 * (1 + rank), comm=comm),
                             "disagree on optimizer"))
    bad = y.copy()
    if rank == P - 1:
        bad[3] = 7
    msgs.append(expect_error(lambda: m.train_step(X, bad, lr=0.1, comm=comm),
                             f"rank {P - 1} of {P}", "labels"))
    msgs.append(expect_error(lambda: m.fit(X, bad, epochs=1, comm=comm),
                             f"rank {P - 1} of {P}", "labels"))
    msgs.append(expect_error(lambda: m.fit(X, y, epochs=1 + rank, comm=comm),
                             "disagree on epochs"))
    assert all(np.array_equal(before[k], m.params[k]) for k in before)
    assert m.step_ == 0
    # the model still trains after the errors
    m.train_step(X, y, lr=0.1, comm=comm)
    assert dist.is_synced(m, comm)
    assert comm.allgather(msgs) == [msgs] * P, "the ranks raised different errors"
    return msgs


def case_abort():
    """An exception on one rank in the middle of fit ends the whole job."""
    X, y, _ = data(40, [4, 8, 3], "softmax_cross_entropy", np.float64)

    def boom(model, epoch, hist):
        if rank == P - 1 and epoch == 1:
            raise RuntimeError(f"boom from rank {rank}")

    m = MLP([4, 8, 3], seed=0, dtype=np.float64)
    m.fit(X, y, epochs=50, comm=comm, callbacks=[boom])
    return "not aborted"


CASES = {"steps": case_steps, "fit": case_fit, "fit_full_batch": case_fit_full_batch,
         "digest": case_digest, "mismatch": case_mismatch, "abort": case_abort}


if __name__ == "__main__":
    import os

    if os.environ.get("FASTBP_TEST_STDERR_DIR"):  # each rank's stderr to a file of its own
        sys.stderr = open(os.path.join(os.environ["FASTBP_TEST_STDERR_DIR"], f"rank{rank}.err"),
                          "w", buffering=1)
    fastbp.set_num_threads(1)
    with dist.abort_on_error(comm):
        for name in sys.argv[1:]:
            result = CASES[name]()
            comm.Barrier()
            if rank == 0:
                if isinstance(result, dict):
                    result = ", ".join(f"{k.__name__} {v:.2e}" for k, v in result.items())
                print(f"ok {name}: {result}", flush=True)
