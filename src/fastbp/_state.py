"""The training state of an MLP: what training changes and a checkpoint keeps.

The parameters, the optimizer's name, step count and buffers, the step and
epoch counters, the loss curves, the plan of a named schedule and the
early-stopping run live in one object, so that the fit loop (fastbp._train),
the data-parallel runner (fastbp.distributed) and the checkpoint reader
(fastbp._checkpoint) change them through it rather than through the model.
The model (fastbp.model.MLP) owns one for its life and shows its fields as
``step_``, ``epoch_``, ``loss_curve_``, ...
"""
import math

import numpy as np

from . import ops as _ops
from ._checkpoint import MAX_COUNT


class TrainingState:
    """params: {"W1": ..., "b1": ..., ...}, the model's own arrays (W (in, out)).
    network: what must be equal for two states to be exchangeable (sizes,
    dtype, activations, loss, dropout, device), compared across ranks."""

    def __init__(self, params, network):
        self.params, self.network = params, network
        self.optimizer, self.t, self.buffers = None, 0, {}  # buffers: {"vW": [...], ...}
        self.step = self.epoch = 0
        self.loss_curve, self.val_loss_curve, self.had_validation = [], [], []
        self.lr_schedule = None   # (name, total epochs) of a named schedule's plan
        # the early-stopping run a next fit continues: {"best", "wait",
        # "best_epoch", "params", "epoch": the epoch count it was last updated at}
        self.early_stop = None

    def param_lists(self):
        L, p = len(self.params) // 2, self.params
        return [p[f"W{l}"] for l in range(1, L + 1)], [p[f"b{l}"] for l in range(1, L + 1)]

    def ensure_optimizer(self, optimizer):
        """Zeros for the optimizer's state when it is new (another kind than the
        last step's, or state it did not keep); otherwise the state carries on,
        as it does for one torch.optim object. Returns whether it was new."""
        need = _ops.state_buffers(optimizer.state)
        if optimizer.name == self.optimizer and all(self.buffers.get(k) is not None
                                                    for k in need):
            return False
        W, b = self.param_lists()
        self.buffers = {}
        for name in need:
            like = W if name.endswith("W") else b
            self.buffers[name] = [np.zeros_like(a) for a in like]
        self.optimizer, self.t = optimizer.name, 0
        return True

    def saved_optimizer(self):
        """What ensure_optimizer replaces, for put_back after a refused step."""
        return self.optimizer, self.t, self.buffers

    def put_back(self, saved):
        self.optimizer, self.t, self.buffers = saved

    def check_counters(self, fn, steps, epochs=0):
        """Refuse, before any step, a call whose steps or epochs would take a
        counter past MAX_COUNT (2**53): the most a model file holds, so that a
        model can always be saved and loaded again, and int64 never wraps."""
        for name, now, more in (("step_", self.step, steps),
                                ("optimizer step count", self.t, steps),
                                ("epoch_", self.epoch, epochs)):
            if now + more > MAX_COUNT:
                raise ValueError(f"{fn}: the model's {name} is {now}; {more} more would pass "
                                 f"2**53 = {MAX_COUNT}, the most a model counts (and a model "
                                 "file holds)")

    def start_steps(self, opts):
        """opts set to take the next step (the native calls advance it)."""
        opts.t, opts.step = self.t + 1, self.step

    def count_steps(self, opts):
        """The step counters from opts, which the native calls advanced past the
        steps they ran (also when Ctrl-C is raised as a call returns, before any
        statement after it)."""
        self.t, self.step = opts.t - 1, opts.step

    def end_epoch(self, loss, val_loss):
        """An epoch's curves and count, written together (val_loss None: no
        validation set)."""
        self.loss_curve.append(loss)
        self.val_loss_curve.append(math.nan if val_loss is None else val_loss)
        self.had_validation.append(val_loss is not None)
        self.epoch += 1

    @property
    def early_stopping_state(self):
        """The early-stopping run a next fit continues (MLP.early_stopping_state)."""
        es = self.early_stop
        if es is None or es["epoch"] != self.epoch:
            return None
        return {"best": es["best"], "wait": es["wait"], "best_epoch": es["best_epoch"],
                "best_params": es["params"]}

    def restore(self, optimizer, t, buffers, step, epoch, curves, had_validation=None,
                lr_schedule=None, early_stop=None):
        """Put back what MLP.save wrote: the optimizer's name, step count and
        state, the counters, the loss curves and their validation flags, the
        named schedule's plan and the early-stopping run."""
        dtype = np.dtype(self.network["dtype"])
        self.optimizer, self.t = optimizer, t
        self.buffers = {k: [np.array(a, dtype) for a in v] for k, v in buffers.items()}
        self.step, self.epoch = step, epoch
        self.loss_curve, self.val_loss_curve = ([float(v) for v in c] for c in curves)
        if had_validation is None:  # a file from before the flags: NaN meant no validation
            had_validation = [v == v for v in self.val_loss_curve]
        self.had_validation = [bool(v) for v in had_validation]
        self.lr_schedule = lr_schedule
        self.early_stop = early_stop
