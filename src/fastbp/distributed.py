"""fastbp.distributed: data-parallel training over MPI, through mpi4py.

Every rank holds its own rows. ``model.train_step(x, t, ..., comm=comm)`` takes
the step a single process would take on the concatenation of the ranks'
batches in rank order, and ``model.fit(X, y, ..., comm=comm)`` is made of such
steps (see ``epoch_plan`` for the batches of an epoch). docs/distributed.md
has the guide, the measurements and the cost model.

One step, on every rank:

1. one Allgather of five numbers per rank: its rows, its rows' total weight,
   whether its inputs passed every check (``_core.mlp_step(check_only=True)``),
   a digest of the network and the step's settings, and whether it needs rank
   0's model. A rank that fails a check, or holds another network or optimizer,
   makes every rank raise the same error (and change nothing) instead of
   leaving the others waiting in a collective call. On the first step with a
   communicator (or after a model was trained without it) the ranks then take
   rank 0's parameters, optimizer state, counters and seed (``broadcast_model``).
2. mode BACKWARD (csrc/step.c) on the rank's rows, the loss normalized by the
   total weight W of all the ranks' rows, so that the rank's gradient is its
   share of the global mean's; the dropout masks are keyed by the rows' offset
   in the concatenated batch, so they are the single-process step's masks.
3. one in-place Allreduce(SUM) of the workspace's gradient block ``ws.grad``
   (every layer's dW and db, contiguous: _core._grad_block), by the buffer
   interface; the loss shares travel in a non-blocking Allreduce beside it.
4. mode UPDATE: clipping (by value, by the global norm of the summed gradient),
   the weight decay and the optimizer, on identical numbers on every rank, so
   the parameters and optimizer state stay bitwise identical across the ranks.

``reference.data_parallel_train_step`` is the NumPy twin of that step. fit
adds nothing per step but the Allreduce of the gradients: the batch weights of
an epoch, the loss sums and the validation figures are reduced once an epoch.

An exception that leaves ``train_step`` or ``fit`` on one rank of several,
other than the agreed errors above, prints its traceback and ends the whole
job with MPI_Abort, rather than leaving the other ranks waiting forever; wrap
a script in ``abort_on_error`` (or run it as ``python -m mpi4py script.py``)
for the same guarantee around the code outside fastbp.
"""
import contextlib
import hashlib
import sys
import traceback
import weakref

import numpy as np

from . import _core
from ._runners import Runner, StepOptions, epoch_order
from ._train import check_clip, make_optimizer

__all__ = ["shard", "shard_range", "broadcast_model", "abort_on_error", "is_synced",
           "local_order", "epoch_plan"]


# ---- sharding and orders ------------------------------------------------------------

def _rank_size(comm):
    if comm is None:
        return 0, 1
    return comm.Get_rank(), comm.Get_size()


def shard_range(n, comm=None, rank=None, size=None):
    """(start, stop): the rows of n that rank ``rank`` of ``size`` (default: this
    process's rank in comm) holds. Contiguous blocks in rank order, the first
    n % size ranks one row longer, as numpy.array_split cuts."""
    r, p = _rank_size(comm)
    rank = r if rank is None else rank
    size = p if size is None else size
    if not 0 <= rank < size:
        raise ValueError(f"shard_range: rank must be in [0, {size}), got {rank}")
    q, extra = divmod(int(n), size)
    start = rank * q + min(rank, extra)
    return start, start + q + (rank < extra)


def shard(a, comm=None):
    """This rank's contiguous block of a's rows (a view; uneven sizes allowed:
    shard_range). The concatenation of every rank's shard in rank order is a."""
    start, stop = shard_range(len(a), comm)
    return a[start:stop]


def local_order(n, seed, epoch, rank=0, shuffle=True):
    """The order in which rank ``rank`` visits its n rows in epoch ``epoch`` of a
    data-parallel fit. Rank 0 takes ``fastbp.model.epoch_order`` (so a fit on one
    rank is the plain fit), rank p > 0 a permutation keyed by (seed, epoch, p)."""
    if not shuffle or rank == 0:
        return epoch_order(n, seed, epoch, shuffle)
    return _core.epoch_order(n, seed, epoch, rank)


