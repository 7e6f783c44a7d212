"""Epoch runners: how one epoch of training steps is run.

The epoch loop (fastbp._train.run_epochs) drives one runner per fit: MLP.fit's
and scikit-learn's estimators' (fastbp.sklearn, a NativeRunner) alike. Every
runner has

    run_epoch(X, y, w, order, B, opts) -> (loss_sum, weight_sum, correct)

the epoch's batches of B rows in ``order`` (the last partial), each step's
(loss + reg) times its batch's weight summed in batch order, the weights'
sum, and the right answers (opts.count_correct). opts (a _core.StepOptions)
comes set for the first step and is moved past each step as it runs, so the
caller's counters follow it even when Ctrl-C cuts the epoch short.

The rest of a runner is what a fit asks of the process it runs in: the
epoch's order, the validation figures, the gradient norms, and the flags
every rank must agree on. The Runner base class answers for a single
process; fastbp.distributed.DataParallelRunner answers for the ranks of an
MPI communicator.

    NativeRunner  the CPU: batches in native calls (fbp_mlp_epoch) of about
                  CHUNK_SECONDS each; an interrupt is seen between two calls
    CudaRunner    a GPU model (fastbp.cuda.CudaMLP): one native call per step
"""
import time

import numpy as np

from . import _core

#: seconds of work per native call of an epoch: the interval at which an
#: interrupt (Ctrl-C) is seen, for MLP.fit and the scikit-learn estimators alike
CHUNK_SECONDS = 0.05


def epoch_order(n, seed, epoch, shuffle=True):
    """The rows of epoch ``epoch`` of a fit (0 for a model's first epoch), in the
    order fit visits them: a function of the seed and the epoch number alone, so
    a fit resumed from a checkpoint continues with the same orders
    (fastbp._core.epoch_order, a counter-based shuffle)."""
    if not shuffle:
        return np.arange(n)
    return _core.epoch_order(n, seed, epoch)


class StepOptions:
    """The _core.StepOptions of a training step, made once per setting (a step
    that reuses them allocates nothing). Each user keeps its own: the
    data-parallel steps change the mode, norm and row0 of theirs."""

    def __init__(self):
        self.key = self.seed = self.opts = None  # key: the settings, but the seed

    def get(self, optimizer, clip_norm, clip_value, count_correct, seed):
        """seed: the model's, which keys the dropout masks."""
        key = (type(optimizer).__name__, tuple(sorted(optimizer.__dict__.items())), clip_norm,
               clip_value, count_correct)
        if key != self.key or seed != self.seed:
            self.opts = _core.StepOptions(
                _core.STEP_TRAIN, clip_norm=clip_norm or 0.0, clip_value=clip_value or 0.0,
                seed=seed, count_correct=count_correct, **optimizer.options())
            self.key, self.seed = key, seed
        return self.opts


class Runner:
    """A single process's answers to a fit; subclasses run the epochs.

    model: the fastbp.model.MLP being fit (None for a bare NativeRunner);
    options: its StepOptions cache, shared with train_step."""

    #: whether the rows are spread over several processes
    distributed = False
    #: whether this process prints fit's epoch lines
    prints = True

    def __init__(self, model=None, options=None):
        self.model, self.options = model, options

    def run_epoch(self, X, y, w, order, B, opts):
        raise NotImplementedError

    def step_options(self, optimizer, clip_norm, clip_value, count_correct):
        return self.options.get(optimizer, clip_norm, clip_value, count_correct, self.model.seed)

    @staticmethod
    def agreed(exc):
        """exc, as every process raises it (a single process: as it is)."""
        return exc

    def check_failed(self, exc):
        """A check of fit's inputs failed: a single process raises at once."""
        raise exc

    def agree(self, err, settings, n, weighted, wsum, counts):
        """The fit's start: (every process's rows, the class counts over every
        process's rows or None, whether any has weights, the total weight)."""
        return np.array([n], np.int64), None, weighted, wsum

    def order(self, n, seed, epoch, shuffle):
        return epoch_order(n, seed, epoch, shuffle)

    def evaluate(self, Xv, yv, weight_decay, score_key):
        """(val_loss, score) of the model on the validation rows."""
        try:
            return self.model.loss(Xv, yv, weight_decay), self.model.score(Xv, yv)
        except ValueError:  # the inputs were checked: the parameters diverged
            return np.nan, np.nan

    def grad_norms(self, X, y, order, B):
        """model.grad_norms on the epoch's last batch."""
        last = order[(X.shape[0] - 1) // B * B:]
        return self.model.grad_norms(X[last], y[last])

    def from_rank0(self, flag):
        return flag

    def any(self, flag):
        return flag


class NativeRunner(Runner):
    """Epochs on the CPU, in native calls (fbp_mlp_epoch) sized by their measured
    time to about ``seconds`` each: a Ctrl-C is raised between two calls, after
    whole steps. The sums are running sums passed from call to call, so the
    results do not depend on where an epoch is cut.

    workspace: a function of the batch rows B giving the MLPWorkspace to train
    (the model's own may be rebuilt between epochs); losses: None, or a
    float64 array (batches, 2) that receives each batch's (loss, reg) of the
    last epoch (scikit-learn's estimators sum them their own way)."""

    def __init__(self, workspace, model=None, options=None, seconds=CHUNK_SECONDS, losses=None):
        super().__init__(model, options)
        self.workspace, self.seconds, self.losses = workspace, seconds, losses
        self.chunk = 1  # batches per call, grown (x4 at most) to fill `seconds`

    def run_epoch(self, X, y, w, order, B, opts):
        ws, losses = self.workspace(B), self.losses
        nb = -(-X.shape[0] // B)
        total = weight = 0.0
        correct = s = 0
        while s < nb:
            e = min(nb, s + self.chunk)
            t0 = time.perf_counter()
            if losses is None:
                total, weight, _, hits = _core.mlp_epoch(ws, X, y, w, order, B, s, e, opts,
                                                         total, weight)
            else:
                total, weight, _, hits = _core.mlp_epoch(ws, X, y, w, order, B, s, e, opts,
                                                         total, weight, losses[s:e])
            dt = time.perf_counter() - t0
            correct += hits
            self.chunk = max(1, min(4 * self.chunk, int(self.seconds * (e - s) / max(dt, 1e-6))))
            s = e
        return total, weight, correct


class CudaRunner(Runner):
    """Epochs on the GPU: one native call per step (fastbp.cuda.CudaMLP), each
    batch gathered on the host."""

    def __init__(self, engine, model, options):
        super().__init__(model, options)
        self.engine = engine

    def run_epoch(self, X, y, w, order, B, opts):
        total = weight = 0.0
        correct = 0
        for s in range(-(-X.shape[0] // B)):
            idx = order[s * B:(s + 1) * B]
            loss, reg, _, hits = self.engine.step(X[idx], y[idx], opts, len(idx),
                                                  None if w is None else w[idx])
            bw = len(idx) if w is None else float(w[idx].sum())
            total, weight, correct = total + (loss + reg) * bw, weight + bw, correct + hits
        return total, weight, correct
