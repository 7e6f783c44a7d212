"""fastbp.MLP: a multilayer perceptron whose training step is one native call.

The model owns its parameters (``model.params``: W1, b1, W2, b2, ... with W
shaped (in, out)), its optimizer's state, and a workspace (layer outputs,
gradients, the C pointer table) allocated once per batch capacity, so that after
the first step a ``train_step`` allocates nothing. All math runs in
fastbp._core (csrc/step.c), or on a GPU with ``device="cuda"``
(fastbp.cuda.CudaMLP, csrc/cuda/step.cu).
"""
import math
import numbers
import operator
import time
import warnings

import numpy as np

from . import _core
from . import optim as _optim

_HIDDEN = ("relu", "sigmoid", "tanh", "identity")
_LOSSES = tuple(_core.LOSSES)
_DEVICES = ("cpu", "cuda")
#: the optimizer state buffers of each kind of state ("v": momentum or first
#: moment, "s": second moment)
_STATE = {"v": ("vW", "vb"), "s": ("sW", "sb")}
#: seconds of work per native call of fit on the CPU: the interval at which an
#: interrupt (Ctrl-C) is seen
_CHUNK_SECONDS = 0.05


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


def _check_dropout(dropout, n_hidden):
    """One dropout rate in [0, 1) per hidden layer, from one rate or a list."""
    rates = [dropout] * n_hidden if isinstance(dropout, numbers.Real) else dropout
    try:
        rates = [float(p) for p in rates]
    except (TypeError, ValueError):
        raise TypeError(f"MLP: dropout must be a rate or a list of rates, got {dropout!r}") from None
    if len(rates) != n_hidden:
        raise ValueError(f"MLP: got {len(rates)} dropout rates for {n_hidden} hidden layers")
    for p in rates:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"MLP: dropout rates must be in [0, 1), got {p}")
    return rates


def epoch_order(n, seed, epoch, shuffle=True):
    """The rows of epoch ``epoch`` of a fit (0 for a model's first epoch), in the
    order fit visits them: a function of the seed and the epoch number alone, so
    a fit resumed from a checkpoint continues with the same orders."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class _CPU:
    """The CPU engine: a workspace over the model's own parameter arrays."""

    def __init__(self, model):
        self.model, self.ws, self.arrays = model, None, []

    def _current(self):
        """Whether the workspace was built on the model's present parameter and
        state arrays (the same objects, in order). A plain loop: it allocates
        nothing, so a training step stays allocation-free."""
        m, arrays, n = self.model, self.arrays, len(self.arrays)
        i = 0
        for a in m._params.values():
            if i == n or arrays[i] is not a:
                return False
            i += 1
        for group in m._state.values():
            if group is not None:
                for a in group:
                    if i == n or arrays[i] is not a:
                        return False
                    i += 1
        return i == n

    def workspace(self, N):
        """The workspace for batches of N rows: reused while it fits and still
        points at the current parameter and state arrays; rebuilt otherwise."""
        m, ws = self.model, self.ws
        if ws is not None and N <= ws.cap and self._current():
            if ws.matmul_precision != m.matmul_precision:
                ws.set_matmul_precision(m.matmul_precision)
            return ws
        W, b = m._param_lists()
        cap = max(N, ws.cap if ws is not None else 0)
        self.ws = _core.MLPWorkspace(W, b, m._layer_acts, m.loss_name, cap, m._state,
                                     m._dropout + [0.0] if any(m._dropout) else None)
        self.arrays = list(m._params.values()) + [
            a for group in m._state.values() if group is not None for a in group]
        self.ws.set_matmul_precision(m.matmul_precision)
        return self.ws

    def step(self, x, t, opts, N, sample_weight=None):
        return _core.mlp_step(self.workspace(N), x, t, opts, sample_weight)

    def gradient(self):
        ws = self.ws
        return [g.copy() for g in ws.dW], [g.copy() for g in ws.db]

    def output(self, N):
        return self.ws.h[-1][:N].copy()


