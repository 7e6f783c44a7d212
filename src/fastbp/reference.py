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
* Activation backward functions take what fastbp.ops names as the activation's
  backward input, as the compiled kernels do: the *output* ``y`` of the forward
  pass for relu, sigmoid and tanh, its *input* ``x`` for those whose derivative
  needs it.
"""

import math

import numpy as np

from . import ops as _ops

__all__ = [
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "identity_forward", "identity_backward",
    "gelu_forward", "gelu_backward", "silu_forward", "silu_backward",
    "ACTIVATIONS",
    "dense_forward", "dense_backward", "to_bfloat16", "matmul",
    "one_hot", "softmax_cross_entropy", "mse_loss", "binary_cross_entropy", "poisson_loss",
    "sgd_update", "clip_by_value", "clip_by_global_norm", "clip_grad_norm",
    "dropout_keep", "epoch_order", "optimizer_step",
    "mlp_forward", "mlp_loss_and_grads", "mlp_train_step", "data_parallel_train_step",
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


def gelu_forward(x, approximate="none"):
    """GELU, as torch.nn.functional.gelu: y = x Phi(x) = x (1 + erf(x / sqrt(2))) / 2,
    or approximate="tanh": x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2."""
    x = np.asarray(x)
    v = x.astype(np.float64)  # in float64 for float32 too, as the kernel (fbp_act.h)
    if approximate == "tanh":
        y = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v * v * v)))
    else:
        y = v * 0.5 * (1 + _erf(v * math.sqrt(0.5)))
    return y.astype(x.dtype)


def gelu_backward(dy, x, approximate="none"):
    """GELU gradient from the forward INPUT x: dx = dy (Phi(x) + x phi(x)), or
    the tanh form's derivative."""
    x = np.asarray(x)
    v = x.astype(np.float64)
    if approximate == "tanh":
        b = math.sqrt(2 / math.pi)
        th = np.tanh(b * (v + 0.044715 * v * v * v))
        d = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * (b * (1 + 3 * 0.044715 * v * v))
    else:
        d = 0.5 * (1 + _erf(v * math.sqrt(0.5))) + v * np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
    return np.asarray(dy) * d.astype(x.dtype)


def silu_forward(x):
    """SiLU: y = x * sigmoid(x) (the stable sigmoid above)."""
    x = np.asarray(x)
    return x * sigmoid_forward(x)


def silu_backward(dy, x):
    """SiLU gradient from the forward INPUT x: dx = dy s (1 + x (1 - s))."""
    x = np.asarray(x)
    s = sigmoid_forward(x)
    return np.asarray(dy) * (s * (1 + x * (1 - s)))


def _erf(x):
    """erf elementwise in x's dtype (math.erf, which NumPy lacks)."""
    return np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x, np.float64))


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
    "gelu": (gelu_forward, gelu_backward),
    "gelu_tanh": (lambda x: gelu_forward(x, "tanh"), lambda dy, x: gelu_backward(dy, x, "tanh")),
    "silu": (silu_forward, silu_backward),
}


def _activation(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}"
        ) from None


# ---------------------------------------------------------------------------
# Matrix products: float32, or bfloat16 operands with float32 accumulation
# ---------------------------------------------------------------------------

def to_bfloat16(x):
    """float32 x rounded to the nearest bfloat16 (ties to even), held in float32:
    the top 16 bits of the rounded float32. NaN stays NaN; overflow gives inf."""
    u = np.asarray(x, np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, u | np.uint32(0x00400000), rounded).astype(np.uint32).view(np.float32)


def matmul(a, b, matmul_precision="float32"):
    """a @ b; with matmul_precision "bfloat16" (float32 operands), a and b are
    first rounded to bfloat16 (to_bfloat16) and the product accumulates in
    float32 (PyTorch's set_float32_matmul_precision("medium") contract)."""
    if matmul_precision == "bfloat16":
        return to_bfloat16(a) @ to_bfloat16(b)
    if matmul_precision != "float32":
        raise ValueError(f"matmul_precision must be 'float32' or 'bfloat16', "
                         f"got {matmul_precision!r}")
    return np.asarray(a) @ np.asarray(b)


