"""fastbp.optim: the optimizers and learning-rate schedules a model trains with.

The optimizers carry PyTorch's names, arguments and update rules
(torch.optim.SGD, Adam, AdamW); their math runs inside the native training step
(csrc/optim.c), and the model that trains with one keeps its state (step count,
momentum, moments). Weight decay applies to the weights only, never the biases:
a step equals torch.optim with two parameter groups, the weights with the decay
and the biases without.

    model.train_step(x, t, optimizer=fastbp.optim.Adam(1e-3))
    model.fit(X, y, optimizer=fastbp.optim.SGD(0.1, momentum=0.9, nesterov=True),
              lr_schedule=fastbp.optim.CosineAnnealingLR(T_max=30))

The schedules set the learning rate once per epoch of ``fit``, from the epoch
number (counted over the model's whole life, so a resumed fit continues its
schedule) and the history so far.
"""
import math
import numbers

from . import ops as _ops

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "ConstantLR", "StepLR", "CosineAnnealingLR",
           "InverseScalingLR", "ReduceLROnPlateau", "LambdaLR", "make_schedule"]


def _real(owner, name, v, lo=None, hi=None, lo_open=False, hi_open=False):
    # a wrong type is a TypeError, a wrong value a ValueError, as torch.optim's
    # comparisons give them
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be a finite real number, got {v!r}")
    v = float(v)
    bad = ((lo is not None and (v <= lo if lo_open else v < lo)) or
           (hi is not None and (v >= hi if hi_open else v > hi)))
    if bad:
        lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi}"
        raise ValueError(f"{owner}: {name} must be {lo_s}{name}{hi_s}, got {v}")
    return v


class Optimizer:
    """The settings of an optimizer (its state lives in the model it trains)."""

    name = None

    @property
    def state(self):
        """The kinds of per-parameter state its step updates with these settings
        (fastbp.ops.STATE_BUFFERS: "v" momentum or first moment, "s" second moment)."""
        return _ops.OPTIMIZERS[self.name].state(self)

    def options(self):
        """The keyword arguments of fastbp._core.StepOptions for this optimizer."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD.

    g = grad + weight_decay p (weights only); with momentum, buf = g on the
    first step, else buf = momentum buf + (1 - dampening) g; g = g + momentum
    buf with Nesterov, else buf; p -= lr g.
    """

    name = "SGD"

    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr = _real("SGD", "lr", lr, lo=0.0)
        self.momentum = _real("SGD", "momentum", momentum, lo=0.0)
        self.dampening = _real("SGD", "dampening", dampening)
        if not isinstance(nesterov, (bool, int)):
            raise TypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        self.weight_decay = _real("SGD", "weight_decay", weight_decay, lo=0.0)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")

    def options(self):
        return dict(optimizer="SGD", lr=self.lr, weight_decay=self.weight_decay,
                    momentum=self.momentum, dampening=self.dampening, nesterov=self.nesterov)


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (no amsgrad): g = grad + weight_decay p (weights
    only; coupled L2); m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2;
    p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)."""

    name = "Adam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=None):
        owner = type(self).__name__
        self.lr = _real(owner, "lr", lr, lo=0.0)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"{owner}: betas must be a pair, got {betas!r}") from None
        self.betas = (_real(owner, "betas[0]", b1, lo=0.0, hi=1.0, hi_open=True),
                      _real(owner, "betas[1]", b2, lo=0.0, hi=1.0, hi_open=True))
        self.eps = _real(owner, "eps", eps, lo=0.0)
        wd = _ops.OPTIMIZERS[self.name].defaults["weight_decay"] if weight_decay is None \
            else weight_decay
        self.weight_decay = _real(owner, "weight_decay", wd, lo=0.0)

    def options(self):
        return dict(optimizer=self.name, lr=self.lr, weight_decay=self.weight_decay,
                    betas=self.betas, eps=self.eps)


class AdamW(Adam):
    """AdamW, as torch.optim.AdamW: Adam with decoupled weight decay, p *= 1 -
    lr weight_decay (weights only) before the Adam step, which has no L2 term."""

    name = "AdamW"


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop: g = grad + weight_decay p (weights only;
    coupled L2); s = alpha s + (1 - alpha) g^2; centered: a = lerp(a, g, 1 - alpha)
    and avg = sqrt(s - a^2) + eps, else avg = sqrt(s) + eps; with momentum
    buf = momentum buf + g / avg and p -= lr buf, else p -= lr g / avg."""

    name = "RMSprop"

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.lr = _real("RMSprop", "lr", lr, lo=0.0)
        self.alpha = _real("RMSprop", "alpha", alpha, lo=0.0)
        self.eps = _real("RMSprop", "eps", eps, lo=0.0)
        self.weight_decay = _real("RMSprop", "weight_decay", weight_decay, lo=0.0)
        self.momentum = _real("RMSprop", "momentum", momentum, lo=0.0)
        if not isinstance(centered, (bool, int)):
            raise TypeError(f"RMSprop: centered must be a bool, got {centered!r}")
        self.centered = bool(centered)

    def options(self):
        # the step keeps RMSprop's alpha in beta2 (csrc/fbp_api.h)
        return dict(optimizer="RMSprop", lr=self.lr, weight_decay=self.weight_decay,
                    momentum=self.momentum, betas=(0.0, self.alpha), eps=self.eps,
                    centered=self.centered)


