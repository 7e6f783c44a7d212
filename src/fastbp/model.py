"""fastbp.MLP: a multilayer perceptron whose training step is one native call.

The model owns its parameters (``model.params``: W1, b1, W2, b2, ... with W
shaped (in, out)) and a workspace (layer outputs, gradients, the C pointer
table) allocated once per batch capacity, so that after the first step a
``train_step`` allocates nothing. All math runs in fastbp._core (csrc/step.c),
or on a GPU with ``device="cuda"`` (fastbp.cuda.CudaMLP, csrc/cuda/step.cu).
"""
import numbers
import operator

import numpy as np

from . import _core

_HIDDEN = ("relu", "sigmoid", "tanh", "identity")
_LOSSES = tuple(_core.LOSSES)
_DEVICES = ("cpu", "cuda")


def _check_sizes(sizes):
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"MLP: sizes must be a sequence of integers, got {sizes!r}") from None
    try:
        if any(isinstance(s, (bool, np.bool_)) for s in sizes):
            raise TypeError
        sizes = [operator.index(s) for s in sizes]
    except TypeError:
        raise TypeError(f"MLP: sizes must be a sequence of integers, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"MLP: sizes needs at least an input and an output width, got {sizes}")
    if min(sizes) < 1:
        raise ValueError(f"MLP: every width in sizes must be >= 1, got {sizes}")
    return sizes


def _check_activations(activation, n_hidden):
    """One activation name per hidden layer, from one name or a list of them."""
    if activation is None or isinstance(activation, str):
        if activation not in _HIDDEN:
            raise ValueError(f"MLP: unknown activation {activation!r}; expected one of {_HIDDEN}")
        return [activation] * n_hidden
    names = activation
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"MLP: activation must be a name or a list of names, got "
                        f"{activation!r}") from None
    if len(names) != n_hidden:
        raise ValueError(f"MLP: got {len(names)} activations for {n_hidden} hidden layers")
    for a in names:
        if a not in _HIDDEN:
            raise ValueError(f"MLP: unknown activation {a!r}; expected one of {_HIDDEN}")
    return names


class _CPU:
    """The CPU engine: a workspace over the model's own parameter arrays."""

    def __init__(self, model):
        self.model, self.ws = model, None

    def workspace(self, N, momentum=False):
        """The workspace for batches of N rows: reused while it fits and still
        points at the current parameter arrays; rebuilt (once) otherwise."""
        m, ws = self.model, self.ws
        W, b = m._param_lists()
        if ws is not None and N <= ws.cap and (ws.has_momentum or not momentum):
            if all(a is c for a, c in zip(ws.W, W)) and all(a is c for a, c in zip(ws.b, b)):
                return ws
        vW = vb = None
        if momentum or (ws is not None and ws.has_momentum):
            if m._velocity is None or any(v.shape != w.shape for v, w in zip(m._velocity[0], W)):
                m._velocity = ([np.zeros_like(w) for w in W], [np.zeros_like(v) for v in b])
            vW, vb = m._velocity
        cap = max(N, ws.cap if ws is not None else 0)
        self.ws = _core.MLPWorkspace(W, b, m._layer_acts, m.loss_name, cap, vW, vb)
        return self.ws

    def step(self, x, t, mode, N, lr=0.0, weight_decay=0.0, clip_norm=0.0, momentum=0.0,
             count_correct=False):
        ws = self.workspace(N, momentum != 0.0)
        return _core.mlp_step(ws, x, t, mode, lr, weight_decay, clip_norm, momentum,
                              count_correct)

    def gradient(self):
        ws = self.ws
        return ([g.copy() for g in ws.dW], [g.copy() for g in ws.db])

    def output(self, N):
        return self.ws.h[-1][:N].copy()


class _CUDA:
    """The GPU engine: a fastbp.cuda.CudaMLP holds the parameters."""

    def __init__(self, model):
        from . import cuda

        if not cuda.is_available():
            raise RuntimeError("MLP(device='cuda'): fastbp.cuda is not available (a build "
                               "with FASTBP_CUDA=1 and a CUDA device are needed; docs/cuda.md)")
        self.cuda, self.model = cuda, model
        W, b = model._param_lists()
        self.gpu = cuda.CudaMLP(W, b, model._layer_acts, model.loss_name, cap=1)

    def step(self, x, t, mode, N, lr=0.0, weight_decay=0.0, clip_norm=0.0, momentum=0.0,
             count_correct=False):
        if N > self.gpu.cap:
            self.gpu = self.gpu.grow(N)
        return self.gpu.step(x, t, mode, lr, weight_decay, clip_norm, momentum, count_correct)

    def gradient(self):
        return [g.get() for g in self.gpu.dW], [g.get() for g in self.gpu.db]

    def output(self, N):
        return self.gpu.output(N).get()


