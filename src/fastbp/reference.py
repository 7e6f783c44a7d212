"""Pure-NumPy reference implementations of every fastbp kernel.

This module is the ground truth used by the test suite and the benchmarks.
It is deliberately independent of the compiled code: each function is the
textbook formula written out with plain NumPy, favouring readability over
speed.  When a compiled kernel and this module disagree, this module is the
specification.

Conventions
-----------
* Arrays are row-major and batch-major:
  ``x`` has shape ``(N, I)``, ``W`` has shape ``(I, O)``, ``b`` has shape
  ``(O,)``.  Dimension names: ``N`` batch, ``I`` inputs, ``O`` outputs,
  ``C`` classes.
* float32 and float64 are supported.  Computation happens in the input
  dtype and array outputs keep that dtype (float32 is never upcast).
  Scalar losses are returned as Python ``float``.
* Activation backward functions take the *output* ``y`` of the forward pass
  (not its input), as the compiled kernels do.
"""

import math

import numpy as np

__all__ = [
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "identity_forward", "identity_backward",
    "ACTIVATIONS",
    "dense_forward", "dense_backward",
    "one_hot", "softmax_cross_entropy", "mse_loss",
    "sgd_update", "clip_by_value", "clip_by_global_norm",
    "numerical_gradient",
]


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

def relu_forward(x):
    """ReLU: y = max(x, 0), elementwise; any shape. NaN propagates."""
    x = np.asarray(x)
    # np.where rather than np.maximum(x, 0) spelled out: NaN < 0 is False,
    # so NaN is kept as NaN.
    return np.where(x < 0, x.dtype.type(0), x)


def relu_backward(dy, y):
    """ReLU gradient: dx = dy * (y > 0); dy, y same shape. Gradient is 0 at 0."""
    # Written as a multiply so that NaN in dy propagates.
    return np.asarray(dy) * (np.asarray(y) > 0)


def sigmoid_forward(x):
    """Logistic sigmoid: y = 1 / (1 + exp(-x)), elementwise; any shape.

    Uses the stable split form so exp never overflows:
    x >= 0: 1 / (1 + exp(-x));  x < 0: exp(x) / (1 + exp(x)).
    """
    x = np.asarray(x)
    e = np.exp(-np.abs(x))          # in (0, 1], never overflows
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(dy, y):
    """Sigmoid gradient: dx = dy * y * (1 - y); dy, y same shape."""
    y = np.asarray(y)
    return np.asarray(dy) * (y * (1 - y))


def tanh_forward(x):
    """Hyperbolic tangent: y = tanh(x), elementwise; any shape."""
    return np.tanh(np.asarray(x))


def tanh_backward(dy, y):
    """Tanh gradient: dx = dy * (1 - y**2); dy, y same shape."""
    y = np.asarray(y)
    return np.asarray(dy) * (1 - y * y)


def identity_forward(x):
    """Identity activation: y = x."""
    return np.asarray(x)


def identity_backward(dy, y):
    """Identity gradient: dx = dy."""
    return np.asarray(dy)


#: activation name -> (forward(x), backward(dy, y)); None is the identity.
ACTIVATIONS = {
    None: (identity_forward, identity_backward),
    "identity": (identity_forward, identity_backward),
    "relu": (relu_forward, relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
}


def _activation(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}"
        ) from None


# ---------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------

def dense_forward(x, W, b, activation=None):
    """Dense layer: y = act(x @ W + b).

    x (N, I), W (I, O), b (O,) or None  ->  y (N, O).
    """
    forward, _ = _activation(activation)
    z = np.asarray(x) @ np.asarray(W)
    if b is not None:
        z = z + np.asarray(b)
    return forward(z)


def dense_backward(dy, x, W, y, activation=None):
    """Dense layer gradients, given the forward output y.

    dy (N, O), x (N, I), W (I, O), y (N, O)  ->  (dx (N, I), dW (I, O), db (O,))

        dz = act_backward(dy, y)
        dx = dz @ W.T
        dW = x.T @ dz
        db = sum_n dz[n]
    """
    _, backward = _activation(activation)
    x = np.asarray(x)
    W = np.asarray(W)
    dz = backward(np.asarray(dy), np.asarray(y))
    dx = dz @ W.T
    dW = x.T @ dz
    db = dz.sum(axis=0)
    return dx, dW, db


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