# ---- learning-rate schedules ----------------------------------------------------------

class LRSchedule:
    """lr(epoch, base_lr, history) -> the learning rate of epoch (from 0, over the
    model's life); history: {"loss": [...], "val_loss": [...], "had_validation":
    [...]}, one value per epoch the model has finished (val_loss NaN where an
    epoch had no validation set, or where its validation loss was NaN;
    had_validation tells the two apart)."""

    #: whether lr depends on the epoch and base_lr alone, and takes its extremes
    #: over a run of epochs at the run's ends (or is bounded by base_lr): fit
    #: then checks the rates of its first and last epoch before training
    history_free = False

    def lr(self, epoch, base_lr, history):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ConstantLR(LRSchedule):
    """The base learning rate throughout."""

    history_free = True

    def lr(self, epoch, base_lr, history):
        return base_lr


class StepLR(LRSchedule):
    """base_lr * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR.

    gamma > 1 is allowed: where gamma ** k leaves the float range the rate is
    computed from logarithms (inf where it is past the float range itself, which
    fit refuses before its first epoch)."""

    history_free = True

    def __init__(self, step_size, gamma=0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) \
                or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an integer >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _real("StepLR", "gamma", gamma, lo=0.0)

    def lr(self, epoch, base_lr, history):
        k = epoch // self.step_size
        try:
            return base_lr * self.gamma ** k  # exact where it can be: torch's number
        except OverflowError:  # gamma > 1 and gamma ** k > 1.8e308; base_lr * it may be less
            return _exp_log(base_lr, k * math.log(self.gamma))


class CosineAnnealingLR(LRSchedule):
    """eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, the closed
    form of torch.optim.lr_scheduler.CosineAnnealingLR (epochs past T_max keep
    going round the cosine, as PyTorch's do)."""

    history_free = True

    def __init__(self, T_max, eta_min=0.0):
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Integral) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be an integer >= 1, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min, lo=0.0)

    def lr(self, epoch, base_lr, history):
        return self.eta_min + (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * epoch / self.T_max)) / 2


class InverseScalingLR(LRSchedule):
    """base_lr / (epoch + 1) ** power_t (scikit-learn's "invscaling", by epochs)."""

    history_free = True

    def __init__(self, power_t=0.5):
        self.power_t = _real("InverseScalingLR", "power_t", power_t, lo=0.0)

    def lr(self, epoch, base_lr, history):
        try:
            return base_lr / (epoch + 1) ** self.power_t
        except OverflowError:  # (epoch + 1) ** power_t > 1.8e308
            return _exp_log(base_lr, -self.power_t * math.log(epoch + 1))