class _CUDA:
    """The GPU engine: a fastbp.cuda.CudaMLP holds the parameters."""

    def __init__(self, model):
        from . import cuda

        if not cuda.is_available():
            raise RuntimeError("MLP(device='cuda'): fastbp.cuda is not available (a build "
                               "with FASTBP_CUDA=1 and a CUDA device are needed; docs/cuda.md)")
        if any(model._dropout):
            raise NotImplementedError("MLP(device='cuda'): dropout is not supported on the GPU "
                                      "yet (docs/cuda.md lists what is)")
        self.cuda, self.model = cuda, model
        W, b = model._param_lists()
        self.gpu = cuda.CudaMLP(W, b, model._layer_acts, model.loss_name, cap=1)

    def step(self, x, t, opts, N, sample_weight=None):
        if N > self.gpu.cap:
            self.gpu = self.gpu.grow(N)
        return self.gpu.run(x, t, opts, sample_weight)

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
        probabilities), "mse" (targets: values) or "binary_cross_entropy"
        (sigmoid outputs; targets in [0, 1], (N, outputs): multi-label, or one
        output for binary classification).
    dtype : np.float32 or np.float64; inputs to train_step must match it.
    seed : seed of the initial weights, and of the dropout masks.
    init : "he" (default when the first hidden layer is relu), "xavier"
        (otherwise), or a float standard deviation. Weights are normal, biases 0.
    device : "cpu" (default) or "cuda": the parameters and the step live on the
        GPU (fastbp.cuda.CudaMLP); ``params`` are then device arrays
        (fastbp.cuda.DeviceBuffer) and ``get_params()`` copies them to NumPy.
    dropout : inverted dropout on the hidden layers' outputs in training steps
        (one rate, or one per hidden layer, in [0, 1)); predict, loss and
        gradient use the plain network. The masks are a function of (seed,
        training step, layer, row, column).
    matmul_precision : "float32" (default) or "bfloat16" (float32 models on the
        CPU): the operands of every matrix product (in train_step, fit, loss,
        gradient, predict, predict_proba) are rounded to bfloat16, the products
        accumulate in float32; parameters, optimizer state, activations, losses
        and gradients stay float32. Faster where the CPU has bfloat16 hardware
        and oneDNN is installed (fastbp.show_config() says which path runs;
        docs/performance.md). A setting of this process, like the thread count:
        an attribute that can be changed between calls, not written by save().

    Attributes: ``step_`` and ``epoch_`` count the training steps and the epochs
    of fit over the model's life; ``loss_curve_`` and ``val_loss_curve_`` hold
    each of those epochs' training and validation loss (NaN for an epoch without
    a validation set), which ReduceLROnPlateau replays (all saved with the
    model); ``history_`` is the history of the last fit, kept epoch by epoch
    (also when the fit is interrupted).
    """

    def __init__(self, sizes, activation="relu", loss="softmax_cross_entropy",
                 dtype=np.float32, seed=0, init=None, device="cpu", dropout=0.0,
                 matmul_precision="float32"):
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
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"MLP: seed must be an integer >= 0, got {seed!r}")
        self.activation = activation if isinstance(activation, str) else list(activation)
        self.loss_name, self.dtype, self.device, self.seed = loss, dtype, device, int(seed)
        self._layer_acts = acts + ["identity"]
        self._dropout = _check_dropout(dropout, len(self.sizes) - 2)
        self.dropout = dropout if isinstance(dropout, numbers.Real) else list(self._dropout)
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
        self.step_, self.epoch_, self.history_ = 0, 0, {}
        self.loss_curve_, self.val_loss_curve_ = [], []
        self._opt_name, self._opt_t, self._state = None, 0, {}
        self._opts_key = self._opts = None
        self._dp_opts_key = self._dp_opts = None
        self._sgd_key = self._sgd = None
        self._dp = None  # fastbp.distributed's session with the last communicator
        self.matmul_precision = matmul_precision
        self._engine = _CUDA(self) if device == "cuda" else _CPU(self)

    @property
    def matmul_precision(self):
        """"float32" or "bfloat16": the precision of the products' operands."""
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, value):
        _core._matmul_precision("MLP", value, self.dtype, self.device == "cuda")
        self._matmul_precision = value

    # ---- parameters and optimizer state -------------------------------------------------
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

    @property
    def optimizer_state(self):
        """{"optimizer": name or None, "t": its step count, "vW": [...], "vb": [...],
        "sW": [...], "sb": [...]}: the state the model keeps for its optimizer."""
        st = {"optimizer": self._opt_name, "t": self._opt_t}
        st.update({k: v for k, v in self._state.items() if v is not None})
        if self.device == "cuda":
            g = self._engine.gpu
            if g.vW is not None:
                st["vW"], st["vb"] = [v.get() for v in g.vW], [v.get() for v in g.vb]
        return st

    def _restore_training_state(self, optimizer, t, state, step, epoch, curves):
        """Put back what save() wrote (MLP.load): the optimizer's name, step
        count and state, the step and epoch counters and the loss curves."""
        self._opt_name, self._opt_t = optimizer, t
        self._state = {k: [np.array(a, self.dtype) for a in v] for k, v in state.items()}
        self.step_, self.epoch_ = step, epoch
        self.loss_curve_, self.val_loss_curve_ = ([float(v) for v in c] for c in curves)

    def _ensure_state(self, optimizer):
        """Zeros for the optimizer's state when it is new to the model (another
        kind than the last step's, or state it did not keep); otherwise the state
        carries on, as it does for one torch.optim object."""
        need = [name for kind in optimizer.state for name in _STATE[kind]]
        if optimizer.name == self._opt_name and all(self._state.get(k) is not None for k in need):
            return
        W, b = self._param_lists()
        self._state = {}
        for name in need:
            like = W if name.endswith("W") else b
            self._state[name] = [np.zeros_like(a) for a in like]
        self._opt_name, self._opt_t = optimizer.name, 0
        if self.device == "cuda" and optimizer.name == "SGD" and optimizer.momentum:
            self._engine.gpu.reset_momentum()

    def _train_options(self, optimizer, clip_norm, clip_value, count_correct=False,
                       data_parallel=False):
        """The StepOptions of a training step with optimizer, built once per setting;
        data-parallel steps keep their own (fastbp.distributed changes their mode,
        norm and row0 from call to call)."""
        key = (type(optimizer).__name__, tuple(sorted(optimizer.__dict__.items())), clip_norm,
               clip_value, count_correct)
        if key != (self._dp_opts_key if data_parallel else self._opts_key):
            opts = _core.StepOptions(
                _core.STEP_TRAIN, clip_norm=clip_norm or 0.0, clip_value=clip_value or 0.0,
                seed=self.seed, count_correct=count_correct, **optimizer.options())
            if data_parallel:
                self._dp_opts_key, self._dp_opts = key, opts
            else:
                self._opts_key, self._opts = key, opts
        return self._dp_opts if data_parallel else self._opts

    @staticmethod
    def _optimizer(fn, optimizer, lr, momentum, weight_decay):
        """The optimizer of a call: the one given, or SGD from the shorthand."""
        if optimizer is None:
            if lr is None:
                raise TypeError(f"{fn}: give lr (plain SGD) or optimizer=")
            return _optim.SGD(lr, momentum=momentum, weight_decay=weight_decay)
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"{fn}: optimizer must be a fastbp.optim optimizer (SGD, Adam, "
                            f"AdamW), got {type(optimizer).__name__}")
        if lr is not None or momentum or weight_decay:
            raise ValueError(f"{fn}: lr=, momentum= and weight_decay= are the shorthand for "
                             "SGD; with optimizer= set them on the optimizer")
        return optimizer

    @staticmethod
    def _check_clip(fn, clip_norm, clip_value):
        for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)
                                  or not v > 0 or not math.isfinite(v)):
                raise ValueError(f"{fn}: {name} must be > 0 or None, got {v}")

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
    def train_step(self, x, t, lr=None, weight_decay=0.0, clip_norm=None, momentum=0.0, *,
                   optimizer=None, clip_value=None, sample_weight=None, comm=None):
        """One training step on the batch (x, t); returns the loss before the update.

        optimizer: a fastbp.optim optimizer (SGD, Adam, AdamW); lr, momentum and
        weight_decay are the shorthand for fastbp.optim.SGD(lr, momentum=...,
        weight_decay=...). The loss gradient is clipped by value (clip_value),
        then by global norm (clip_norm, torch.nn.utils.clip_grad_norm_'s rule),
        then the optimizer steps, all in one call into C. sample_weight (N,):
        the loss is sum w_r l_r / sum w_r. The returned loss includes 0.5 wd sum
        ||W||^2 for coupled decay (SGD, Adam; biases excluded).

        comm: an mpi4py communicator for data-parallel training: every rank of comm
        calls train_step with its own rows (x may have none) and the same
        settings; the step is the single-process step on the concatenation of the
        ranks' batches in rank order, the returned loss its mean, identical on
        every rank. On the first step with comm the ranks take rank 0's
        parameters and optimizer state (fastbp.distributed, docs/distributed.md).
        """
        fn = "train_step"
        if comm is not None:
            from . import distributed

            return distributed.train_step(self, x, t, lr, weight_decay, momentum, optimizer,
                                          clip_norm, clip_value, sample_weight, comm)
        if optimizer is None:  # the shorthand's SGD, made again only when it changes
            key = (type(lr), lr, type(momentum), momentum, type(weight_decay), weight_decay)
            if key != self._sgd_key:
                self._sgd = self._optimizer(fn, None, lr, momentum, weight_decay)
                self._sgd_key = key
            optimizer = self._sgd
        else:
            optimizer = self._optimizer(fn, optimizer, lr, momentum, weight_decay)
        if clip_norm is not None or clip_value is not None:
            self._check_clip(fn, clip_norm, clip_value)
        # a new kind of optimizer replaces the state (new arrays, the old ones
        # untouched); a step that then refuses its inputs puts the old one back
        saved = self._opt_name, self._opt_t, self._state
        self._ensure_state(optimizer)
        opts = self._train_options(optimizer, clip_norm, clip_value)
        opts.t, opts.step = self._opt_t + 1, self.step_
        try:
            out = self._engine.step(x, t, opts, self._batch(x), sample_weight)
        except (TypeError, ValueError):
            if self.device == "cpu":
                self._opt_name, self._opt_t, self._state = saved
            raise
        except BaseException:  # KeyboardInterrupt: the step may have run
            self._count_steps(opts)
            raise
        self._count_steps(opts)
        return out[0] + out[1]

    def _count_steps(self, opts):
        """The step counters from opts, which the native call advanced past the
        steps it ran (also when Ctrl-C is raised as the call returns, before any
        statement after it)."""
        self._opt_t, self.step_ = opts.t - 1, opts.step

    def _eval(self, x, t, mode, weight_decay):
        opts = _core.StepOptions(mode, weight_decay=weight_decay)
        return self._engine.step(x, t, opts, self._batch(x))

    def loss(self, x, t, weight_decay=0.0):
        """Mean loss on (x, t), plus 0.5 * weight_decay * sum ||W||^2.
        x is converted to the model's dtype."""
        x = self._input(x)
        out = self._eval(x, t, _core.STEP_LOSS, weight_decay)
        return out[0] + out[1]

    def gradient(self, x, t, weight_decay=0.0):
        """Gradient of loss(x, t, weight_decay) as a dict keyed like params."""
        x = self._input(x)
        self._eval(x, t, _core.STEP_GRAD, weight_decay)
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
            self._eval(x, None, _core.STEP_FORWARD, 0.0)
            return self._engine.output(N)
        h = x
        W, b = self._param_lists()
        for l in range(self.n_layers):
            h = _core.dense_forward(h, W[l], b[l], self._layer_acts[l],
                                    matmul_precision=self._matmul_precision)
        return h

    def predict_proba(self, x):
        """Probabilities: the softmax of the logits (softmax_cross_entropy), or
        their sigmoid (binary_cross_entropy: one probability per output)."""
        z = self.predict(x)
        if self.loss_name == "softmax_cross_entropy":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        if self.loss_name == "binary_cross_entropy":
            return _core.sigmoid_forward(z, out=z)
        raise ValueError("predict_proba: a model with loss 'mse' predicts values, not "
                         "probabilities")

    def _hidden(self, x):
        """Hidden-layer outputs (list of arrays) for x."""
        hs, h = [], self._input(x)
        W, b = self._param_lists()
        for l in range(self.n_layers - 1):
            h = _core.dense_forward(h, W[l], b[l], self._layer_acts[l],
                                    matmul_precision=self._matmul_precision)
            hs.append(h)
        return hs

    def score(self, x, t):
        """Accuracy for classification (integer labels or probabilities; for
        binary_cross_entropy, rows whose every output is on the right side of
        0.5), R^2 for regression."""
        out = self.predict(x)
        t = np.asarray(t)
        if self.loss_name == "softmax_cross_entropy":
            labels = t if t.ndim == 1 else t.argmax(axis=1)
            return float(np.mean(out.argmax(axis=1) == labels))
        if self.loss_name == "binary_cross_entropy":
            t = t.reshape(out.shape)
            return float(np.mean(np.all((out > 0) == (t >= 0.5), axis=1)))
        t = t.reshape(out.shape)
        ss_res = float(np.sum((t - out) ** 2))
        ss_tot = float(np.sum((t - t.mean(axis=0)) ** 2))
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0

    # ---- training loop ------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, lr=None, weight_decay=0.0, momentum=0.0,
            clip_norm=None, shuffle=True, seed=0, validation=None, progress=None,
            log_grad_norms=False, *, optimizer=None, clip_value=None, lr_schedule=None,
            early_stopping=False, validation_fraction=0.1, patience=10, min_delta=0.0,
            restore_best=True, callbacks=(), sample_weight=None, class_weight=None,
            verbose=False, comm=None):
        """Minibatch training over (X, y); returns the history dict (also kept
        as ``history_``, epoch by epoch).

        Batches of batch_size rows, the last one partial, in an order that is a
        function of seed and the model's epoch number (``epoch_order``), so a
        fit resumed from a checkpoint continues as if never stopped. On the
        CPU the batches run in native calls of about 50 ms each (batch gathering
        included); an interrupt (Ctrl-C) is raised between two of them, leaving
        the parameters of the last completed step and the history of the
        completed epochs.

        optimizer: a fastbp.optim optimizer, or lr (default 0.1), momentum and
        weight_decay for SGD. lr_schedule: a schedule of fastbp.optim, a name
        ("constant", "step", "cosine", "invscaling", "plateau") or a callable
        epoch -> lr; it sets the optimizer's lr each epoch. clip_norm,
        clip_value: as train_step. sample_weight (n,), class_weight ({label:
        weight} or "balanced", labels only): the loss is the weighted mean.
        validation=(Xv, yv), or with early_stopping a held-out fraction of X
        (stratified by label): training stops when "val_loss" has not improved
        by min_delta for patience epochs, and (restore_best) the best epoch's
        parameters are put back. callbacks: each called as cb(model, epoch,
        history) after every epoch; one that returns True stops training.
        verbose (or progress, the older name): a progress bar (off by default).

        The inputs are checked once, before training (shapes, label range, NaN
        or inf in X, y, the weights and the validation set). A diverged run (a
        loss that is not finite) stops with a warning naming the epoch.

        history: "loss" (each epoch's mean over its batches, each measured before
        its update, with the coupled weight decay term), "lr", for classification
        "accuracy" (the same running measure), with a validation set "val_loss"
        and "val_accuracy" (or "val_r2"), with log_grad_norms "grad_norms"
        (per-parameter norms on the epoch's last batch).

        comm: an mpi4py communicator for data-parallel training: every rank of
        comm calls fit with its own rows (fastbp.distributed.shard) and the same
        settings; batch_size is per rank, and step s trains on the concatenation
        of every rank's batch s in rank order (fastbp.distributed.epoch_plan
        lists an epoch's batches). The ranks start from rank 0's model; the
        history is global (losses and scores over every rank's rows, validation
        sets too), identical on every rank; early stopping is decided on rank 0.
        A held-out validation fraction is taken from each rank's rows.
        docs/distributed.md.
        """
        args = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    momentum=momentum, clip_norm=clip_norm, shuffle=shuffle, seed=seed,
                    validation=validation, progress=progress, log_grad_norms=log_grad_norms,
                    optimizer=optimizer, clip_value=clip_value, lr_schedule=lr_schedule,
                    early_stopping=early_stopping, validation_fraction=validation_fraction,
                    patience=patience, min_delta=min_delta, restore_best=restore_best,
                    callbacks=callbacks, sample_weight=sample_weight, class_weight=class_weight,
                    verbose=verbose)
        if comm is None:
            return self._fit(X, y, None, **args)
        from . import distributed

        with distributed._guard(comm):
            return self._fit(X, y, distributed._FitRun(self, comm), **args)

    def _fit(self, X, y, run, epochs, batch_size, lr, weight_decay, momentum, clip_norm,
             shuffle, seed, validation, progress, log_grad_norms, optimizer, clip_value,
             lr_schedule, early_stopping, validation_fraction, patience, min_delta,
             restore_best, callbacks, sample_weight, class_weight, verbose):
        """fit's body; run: fastbp.distributed's part of a data-parallel fit, or None."""
        from tqdm.auto import tqdm

        fn = "fit"
        err = None
        try:  # with run, every check is local: the ranks agree on the outcome below
            if lr is None and optimizer is None:
                lr = 0.1
            optimizer = self._optimizer(fn, optimizer, lr, momentum, weight_decay)
            self._check_clip(fn, clip_norm, clip_value)
            for name, v in (("epochs", epochs), ("batch_size", batch_size),
                            ("patience", patience)):
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                    raise ValueError(f"fit: {name} must be an integer >= 1, got {v!r}")
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                raise ValueError(f"fit: seed must be an integer >= 0, got {seed!r}")
            schedule = _optim.make_schedule(lr_schedule, self.epoch_ + epochs)
            X, y = self._check_inputs(fn, X, y)
            w = self._sample_weights(fn, y, sample_weight, class_weight, check_sum=run is None)
            keep = None
            if validation is not None:
                try:
                    Xv, yv = validation
                except (TypeError, ValueError):
                    raise ValueError("fit: validation must be a pair (X, y)") from None
                Xv, yv = self._check_inputs("fit (validation)", Xv, yv)
            elif early_stopping:
                keep, val = self._hold_out_rows(X, y, validation_fraction, seed)
            else:
                Xv = None
        except (TypeError, ValueError) as e:
            if run is None:
                raise
            err = e
        if run is not None:
            balanced = isinstance(class_weight, str) and class_weight == "balanced"
            C = self.sizes[-1]
            settings = dict(
                optimizer=repr(optimizer), clip=(clip_norm, clip_value), epochs=epochs,
                batch_size=batch_size, shuffle=shuffle, seed=seed, lr_schedule=(
                    lr_schedule if lr_schedule is None or isinstance(lr_schedule, str)
                    else type(lr_schedule).__name__),
                validation=validation is not None, early_stopping=early_stopping,
                validation_fraction=validation_fraction, patience=patience,
                min_delta=min_delta, restore_best=restore_best, log_grad_norms=log_grad_norms,
                class_weight=class_weight if class_weight is None or balanced else "dict",
                targets=np.ndim(y) if err is None else None)
            ok = err is None
            counts, total_counts, _, wsum = run.agree(
                err, settings, (len(keep) if keep is not None else X.shape[0]) if ok else 0,
                ok and w is not None, float(w.sum()) if ok and w is not None else 0.0,
                np.bincount(y, minlength=C) if ok and balanced else None)
            if run.weighted and not wsum > 0:
                raise run.agreed(ValueError(f"{fn}: the sample weights of all the ranks "
                                            "sum to 0"))
            if balanced:  # the classes' counts over every rank's rows
                w = self._sample_weights(fn, y, sample_weight, class_weight, check_sum=False,
                                         counts=(total_counts, int(total_counts.sum())))
        if keep is not None:
            X, y, w, Xv, yv = X[keep], y[keep], None if w is None else w[keep], X[val], y[val]
        n = X.shape[0]
        B = min(int(batch_size), n if run is None else int(counts.max()))
        classify = self.loss_name != "mse" and (self.loss_name == "binary_cross_entropy"
                                                or y.ndim == 1)
        outputs = n if run is None else int(counts.sum())
        score_key = "val_accuracy" if self.loss_name != "mse" else "val_r2"
        hist = {"loss": [], "lr": []}
        if classify:
            hist["accuracy"] = []
        if Xv is not None:
            hist["val_loss"], hist[score_key] = [], []
        if log_grad_norms:
            hist["grad_norms"] = []
        self.history_ = hist
        verbose = verbose if progress is None else progress
        best, wait, best_params = math.inf, 0, None
        bar = tqdm(range(epochs), disable=not verbose, unit="epoch", leave=False)
        base_lr = optimizer.lr
        for _ in bar:
            epoch = self.epoch_
            lr_e = schedule.lr(epoch, base_lr, {"loss": self.loss_curve_,
                                                "val_loss": self.val_loss_curve_})
            if not (lr_e >= 0 and math.isfinite(lr_e)):
                raise ValueError(f"fit: the schedule gave lr {lr_e!r} at epoch {epoch}")
            optimizer.lr = lr_e
            try:
                if run is None:
                    order = epoch_order(n, seed, epoch, shuffle)
                    mean_loss, correct = self._epoch(X, y, w, order, B, optimizer, clip_norm,
                                                     clip_value, classify)
                else:
                    order = run.order(n, seed, epoch, shuffle)
                    self._ensure_state(optimizer)
                    opts = self._train_options(optimizer, clip_norm, clip_value, classify,
                                               data_parallel=True)
                    mean_loss, correct = run.epoch(X, y, w, order, B, opts)
            finally:
                optimizer.lr = base_lr
            # the epoch's record is measured first and then written at once, so an
            # interrupt during the validation pass leaves the history and epoch_ as
            # they were (the epoch's steps are counted in step_)
            record = {"loss": mean_loss, "lr": lr_e}
            if classify:
                record["accuracy"] = correct / outputs
            if Xv is not None:
                val_reg = optimizer.weight_decay if optimizer.name != "AdamW" else 0.0
                if run is None:
                    record["val_loss"] = self.loss(Xv, yv, val_reg)
                    record[score_key] = self.score(Xv, yv)
                else:
                    record["val_loss"], record[score_key] = run.evaluate(Xv, yv, val_reg,
                                                                         score_key)
            if log_grad_norms:
                if run is None:
                    last = order[(n - 1) // B * B:]
                    record["grad_norms"] = self.grad_norms(X[last], y[last])
                else:
                    record["grad_norms"] = run.grad_norms(X, y)
            for k, v in record.items():
                hist[k].append(v)
            self.loss_curve_.append(mean_loss)
            self.val_loss_curve_.append(record.get("val_loss", math.nan))
            self.epoch_ += 1
            post = {name: f"{record[k]:.4f}" for k, name in
                    (("loss", "loss"), ("accuracy", "acc"), (score_key, score_key)) if k in record}
            bar.set_postfix(post, refresh=False)
            if not math.isfinite(mean_loss):  # the same number on every rank
                warnings.warn(f"fit: the loss diverged ({mean_loss}) at epoch {epoch}; training "
                              "stopped (lower the learning rate?)", RuntimeWarning, stacklevel=3)
                break
            stop = False
            if early_stopping:
                v = hist["val_loss"][-1]
                improved = v < best - min_delta
                if run is not None:  # rank 0's decision
                    improved = run.from_rank0(improved)
                if improved:
                    best, wait = v, 0
                    if restore_best:
                        best_params = self.get_params()
                else:
                    wait += 1
                    stop = wait >= patience
            for cb in callbacks:
                stop = bool(cb(self, epoch, hist)) or stop
            if run is not None:  # any rank's callback stops every rank
                stop = run.any(stop)
            if stop:
                break
        bar.close()
        if best_params is not None:
            self.set_params(best_params)
        return hist

    def _epoch(self, X, y, w, order, B, optimizer, clip_norm, clip_value, classify):
        """One epoch: (mean loss over the rows, right answers)."""
        self._ensure_state(optimizer)
        n = X.shape[0]
        nb = -(-n // B)
        if self.device == "cpu":
            opts = self._train_options(optimizer, clip_norm, clip_value, classify)
            ws = self._engine.workspace(B)
            total = weight = 0.0
            correct, s, chunk = 0, 0, 1
            opts.t, opts.step = self._opt_t + 1, self.step_
            try:
                while s < nb:  # native calls of about _CHUNK_SECONDS: an interrupt lands between
                    e = min(nb, s + chunk)
                    t0 = time.perf_counter()
                    # running sums: the epoch's loss does not depend on the chunks
                    total, weight, _, hits = _core.mlp_epoch(ws, X, y, w, order, B, s, e, opts,
                                                             total, weight)
                    dt = time.perf_counter() - t0
                    correct += hits
                    chunk = max(1, min(4 * chunk, int(_CHUNK_SECONDS * (e - s) / max(dt, 1e-6))))
                    s = e
            finally:
                self._count_steps(opts)
            return total / weight, correct
        total = weight = 0.0
        correct = 0
        opts = self._train_options(optimizer, clip_norm, clip_value, classify)
        opts.t, opts.step = self._opt_t + 1, self.step_
        try:
            for s in range(nb):
                idx = order[s * B:(s + 1) * B]
                loss, reg, _, hits = self._engine.step(X[idx], y[idx], opts, len(idx),
                                                       None if w is None else w[idx])
                bw = len(idx) if w is None else float(w[idx].sum())
                total, weight, correct = total + (loss + reg) * bw, weight + bw, correct + hits
        finally:
            self._count_steps(opts)
        return total / weight, correct

    def _check_inputs(self, fn, X, y):
        """X (n, I) of the model's dtype and y as the loss wants it, checked once:
        shapes, label range, and no NaN or inf anywhere."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"{fn}: X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{fn}: X has no rows")
        if not np.isfinite(X).all():
            raise ValueError(f"{fn}: X holds NaN or inf (row {int(np.argwhere(~np.isfinite(X))[0, 0])})")
        y = self._targets(fn, y, X.shape[0])
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{fn}: y holds NaN or inf")
        if self.loss_name == "binary_cross_entropy" and ((y < 0) | (y > 1)).any():
            raise ValueError(f"{fn}: binary_cross_entropy targets must be in [0, 1], got "
                             f"values in [{y.min()}, {y.max()}]")
        return X, y

    def _sample_weights(self, fn, y, sample_weight, class_weight, check_sum=True, counts=None):
        """The rows' weights (n,) of the model's dtype, or None for all 1.
        counts: (class counts (C,), rows) for "balanced", if not y's own (a
        data-parallel fit's, over every rank's rows); check_sum: refuse weights
        summing to 0 (a data-parallel fit checks their global sum)."""
        n = y.shape[0]
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.shape != (n,):
                raise ValueError(f"{fn}: sample_weight must have shape ({n},), got {w.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{fn}: sample_weight must be finite and >= 0")
        if class_weight is not None:
            if self.loss_name != "softmax_cross_entropy" or y.ndim != 1:
                raise ValueError(f"{fn}: class_weight needs integer class labels")
            C = self.sizes[-1]
            if isinstance(class_weight, str):
                if class_weight != "balanced":
                    raise ValueError(f"{fn}: class_weight must be a dict or 'balanced', "
                                     f"got {class_weight!r}")
                total = n
                if counts is None:
                    counts = np.bincount(y, minlength=C)
                else:
                    counts, total = counts
                counts = np.asarray(counts, np.float64)
                present = counts > 0
                per = np.zeros(C)
                per[present] = total / (present.sum() * counts[present])
            else:
                per = np.ones(C)
                for k, v in dict(class_weight).items():
                    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
                        raise ValueError(f"{fn}: class_weight keys must be integer class "
                                         f"labels, got {k!r}")
                    if not 0 <= int(k) < C:
                        raise ValueError(f"{fn}: class_weight names class {k!r}, not in [0, {C})")
                    if not (np.isfinite(v) and v >= 0):
                        raise ValueError(f"{fn}: class_weight[{k!r}] must be finite and >= 0")
                    per[int(k)] = float(v)
            cw = per[y]
            w = cw if w is None else w * cw
        if w is None:
            return None
        if check_sum and not w.sum() > 0:
            raise ValueError(f"{fn}: the sample weights sum to 0")
        return np.ascontiguousarray(w, dtype=self.dtype)

    def _hold_out(self, X, y, w, fraction, seed):
        """(X, y, w) of the training rows and (X, y) of the held-out ones
        (_hold_out_rows)."""
        keep, val = self._hold_out_rows(X, y, fraction, seed)
        return X[keep], y[keep], None if w is None else w[keep], X[val], y[val]

    def _hold_out_rows(self, X, y, fraction, seed):
        """(training rows, validation rows) of a validation set for early stopping:
        a fraction of the rows, stratified by label for classification."""
        if not 0 < fraction < 1:
            raise ValueError(f"fit: validation_fraction must be in (0, 1), got {fraction}")
        n = X.shape[0]
        rng = np.random.default_rng([int(seed), 1 << 32])
        if self.loss_name == "softmax_cross_entropy" and y.ndim == 1:
            val = []
            for c in np.unique(y):
                rows = rng.permutation(np.flatnonzero(y == c))
                val.extend(rows[:int(round(fraction * len(rows)))])
            val = np.sort(np.asarray(val, dtype=np.int64))
        else:
            val = np.sort(rng.permutation(n)[:int(round(fraction * n))])
        if len(val) == 0 or len(val) == n:
            raise ValueError(f"fit: validation_fraction {fraction} of {n} rows leaves no "
                             "validation or no training rows")
        return np.setdiff1d(np.arange(n), val), val

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
        new = type(self)(self.sizes, self.activation, self.loss_name, dtype=dtype, seed=self.seed,
                         dropout=self.dropout)
        if np.dtype(dtype) == np.float32:
            new.matmul_precision = self.matmul_precision
        for k, v in self.get_params().items():
            new._params[k][...] = v
        return new

    # ---- copies and pickles ---------------------------------------------------------------
    def __getstate__(self):
        """A CPU model pickles (and deep-copies) without its workspace, which the
        next native call rebuilds; a CUDA model's parameters live on the device."""
        if self.device == "cuda":
            raise TypeError("MLP(device='cuda') cannot be pickled or copied: its parameters "
                            "live on the GPU (save() writes them to a file, get_params() "
                            "copies them to NumPy)")
        state = self.__dict__.copy()
        for k in ("_engine", "_opts", "_opts_key", "_dp_opts", "_dp_opts_key"):
            state[k] = None
        return state

    def __setstate__(self, state):
        state.setdefault("_matmul_precision", "float32")  # pickled before the option
        self.__dict__.update(state)
        self._engine = _CPU(self)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path):
        """Save the model to an .npz file: sizes, activation, loss, dtype,
        dropout, seed, the parameters, the optimizer's name, step count and
        state, and the step and epoch counters, so that training resumes exactly
        (a fit continued with the same seed gives the parameters an unbroken fit
        would have). Returns the file's path: path itself, or path + ".npz" as
        NumPy names it; load() reads what save() wrote for the same path."""
        from ._checkpoint import npz_path

        path = npz_path(path)
        a = self.activation
        acts = np.str_(a) if isinstance(a, str) else np.asarray(a, dtype=np.str_)
        st = self.optimizer_state
        extra = {f"state_{k}{l + 1}": v for k in ("vW", "vb", "sW", "sb") if k in st
                 for l, v in enumerate(st[k])}
        np.savez(path, sizes=np.asarray(self.sizes), activation=acts,
                 loss=np.str_(self.loss_name), dtype=np.str_(self.dtype.name),
                 dropout=np.asarray(self._dropout, np.float64), seed=np.int64(self.seed),
                 step=np.int64(self.step_), epoch=np.int64(self.epoch_),
                 optimizer=np.str_(st["optimizer"] or ""), optimizer_t=np.int64(st["t"]),
                 loss_curve=np.asarray(self.loss_curve_, np.float64),
                 val_loss_curve=np.asarray(self.val_loss_curve_, np.float64),
                 **self.get_params(), **extra)
        return path

    @classmethod
    def load(cls, path):
        """Load a model written by save(path) (path with or without ".npz"),
        with its optimizer state and counters when the file has them."""
        from ._checkpoint import read_model

        return read_model(cls, path)

    def __repr__(self):
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        drop = "" if not any(self._dropout) else f", dropout={self.dropout!r}"
        mm = ("" if self._matmul_precision == "float32" else
              f", matmul_precision={self._matmul_precision!r}")
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name}{drop}{mm}{dev})")