def _batch_rows(counts, B):
    """rows[q, s]: rank q's rows in step s of an epoch of batch_size B."""
    counts = np.asarray(counts, np.int64)
    S = int(max(-(-c // B) for c in counts))
    return np.clip(counts[:, None] - B * np.arange(S)[None, :], 0, B)


def epoch_plan(counts, batch_size, seed, epoch, shuffle=True):
    """The single-process run a data-parallel fit epoch equals: the list of its
    batches, each an index array into the concatenation of the ranks' rows
    (counts[q] rows for rank q, in rank order).

    Each rank visits its rows in its ``local_order`` in batches of batch_size
    (the last partial); step s concatenates batch s of every rank in rank order
    (a rank whose rows are used up adds none), so the epoch has as many steps as
    the longest rank has batches, and its global batches hold up to P x
    batch_size rows (PyTorch's DistributedSampler convention: batch_size is per
    process)."""
    counts = [int(c) for c in counts]
    B = int(batch_size)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    orders = [local_order(c, seed, epoch, q, shuffle) + offsets[q] for q, c in enumerate(counts)]
    rows = _batch_rows(counts, B)
    return [np.concatenate([orders[q][s * B:s * B + rows[q, s]] for q in range(len(counts))])
            for s in range(rows.shape[1])]


# ---- agreement, failure ----------------------------------------------------------------

def _agreed(exc):
    """exc, marked as raised on every rank alike: it may leave train_step or fit
    without aborting the job."""
    exc._fastbp_agreed = True
    return exc


def _abort(comm, exc):
    rank, size = _rank_size(comm)
    msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"fastbp.distributed: rank {rank} of {size} failed; aborting the MPI job\n"
                     f"{msg}")
    sys.stderr.flush()
    sys.stdout.flush()
    # mpiexec forwards a rank's output through a pipe that MPI_Abort's teardown can
    # cut before the last write is read: a moment for it (best effort; a rank whose
    # stderr is a file has its report written already)
    import time

    time.sleep(0.25)
    comm.Abort(1)


@contextlib.contextmanager
def abort_on_error(comm=None):
    """Run a block so that an exception leaving it on any rank prints its
    traceback (prefixed with the rank) and ends the whole MPI job (MPI_Abort on
    comm, default COMM_WORLD) instead of leaving the other ranks waiting in a
    collective call. SystemExit(0) passes. ``python -m mpi4py script.py`` does the
    same for a whole script.

        with fastbp.distributed.abort_on_error(comm):
            model.fit(X, y, comm=comm)
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    try:
        yield comm
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        _abort(comm, e)
    except BaseException as e:  # KeyboardInterrupt too: the others would wait forever
        _abort(comm, e)


@contextlib.contextmanager
def guard(comm):
    """What train_step and fit run under: agreed errors leave, any other
    exception on one rank of several aborts the job."""
    try:
        yield
    except BaseException as e:
        if getattr(e, "_fastbp_agreed", False) or comm.Get_size() == 1:
            raise
        _abort(comm, e)


def _signature(state, **settings):
    """What must be equal on every rank, by name: the network (its
    TrainingState's) and settings."""
    return dict(state.network, **settings)


def _digest(sig):
    """A 48-bit digest of a signature, exact in a float64; repr is the same in
    every process (hash() of a str is not)."""
    return float(int.from_bytes(hashlib.blake2b(repr(sig).encode(), digest_size=6).digest(),
                                "little"))


#: the errors a rank's checks raise, which every rank then raises alike
_CHECK_ERRORS = (TypeError, ValueError, NotImplementedError)


def _raise_disagreement(fn, errors, sigs, own=None):
    """The same exception on every rank, from every rank's error (None, or
    (type name, message)) and signature; own: this rank's error, if any."""
    for r, err in enumerate(errors):
        if err is not None:
            kind = {e.__name__: e for e in _CHECK_ERRORS}.get(err[0], ValueError)
            msg = err[1][len(fn) + 2:] if err[1].startswith(f"{fn}: ") else err[1]
            raise _agreed(kind(f"{fn}: rank {r} of {len(errors)}: {msg}")) from own
    for key in sigs[0]:
        for r in range(1, len(sigs)):
            if sigs[r].get(key) != sigs[0][key]:
                raise _agreed(ValueError(
                    f"{fn}: the ranks disagree on {key}: rank 0 has {sigs[0][key]!r}, "
                    f"rank {r} has {sigs[r].get(key)!r}; every rank must build the same "
                    "network and pass the same settings"))
    raise _agreed(ValueError(f"{fn}: the ranks disagree on their settings"))


def _describe_error(e):
    return None if e is None else (type(e).__name__, str(e))


# ---- the session of a model with a communicator ----------------------------------------

class _Session:
    """A model's buffers and state for one communicator."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.info = np.zeros(5)
        self.infos = np.zeros((self.size, 5))
        self.loss = np.zeros(1)
        self.synced_step = None   # model.step_ after the last step taken with comm
        self.key = self.digest = self.settings = None
        # the data-parallel steps' own: they change its mode, norm and row0
        self.options = StepOptions()

    def allreduce(self, a, op=None):
        """a (float64 array) summed (or op) over the ranks, in place."""
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=op or self.MPI.SUM)
        return a

    def reduce_grad(self, ws):
        self.comm.Allreduce(self.MPI.IN_PLACE, ws.grad, op=self.MPI.SUM)


#: what fastbp calls on a communicator
_COMM_METHODS = ("Get_rank", "Get_size", "Allreduce", "Iallreduce", "Allgather", "allgather",
                 "bcast", "Bcast", "Abort")


def check_comm(fn, comm):
    """A TypeError, before anything else is done, unless comm has the methods of
    an mpi4py communicator (fit and train_step alike)."""
    missing = [m for m in _COMM_METHODS if not callable(getattr(comm, m, None))]
    if missing:
        raise TypeError(f"{fn}: comm must be an mpi4py communicator, got {type(comm).__name__} "
                        f"(it has no {missing[0]}); pass an mpi4py.MPI.Comm, or None")


#: each model's session with the last communicator it trained with (weak: a
#: session does not keep its model alive)
_SESSIONS = weakref.WeakKeyDictionary()


def _session(model, comm):
    dp = _SESSIONS.get(model)
    if dp is None or dp.comm is not comm:
        check_comm("train_step", comm)
        dp = _SESSIONS[model] = _Session(comm)
    return dp


def _sync(model, state, dp, root=0):
    """broadcast_model without its check (the caller has agreed the signature)."""
    comm = dp.comm
    meta = None
    if dp.rank == root:
        es = state.early_stopping_state
        meta = (model.seed, state.optimizer, state.t, state.step, state.epoch,
                sorted(k for k, v in state.buffers.items() if v is not None),
                (list(state.loss_curve), list(state.val_loss_curve),
                 list(state.had_validation)), state.lr_schedule,
                None if es is None else (es["best"], es["wait"], es["best_epoch"],
                                         es["best_params"] is not None))
    seed, opt_name, opt_t, step, epoch, names, curves, plan, es = comm.bcast(meta, root=root)
    for a in state.params.values():
        comm.Bcast(a, root=root)
    W, b = state.param_lists()
    buffers = {}
    for name in names:
        mine = state.buffers.get(name)
        like = W if name.endswith("W") else b
        if mine is None or any(m.shape != p.shape for m, p in zip(mine, like)):
            mine = [np.zeros_like(p) for p in like]
        for a in mine:
            comm.Bcast(a, root=root)
        buffers[name] = mine
    state.buffers = buffers
    state.optimizer, state.t = opt_name, opt_t
    state.step, state.epoch = step, epoch
    # ReduceLROnPlateau replays the curves; a resumed fit continues the plan and
    # the early-stopping run
    state.loss_curve, state.val_loss_curve, state.had_validation = curves
    state.lr_schedule = plan
    if es is None:
        state.early_stop = None
    else:
        params = None
        if es[3]:
            params = {k: np.empty_like(v) for k, v in state.params.items()}
            if dp.rank == root:
                params = {k: v.copy() for k, v in state.early_stop["params"].items()}
            for a in params.values():
                comm.Bcast(a, root=root)
        state.early_stop = {"best": es[0], "wait": es[1], "best_epoch": es[2],
                            "params": params, "epoch": epoch}
    # the dropout seed (the step options caches key on it)
    model.seed = seed
    dp.synced_step = state.step


def broadcast_model(model, comm, root=0):
    """Make every rank's model rank root's: its parameters, optimizer state and
    step count, step and epoch counters, loss curves and their validation
    flags, the named schedule's plan, the early-stopping run, and seed (which
    keys the dropout masks).
    Checks first, on every rank alike, that the ranks hold the same network
    (sizes, dtype, activations, loss, dropout, device); a mismatch raises the same
    ValueError on every rank. Collective: every rank of comm must call it."""
    dp = _session(model, comm)
    state = model.training_state
    with guard(comm):
        sigs = comm.allgather(_signature(state))
        if any(s != sigs[0] for s in sigs):
            _raise_disagreement("broadcast_model", [None] * dp.size, sigs)
        if model.device != "cpu":
            raise _agreed(NotImplementedError("broadcast_model: data-parallel training is "
                                              "implemented for device='cpu' models"))
        _sync(model, state, dp, root)


def is_synced(model, comm):
    """Whether every rank holds bitwise the same parameters, optimizer state and
    counters (a digest of each rank's, compared on every rank). Collective."""
    state = model.training_state
    h = hashlib.blake2b(digest_size=16)
    for a in state.params.values():
        h.update(np.ascontiguousarray(a).tobytes())
    for k in sorted(state.buffers):
        for a in state.buffers[k] or ():
            h.update(k.encode() + np.ascontiguousarray(a).tobytes())
    h.update(repr((state.optimizer, state.t, state.step, state.epoch,
                   state.loss_curve, state.val_loss_curve, state.had_validation,
                   state.lr_schedule)).encode())
    digests = comm.allgather(h.hexdigest())
    return all(d == digests[0] for d in digests)


# ---- train_step ------------------------------------------------------------------------

def train_step(model, state, engine, comm, x, t, lr, weight_decay, momentum, optimizer,
               clip_norm, clip_value, sample_weight):
    """model.train_step(..., comm=comm): the data-parallel step (module docstring)
    on the model's TrainingState and CPU engine (fastbp.model._CPU)."""
    fn = "train_step"
    dp = _session(model, comm)
    with guard(comm):
        err, N, w, digest, ws = None, 0, 0.0, 0.0, None
        # a new kind of optimizer replaces the state; a refused step puts it back
        saved = state.saved_optimizer()
        try:  # every check before the first collective call, then agreed on
            if model.device != "cpu":
                raise NotImplementedError(f"{fn}: comm= (data-parallel training) is "
                                          "implemented for device='cpu' models")
            optimizer = make_optimizer(fn, optimizer, lr, momentum, weight_decay)
            check_clip(fn, clip_norm, clip_value)
            state.check_counters(fn, 1)
            state.ensure_optimizer(optimizer)
            opts = dp.options.get(optimizer, clip_norm, clip_value, False, model.seed)
            key = (dp.options.key, tuple(_signature(state).items()))
            if key != dp.key:
                dp.key, dp.digest = key, _digest(key)
                dp.settings = f"{optimizer!r}, clip_norm={clip_norm}, clip_value={clip_value}"
            digest = dp.digest
            N = _rows(fn, model, x)
            ws = engine.workspace(max(N, 1))
            if N:
                opts.mode = _core.STEP_BACKWARD
                _core.mlp_step(ws, x, t, opts, sample_weight, check_only=True)
                w = float(N) if sample_weight is None else float(
                    np.sum(sample_weight, dtype=np.float64))
                if not np.isfinite(w):
                    raise ValueError(f"{fn}: the sample weights are not finite")
        except _CHECK_ERRORS as e:
            err = e
        info, infos = dp.info, dp.infos
        info[:] = (N, w, err is not None, digest, dp.synced_step != model.step_)
        comm.Allgather(info, infos)
        W = float(infos[:, 1].sum())
        try:
            if infos[:, 2].any() or (infos[:, 3] != infos[0, 3]).any():
                got = comm.allgather((_describe_error(err), dict(
                    _signature(state), **{"optimizer and clipping": dp.settings})))
                _raise_disagreement(fn, [g[0] for g in got], [g[1] for g in got], err)
            if not infos[:, 0].any():
                raise _agreed(ValueError(f"{fn}: empty batch on every rank"))
            if not W > 0:
                raise _agreed(ValueError(f"{fn}: the sample weights of all the ranks sum "
                                         f"to {W}"))
        except Exception:  # agreed errors, raised on every rank alike
            state.put_back(saved)
            raise
        if infos[:, 4].any():  # a first step, or one of the models trained elsewhere since
            _sync(model, state, dp)
            state.ensure_optimizer(optimizer)
            opts = dp.options.get(optimizer, clip_norm, clip_value, False, model.seed)
            ws = engine.workspace(max(N, 1))
        first = int(np.argmax(infos[:, 0] > 0))  # the rank that adds the decay term
        state.start_steps(opts)
        dp.loss[0] = 0.0
        if N:
            opts.mode, opts.norm = _core.STEP_BACKWARD, W
            opts.row0 = int(infos[:dp.rank, 0].sum())
            loss, reg, _, _ = _core.mlp_step(ws, x, t, opts, sample_weight, check_labels=False)
            dp.loss[0] = loss + (reg if dp.rank == first else 0.0)
        else:
            ws.grad.fill(0)
        req = comm.Iallreduce(dp.MPI.IN_PLACE, dp.loss, op=dp.MPI.SUM)
        dp.reduce_grad(ws)
        opts.mode = _core.STEP_UPDATE
        _core.mlp_step(ws, None, None, opts)
        req.Wait()
        state.count_steps(opts)  # the update moved opts past the step
        dp.synced_step = state.step
        return float(dp.loss[0])


def _rows(fn, model, x):
    """x's rows (0 allowed: a rank with nothing this step); mlp_step checks the rest."""
    shape = getattr(x, "shape", None)
    if shape is None:
        x = np.asarray(x)
        shape = x.shape
    if len(shape) == 2 and shape[0] == 0:
        if shape[1] != model.sizes[0]:
            raise ValueError(f"{fn}: x must have shape (N, {model.sizes[0]}), got {tuple(shape)}")
        return 0
    return max(int(shape[0]), 1) if len(shape) >= 1 else 1


# ---- fit -------------------------------------------------------------------------------

class DataParallelRunner(Runner):
    """fit's epoch runner over the ranks of comm (fastbp._runners has the
    interface): agreed at the fit's start (agree), then called once per epoch.
    model's TrainingState state and CPU engine (fastbp.model._CPU) train."""

    distributed = True

    def __init__(self, model, state, engine, comm):
        super().__init__(model)
        self.dp, self.state, self.engine = _session(model, comm), state, engine
        self.options = self.dp.options
        self.comm = comm
        self.prints = self.dp.rank == 0
        self.bufs = None

    agreed = staticmethod(_agreed)

    def check_failed(self, exc):
        """A rank's check failed: the ranks agree on it first (agree raises)."""
        return exc

    def order(self, n, seed, epoch, shuffle):
        return local_order(n, seed, epoch, self.dp.rank, shuffle)

    def from_rank0(self, flag):
        """Rank 0's flag, on every rank."""
        f = np.array([flag if self.dp.rank == 0 else 0.0], np.float64)
        return bool(self.dp.allreduce(f)[0])

    def any(self, flag):
        """Whether any rank's flag is set."""
        return bool(self.dp.allreduce(np.array([float(bool(flag))]), self.dp.MPI.MAX)[0])

    def agree(self, err, settings, n, weighted, wsum, counts):
        """The fit's start, on every rank: every rank's checks passed and its
        settings match (else the same ValueError everywhere), then rank 0's
        model everywhere. Returns (every rank's rows, global class counts or None,
        whether any rank has weights, the total weight)."""
        dp, model = self.dp, self.model
        sig = _signature(self.state, **settings)
        got = self.comm.allgather((_describe_error(err), sig, n, weighted, wsum, counts))
        errs = [g[0] for g in got]
        sigs = [g[1] for g in got]
        if any(e is not None for e in errs) or any(s != sigs[0] for s in sigs):
            _raise_disagreement("fit", errs, sigs, err)
        if model.device != "cpu":
            raise _agreed(NotImplementedError("fit: comm= (data-parallel training) is "
                                              "implemented for device='cpu' models"))
        _sync(model, self.state, dp)
        self.counts = np.array([g[2] for g in got], np.int64)
        self.weighted = any(g[3] for g in got)
        wsum = float(sum(g[4] for g in got))
        if self.weighted and not wsum > 0:
            raise _agreed(ValueError("fit: the sample weights of all the ranks' training "
                                     "rows sum to 0"))
        total = None if counts is None else np.sum([g[5] for g in got], axis=0)
        return self.counts, total, self.weighted, wsum

    def run_epoch(self, X, y, w, order, B, opts):
        """One epoch of data-parallel steps (epoch_plan): the global sums."""
        dp = self.dp
        rank, n = dp.rank, X.shape[0]
        rows = _batch_rows(self.counts, B)
        S = rows.shape[1]
        mine = rows[rank]
        if self.weighted:
            bw = np.zeros(S)
            if w is not None:
                starts = np.arange(S)[mine > 0] * B
                bw[mine > 0] = np.add.reduceat(w[order].astype(np.float64), starts)
            else:
                bw[:] = mine
            Wb = dp.allreduce(bw)
        else:
            Wb = rows.sum(axis=0).astype(np.float64)
        row0 = rows[:rank].sum(axis=0)
        first = np.argmax(rows > 0, axis=0)
        ws = self.engine.workspace(B)
        if self.bufs is None or self.bufs[0].shape[0] != B:  # the gathered batch
            self.bufs = (np.empty((B, X.shape[1]), X.dtype), np.empty((B,) + y.shape[1:], y.dtype),
                         None if w is None else np.empty(B, w.dtype))
        xb, yb, wb = self.bufs
        total = np.zeros(2)
        for s in range(S):
            r = int(mine[s])
            if r:
                idx = order[s * B:s * B + r]
                np.take(X, idx, axis=0, out=xb[:r])
                np.take(y, idx, axis=0, out=yb[:r])
                if wb is not None:
                    np.take(w, idx, out=wb[:r])
                # a global batch of zero-weight rows contributes nothing, as in a plain
                # fit (any norm > 0 gives it zero gradients and loss)
                opts.mode, opts.row0 = _core.STEP_BACKWARD, int(row0[s])
                opts.norm = float(Wb[s]) if Wb[s] > 0 else 1.0
                loss, reg, _, hits = _core.mlp_step(ws, xb[:r], yb[:r], opts,
                                                    None if wb is None else wb[:r],
                                                    check_labels=False)
                total[0] += (loss + (reg if first[s] == rank else 0.0)) * Wb[s]
                total[1] += hits
            else:
                ws.grad.fill(0)
            dp.reduce_grad(ws)
            opts.mode = _core.STEP_UPDATE
            _core.mlp_step(ws, None, None, opts)  # moves opts past the step
        dp.allreduce(total)
        dp.synced_step = opts.step
        self.last = (order[(S - 1) * B:(S - 1) * B + int(mine[S - 1])], int(rows[:, S - 1].sum()))
        return float(total[0]), float(Wb.sum()), int(total[1])

    def evaluate(self, Xv, yv, weight_decay, score_key):
        """(val_loss, score) over every rank's validation rows: the mean loss plus
        the decay term, and the accuracy or R^2 of the concatenation."""
        model, dp = self.model, self.dp
        n = Xv.shape[0]
        loss, reg = self.engine.step(Xv, yv, _core.StepOptions(_core.STEP_LOSS,
                                                               weight_decay=weight_decay),
                                     max(n, 1))[:2]
        out = model.predict(Xv)
        if score_key == "val_accuracy":  # the right rows, as model.score counts them
            if model.loss_name == "softmax_cross_entropy":
                labels = yv if yv.ndim == 1 else yv.argmax(axis=1)
                hits = np.sum(out.argmax(axis=1) == labels)
            else:
                hits = np.sum(np.all((out > 0) == (yv.reshape(out.shape) >= 0.5), axis=1))
            a = dp.allreduce(np.array([loss * n, hits, n], np.float64))
            return float(a[0] / a[2] + reg), float(a[1] / a[2])
        t = np.asarray(yv, np.float64).reshape(out.shape)
        a = dp.allreduce(np.concatenate([[loss * n, n], t.sum(axis=0)]))
        mean = a[2:] / a[1]
        b = dp.allreduce(np.array([np.sum((t - out) ** 2), np.sum((t - mean) ** 2)]))
        return float(a[0] / a[1] + reg), float(1.0 - b[0] / b[1]) if b[1] > 0 else 0.0

    def grad_norms(self, X, y, order, B):
        """model.grad_norms on the epoch's last global batch (gradient of the plain
        network, no weights), every rank's rows of it summed."""
        model, dp = self.model, self.dp
        idx, N = self.last
        ws = self.engine.workspace(max(len(idx), 1))
        if len(idx):
            opts = _core.StepOptions(_core.STEP_GRAD, norm=float(N))
            _core.mlp_step(ws, X[idx], y[idx], opts)
        else:
            ws.grad.fill(0)
        dp.reduce_grad(ws)
        norms = {}
        for l in range(model.n_layers):
            norms[f"W{l + 1}"] = float(np.linalg.norm(ws.dW[l]))
            norms[f"b{l + 1}"] = float(np.linalg.norm(ws.db[l]))
        return norms
