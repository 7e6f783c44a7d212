"""fastbp.MLP: a multilayer perceptron whose training step is one native call.

The model owns its parameters (``model.params``: W1, b1, W2, b2, ... with W
shaped (in, out)) and a workspace (layer outputs, gradients, the C pointer
table) allocated once per batch capacity, so that after the first step a
``train_step`` allocates nothing. All math runs in fastbp._core / csrc/step.c.
"""
import numbers
import operator

import numpy as np

from . import _core

_ACTIVATIONS = ("relu", "sigmoid", "tanh")
_LOSSES = ("softmax_cross_entropy", "mse")


def _check_sizes(sizes):
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


class MLP:
    """Fully connected network: Dense -> act -> ... -> Dense -> loss.

    Parameters
    ----------
    sizes : widths, e.g. [64, 128, 10] for 64 inputs, one hidden layer of 128
        and 10 outputs.
    activation : "relu", "sigmoid" or "tanh" for the hidden layers (the output
        layer is affine: logits for classification, values for regression).
    loss : "softmax_cross_entropy" (targets: integer labels or class
        probabilities) or "mse" (targets: values).
    dtype : np.float32 or np.float64; inputs to train_step must match it.
    seed : seed of the initial weights.
    init : "he" (default for relu), "xavier" (default for sigmoid/tanh), or a
        float standard deviation. Weights are normal, biases start at 0.
    """

    def __init__(self, sizes, activation="relu", loss="softmax_cross_entropy",
                 dtype=np.float32, seed=0, init=None):
        self.sizes = _check_sizes(sizes)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; expected one of {_ACTIVATIONS}")
        if loss not in _LOSSES:
            raise ValueError(f"MLP: unknown loss {loss!r}; expected one of {_LOSSES}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"MLP: dtype must be float32 or float64, got {dtype}")
        self.activation, self.loss_name, self.dtype = activation, loss, dtype
        if init is None:
            init = "he" if activation == "relu" else "xavier"
        rng = np.random.default_rng(seed)
        self.params = {}
        for l, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            if init == "he":
                std = np.sqrt(2.0 / fan_in)
            elif init == "xavier":
                std = np.sqrt(2.0 / (fan_in + fan_out))
            elif isinstance(init, numbers.Real) and not isinstance(init, bool) and init >= 0:
                std = float(init)
            else:
                raise ValueError(f"MLP: init must be 'he', 'xavier' or a std >= 0, got {init!r}")
            self.params[f"W{l}"] = (rng.standard_normal((fan_in, fan_out)) * std).astype(dtype)
            self.params[f"b{l}"] = np.zeros(fan_out, dtype)
        self._ws = None
        self._velocity = None

    # ---- workspace -----------------------------------------------------------------
    @property
    def n_layers(self):
        return len(self.sizes) - 1

    def _param_lists(self):
        L = self.n_layers
        return ([self.params[f"W{l}"] for l in range(1, L + 1)],
                [self.params[f"b{l}"] for l in range(1, L + 1)])

    def _workspace(self, N, momentum=False):
        """The workspace for batches of N rows: reused while it fits and still
        points at the current parameter arrays; rebuilt (once) otherwise."""
        ws = self._ws
        if ws is not None and N <= ws.cap and (ws.has_momentum or not momentum):
            L = self.n_layers
            p = self.params
            ok = True
            for l in range(L):
                if ws.W[l] is not p[f"W{l + 1}"] or ws.b[l] is not p[f"b{l + 1}"]:
                    ok = False
                    break
            if ok:
                return ws
        W, b = self._param_lists()
        vW = vb = None
        if momentum or (ws is not None and ws.has_momentum):
            if self._velocity is None or any(v.shape != w.shape for v, w in
                                             zip(self._velocity[0], W)):
                self._velocity = ([np.zeros_like(w) for w in W], [np.zeros_like(v) for v in b])
            vW, vb = self._velocity
        cap = max(N, ws.cap if ws is not None else 0)
        self._ws = _core.MLPWorkspace(W, b, self.activation, self.loss_name, cap, vW, vb)
        return self._ws

    def _batch(self, x):
        N = x.shape[0] if isinstance(x, np.ndarray) and x.ndim >= 1 else len(x)
        return max(int(N), 1)

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
        ws = self._workspace(self._batch(x), momentum != 0.0)
        loss, _, _ = _core.mlp_step(ws, x, t, _core.STEP_TRAIN, lr, weight_decay,
                                    clip_norm or 0.0, momentum)
        return loss

    def loss(self, x, t, weight_decay=0.0):
        """Mean loss on (x, t), plus 0.5 * weight_decay * sum ||W||^2.
        x is converted to the model's dtype."""
        x = self._input(x)
        ws = self._workspace(self._batch(x))
        return _core.mlp_step(ws, x, t, _core.STEP_LOSS, 0.0, weight_decay)[0]

    def gradient(self, x, t, weight_decay=0.0):
        """Gradient of loss(x, t, weight_decay) as a dict keyed like params."""
        x = self._input(x)
        ws = self._workspace(self._batch(x))
        _core.mlp_step(ws, x, t, _core.STEP_GRAD, 0.0, weight_decay)
        grads = {}
        for l in range(self.n_layers):
            grads[f"W{l + 1}"] = ws.dW[l].copy()
            grads[f"b{l + 1}"] = ws.db[l].copy()
        return grads

    def grad_norms(self, x, t, weight_decay=0.0):
        """Per-parameter gradient 2-norms on (x, t): the diagnostic for vanishing
        (deep sigmoid nets) and exploding gradients, first layer first."""
        return {k: float(np.linalg.norm(g)) for k, g in self.gradient(x, t, weight_decay).items()}

    def _input(self, x):
        """x in the model's dtype: the one conversion outside the hot path
        (train_step is strict and raises instead)."""
        return np.asarray(x, dtype=self.dtype)

    def predict(self, x):
        """The network output before the loss: logits, or regression values.
        x is converted to the model's dtype."""
        h = self._input(x)
        L = self.n_layers
        for l in range(1, L + 1):
            h = _core.dense_forward(h, self.params[f"W{l}"], self.params[f"b{l}"],
                                    self.activation if l < L else None)
        return h

    def _hidden(self, x):
        """Hidden-layer outputs (list of arrays) for x."""
        hs, h = [], self._input(x)
        for l in range(1, self.n_layers):
            h = _core.dense_forward(h, self.params[f"W{l}"], self.params[f"b{l}"], self.activation)
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
        batch included; one native call per epoch gathers each batch into the
        workspace and runs its training step. history: "loss" (mean over the epoch's batches, each measured
        before its update), for classification "accuracy" (the same running
        measure, from the argmax of each batch's logits), with validation=(Xv, yv) "val_loss" and "val_accuracy" (or
        "val_r2"), with log_grad_norms "grad_norms" (per-parameter norms on the
        epoch's last batch).
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
            ws = self._workspace(B, momentum != 0.0)  # the params may have been replaced
            # the whole epoch, batch gathering included, is one native call
            mean_loss, correct = _core.mlp_epoch(ws, X, y, order, B, lr, weight_decay, clip,
                                                 momentum, classify)
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
        """A copy of this model (same class) with parameters cast to dtype."""
        new = type(self)(self.sizes, self.activation, self.loss_name, dtype=dtype)
        for k, v in self.params.items():
            new.params[k][...] = v
        return new

    # ---- persistence -------------------------------------------------------------------
    def save(self, path):
        """Save sizes, activation, loss, dtype and parameters to an .npz file."""
        np.savez(path, sizes=np.asarray(self.sizes), activation=np.str_(self.activation),
                 loss=np.str_(self.loss_name), dtype=np.str_(self.dtype.name), **self.params)

    @classmethod
    def load(cls, path):
        """Load a model written by save()."""
        with np.load(path, allow_pickle=False) as f:
            model = cls([int(s) for s in f["sizes"]], activation=str(f["activation"]),
                        loss=str(f["loss"]), dtype=np.dtype(str(f["dtype"])))
            for k in model.params:
                a = f[k]
                if a.shape != model.params[k].shape:
                    raise ValueError(f"MLP.load: {k} has shape {a.shape}, "
                                     f"expected {model.params[k].shape}")
                model.params[k][...] = a
        return model

    def __repr__(self):
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name})")
