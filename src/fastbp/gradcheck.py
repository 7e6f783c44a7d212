"""fastbp.gradient_check: the model's backprop against central differences.

The check runs in float64 whatever the model's dtype (a float32 model through
a float64 copy), so that the difference quotient is not drowned by float32
rounding. A point whose
+-eps perturbation changes which ReLU units are active straddles a kink, where
the function is not differentiable and the quotient means nothing: such points
are skipped and counted, instead of raising false alarms.

What a result's error means: a finite number is the max relative error over
the entries compared; ``inf`` says that at least one entry had a gradient
(analytic or numeric) that is NaN or infinite, a failure whatever the other
entries give; ``nan`` says that nothing was compared (every entry drawn was
skipped at a kink, ``checked`` is 0). Neither passes a test ``err < tol``.
"""
import math
import numbers

import numpy as np


class GradCheckResult(dict):
    """{param name: max relative error}, plus

    worst:   {name: (index, analytic, numeric)} at the max error
    skipped: {name: number of points skipped at a ReLU kink}
    checked: {name: number of points compared}

    The error is inf where a gradient was NaN or infinite (``worst`` gives the
    first such entry and both values), and nan where no entry was compared
    (``checked`` 0; ``worst`` is then (None, nan, nan)).
    """

    def __init__(self):
        super().__init__()
        self.worst, self.skipped, self.checked = {}, {}, {}

    def __repr__(self):
        rows = ", ".join(f"{k}: {v:.2e}" for k, v in self.items())
        return f"GradCheckResult({rows})"


def relative_error(analytic, numeric, floor=1e-6):
    """|a - n| / max(|a|, |n|, floor): relative where the gradient is not tiny,
    absolute (over floor) where both are near zero."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)


def _positive_real(name, value):
    """value as a float, refusing anything but a finite real number > 0."""
    expected = f"gradient_check: {name} must be a finite real number > 0, got "
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{expected}{type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{expected}{value!r}")
    return value


def _max_points(value):
    expected = "gradient_check: max_points must be None or an integer >= 1, got "
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{expected}{type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{expected}{int(value)}")
    return int(value)


def gradient_check(model, x, t, eps=1e-3, weight_decay=0.0, max_points=None, seed=0,
                   floor=1e-6):
    """Compare model.gradient with central differences of model.loss.

    Parameters
    ----------
    model : MLP. A float64 model is checked itself (its parameters are
        perturbed and restored exactly); any other through model.astype(float64).
    x, t : a batch and its targets.
    eps : the step h of the central difference, a finite real > 0. The fourth-order
        stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h has truncation error
        O(h^4), so h can be large enough that rounding in the loss (~1e-16/h)
        stays far below the 1e-7 a correct backprop must reach.
    max_points : None (check every entry, the default) or an integer >= 1:
        check at most this many random entries per parameter.
    floor : a finite real > 0; gradients smaller than this are compared
        absolutely: a dead ReLU unit has an exact 0 that the stencil gives as
        ~1e-14.

    Returns a GradCheckResult {param name: max relative error}; its
    ``worst`` attribute gives the index and both values where that error is.
    An error is ``inf`` where a gradient (analytic or numeric) is NaN or
    infinite, and ``nan`` where every entry drawn straddled a ReLU kink and
    nothing was compared (``checked[name] == 0``): neither is a pass.

    Each entry is perturbed in place and restored bitwise in a ``finally``, so
    an exception (KeyboardInterrupt included) leaves the parameters as they were.
    """
    eps = _positive_real("eps", eps)
    floor = _positive_real("floor", floor)
    max_points = _max_points(max_points)
    # A float64 model is checked as it is (its own gradient(), its parameters
    # perturbed in place and restored); another is checked through a float64
    # copy of the same class.
    m64 = model if model.dtype == np.float64 else model.astype(np.float64)
    x = np.asarray(x, np.float64)
    if model.loss_name == "mse" or np.asarray(t).dtype.kind == "f":
        t = np.asarray(t, np.float64)
    relu = "relu" in model._layer_acts
    analytic = m64.gradient(x, t, weight_decay)
    rng = np.random.default_rng(seed)

    def pattern():
        return [h > 0 for h in m64._hidden(x)] if relu else None

    base = pattern()
    result = GradCheckResult()
    for name, p in m64.params.items():
        flat = p.reshape(-1)
        idx = np.arange(flat.size)
        if max_points is not None and flat.size > max_points:
            idx = rng.choice(flat.size, size=max_points, replace=False)
        worst = (-1.0, None, 0.0, 0.0)
        skipped = checked = 0
        for i in idx:
            orig = flat[i]
            f, kink = {}, False
            try:
                for k in (-2, -1, 1, 2):
                    flat[i] = orig + k * eps
                    f[k] = m64.loss(x, t, weight_decay)
                    if relu:
                        kink = kink or not all(np.array_equal(a, b)
                                               for a, b in zip(base, pattern()))
            finally:
                flat[i] = orig
            if kink:
                skipped += 1
                continue
            # differences first: where the loss is flat they are exactly 0
            with np.errstate(invalid="ignore", over="ignore"):   # inf - inf: nan, reported
                num = ((f[-2] - f[2]) + 8 * (f[1] - f[-1])) / (12 * eps)
            ana = analytic[name].reshape(-1)[i]
            checked += 1
            if np.isfinite(ana) and np.isfinite(num):
                err = float(relative_error(ana, num, floor))
            else:
                err = math.inf             # a NaN/inf gradient fails, whatever else
            if err > worst[0]:
                worst = (err, np.unravel_index(i, p.shape), float(ana), float(num))
        if checked:
            result[name] = worst[0]
            result.worst[name] = worst[1:]
        else:                              # nothing compared: no verdict
            result[name] = math.nan
            result.worst[name] = (None, math.nan, math.nan)
        result.skipped[name] = skipped
        result.checked[name] = checked
    return result