class ReduceLROnPlateau(LRSchedule):
    """Multiply the rate by factor when the monitored loss ("val_loss" if the
    history has it, else "loss") has not improved by more than threshold
    (relative) for patience epochs, as torch.optim.lr_scheduler.ReduceLROnPlateau
    in mode "min" with threshold_mode "rel"; never below min_lr."""

    def __init__(self, factor=0.1, patience=10, threshold=1e-4, min_lr=0.0, cooldown=0):
        self.factor = _real("ReduceLROnPlateau", "factor", factor, lo=0.0, hi=1.0,
                            lo_open=True, hi_open=True)
        for name, v in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an integer >= 0, got {v!r}")
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.threshold = _real("ReduceLROnPlateau", "threshold", threshold, lo=0.0)
        self.min_lr = _real("ReduceLROnPlateau", "min_lr", min_lr, lo=0.0)

    def lr(self, epoch, base_lr, history):
        """Replays the rule over the model's losses so far (saved with it), so the
        rate is a function of that history alone and a resumed fit continues it.
        It watches val_loss when every epoch so far had a validation set, else
        loss. A NaN loss is no improvement (a bad epoch), as in PyTorch."""
        val = history.get("val_loss", [])
        had = history.get("had_validation")
        if had is None:  # a history without the flags: NaN meant no validation set
            had = [v == v for v in val]
        key = "val_loss" if val and len(had) == len(val) and all(had) else "loss"
        losses = history.get(key, [])
        lr, best, bad, cool = base_lr, math.inf, 0, 0
        for v in losses:
            if v < best * (1 - self.threshold):
                best, bad = v, 0
            else:
                bad += 1
            if cool > 0:
                cool -= 1
                bad = 0
            if bad > self.patience:
                lr, bad, cool = max(lr * self.factor, self.min_lr), 0, self.cooldown
        return lr


class LambdaLR(LRSchedule):
    """fn(epoch) -> the learning rate itself (not a factor)."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"LambdaLR: fn must be callable, got {fn!r}")
        self.fn = fn

    def lr(self, epoch, base_lr, history):
        return self.fn(epoch)


def _exp_log(base_lr, log_factor):
    """base_lr * exp(log_factor) without overflow in between: inf where the
    result itself is past the float range, 0.0 where it is below it."""
    if base_lr == 0.0:
        return 0.0
    try:
        return math.exp(math.log(base_lr) + log_factor)
    except OverflowError:
        return math.inf


#: the named schedules whose shape depends on a horizon (the epochs of the plan)
HORIZON_SCHEDULES = ("step", "cosine")


def check_schedule(fn, schedule, base_lr, first, last):
    """A ValueError, before any epoch is trained, if a history-free schedule
    gives a rate that is not finite and >= 0 at an epoch in [first, last] (its
    extremes are at the ends: LRSchedule.history_free)."""
    if not schedule.history_free:
        return
    for e in (first, last):
        lr = schedule.lr(e, base_lr, {})
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"{fn}: {schedule!r} gives lr {lr!r} at epoch {e} from lr "
                             f"{base_lr!r}; the rate must be finite and >= 0 at every epoch of "
                             f"the fit ({first} to {last}); no epoch was trained")


def make_schedule(schedule, epochs):
    """A schedule from what fit(lr_schedule=...) accepts: None or "constant", "step"
    (x0.1 every third of the epochs), "cosine" (T_max = epochs), "invscaling",
    "plateau", a callable epoch -> lr, or an LRSchedule. epochs: the horizon of
    "step" and "cosine" (fit's total_epochs), counted from the model's first
    epoch."""
    if schedule is None or schedule == "constant":
        return ConstantLR()
    if isinstance(schedule, LRSchedule):
        return schedule
    if isinstance(schedule, str):
        named = {"step": lambda: StepLR(max(1, epochs // 3)),
                 "cosine": lambda: CosineAnnealingLR(max(1, epochs)),
                 "invscaling": InverseScalingLR, "plateau": ReduceLROnPlateau}
        if schedule not in named:
            raise ValueError(f"lr_schedule: unknown schedule {schedule!r}; expected one of "
                             f"'constant', {', '.join(repr(k) for k in named)}, a callable or "
                             "a fastbp.optim schedule")
        return named[schedule]()
    if callable(schedule):
        return LambdaLR(schedule)
    raise TypeError(f"lr_schedule: expected a name, a callable or a fastbp.optim schedule, "
                    f"got {type(schedule).__name__}")