# ---------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------

def dense_forward(x, W, b, activation=None, matmul_precision="float32"):
    """Dense layer: y = act(x @ W + b).

    x (N, I), W (I, O), b (O,) or None  ->  y (N, O). The product in
    matmul_precision (matmul).
    """
    forward, _ = _activation(activation)
    z = matmul(x, W, matmul_precision)
    if b is not None:
        z = z + np.asarray(b)
    return forward(z)


def dense_backward(dy, x, W, y, activation=None, matmul_precision="float32"):
    """Dense layer gradients, given the activation's backward input y: the forward
    output, or the pre-activation z = x @ W + b (fastbp.ops backward_input).

    dy (N, O), x (N, I), W (I, O), y (N, O)  ->  (dx (N, I), dW (I, O), db (O,))

        dz = act_backward(dy, y)
        dx = dz @ W.T
        dW = x.T @ dz
        db = sum_n dz[n]

    with the products in matmul_precision (matmul).
    """
    _, backward = _activation(activation)
    x = np.asarray(x)
    W = np.asarray(W)
    dz = backward(np.asarray(dy), np.asarray(y))
    dx = matmul(dz, W.T, matmul_precision)
    dW = matmul(x.T, dz, matmul_precision)
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


def binary_cross_entropy(logits, target):
    """Sigmoid + binary cross-entropy, summed over outputs, averaged over rows.

    logits, target same shape (N, C), target in [0, 1]  ->  (loss: float,
    dlogits like logits)

        loss    = sum_nc [max(z, 0) - t z + log(1 + exp(-|z|))] / N   (nan if N == 0)
        dlogits = (sigmoid(z) - t) / N

    max(z, 0) - t z + log1p(exp(-|z|)) is softplus(z) - t z written so that no term
    overflows: finite for large |z|. The loss is accumulated in float64.
    """
    z = np.asarray(logits)
    t = np.asarray(target).astype(z.dtype, copy=False)
    if z.shape != t.shape:
        raise ValueError(f"shape mismatch: logits {z.shape}, target {t.shape}")
    N = z.shape[0]
    if N == 0:
        return float("nan"), np.zeros_like(z)
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    loss = np.sum(np.maximum(z64, 0) - t64 * z64 + np.log1p(np.exp(-np.abs(z64)))) / N
    return float(loss), (sigmoid_forward(z) - t) / z.dtype.type(N)


