"""The epoch loop, and MLP.fit: the checks, the epochs, validation, early
stopping, callbacks.

``run_epochs(runner, policy, ...)`` is the one epoch loop: of MLP.fit, and of
the scikit-learn estimators' sgd and adam (fastbp.sklearn). A policy says what
happens around each epoch (its order and step options before; its record and
whether to stop after): FitPolicy here is MLP.fit's, fastbp.sklearn's
_SklearnPolicy is scikit-learn's _fit_stochastic.

``fit(model, X, y, comm=None, **settings)`` is MLP.fit's body. It checks
everything before the first step, then runs the epochs through an epoch
runner (fastbp._runners): NativeRunner on the CPU, CudaRunner on a GPU, or
fastbp.distributed.DataParallelRunner when a communicator is given. The loop
itself does not know which: the runner gives the epoch's order, runs it, and
answers what the ranks must agree on (a single process agrees with itself).

What training changes lives in the model's TrainingState (fastbp._state); the
policy writes an epoch's record to it at once, after the epoch, so that Ctrl-C
leaves the history and the counters of the completed epochs.
"""
import math
import numbers
import time
import warnings

import numpy as np

from . import ops as _ops
from . import optim as _optim
from ._runners import CudaRunner, NativeRunner


class DivergedWarning(RuntimeWarning):
    """fit stopped because the loss was not finite: ``epoch`` (1-based, of that
    fit) and ``loss`` say where and what."""

    def __init__(self, message, epoch=None, loss=None):
        super().__init__(message)
        self.epoch, self.loss = epoch, loss


# ---- the settings of a call (fit and train_step alike) ----------------------------------

def make_optimizer(fn, optimizer, lr, momentum, weight_decay):
    """The optimizer of a call: the one given, or SGD from the shorthand."""
    if optimizer is None:
        if lr is None:
            raise TypeError(f"{fn}: give lr (plain SGD) or optimizer=")
        return _optim.SGD(lr, momentum=momentum, weight_decay=weight_decay)
    if not isinstance(optimizer, _optim.Optimizer):
        names = ", ".join(o.name for o in _ops.OPTIMIZERS.values() if o.public)
        raise TypeError(f"{fn}: optimizer must be a fastbp.optim optimizer ({names}), "
                        f"got {type(optimizer).__name__}")
    if lr is not None or momentum or weight_decay:
        raise ValueError(f"{fn}: lr=, momentum= and weight_decay= are the shorthand for "
                         "SGD; with optimizer= set them on the optimizer")
    return optimizer


def check_clip(fn, clip_norm, clip_value):
    for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)
                              or not v > 0 or not math.isfinite(v)):
            raise ValueError(f"{fn}: {name} must be > 0 or None, got {v}")


def verbosity(verbose):
    """fit's verbose as a level: 0 (False, None, 0) silent, 1 (True, 1) one line
    per epoch, 2 a progress bar (tqdm)."""
    if verbose is None or verbose is False:
        return 0
    if verbose is True:
        return 1
    if isinstance(verbose, numbers.Integral) and 0 <= verbose <= 2:
        return int(verbose)
    raise ValueError(f"fit: verbose must be 0, 1, 2 or a bool, got {verbose!r}")


def epoch_line(k, epochs, record, score_key, seconds):
    """One epoch's line, as Keras prints it: "Epoch 3/30 - loss: 0.1234 -
    accuracy: 0.9500 - val_loss: 0.1500 - val_accuracy: 0.9400 - 12ms"."""
    parts = [f"Epoch {k}/{epochs}", f"loss: {record['loss']:.4f}"]
    if "accuracy" in record:
        parts.append(f"accuracy: {record['accuracy']:.4f}")
    if "val_loss" in record:
        parts.append(f"val_loss: {record['val_loss']:.4f}")
        parts.append(f"{score_key}: {record[score_key]:.4f}")
    parts.append(f"{seconds * 1e3:.0f}ms" if seconds < 1 else f"{seconds:.2f}s")
    return " - ".join(parts)