def one_hot(labels, C, dtype=np.float64):
    """One-hot encoding: labels (N,) integers in [0, C)  ->  (N, C) of dtype."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels must lie in [0, {C})")
    out = np.zeros((labels.shape[0], C), dtype=dtype)
    out[np.arange(labels.shape[0]), labels.astype(np.intp)] = 1
    return out


def softmax_cross_entropy(logits, target):
    """Mean softmax cross-entropy and its gradient.

    logits (N, C); target either integer labels (N,) (any integer dtype) or
    class probabilities (N, C).  Returns (loss: float, dlogits (N, C)).

        lse_n   = log sum_c exp(z_nc)             (computed after subtracting
                                                   the row max: exact, no eps)
        loss_n  = lse_n - z[n, label_n]           (labels)
        loss_n  = sum_c t_nc * (lse_n - z_nc)     (probabilities; terms with
                                                   t_nc == 0 are skipped)
        loss    = mean_n loss_n                   (nan if N == 0)
        dlogits = (softmax(z) - t) / N
    """
    z = np.asarray(logits)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {z.shape}")
    N, C = z.shape
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        if target.shape != (N,):
            raise ValueError(f"labels must be ({N},), got shape {target.shape}")
        t = one_hot(target, C, z.dtype)
    else:
        if target.shape != (N, C):
            raise ValueError(f"target must be ({N}, {C}), got {target.shape}")
        t = target.astype(z.dtype, copy=False)

    if N == 0:
        return float("nan"), np.zeros_like(z)

    with np.errstate(over="ignore"):  # z - max below -3.4e38 is -inf: exp gives 0
        shifted = z - z.max(axis=1, keepdims=True)    # row max becomes 0
    expz = np.exp(shifted)
    sumexp = expz.sum(axis=1, keepdims=True)          # in [1, C]

    # The loss is a Python float, accumulated in float64 as the kernels do: a
    # float32 batch whose loss exceeds float32's range gives that loss, not inf.
    z64 = z.astype(np.float64)
    s64 = z64 - z64.max(axis=1, keepdims=True)
    lse_minus_z = np.log(np.exp(s64).sum(axis=1, keepdims=True)) - s64   # lse_n - z_nc
    # Skip terms with t == 0 so that t * inf (from z = -inf) never gives nan.
    terms = t.astype(np.float64) * np.where(t != 0, lse_minus_z, 0.0)
    loss_n = terms.sum(axis=1)
    loss = loss_n.sum() / N

    softmax = expz / sumexp
    dlogits = (softmax - t) / z.dtype.type(N)
    return float(loss), dlogits


def mse_loss(pred, target):
    """Mean squared error (halved), averaged over the batch.

    pred, target same shape (N, ...)  ->  (loss: float, dpred like pred)

        loss  = 0.5 * sum((y - t)**2) / N     (nan if N == 0)
        dpred = (y - t) / N
    """
    y = np.asarray(pred)
    t = np.asarray(target).astype(y.dtype, copy=False)
    if y.shape != t.shape:
        raise ValueError(f"shape mismatch: pred {y.shape}, target {t.shape}")
    N = y.shape[0]
    if N == 0:
        return float("nan"), np.zeros_like(y)
    diff = y - t
    n = y.dtype.type(N)
    # accumulated in float64, as the kernels do (see softmax_cross_entropy)
    d64 = diff.astype(np.float64)
    loss = 0.5 * np.sum(d64 * d64) / N
    return float(loss), diff / n


# ---------------------------------------------------------------------------
# Optimizer and gradient clipping
# ---------------------------------------------------------------------------

def sgd_update(param, grad, lr, weight_decay=0.0):
    """SGD step, in place: param -= lr * (grad + weight_decay * param).

    param, grad same shape.  Returns param (the same object).
    """
    dtype = param.dtype.type           # compute in param's dtype
    param -= dtype(lr) * (grad + dtype(weight_decay) * param)
    return param


def clip_by_value(grads, limit):
    """Clip every array in the list grads to [-limit, limit], in place.

    NaN stays NaN.  Returns None.
    """
    for g in grads:
        np.clip(g, -limit, limit, out=g)
    return None


def clip_by_global_norm(grads, max_norm):
    """Rescale the list of arrays grads so their joint L2 norm is <= max_norm.

    total = sqrt(sum over all arrays of sum(g**2)), accumulated in float64.
    If total is finite and > max_norm, every array is scaled in place by
    max_norm / total.  If total is inf or nan the arrays are left untouched.
    Returns total as a Python float (the norm *before* clipping).
    """
    sumsq = 0.0
    with np.errstate(over="ignore"):   # overflow just means total = inf
        for g in grads:
            g64 = np.asarray(g, dtype=np.float64)
            sumsq += float(np.sum(g64 * g64))
    total = math.sqrt(sumsq) if not math.isnan(sumsq) else float("nan")
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / total
        for g in grads:
            g *= scale
    return total


# ---------------------------------------------------------------------------
# Numerical gradient (for tests)
# ---------------------------------------------------------------------------

def numerical_gradient(f, x, eps=None):
    """Central-difference gradient of the scalar function f() w.r.t. array x.

    f takes no arguments and reads x; x is perturbed in place one element at a
    time and restored afterwards.  Returns a float64 array of x's shape:

        g[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)

    Default eps: 1e-6 for float64, 1e-2 otherwise (float32).  The actual
    perturbation stored in x (after rounding to x's dtype) is used as h.
    """
    if eps is None:
        eps = 1e-6 if x.dtype == np.float64 else 1e-2
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx].copy()
        x[idx] = old + eps
        x_plus = float(x[idx])
        f_plus = float(f())
        x[idx] = old - eps
        x_minus = float(x[idx])
        f_minus = float(f())
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (x_plus - x_minus)
    return grad


# ---------------------------------------------------------------------------
# Whole-network training step (twin of csrc/step.c and fastbp.MLP)
# ---------------------------------------------------------------------------

def _n_layers(params):
    L = 0
    while f"W{L + 1}" in params:
        L += 1
    return L


def _hidden_act(activation, l, L):
    """Layer l's (1-based) activation: ``activation`` is one name for every hidden
    layer or a list with one per hidden layer; the last layer is affine."""
    if l == L:
        return None
    return activation[l - 1] if isinstance(activation, (list, tuple)) else activation


def mlp_forward(params, x, activation, L=None):
    """Forward pass of an MLP: list of layer outputs [h1, ..., hL].

    params: dict W1, b1, ..., WL, bL with Wl (in, out).  Hidden layers apply
    ``activation`` (one name, or one per hidden layer); the last layer is affine
    (logits or regression values).
    """
    if L is None:
        L = _n_layers(params)
    hs, h = [], np.asarray(x)
    for l in range(1, L + 1):
        h = dense_forward(h, params[f"W{l}"], params[f"b{l}"], _hidden_act(activation, l, L))
        hs.append(h)
    return hs


def mlp_loss_and_grads(params, x, t, activation, loss, weight_decay=0.0):
    """Loss and gradients of an MLP on the batch (x, t).

    loss: "softmax_cross_entropy" (t integer labels (N,) or probabilities
    (N, C)) or "mse" (t (N, C), or (N,) when C == 1).
        total = mean loss + 0.5 * weight_decay * sum_l ||Wl||^2   (no biases)
        grads[Wl] = dtotal/dWl (includes weight_decay * Wl), grads[bl] likewise.
    Returns (total: float, grads dict keyed like params).
    """
    L = _n_layers(params)
    x = np.asarray(x)
    hs = mlp_forward(params, x, activation, L)
    out = hs[-1]
    if loss == "softmax_cross_entropy":
        value, dh = softmax_cross_entropy(out, t)
    elif loss == "mse":
        t = np.asarray(t)
        if t.ndim == 1 and out.shape[1] == 1:
            t = t.reshape(-1, 1)
        value, dh = mse_loss(out, t)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    if weight_decay:
        value += 0.5 * weight_decay * sum(
            float(np.sum(np.asarray(params[f"W{l}"], np.float64) ** 2)) for l in range(1, L + 1))
    grads = {}
    for l in range(L, 0, -1):
        inp = hs[l - 2] if l > 1 else x
        W = params[f"W{l}"]
        dh, dW, db = dense_backward(dh, inp, W, hs[l - 1], _hidden_act(activation, l, L))
        if weight_decay:
            dW = dW + W.dtype.type(weight_decay) * W
        grads[f"W{l}"], grads[f"b{l}"] = dW, db
    return float(value), {k: grads[k] for k in params}


def mlp_train_step(params, x, t, lr, activation, loss, weight_decay=0.0, clip_norm=None,
                   momentum=0.0, velocity=None):
    """One SGD step of an MLP, in place; returns the loss before the update.

    g = gradient (weight decay included); if clip_norm, the whole list of
    gradients is rescaled to global norm <= clip_norm; then either
        v = momentum * v + g;  p -= lr * v     (momentum != 0; velocity is a
                                                dict keyed like params, zeros
                                                when None, updated in place)
    or  p -= lr * g.
    """
    if momentum != 0.0 and velocity is None:
        raise ValueError("mlp_train_step: momentum != 0 needs a velocity dict (zeros at the "
                         "start), kept from step to step; one made here would be lost")
    value, grads = mlp_loss_and_grads(params, x, t, activation, loss, weight_decay)
    keys = list(params)
    if clip_norm is not None:
        clip_by_global_norm([grads[k] for k in keys], clip_norm)
    if momentum != 0.0:
        for k in keys:
            v = velocity[k]
            v *= v.dtype.type(momentum)
            v += grads[k]
            sgd_update(params[k], v, lr)
    else:
        for k in keys:
            sgd_update(params[k], grads[k], lr)
    return value