def poisson_loss(logmean, target):
    """Exp + half Poisson deviance (log link), summed over outputs, averaged
    over rows: scikit-learn's MLPRegressor(loss="poisson") loss.

    logmean, target same shape (N, C), target >= 0  ->  (loss: float, dlogmean
    like logmean)

        loss     = sum_nc [exp(z) - t z + xlogy(t, t) - t] / N   (nan if N == 0)
        dlogmean = (exp(z) - t) / N

    which is sum_nc [xlogy(t, t / mu) - t + mu] / N with mu = exp(z), as
    sklearn.neural_network._base.poisson_loss writes it. Accumulated in float64.
    """
    z = np.asarray(logmean)
    t = np.asarray(target).astype(z.dtype, copy=False)
    if z.shape != t.shape:
        raise ValueError(f"shape mismatch: logmean {z.shape}, target {t.shape}")
    N = z.shape[0]
    if N == 0:
        return float("nan"), np.zeros_like(z)
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    mu = np.exp(z64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tlogt = np.where(t64 > 0, t64 * np.log(np.where(t64 > 0, t64, 1.0)), 0.0)
    loss = np.sum(mu - t64 * z64 + tlogt - t64) / N
    return float(loss), ((mu - t64) / N).astype(z.dtype)


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


def global_norm(grads):
    """sqrt(sum over all arrays of sum(g**2)), accumulated in float64; a Python
    float (inf if the sum overflows, nan if any element is nan)."""
    sumsq = 0.0
    with np.errstate(over="ignore"):   # overflow just means total = inf
        for g in grads:
            g64 = np.asarray(g, dtype=np.float64)
            sumsq += float(np.sum(g64 * g64))
    return math.sqrt(sumsq) if not math.isnan(sumsq) else float("nan")


def clip_by_global_norm(grads, max_norm):
    """Rescale the list of arrays grads so their joint L2 norm is <= max_norm.

    total = global_norm(grads). If total is finite and > max_norm, every array
    is scaled in place by max_norm / total.  If total is inf or nan the arrays
    are left untouched. Returns total as a Python float (the norm *before*
    clipping).
    """
    total = global_norm(grads)
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
# Dropout masks and epoch orders (twin of csrc/fbp_rng.h, csrc/dropout.c)
# ---------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ORDER_TAG = np.uint64(0xD1B54A32D192ED03)


def _mix64(z):
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * np.uint64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> np.uint64(27))
        z = z * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def epoch_order(n, seed, epoch, rank=0):
    """The row order (n,) int64 of epoch ``epoch`` on rank ``rank`` of a fit:
    Fisher-Yates from the back, position i swapping with j = floor(r_i (i + 1)
    / 2^64), r_i = mix(key + i golden), key = mix(mix(mix(seed + tag) + epoch
    golden) + rank golden). A pure function of (seed, epoch, rank)."""
    with np.errstate(over="ignore"):
        k = _mix64(np.array(seed, np.uint64) + _ORDER_TAG)
        k = _mix64(k + np.array(epoch, np.uint64) * _GOLDEN)
        k = _mix64(k + np.array(rank, np.uint64) * _GOLDEN)
        r = _mix64(k + np.arange(n, dtype=np.uint64) * _GOLDEN)
        # floor(r m / 2^64) from 32-bit halves (m = i + 1 < 2^32): exact
        m = np.arange(1, n + 1, dtype=np.uint64)
        lo32 = np.uint64(0xFFFFFFFF)
        j = ((r >> np.uint64(32)) * m + (((r & lo32) * m) >> np.uint64(32))) >> np.uint64(32)
    out = np.arange(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        out[i], out[j[i]] = out[j[i]], out[i]
    return out


def dropout_keep(seed, step, layer, row0, N, O, p):
    """The keep mask (N, O) of uint8 of layer ``layer`` (0-based) in training step
    ``step``: element (r, c) is kept iff 24 bits of splitmix64(key + ((row0 + r) O
    + c) golden) are >= round(p 2^24), key = mix(mix(mix(seed + golden) + step
    golden) + layer golden). A pure function of (seed, step, layer, row, column)."""
    with np.errstate(over="ignore"):
        k = _mix64(np.array(seed, np.uint64) + _GOLDEN)
        k = _mix64(k + np.array(step, np.uint64) * _GOLDEN)
        k = _mix64(k + np.array(layer, np.uint64) * _GOLDEN)
        rows = np.arange(row0, row0 + N, dtype=np.uint64)[:, None]
        idx = rows * np.uint64(O) + np.arange(O, dtype=np.uint64)[None, :]
        bits = _mix64(k + idx * _GOLDEN) >> np.uint64(40)
    thresh = min(int(p * 16777216.0 + 0.5), 16777216)
    return (bits >= np.uint64(thresh)).astype(np.uint8)


# ---------------------------------------------------------------------------
# Optimizers (twins of csrc/optim.c, PyTorch's rules)
# ---------------------------------------------------------------------------

def _lerp(a, b, w):
    """torch.lerp's two forms, chosen by the weight."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def optimizer_step(p, g, state, opt, t, weight_decay):
    """One tensor's step, in place, as torch.optim does it.

    p, g: the parameter and its loss gradient; state: {"v": ..., "s": ...} arrays
    updated in place (zeros before the first step); opt: {"name": "SGD" | "Adam"
    | "AdamW", "lr", and the optimizer's other arguments as in fastbp.optim};
    t: the optimizer's step (1 on the first; None for SGD continues a momentum
    buffer whatever the step, as with zeros at the start); weight_decay: this tensor's (0 for
    biases). Scalars are formed in float64 and cast to the tensor's dtype, as
    PyTorch's Python code forms them."""
    T = p.dtype.type
    lr = opt["lr"]
    if opt["name"] == "sklearn_sgd":  # sklearn's SGDOptimizer: v = mu v - lr g; p += v
        if weight_decay != 0:
            g = g + T(weight_decay) * p
        mu = opt.get("momentum", 0.0)
        if mu == 0:
            p += T(-lr) * g
            return p
        v = state["v"]
        v[...] = T(mu) * v - T(lr) * g
        p += T(mu) * v - T(lr) * g if opt.get("nesterov", False) else v
        return p
    if opt["name"] == "sklearn_adam":  # sklearn's AdamOptimizer: eps added to sqrt(v)
        if t is None or t < 1:
            raise ValueError(f"optimizer_step: sklearn_adam needs its step t >= 1, got {t!r}")
        if weight_decay != 0:
            g = g + T(weight_decay) * p
        b1, b2 = opt.get("betas", (0.9, 0.999))
        m, v = state["v"], state["s"]
        m[...] = T(b1) * m + T(1 - b1) * g
        v[...] = T(b2) * v + T(1 - b2) * (g * g)
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p += T(-lr_t) * m / (np.sqrt(v) + T(opt.get("eps", 1e-8)))
        return p
    if opt["name"] == "RMSprop":  # torch.optim.RMSprop, its order of operations
        if weight_decay != 0:
            g = g + T(weight_decay) * p
        alpha, eps = opt.get("alpha", 0.99), opt.get("eps", 1e-8)
        s = state["s"]
        s[...] = s * T(alpha) + g * g * T(1 - alpha)
        if opt.get("centered", False):
            a = state["g"]
            a[...] = _lerp(a, g, T(1 - alpha))
            avg = np.sqrt(s - a * a) + T(eps)
        else:
            avg = np.sqrt(s) + T(eps)
        if opt.get("momentum", 0.0) != 0:
            v = state["v"]
            v[...] = v * T(opt["momentum"]) + g / avg
            p += v * T(-lr)
        else:
            p += T(-lr) * (g / avg)
        return p
    if opt["name"] == "SGD":
        if weight_decay != 0:
            g = g + T(weight_decay) * p
        mu, damp = opt.get("momentum", 0.0), opt.get("dampening", 0.0)
        if mu != 0:
            v = state["v"]
            if t == 1:  # torch's first step: the buffer is g, undamped
                v[...] = g
            else:
                v[...] = v * T(mu) + g * T(1 - damp)
            g = g + v * T(mu) if opt.get("nesterov", False) else v.copy()
        p += g * T(-lr)
        return p
    if t is None or t < 1:
        raise ValueError(f"optimizer_step: {opt['name']} needs its step t >= 1, got {t!r}")
    b1, b2 = opt.get("betas", (0.9, 0.999))
    eps = opt.get("eps", 1e-8)
    if opt["name"] == "AdamW":
        p *= T(1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + T(weight_decay) * p
    m, v = state["v"], state["s"]
    m[...] = _lerp(m, g, T(1 - b1))
    v[...] = v * T(b2) + T(1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    denom = np.sqrt(v) / T(bc2 ** 0.5) + T(eps)
    p += T(-(lr / bc1)) * m / denom
    return p


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


def mlp_forward(params, x, activation, L=None, dropout=None, drop_key=None,
                matmul_precision="float32"):
    """Forward pass of an MLP: list of layer outputs [h1, ..., hL].

    params: dict W1, b1, ..., WL, bL with Wl (in, out).  Hidden layers apply
    ``activation`` (one name, or one per hidden layer); the last layer is affine
    (logits or regression values). In a training step with dropout (one rate per
    hidden layer) and drop_key = (seed, step, row0), each hidden layer's output is
    followed by h * keep / (1 - p) (dropout_keep), which the next layer reads;
    the list holds the outputs before dropout, and mlp_forward.masks the factors.
    matmul_precision: of every product (matmul).
    """
    if L is None:
        L = _n_layers(params)
    hs, h, factors, pre = [], np.asarray(x), [], []
    for l in range(1, L + 1):
        z = dense_forward(h, params[f"W{l}"], params[f"b{l}"], None, matmul_precision)
        h = _activation(_hidden_act(activation, l, L))[0](z)
        hs.append(h)
        pre.append(z)
        p = dropout[l - 1] if dropout is not None and l < L else 0.0
        if drop_key is not None and p > 0:
            seed, step, row0 = drop_key
            keep = dropout_keep(seed, step, l - 1, row0, h.shape[0], h.shape[1], p)
            factor = (h.dtype.type(keep), h.dtype.type(1.0 / (1.0 - p)))
            h = h * factor[0] * factor[1]
        else:
            factor = None
        factors.append(factor)
    mlp_forward.masks = factors
    mlp_forward.pre = pre  # the pre-activations, some activations' backward input
    return hs


def _log_loss_clipped(loss, out, t, eps, sample_weight=None, norm=None):
    """The log-loss as scikit-learn reports it (its probabilities clipped to
    [eps, 1 - eps]): each row's softmax-xent (integer labels) or each output's
    binary xent, exact, then clipped to [-log(1 - eps), -log(eps)]; sum of w_r
    loss_r / W as _loss. The twin of fbp_step_opts.loss_eps."""
    z = np.asarray(out, np.float64)
    if loss == "softmax_cross_entropy":
        labels = np.asarray(t)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("loss_eps: softmax_cross_entropy needs integer labels")
        m = z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
        terms = (lse - z[np.arange(len(z)), labels])[:, None]
    elif loss == "binary_cross_entropy":
        tt = np.asarray(t, np.float64).reshape(z.shape)
        terms = np.maximum(z, 0) - tt * z + np.log1p(np.exp(-np.abs(z)))
    else:
        raise ValueError(f"loss_eps applies to the log-losses, not {loss!r}")
    rows = np.clip(terms, -math.log1p(-eps), -math.log(eps)).sum(axis=1)
    w = np.ones(len(z)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    W = float(norm) if norm is not None else float(w.sum())
    return float(np.sum(w * rows) / W)


def _loss(loss, out, t, sample_weight=None, norm=None):
    """(sum of w_r loss_r / W, d/dout) for the batch's outputs; W = norm, or the sum
    of the weights (the rows without); (0, zeros) when the weights sum to 0."""
    if loss == "softmax_cross_entropy":
        fn = softmax_cross_entropy
    elif loss == "mse":
        t = np.asarray(t)
        if t.ndim == 1 and out.shape[1] == 1:
            t = t.reshape(-1, 1)
        fn = mse_loss
    elif loss == "binary_cross_entropy":
        t = np.asarray(t)
        if t.ndim == 1 and out.shape[1] == 1:
            t = t.reshape(-1, 1)
        fn = binary_cross_entropy
    elif loss == "poisson":
        t = np.asarray(t)
        if t.ndim == 1 and out.shape[1] == 1:
            t = t.reshape(-1, 1)
        fn = poisson_loss
    else:
        raise ValueError(f"unknown loss {loss!r}")
    N = out.shape[0]
    if sample_weight is None and norm is None:
        return fn(out, t)
    # a weighted mean: each row's loss and gradient from the unweighted mean of
    # that row alone, times w_r / W
    w = np.ones(N) if sample_weight is None else np.asarray(sample_weight, np.float64)
    W = float(norm) if norm is not None else float(w.sum())
    if W == 0:  # rows that all weigh 0 add no loss and no gradient (not 0 / 0)
        return 0.0, np.zeros_like(out)
    value, grad = 0.0, np.empty_like(out)
    for r in range(N):
        lr_, gr = fn(out[r:r + 1], t[r:r + 1])  # gr = grad of the row's loss
        value += w[r] * lr_
        grad[r] = gr[0] * out.dtype.type(w[r]) / out.dtype.type(W)
    return value / W, grad


def _alpha_decay(weight_decay, alpha, N, sample_weight, norm):
    """weight_decay plus scikit-learn's alpha over the batch's total weight (the
    twin of fbp_step_opts.alpha)."""
    if not alpha:
        return weight_decay
    W = float(norm) if norm is not None else (
        float(N) if sample_weight is None else float(np.sum(np.asarray(sample_weight, np.float64))))
    return weight_decay + alpha / W


def mlp_loss_and_grads(params, x, t, activation, loss, weight_decay=0.0, sample_weight=None,
                       dropout=None, drop_key=None, norm=None, *, alpha=0.0, loss_eps=0.0,
                       matmul_precision="float32"):
    """Loss and gradients of an MLP on the batch (x, t).

    loss: "softmax_cross_entropy" (t integer labels (N,) or probabilities
    (N, C)), "mse" (t (N, C), or (N,) when C == 1), "binary_cross_entropy"
    (t in [0, 1], (N, C)) or "poisson" (t >= 0, the outputs the log-means). With sample_weight (N,), the loss is sum w_r l_r /
    sum w_r (or / norm, the total weight of a larger batch); 0, with a zero
    gradient, when the weights sum to 0. With dropout and
    drop_key, the training-step network (mlp_forward).
        total = loss + 0.5 * weight_decay * sum_l ||Wl||^2   (no biases)
        grads[Wl] = dtotal/dWl (includes weight_decay * Wl), grads[bl] likewise.
    alpha: scikit-learn's L2 term, adding alpha / (the batch's total weight) to
    weight_decay; loss_eps > 0: the loss reported as scikit-learn's clipped
    log-loss (_log_loss_clipped), the gradients unchanged. matmul_precision: of
    every product (matmul); the rest stays in the parameters' dtype.
    Returns (total: float, grads dict keyed like params).
    """
    L = _n_layers(params)
    x = np.asarray(x)
    weight_decay = _alpha_decay(weight_decay, alpha, x.shape[0], sample_weight, norm)
    hs = mlp_forward(params, x, activation, L, dropout, drop_key, matmul_precision)
    factors, pre = mlp_forward.masks, mlp_forward.pre
    value, dh = _loss(loss, hs[-1], t, sample_weight, norm)
    if loss_eps:
        value = _log_loss_clipped(loss, hs[-1], t, loss_eps, sample_weight, norm)
    if weight_decay:
        value += 0.5 * weight_decay * sum(
            float(np.sum(np.asarray(params[f"W{l}"], np.float64) ** 2)) for l in range(1, L + 1))
    grads = {}
    for l in range(L, 0, -1):
        if l > 1:
            f = factors[l - 2]
            inp = hs[l - 2] if f is None else hs[l - 2] * f[0] * f[1]
        else:
            inp = x
        if factors[l - 1] is not None:  # back through this layer's dropout first
            dh = dh * factors[l - 1][0] * factors[l - 1][1]
        W = params[f"W{l}"]
        act = _hidden_act(activation, l, L)
        a = _ops.ACTIVATIONS["identity" if act is None else act]
        bin_ = pre[l - 1] if a.backward_input == "input" else hs[l - 1]
        dh, dW, db = dense_backward(dh, inp, W, bin_, act, matmul_precision)
        if weight_decay:
            dW = dW + W.dtype.type(weight_decay) * W
        grads[f"W{l}"], grads[f"b{l}"] = dW, db
    return float(value), {k: grads[k] for k in params}


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s rule, in place: the global norm (float64),
    then every gradient times max_norm / (norm + 1e-6) if that is < 1; a non-finite
    norm leaves them alone. Returns the norm."""
    total = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads))
    coef = max_norm / (total + 1e-6)
    if math.isfinite(total) and coef < 1:
        for g in grads:
            g *= g.dtype.type(coef)
    return total


def mlp_train_step(params, x, t, lr, activation, loss, weight_decay=0.0, clip_norm=None,
                   momentum=0.0, velocity=None, *, optimizer=None, state=None, step=None,
                   clip_value=None, sample_weight=None, dropout=None, drop_key=None,
                   alpha=0.0, loss_eps=0.0, matmul_precision="float32"):
    """One training step of an MLP, in place; returns the loss before the update
    (with 0.5 weight_decay sum ||W||^2 for coupled decay: SGD, Adam).

    The loss gradient g (weight decay not included) is clipped by value (each
    element to [-clip_value, clip_value]), then by global norm (clip_grad_norm),
    then each parameter takes one optimizer_step with the weights' decay on the
    weights and none on the biases. optimizer: a dict as optimizer_step takes, or
    None for SGD(lr, momentum, weight_decay); state: {param name: {"v", "s"}}
    updated in place (velocity: the SGD momentum buffers, keyed like params, the
    older spelling); step: the optimizer's step t (1 on its first; needed by
    Adam and AdamW, and by SGD with dampening). alpha, loss_eps: as
    mlp_loss_and_grads (scikit-learn's L2 term and reported log-loss);
    matmul_precision: of every product (matmul).
    """
    if optimizer is None:
        optimizer = {"name": "SGD", "lr": lr, "momentum": momentum,
                     "weight_decay": weight_decay}
    wd = _alpha_decay(optimizer.get("weight_decay", 0.0), alpha, np.shape(x)[0],
                      sample_weight, None)
    needs = _ops.OPTIMIZERS[optimizer["name"]].state(optimizer)
    if state is None:
        if needs and velocity is None:
            raise ValueError("mlp_train_step: momentum != 0 needs a velocity dict (zeros at "
                             "the start), kept from step to step; one made here would be lost")
        state = {k: {"v": v} for k, v in (velocity or {}).items()}
    value, grads = mlp_loss_and_grads(params, x, t, activation, loss, 0.0, sample_weight,
                                      dropout, drop_key, loss_eps=loss_eps,
                                      matmul_precision=matmul_precision)
    return value + _apply_update(params, grads, optimizer, state, step, clip_value, clip_norm,
                                 wd)


def _apply_update(params, grads, optimizer, state, step, clip_value, clip_norm, wd=None):
    """The update of a training step from the loss gradients, in place; returns the
    coupled decay term 0.5 wd sum ||W||^2 of the parameters before it (0 for AdamW).
    wd: the weights' decay (default: the optimizer's weight_decay)."""
    if wd is None:
        wd = optimizer.get("weight_decay", 0.0)
    value = 0.0
    if wd and optimizer["name"] != "AdamW":
        L = _n_layers(params)
        value = 0.5 * wd * sum(float(np.sum(np.asarray(params[f"W{l}"], np.float64) ** 2))
                               for l in range(1, L + 1))
    keys = list(params)
    if clip_value is not None:
        clip_by_value([grads[k] for k in keys], clip_value)
    if clip_norm is not None:
        clip_grad_norm([grads[k] for k in keys], clip_norm)
    for k in keys:
        optimizer_step(params[k], grads[k], state.get(k), optimizer, step,
                       wd if k.startswith("W") else 0.0)
    return value


def data_parallel_train_step(params, shards, activation, loss, *, optimizer, state=None,
                             step=None, clip_value=None, clip_norm=None, dropout=None,
                             drop_key=None):
    """One data-parallel training step over P ranks' batches, in place (twin of
    fastbp.distributed's step: mode BACKWARD on each rank, one Allreduce, mode
    UPDATE); returns the loss before the update, as mlp_train_step does.

    shards: [(x_p, t_p, sample_weight_p or None), ...] in rank order. Each rank's
    loss gradient is normalized by the total weight W of all the shards (rows, or
    the sum of the weights) and its dropout masks start at its rows' offset in
    the concatenated batch (drop_key (seed, step, row0) of that batch), so the
    sum over the ranks is the loss gradient of the concatenation; the update then
    runs once on the sum. Equal to mlp_train_step on the concatenated batch up to
    the order of the sums.
    """
    W = sum(float(x.shape[0]) if w is None else float(np.sum(np.asarray(w, np.float64)))
            for x, _, w in shards)
    value, total, row0 = 0.0, None, 0 if drop_key is None else drop_key[2]
    for x, t, w in shards:
        key = None if drop_key is None else (drop_key[0], drop_key[1], row0)
        part, grads = mlp_loss_and_grads(params, x, t, activation, loss, 0.0, w, dropout, key,
                                         norm=W)
        value += part
        total = grads if total is None else {k: total[k] + grads[k] for k in total}
        row0 += x.shape[0]
    return value + _apply_update(params, total, optimizer, state or {}, step, clip_value,
                                 clip_norm)