class MLP:
    """Fully connected network: Dense -> act -> ... -> Dense -> loss.

    Parameters
    ----------
    sizes : widths, e.g. [64, 128, 10] for 64 inputs, one hidden layer of 128
        and 10 outputs.
    activation : "relu", "sigmoid", "tanh" or "identity" for the hidden layers,
        or a list with one per hidden layer. The output layer is affine: logits
        for classification, values for regression.
    loss : "softmax_cross_entropy" (targets: integer labels or class
        probabilities) or "mse" (targets: values).
    dtype : np.float32 or np.float64; inputs to train_step must match it.
    seed : seed of the initial weights.
    init : "he" (default when the first hidden layer is relu), "xavier"
        (otherwise), or a float standard deviation. Weights are normal, biases 0.
    device : "cpu" (default) or "cuda": the parameters and the step live on the
        GPU (fastbp.cuda.CudaMLP); ``params`` are then device arrays
        (fastbp.cuda.DeviceBuffer) and ``get_params()`` copies them to NumPy.
    """

    def __init__(self, sizes, activation="relu", loss="softmax_cross_entropy",
                 dtype=np.float32, seed=0, init=None, device="cpu"):
        self.sizes = _check_sizes(sizes)
        acts = _check_activations(activation, len(self.sizes) - 2)
        if loss not in _LOSSES:
            raise ValueError(f"MLP: unknown loss {loss!r}; expected one of {_LOSSES}")
        if not isinstance(dtype, (type, np.dtype, str)):
            raise TypeError(f"MLP: dtype must be float32 or float64, got {dtype!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"MLP: dtype must be float32 or float64, got {dtype}")
        if device not in _DEVICES:
            raise ValueError(f"MLP: device must be one of {_DEVICES}, got {device!r}")
        self.activation = activation if isinstance(activation, str) else list(activation)
        self.loss_name, self.dtype, self.device = loss, dtype, device
        self._layer_acts = acts + ["identity"]
        if init is None:
            init = "he" if (acts[:1] or ["relu"])[0] == "relu" else "xavier"
        rng = np.random.default_rng(seed)
        params = {}
        for l, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            if init == "he":
                std = np.sqrt(2.0 / fan_in)
            elif init == "xavier":
                std = np.sqrt(2.0 / (fan_in + fan_out))
            elif isinstance(init, numbers.Real) and not isinstance(init, bool) and init >= 0:
                std = float(init)
            else:
                raise ValueError(f"MLP: init must be 'he', 'xavier' or a std >= 0, got {init!r}")
            params[f"W{l}"] = (np.zeros((fan_in, fan_out), dtype) if std == 0 else
                               (rng.standard_normal((fan_in, fan_out)) * std).astype(dtype))
            params[f"b{l}"] = np.zeros(fan_out, dtype)
        self._params = params
        self._velocity = None
        self._engine = _CUDA(self) if device == "cuda" else _CPU(self)

    # ---- parameters ----------------------------------------------------------------
    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def params(self):
        """{"W1": ..., "b1": ..., ...}: the live parameters (NumPy arrays, or on
        device="cuda" the device arrays)."""
        if self.device == "cuda":
            g = self._engine.gpu
            return {k: v for l in range(self.n_layers)
                    for k, v in ((f"W{l + 1}", g.W[l]), (f"b{l + 1}", g.b[l]))}
        return self._params

    def get_params(self):
        """The parameters as new NumPy arrays."""
        if self.device == "cuda":
            return {k: v.get() for k, v in self.params.items()}
        return {k: v.copy() for k, v in self._params.items()}

    def set_params(self, params):
        """Copy params (a dict like ``params``, NumPy arrays) into the model."""
        for k, v in params.items():
            if k not in self._params:
                raise KeyError(f"MLP.set_params: unknown parameter {k!r}")
            if self.device == "cuda":
                self.params[k].set(np.asarray(v, self.dtype))
            else:
                self._params[k][...] = v

    def _param_lists(self):
        L, p = self.n_layers, self._params
        return [p[f"W{l}"] for l in range(1, L + 1)], [p[f"b{l}"] for l in range(1, L + 1)]

    @staticmethod
    def _batch(x):
        """Rows of a batch, to size the workspace (mlp_step checks the rest)."""
        if isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__"):
            shape = getattr(x, "shape", ())
            return max(int(shape[0]), 1) if len(shape) >= 1 else 1
        try:
            return max(len(x), 1)
        except TypeError:
            return 1

    # ---- the native calls ----------------------------------------------------------------
    def train_step(self, x, t, lr, weight_decay=0.0, clip_norm=None, momentum=0.0):
        """One SGD step on the batch (x, t); returns the loss before the update.

        The loss includes 0.5 * weight_decay * sum ||W||^2 (biases excluded).
        Forward, backward, optional global-norm clipping of the gradient
        (weight decay included) and the update are one call into C.
        momentum: v = momentum * v + g; p -= lr * v.
        """
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"train_step: clip_norm must be > 0 or None, got {clip_norm}")
        return self._engine.step(x, t, _core.STEP_TRAIN, self._batch(x), lr, weight_decay,
                                 clip_norm or 0.0, momentum)[0]

    def loss(self, x, t, weight_decay=0.0):
        """Mean loss on (x, t), plus 0.5 * weight_decay * sum ||W||^2.
        x is converted to the model's dtype."""
        x = self._input(x)
        return self._engine.step(x, t, _core.STEP_LOSS, self._batch(x), 0.0, weight_decay)[0]

    def gradient(self, x, t, weight_decay=0.0):
        """Gradient of loss(x, t, weight_decay) as a dict keyed like params."""
        x = self._input(x)
        self._engine.step(x, t, _core.STEP_GRAD, self._batch(x), 0.0, weight_decay)
        dW, db = self._engine.gradient()
        grads = {}
        for l in range(self.n_layers):
            grads[f"W{l + 1}"], grads[f"b{l + 1}"] = dW[l], db[l]
        return grads

    def grad_norms(self, x, t, weight_decay=0.0):
        """Per-parameter gradient 2-norms on (x, t): the diagnostic for vanishing
        (deep sigmoid nets) and exploding gradients, first layer first."""
        return {k: float(np.linalg.norm(g)) for k, g in self.gradient(x, t, weight_decay).items()}

    def _input(self, x):
        """x in the model's dtype: the one conversion outside the hot path
        (train_step is strict and raises instead)."""
        if self.device == "cuda" and hasattr(x, "__cuda_array_interface__"):
            return x
        return np.asarray(x, dtype=self.dtype)

    def predict(self, x):
        """The network output before the loss: logits, or regression values.
        x is converted to the model's dtype."""
        x = self._input(x)
        if self.device == "cuda":
            N = self._batch(x)
            self._engine.step(x, None, _core.STEP_FORWARD, N)
            return self._engine.output(N)
        h = x
        W, b = self._param_lists()
        for l in range(self.n_layers):
            h = _core.dense_forward(h, W[l], b[l], self._layer_acts[l])
        return h

    def _hidden(self, x):
        """Hidden-layer outputs (list of arrays) for x."""
        hs, h = [], self._input(x)
        W, b = self._param_lists()
        for l in range(self.n_layers - 1):
            h = _core.dense_forward(h, W[l], b[l], self._layer_acts[l])
            hs.append(h)
        return hs

    def score(self, x, t):
        """Accuracy for classification (integer labels), R^2 for regression."""
        out = self.predict(x)
        t = np.asarray(t)
        if self.loss_name == "softmax_cross_entropy":
            labels = t if t.ndim == 1 else t.argmax(axis=1)
            return float(np.mean(out.argmax(axis=1) == labels))
        t = t.reshape(out.shape)
        ss_res = float(np.sum((t - out) ** 2))
        ss_tot = float(np.sum((t - t.mean(axis=0)) ** 2))
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0

    # ---- training loop ------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, lr=0.1, weight_decay=0.0, momentum=0.0,
            clip_norm=None, shuffle=True, seed=0, validation=None, progress=True,
            log_grad_norms=False):
        """Minibatch SGD over (X, y); returns the history dict.

        X is converted once to the model's dtype. Each epoch visits the rows in a
        new permutation (if shuffle), in batches of batch_size, the last partial
        batch included; on the CPU one native call per epoch gathers each batch
        into the workspace and runs its training step. history: "loss" (mean
        over the epoch's batches, each measured before its update), for
        classification "accuracy" (the same running measure, from the argmax of
        each batch's logits), with validation=(Xv, yv) "val_loss" and
        "val_accuracy" (or "val_r2"), with log_grad_norms "grad_norms"
        (per-parameter norms on the epoch's last batch).
        """
        from tqdm.auto import tqdm

        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"fit: X must have shape (n, {self.sizes[0]}), got {X.shape}")
        y = self._targets("fit", y, X.shape[0])
        if validation is not None:
            Xv = np.ascontiguousarray(validation[0], dtype=self.dtype)
            yv = self._targets("fit (validation)", validation[1], Xv.shape[0])
        n = X.shape[0]
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"fit: {name} must be an integer >= 1, got {v!r}")
        if n == 0:
            raise ValueError("fit: X has no rows")
        B = min(int(batch_size), n)
        classify = self.loss_name == "softmax_cross_entropy" and y.ndim == 1
        rng = np.random.default_rng(seed)
        hist = {"loss": []}
        if classify:
            hist["accuracy"] = []
        if validation is not None:
            hist["val_loss"] = []
            hist["val_accuracy" if self.loss_name == "softmax_cross_entropy" else "val_r2"] = []
        if log_grad_norms:
            hist["grad_norms"] = []
        clip = clip_norm or 0.0
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"fit: clip_norm must be > 0 or None, got {clip_norm}")
        bar = tqdm(range(epochs), disable=not progress, unit="epoch", leave=False)
        for _ in bar:
            order = rng.permutation(n) if shuffle else np.arange(n)
            mean_loss, correct = self._epoch(X, y, order, B, lr, weight_decay, clip, momentum,
                                             classify)
            hist["loss"].append(mean_loss)
            post = {"loss": f"{mean_loss:.4f}"}
            if classify:
                hist["accuracy"].append(correct / n)
                post["acc"] = f"{correct / n:.4f}"
            if validation is not None:
                hist["val_loss"].append(self.loss(Xv, yv, weight_decay))
                key = "val_accuracy" if self.loss_name == "softmax_cross_entropy" else "val_r2"
                hist[key].append(self.score(Xv, yv))
                post[key] = f"{hist[key][-1]:.4f}"
            if log_grad_norms:
                last = order[(n - 1) // B * B:]
                hist["grad_norms"].append(self.grad_norms(X[last], y[last], weight_decay))
            bar.set_postfix(post, refresh=False)
        bar.close()
        return hist

    def _epoch(self, X, y, order, B, lr, weight_decay, clip, momentum, classify):
        """One epoch: (mean loss over the rows, rows classified right)."""
        if self.device == "cpu":
            ws = self._engine.workspace(B, momentum != 0.0)  # the params may have been replaced
            # the whole epoch, batch gathering included, is one native call
            return _core.mlp_epoch(ws, X, y, order, B, lr, weight_decay, clip, momentum, classify)
        total, correct = 0.0, 0
        for s in range(0, X.shape[0], B):
            idx = order[s:s + B]
            loss, _, hits = self._engine.step(X[idx], y[idx], _core.STEP_TRAIN, len(idx), lr,
                                              weight_decay, clip, momentum, classify)
            total += loss * len(idx)
            correct += hits
        return total / X.shape[0], correct

    def _targets(self, fn, y, n):
        y = np.asarray(y)
        if y.shape[:1] != (n,):
            raise ValueError(f"{fn}: X has {n} rows but y has {y.shape[0] if y.ndim else 0}")
        C = self.sizes[-1]
        if self.loss_name == "softmax_cross_entropy" and y.ndim == 1:
            if y.dtype.kind not in "iu":
                raise TypeError(f"{fn}: class labels must be integers, got dtype {y.dtype}")
            if n and (y.min() < 0 or y.max() >= C):
                raise ValueError(f"{fn}: labels must be in [0, {C}), got values in "
                                 f"[{y.min()}, {y.max()}]")
            return np.ascontiguousarray(y, dtype=np.int64)
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if y.ndim == 1 and C == 1:
            y = y.reshape(n, 1)
        if y.shape != (n, C):
            raise ValueError(f"{fn}: targets must have shape ({n}, {C}), got {y.shape}")
        return y

    def astype(self, dtype):
        """A copy of this model (same class, on the CPU) with parameters cast to dtype."""
        new = type(self)(self.sizes, self.activation, self.loss_name, dtype=dtype)
        for k, v in self.get_params().items():
            new._params[k][...] = v
        return new

    # ---- persistence -------------------------------------------------------------------
    def save(self, path):
        """Save sizes, activation, loss, dtype and parameters to an .npz file.
        Returns the file's path: path itself, or path + ".npz" as NumPy names it;
        load() reads what save() wrote for the same path."""
        from ._checkpoint import npz_path

        path = npz_path(path)
        a = self.activation
        acts = np.str_(a) if isinstance(a, str) else np.asarray(a, dtype=np.str_)
        np.savez(path, sizes=np.asarray(self.sizes), activation=acts,
                 loss=np.str_(self.loss_name), dtype=np.str_(self.dtype.name), **self.get_params())
        return path

    @classmethod
    def load(cls, path):
        """Load a model written by save(path) (path with or without ".npz")."""
        from ._checkpoint import read_model

        return read_model(cls, path)

    def __repr__(self):
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name}{dev})")