# ---- fit and the data-parallel step -----------------------------------------------------

def fit(model, state, engine, options, comm, X, y, chunk_seconds, **settings):
    """MLP.fit(X, y, comm=comm, **settings) on the model's TrainingState, its
    engine (model._CPU or model._CUDA) and its StepOptions cache: in this
    process alone (comm None), or data-parallel over comm's ranks."""
    if comm is None:
        if model.device == "cuda":
            runner = CudaRunner(engine, model, options)
        else:
            runner = NativeRunner(engine.workspace, model, options, chunk_seconds)
        return _fit(model, state, runner, X, y, **settings)
    from . import distributed

    distributed.check_comm("fit", comm)
    with distributed.guard(comm):
        return _fit(model, state, distributed.DataParallelRunner(model, state, engine, comm),
                    X, y, **settings)


def train_step_data_parallel(model, state, engine, comm, *args):
    """MLP.train_step(..., comm=comm): fastbp.distributed.train_step, reached
    from here so that fastbp.model does not import fastbp.distributed."""
    from . import distributed

    return distributed.train_step(model, state, engine, comm, *args)


def _fit(model, state, runner, X, y, epochs, batch_size, lr, weight_decay, momentum, clip_norm,
         shuffle, seed, validation, progress, log_grad_norms, optimizer, clip_value,
         lr_schedule, early_stopping, validation_fraction, patience, min_delta,
         restore_best, callbacks, sample_weight, class_weight, verbose, total_epochs):
    fn = "fit"
    err = None
    try:  # with several ranks every check is local: the ranks agree on the outcome below
        if lr is None and optimizer is None:
            lr = 0.1
        optimizer = make_optimizer(fn, optimizer, lr, momentum, weight_decay)
        check_clip(fn, clip_norm, clip_value)
        for name, v in (("epochs", epochs), ("batch_size", batch_size),
                        ("patience", patience)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"fit: {name} must be an integer >= 1, got {v!r}")
        if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                or not 0 <= seed < 1 << 64):
            raise ValueError(f"fit: seed must be an integer in [0, 2**64), got {seed!r}")
        if (isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real)
                or not (math.isfinite(min_delta) and min_delta >= 0)):
            raise ValueError(f"fit: min_delta must be a finite number >= 0, got {min_delta!r}")
        if total_epochs is not None and (
                isinstance(total_epochs, bool) or not isinstance(total_epochs, numbers.Integral)
                or total_epochs < 1):
            raise ValueError(f"fit: total_epochs must be an integer >= 1 or None, got "
                             f"{total_epochs!r}")
        _optim.make_schedule(lr_schedule, 1)  # a known name, or a schedule (else its error)
        X, y = model._check_inputs(fn, X, y)
        w64 = model._sample_weights(fn, y, sample_weight, class_weight, check_sum=False,
                                    cast=False)
        w = None if w64 is None else model._sample_weights(fn, y, sample_weight, class_weight,
                                                           check_sum=False)
        keep = None
        if validation is not None:
            try:
                Xv, yv = validation
            except (TypeError, ValueError):
                raise ValueError("fit: validation must be a pair (X, y)") from None
            Xv, yv = model._check_inputs("fit (validation)", Xv, yv)
        elif early_stopping:
            keep, val = model._hold_out_rows(X, y, validation_fraction, seed)
        else:
            Xv = yv = None
        # a data-parallel fit checks the weights' sum over every rank's rows instead
        _check_training_weights(fn, model.dtype, w64, w, keep,
                                check_sum=not runner.distributed,
                                what=" and ".join(k for k, v in (
                                    ("sample_weight", sample_weight),
                                    ("class_weight", class_weight)) if v is not None))
    except (TypeError, ValueError) as e:
        err = runner.check_failed(e)
    balanced = isinstance(class_weight, str) and class_weight == "balanced"
    ok = err is None
    settings = dict(
        optimizer=repr(optimizer), clip=(clip_norm, clip_value), epochs=epochs,
        batch_size=batch_size, shuffle=shuffle, seed=seed, lr_schedule=(
            lr_schedule if lr_schedule is None or isinstance(lr_schedule, str)
            else type(lr_schedule).__name__),
        validation=validation is not None, early_stopping=early_stopping,
        validation_fraction=validation_fraction, patience=patience,
        min_delta=min_delta, restore_best=restore_best, log_grad_norms=log_grad_norms,
        class_weight=class_weight if class_weight is None or balanced else "dict",
        targets=np.ndim(y) if ok else None, total_epochs=total_epochs)
    # the weight of the training rows (the held-out ones left out), in the
    # model's dtype, as the steps will use it
    w_train = None if not ok or w is None else (w if keep is None else w[keep])
    counts, total_counts, _, _ = runner.agree(
        err, settings, (len(keep) if keep is not None else X.shape[0]) if ok else 0,
        ok and w is not None,
        float(np.sum(w_train, dtype=np.float64)) if w_train is not None else 0.0,
        np.bincount(y, minlength=model.sizes[-1]) if ok and balanced else None)
    if total_counts is not None:  # "balanced" from the classes' counts over every rank's rows
        w = model._sample_weights(fn, y, sample_weight, class_weight, check_sum=False,
                                  counts=(total_counts, int(total_counts.sum())))
    if keep is not None:
        X, y, w, Xv, yv = X[keep], y[keep], None if w is None else w[keep], X[val], y[val]
    B = min(int(batch_size), int(counts.max()))
    # the model's own state, checked on the model that will train (with several
    # ranks, rank 0's, the same on every rank: each raises the same error)
    try:
        _check_finite_model(fn, model, state)
        schedule, plan = _plan_schedule(fn, state, lr_schedule, epochs, total_epochs)
        base_lr = optimizer.lr
        _optim.check_schedule(fn, schedule, base_lr, state.epoch, state.epoch + epochs - 1)
        state.check_counters(fn, epochs * -(-int(counts.max()) // B), epochs)
    except (TypeError, ValueError) as e:
        raise runner.agreed(e)
    state.lr_schedule = plan
    policy = FitPolicy(model, state, runner, optimizer, schedule, X, y, B, Xv, yv,
                       outputs=int(counts.sum()), seed=seed, shuffle=shuffle,
                       clip=(clip_norm, clip_value), log_grad_norms=log_grad_norms,
                       verbose=verbose if progress is None else progress, epochs=epochs,
                       early_stopping=early_stopping, min_delta=min_delta, patience=patience,
                       callbacks=callbacks)
    run_epochs(runner, policy, policy.bar, X, y, w, B)
    policy.bar.close()
    es = policy.es
    if es is not None:
        restore = (restore_best and es["params"] is not None
                   and es["best_epoch"] != state.epoch - 1)
        if restore:
            model.set_params(es["params"])
        if restore or policy.triggered:  # the run is over: a next fit starts its own
            state.early_stop = None
    return policy.hist


# ---- the epoch loop and MLP.fit's policy ------------------------------------------------

def run_epochs(runner, policy, epochs, X, y, w, B):
    """The epoch loop of MLP.fit and of the scikit-learn estimators' sgd and
    adam (fastbp.sklearn): the runner runs each epoch's steps over the rows X,
    y, w in batches of B; the policy decides everything else, in three calls:

        policy.before_epoch(i) -> (order, opts)
            epoch i of this call (0, 1, ... from ``epochs``, a range or a
            progress bar over one): its rows' order and its StepOptions,
            set for its first step
        policy.steps_ran(opts)
            after the epoch's steps, also when one raised (Ctrl-C is raised
            between two native calls): the step counters, taken from opts
        policy.after_epoch(i, sums) -> stop
            sums: run_epoch's (loss_sum, weight_sum, correct); records the
            epoch and says whether training stops

    MLP.fit's policy is FitPolicy (below); scikit-learn's follows its
    _fit_stochastic (fastbp.sklearn._SklearnPolicy)."""
    for i in epochs:
        order, opts = policy.before_epoch(i)
        try:
            sums = runner.run_epoch(X, y, w, order, B, opts)
        finally:
            policy.steps_ran(opts)
        if policy.after_epoch(i, sums):
            break


class FitPolicy:
    """MLP.fit's side of run_epochs: each epoch's lr (the schedule) and order
    (the seed and the model's epoch), its record in ``hist`` and the
    TrainingState, its line or progress-bar figures, validation, the
    divergence check, early stopping and the callbacks.

    X, y, B: the training rows and the batch rows (as run_epochs gets them);
    Xv, yv: the validation rows or None; outputs: the training rows over
    every rank. It makes the fit's history (model.history_), its progress
    bar (``bar``, which run_epochs iterates) and its early-stopping run
    (``es``, None without), in the order fit made them before the loop."""

    def __init__(self, model, state, runner, optimizer, schedule, X, y, B, Xv, yv, *, outputs,
                 seed, shuffle, clip, log_grad_norms, verbose, epochs, early_stopping,
                 min_delta, patience, callbacks):
        from tqdm.auto import tqdm

        self.model, self.state, self.runner = model, state, runner
        self.optimizer, self.schedule, self.base_lr = optimizer, schedule, optimizer.lr
        self.X, self.y, self.B, self.Xv, self.yv, self.outputs = X, y, B, Xv, yv, outputs
        self.seed, self.shuffle, self.clip = seed, shuffle, clip
        self.log_grad_norms, self.epochs = log_grad_norms, epochs
        self.min_delta, self.patience, self.callbacks = min_delta, patience, callbacks
        self.classify = model.loss_name == "binary_cross_entropy" or (
            model.loss_name == "softmax_cross_entropy" and y.ndim == 1)
        self.score_key = "val_r2" if model.loss_name in ("mse", "poisson") else "val_accuracy"
        hist = {"loss": [], "lr": []}
        if self.classify:
            hist["accuracy"] = []
        if Xv is not None:
            hist["val_loss"], hist[self.score_key] = [], []
        if log_grad_norms:
            hist["grad_norms"] = []
        self.hist = model.history_ = hist
        level = verbosity(verbose)
        self.es = _early_stopping_run(state, early_stopping)
        self.triggered = False  # early stopping ended the run
        # verbose=2: a bar that stays; 1: one line per epoch (print); 0: nothing
        self.bar = tqdm(range(epochs), disable=level != 2, unit="epoch", leave=True)
        self.lines = level == 1 and runner.prints

    def before_epoch(self, i):
        state, optimizer = self.state, self.optimizer
        self.t_epoch = time.perf_counter()
        self.epoch = epoch = state.epoch
        lr_e = self.schedule.lr(epoch, self.base_lr, {"loss": state.loss_curve,
                                                      "val_loss": state.val_loss_curve,
                                                      "had_validation": state.had_validation})
        if not (lr_e >= 0 and math.isfinite(lr_e)):
            raise ValueError(f"fit: the schedule gave lr {lr_e!r} at epoch {epoch}")
        self.lr_e = optimizer.lr = lr_e  # the epoch's steps' lr; steps_ran puts base_lr back
        try:
            self.order = self.runner.order(self.X.shape[0], self.seed, epoch, self.shuffle)
            self.model._ensure_state(optimizer)
            opts = self.runner.step_options(optimizer, *self.clip, self.classify)
            state.start_steps(opts)
        except BaseException:
            optimizer.lr = self.base_lr
            raise
        return self.order, opts

    def steps_ran(self, opts):
        try:
            self.state.count_steps(opts)
        finally:
            self.optimizer.lr = self.base_lr

    def after_epoch(self, i, sums):
        total, weight, correct = sums
        model, state, runner, hist, score_key = (self.model, self.state, self.runner,
                                                 self.hist, self.score_key)
        mean_loss, epoch, lr_e = total / weight, self.epoch, self.lr_e
        # the epoch's record is measured first and then written at once, so an
        # interrupt during the validation pass leaves the history and epoch_ as
        # they were (the epoch's steps are counted in step_)
        record = {"loss": mean_loss, "lr": lr_e}
        if self.classify:
            record["accuracy"] = correct / self.outputs
        if self.Xv is not None:
            optimizer = self.optimizer
            val_reg = 0.0 if _ops.OPTIMIZERS[optimizer.name].decoupled else optimizer.weight_decay
            record["val_loss"], record[score_key] = runner.evaluate(self.Xv, self.yv, val_reg,
                                                                    score_key)
        if self.log_grad_norms:
            record["grad_norms"] = runner.grad_norms(self.X, self.y, self.order, self.B)
        for k, v in record.items():
            hist[k].append(v)
        state.end_epoch(mean_loss, record.get("val_loss"))
        if not self.bar.disable:  # formatting for a hidden bar cost 10 us an epoch
            post = {name: f"{record[k]:.4f}" for k, name in
                    (("loss", "loss"), ("accuracy", "acc"), (score_key, score_key)) if k in record}
            self.bar.set_postfix(post, refresh=False)
        if self.lines:
            print(epoch_line(i + 1, self.epochs, record, score_key,
                             time.perf_counter() - self.t_epoch), flush=True)
        if not math.isfinite(mean_loss):  # the same number on every rank
            # epochs counted from 1, as the history and the epoch lines count them;
            # stacklevel: after_epoch, run_epochs, _fit, fit, MLP.fit, its caller
            warnings.warn(DivergedWarning(
                f"fit: the loss diverged ({mean_loss}) at epoch {i + 1} of this fit (the "
                f"model's epoch {epoch + 1}); training stopped, the parameters are not "
                f"finite: lower the learning rate (it was {lr_e:g})", i + 1, mean_loss),
                stacklevel=6)
            return True
        stop = False
        es = self.es
        if es is not None:
            v = hist["val_loss"][-1]
            # False for NaN: no improvement; with several ranks, rank 0's decision
            improved = runner.from_rank0(v < es["best"] - self.min_delta)
            if improved:
                es.update(best=v, wait=0, best_epoch=epoch, params=model.get_params())
            else:
                es["wait"] += 1
                stop = self.triggered = es["wait"] >= self.patience
            es["epoch"] = state.epoch
        for cb in self.callbacks:
            stop = bool(cb(model, epoch, hist)) or stop
        return runner.any(stop)  # any rank's callback stops every rank


def _early_stopping_run(state, early_stopping):
    """The early-stopping state this fit updates (None without early
    stopping): the model's, if its last epoch was part of it (a resumed
    run), else a new one."""
    es = state.early_stop
    if not early_stopping:
        state.early_stop = None  # this fit's epochs end any run
        return None
    if es is None or es["epoch"] != state.epoch:
        es = {"best": math.inf, "wait": 0, "best_epoch": -1, "params": None,
              "epoch": state.epoch}
    state.early_stop = es
    return es


def _plan_schedule(fn, state, lr_schedule, epochs, total_epochs):
    """(the schedule, its plan: (name, total epochs) for "step" and "cosine",
    else None). A named schedule's horizon is total_epochs; without it, this
    fit's epochs on a new model, or the plan the model trained with when
    this fit stays inside it; anything else is ambiguous, and refused."""
    named = isinstance(lr_schedule, str) and lr_schedule in _optim.HORIZON_SCHEDULES
    done = state.epoch
    if total_epochs is not None:
        if not named:
            raise ValueError(f"{fn}: total_epochs sizes the 'step' and 'cosine' schedules "
                             f"(their horizon); lr_schedule={lr_schedule!r} has none")
        if total_epochs < done + epochs:
            raise ValueError(f"{fn}: total_epochs={total_epochs} is less than the model's "
                             f"{done} epochs so far plus this fit's {epochs}")
        horizon = int(total_epochs)
    elif not named:
        horizon = None
    elif done == 0:
        horizon = int(epochs)
    else:
        plan = state.lr_schedule
        if plan is not None and plan[0] == lr_schedule and done + epochs <= plan[1]:
            horizon = plan[1]  # a resumed run continues its plan
        else:
            have = ("it trained without one" if plan is None else
                    f"its {plan[0]!r} plan ends at epoch {plan[1]}")
            raise ValueError(
                f"{fn}: lr_schedule={lr_schedule!r} needs its horizon: the model has "
                f"trained {done} epochs and {have}, so this fit's {epochs} epochs could "
                f"be the whole schedule or its end. Give total_epochs=, the epochs of "
                f"the whole plan from the model's first (e.g. {done + epochs} to end "
                f"it with this fit)")
    schedule = _optim.make_schedule(lr_schedule, horizon or 1)
    return schedule, (None if horizon is None else (lr_schedule, horizon))


def _check_finite_model(fn, model, state):
    """fit refuses a model whose parameters or optimizer state hold NaN or
    inf (a damaged checkpoint, a diverged run): every output and gradient
    would be NaN."""
    params = model.get_params() if model.device == "cuda" else state.params
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{fn}: the model's parameter {k!r} holds NaN or inf "
                             f"({int(v.size - np.isfinite(v).sum())} of {v.size} values); "
                             "it cannot train from there: set_params() new values, or "
                             "build or load another model")
    for k, group in state.buffers.items():
        for l, v in enumerate(group or ()):
            if not np.isfinite(v).all():
                raise ValueError(f"{fn}: the optimizer state {k}{l + 1} holds NaN or inf; "
                                 "it cannot train from there (a fit with another kind of "
                                 "optimizer starts a fresh state)")


def _check_training_weights(fn, dtype, w64, w, keep, check_sum=True, what="sample_weight"):
    """The weights as the steps will use them, after the hold-out split and
    the cast: w64 the rows' weights as given (sample_weight times
    class_weight, float64), w the same in the model's dtype, keep the
    training rows when early stopping holds some out. They must be finite
    in the model's dtype, and (check_sum; a data-parallel fit checks the sum
    over its ranks) sum to more than 0 over the training rows."""
    if w is None:
        return
    t = dtype.name
    if not np.isfinite(w).all():
        i = int(np.argmax(~np.isfinite(w)))
        raise ValueError(f"{fn}: the weight of row {i} is {w64[i]:.3g} (from {what}), past "
                         f"the range of {t}, the model's dtype (its "
                         f"largest number is {float(np.finfo(dtype).max):.3g}): scale "
                         "the weights down (only their ratios matter)")
    if not check_sum or np.sum(w if keep is None else w[keep], dtype=np.float64) > 0:
        return
    if keep is not None and np.sum(w, dtype=np.float64) > 0:
        raise ValueError(f"{fn}: the sample weights of the {len(keep)} training rows sum "
                         f"to 0: early stopping's held-out validation rows hold all the "
                         "weight (pass validation=, or weight the training rows)")
    if np.sum(w64 if keep is None else w64[keep]) > 0:
        raise ValueError(f"{fn}: the sample weights sum to 0 in {t}, the model's dtype "
                         f"(they are below its smallest positive number, "
                         f"{float(np.finfo(dtype).smallest_subnormal):.3g}): scale the "
                         "weights up (only their ratios matter)")
    raise ValueError(f"{fn}: the sample weights sum to 0")
