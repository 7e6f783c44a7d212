"""fastbp.MLP: a multilayer perceptron whose training step is one native call.

The model owns its parameters (``model.params``: W1, b1, W2, b2, ... with W
shaped (in, out)), its optimizer's state, and a workspace (layer outputs,
gradients, the C pointer table) allocated once per batch capacity, so that after
the first step a ``train_step`` allocates nothing. All math runs in
fastbp._core (csrc/step.c), or on a GPU with ``device="cuda"``
(fastbp.cuda.CudaMLP, csrc/cuda/step.cu). What training changes (parameters,
optimizer state, counters, curves) is the model's TrainingState
(fastbp._state); fit's loop is fastbp._train, its epoch runners fastbp._runners.
"""
import numbers
import operator
import warnings

import numpy as np

from . import _core
from . import _train
from . import ops as _ops
from ._checkpoint import MAX_COUNT
from ._runners import StepOptions, epoch_order  # noqa: F401  (epoch_order: public here)
from ._state import TrainingState
from ._train import DivergedWarning  # noqa: F401  (public here)

# the one interval of fastbp._runners, read here at each fit so that a test
# can shorten it (tests/test_interrupt.py)
from ._runners import CHUNK_SECONDS as _CHUNK_SECONDS

_HIDDEN = _ops.hidden_names()
_LOSSES = tuple(_ops.LOSSES)
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


class _CPU:
    """The CPU engine: a workspace over the model's own parameter arrays."""

    def __init__(self, model):
        self.model, self.ws, self.arrays = model, None, []

    def _current(self):
        """Whether the workspace was built on the model's present parameter and
        state arrays (the same objects, in order). A plain loop: it allocates
        nothing, so a training step stays allocation-free."""
        st, arrays, n = self.model.training_state, self.arrays, len(self.arrays)
        i = 0
        for a in st.params.values():
            if i == n or arrays[i] is not a:
                return False
            i += 1
        for group in st.buffers.values():
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
        st = m.training_state
        W, b = st.param_lists()
        cap = max(N, ws.cap if ws is not None else 0)
        self.ws = _core.MLPWorkspace(W, b, m._layer_acts, m.loss_name, cap, st.buffers,
                                     m._dropout + [0.0] if any(m._dropout) else None)
        self.arrays = list(st.params.values()) + [
            a for group in st.buffers.values() if group is not None for a in group]
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
            _ops.BACKENDS["cuda_step"].require("MLP(device='cuda')", [("option", "dropout")])
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
        probabilities), "mse" (targets: values), "binary_cross_entropy"
        (sigmoid outputs; targets in [0, 1], (N, outputs): multi-label, or one
        output for binary classification) or "poisson" (targets: counts or
        rates >= 0; the outputs are log-means, the half Poisson deviance of
        scikit-learn's MLPRegressor(loss="poisson")).
    dtype : np.float32 or np.float64, fixed for the model's life. Every method
        that takes data (fit, train_step, predict, predict_proba, score, loss,
        gradient, grad_norms) converts NumPy arrays of another real dtype to it,
        as a scikit-learn estimator does, and returns results in it (the kernels
        of fastbp._core never convert: mixing dtypes there raises).
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
    a validation set, or whose validation loss was NaN; ``had_validation_``
    tells them apart), which ReduceLROnPlateau replays; ``lr_schedule_`` is the
    plan of a named "step" or "cosine" schedule, (name, total epochs), that a
    resumed fit continues; ``early_stopping_state`` the early-stopping run a
    next fit continues (all saved with the model). ``history_`` is the history
    of the last fit, kept epoch by epoch (also when the fit is interrupted).
    ``training_state`` is the object that holds all of that, the parameters and
    the optimizer's state (fastbp._state.TrainingState): what fit and
    fastbp.distributed change.
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
        if init is None:  # the first hidden layer's (fastbp.ops); He without one
            init = _ops.ACTIVATIONS[acts[0]].init if acts else "he"
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
        self._params = params  # the state's own dict, never rebound
        self.training_state = TrainingState(params, {
            "sizes": list(self.sizes), "dtype": dtype.name, "activations": list(self._layer_acts),
            "loss": loss, "dropout": list(self._dropout), "device": device})
        self.history_ = {}
        self._options = StepOptions()  # train_step's and a local fit's
        self._step_plan = None  # train_step's last settings (train_step)
        self.matmul_precision = matmul_precision
        self._engine = _CUDA(self) if device == "cuda" else _CPU(self)

    @property
    def matmul_precision(self):
        """"float32" or "bfloat16": the precision of the products' operands."""
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, value):
        _core._matmul_precision("MLP", value, self.dtype,
                                "cuda_step" if self.device == "cuda" else "cpu")
        self._matmul_precision = value

    # ---- the training state's fields, under the names the model always had ----------------
    def _field(name, doc=None):
        return property(lambda self: getattr(self.training_state, name),
                        lambda self, v: setattr(self.training_state, name, v), doc=doc)

    step_ = _field("step", "training steps over the model's life")
    epoch_ = _field("epoch", "epochs of fit over the model's life")
    loss_curve_ = _field("loss_curve", "each epoch's training loss")
    val_loss_curve_ = _field("val_loss_curve", "each epoch's validation loss (or NaN)")
    had_validation_ = _field("had_validation", "whether each epoch had a validation set")
    lr_schedule_ = _field("lr_schedule", "(name, total epochs) of a named schedule's plan")
    _opt_t = _field("t")  # the optimizer's step count
    del _field

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
        return self.training_state.param_lists()

    @property
    def optimizer_state(self):
        """{"optimizer": name or None, "t": its step count, "vW": [...], "vb": [...],
        "sW": [...], "sb": [...]}: the state the model keeps for its optimizer."""
        ts = self.training_state
        st = {"optimizer": ts.optimizer, "t": ts.t}
        st.update({k: v for k, v in ts.buffers.items() if v is not None})
        if self.device == "cuda":
            g = self._engine.gpu
            if g.vW is not None:
                st["vW"], st["vb"] = [v.get() for v in g.vW], [v.get() for v in g.vb]
        return st

    @property
    def early_stopping_state(self):
        """The early-stopping run that a next ``fit(early_stopping=True)``
        continues, or None: {"best": the best validation loss so far, "wait":
        epochs since it, "best_epoch": its epoch (-1: none yet), "best_params":
        that epoch's parameters (or None)}. Saved with the model. A fit that
        stops early, or puts back the best parameters over later ones, ends the
        run (None); so does a fit without early stopping."""
        return self.training_state.early_stopping_state

    def _ensure_state(self, optimizer):
        """The optimizer's state, fresh when it is new to the model
        (TrainingState.ensure_optimizer), on the GPU too."""
        if (self.training_state.ensure_optimizer(optimizer) and self.device == "cuda"
                and optimizer.name == "SGD" and optimizer.momentum):
            self._engine.gpu.reset_momentum()

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
        st = self.training_state
        if comm is not None:
            return _train.train_step_data_parallel(
                self, st, self._engine, comm, x, t, lr, weight_decay, momentum, optimizer,
                clip_norm, clip_value, sample_weight)
        # the settings of the last call, checked and built once: a loop that calls
        # with the same optimizer (unchanged) and clips skips the checks below
        key = (type(lr), lr, type(momentum), momentum, type(weight_decay), weight_decay,
               clip_norm, clip_value, self.seed)
        plan = self._step_plan
        if (plan is not None and plan[0] is optimizer and plan[1] == key
                and (optimizer is None or optimizer.__dict__ == plan[2])
                and st.buffers is plan[3] and st.optimizer == plan[4]):
            opts = plan[5]
            saved = None
        else:
            self._step_plan = None
            given = optimizer
            optimizer = _train.make_optimizer(fn, optimizer, lr, momentum, weight_decay)
            if clip_norm is not None or clip_value is not None:
                _train.check_clip(fn, clip_norm, clip_value)
            # a new kind of optimizer replaces the state (new arrays, the old ones
            # untouched); a step that then refuses its inputs puts the old one back
            saved = st.saved_optimizer()
            self._ensure_state(optimizer)
            opts = self._options.get(optimizer, clip_norm, clip_value, False, self.seed)
            self._step_plan = (given, key, None if given is None else dict(given.__dict__),
                               st.buffers, st.optimizer, opts)
        if st.step >= MAX_COUNT or st.t >= MAX_COUNT:
            st.check_counters(fn, 1)
        st.start_steps(opts)
        if self.device == "cpu":
            x, t, sample_weight = self._as_dtype(x, t, sample_weight)
        try:
            out = self._engine.step(x, t, opts, self._batch(x), sample_weight)
        except (TypeError, ValueError):
            if self.device == "cpu" and saved is not None:
                st.put_back(saved)
                self._step_plan = None
            raise
        except BaseException:  # KeyboardInterrupt: the step may have run
            st.count_steps(opts)
            raise
        st.count_steps(opts)
        return out[0] + out[1]

    def _as_dtype(self, x, t, w=None):
        """NumPy arrays of another real dtype converted to the model's (the MLP's
        dtype rule): the batch, float targets (integer ones too, except class
        labels) and the sample weights. Arrays of the model's dtype pass as
        they are (no copy: a step on them allocates nothing)."""
        dt = self.dtype
        if isinstance(x, np.ndarray) and x.dtype != dt and x.dtype.kind in "biuf":
            x = x.astype(dt)
        if isinstance(t, np.ndarray) and t.dtype != dt and (
                t.dtype.kind == "f" or (t.dtype.kind in "biu" and
                                        self.loss_name != "softmax_cross_entropy")):
            t = t.astype(dt)
        if isinstance(w, np.ndarray) and w.dtype != dt and w.dtype.kind in "biuf":
            w = w.astype(dt)
        return x, t, w

    def _eval(self, x, t, mode, weight_decay):
        opts = _core.StepOptions(mode, weight_decay=weight_decay)
        return self._engine.step(x, t, opts, self._batch(x))

    def loss(self, x, t, weight_decay=0.0):
        """Mean loss on (x, t), plus 0.5 * weight_decay * sum ||W||^2.
        x (and float targets) are converted to the model's dtype."""
        x = self._input(x, "loss")
        x, t, _ = self._as_dtype(x, t)
        out = self._eval(x, t, _core.STEP_LOSS, weight_decay)
        return out[0] + out[1]

    def gradient(self, x, t, weight_decay=0.0):
        """Gradient of loss(x, t, weight_decay) as a dict keyed like params."""
        x = self._input(x, "gradient")
        x, t, _ = self._as_dtype(x, t)
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

    def _input(self, x, fn="predict"):
        """x (n, inputs) in the model's dtype (converted from any real dtype, as
        every method does), checked: its shape, and no NaN or inf (as fit)."""
        if self.device == "cuda" and hasattr(x, "__cuda_array_interface__"):
            return x
        a = self._rows(fn, x)
        if not np.isfinite(a).all():
            r, c = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{fn}: X must be finite, got {a[r, c]} at row {r}, column {c} "
                             "(fit refuses NaN and inf too; impute or drop those rows)")
        return a

    def _rows(self, fn, x):
        """x as a C-contiguous (n, inputs) array of the model's dtype (converted
        from any real dtype: the MLP's dtype rule), its kind and shape checked."""
        a = np.asarray(x)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: X must hold real numbers (converted to the model's "
                            f"{self.dtype.name}), got dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.ndim != 2 or a.shape[1] != self.sizes[0]:
            raise ValueError(f"{fn}: X must have shape (n, {self.sizes[0]}), got {a.shape}")
        return a

    def _check_finite_params(self, fn):
        """A ValueError if a parameter holds NaN or inf (a fit that diverged)."""
        for k, v in self.get_params().items() if self.device == "cuda" else self._params.items():
            if not np.isfinite(v).all():
                raise ValueError(
                    f"{fn}: the model's parameter {k} holds NaN or inf (a fit diverged, "
                    "at the learning rate it was given); build a new model or load saved "
                    "parameters, and train with a lower learning rate")

    def predict(self, x):
        """The network output before the loss: logits (classification),
        log-means (poisson), or regression values. x is converted to the model's
        dtype and must be finite; a model whose parameters are not finite (a fit
        diverged) raises ValueError instead of answering NaN."""
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
        if not np.isfinite(h).all():  # the output (n, outputs): a cheap check
            self._check_finite_params("predict")
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
        raise ValueError(f"predict_proba: a model with loss {self.loss_name!r} predicts values, "
                         "not probabilities")

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
        0.5), R^2 for regression (poisson: of the means exp(output))."""
        out = self.predict(x)
        t = np.asarray(t)
        if self.loss_name == "softmax_cross_entropy":
            labels = t if t.ndim == 1 else t.argmax(axis=1)
            return float(np.mean(out.argmax(axis=1) == labels))
        if self.loss_name == "binary_cross_entropy":
            t = t.reshape(out.shape)
            return float(np.mean(np.all((out > 0) == (t >= 0.5), axis=1)))
        t = t.reshape(out.shape)
        if self.loss_name == "poisson":
            out = np.exp(out)
        ss_res = float(np.sum((t - out) ** 2))
        ss_tot = float(np.sum((t - t.mean(axis=0)) ** 2))
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0

    # ---- training loop ------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, lr=None, weight_decay=0.0, momentum=0.0,
            clip_norm=None, shuffle=True, seed=0, validation=None, progress=None,
            log_grad_norms=False, *, optimizer=None, clip_value=None, lr_schedule=None,
            early_stopping=False, validation_fraction=0.1, patience=10, min_delta=0.0,
            restore_best=True, callbacks=(), sample_weight=None, class_weight=None,
            verbose=False, comm=None, total_epochs=None):
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
        epoch -> lr; it sets the optimizer's lr each epoch, from the model's
        epoch number. total_epochs: the horizon of "step" and "cosine", the
        epochs of the whole plan counted from the model's first (default: this
        fit's epochs on a new model; on a trained one, the plan it trained with,
        saved with it, and an error where there is none to continue). clip_norm,
        clip_value: as train_step. sample_weight (n,), class_weight ({label:
        weight} or "balanced", labels only): the loss is the weighted mean.
        validation=(Xv, yv), or with early_stopping a held-out fraction of X
        (stratified by label): training stops when "val_loss" has not improved
        by min_delta for patience epochs, and (restore_best) the best epoch's
        parameters are put back; a NaN validation loss is no improvement. The
        early-stopping run (best loss, wait, best parameters) is kept with the
        model (early_stopping_state, saved with it): a next fit with
        early_stopping continues it, unless this one stopped early or put back
        parameters over later ones. callbacks: each called as cb(model, epoch,
        history) after every epoch; one that returns True stops training.
        verbose (or progress, the older name): 0 or False (the default) prints
        nothing; 1 or True prints one line per epoch, Keras's format ("Epoch
        3/30 - loss: 0.1234 - accuracy: 0.9500 - val_loss: ... - 12ms"; rank 0
        only in a data-parallel fit); 2 draws a tqdm progress bar that stays.

        The inputs are checked once, before training (shapes, label range, NaN
        or inf in X, y, the weights and the validation set), and so are the
        model's parameters: a model whose earlier fit diverged is refused
        (ValueError) rather than trained on from NaN. A diverged run (a loss
        that is not finite) stops with a DivergedWarning (a RuntimeWarning)
        naming the epoch, counted from 1 as the history counts them.

        history: "loss" (each epoch's mean over its batches, each measured before
        its update, with the coupled weight decay term), "lr", for classification
        "accuracy" (the same running measure), with a validation set "val_loss"
        and "val_accuracy" (or "val_r2"), with log_grad_norms "grad_norms"
        (per-parameter norms, {"W1": ..., "b1": ...}, of the loss gradient on
        the epoch's last batch, measured after the epoch's last update: one
        extra gradient evaluation per epoch, never per step; fastbp.plot draws
        them per layer).

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
                    verbose=verbose, total_epochs=total_epochs)
        return _train.fit(self, self.training_state, self._engine, self._options, comm, X, y,
                          _CHUNK_SECONDS, **args)

    def _check_inputs(self, fn, X, y):
        """X (n, I) of the model's dtype and y as the loss wants it, checked once:
        shapes, label range, and no NaN or inf anywhere."""
        X = self._rows(fn, X)
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
        if self.loss_name == "poisson" and (y < 0).any():
            raise ValueError(f"{fn}: poisson targets must be >= 0 (counts or rates), got "
                             f"values in [{y.min()}, {y.max()}]")
        return X, y

    def _sample_weights(self, fn, y, sample_weight, class_weight, check_sum=True, counts=None,
                        cast=True):
        """The rows' weights (n,) of the model's dtype (cast=False: float64, as
        given), or None for all 1. counts: (class counts (C,), rows) for
        "balanced", if not y's own (a data-parallel fit's, over every rank's
        rows); check_sum: refuse weights summing to 0 (fit checks the training
        rows' sum in the model's dtype instead: _check_training_weights)."""
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
        if not cast:
            return w
        with np.errstate(over="ignore"):  # _check_training_weights says what overflowed
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
        state["_engine"] = state["_options"] = state["_step_plan"] = None
        return state

    def __setstate__(self, state):
        state.setdefault("_matmul_precision", "float32")  # pickled before the option
        self.__dict__.update(state)
        self._options = StepOptions()
        self._step_plan = None
        self._engine = _CPU(self)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path):
        """Save the model to an .npz file: sizes, activation, loss, dtype,
        dropout, seed, the parameters, the optimizer's name, step count and
        state, the step and epoch counters, the loss curves (and which epochs had
        a validation set), the plan of a named schedule (lr_schedule_) and the
        early-stopping run (early_stopping_state), so that training resumes
        exactly (a fit continued with the same seed gives the parameters an
        unbroken fit would have). Returns the file's path: path itself, or path + ".npz" as
        NumPy names it; load() reads what save() wrote for the same path.

        The file is written whole or not at all: into a temporary file beside
        it, fsync'ed, then renamed over path, so a kill, a Ctrl-C or a full
        disk mid-save leaves the previous checkpoint intact."""
        from ._atomic import atomic_write
        from ._checkpoint import npz_path

        path = npz_path(path)
        a = self.activation
        acts = np.str_(a) if isinstance(a, str) else np.asarray(a, dtype=np.str_)
        st = self.optimizer_state
        extra = {f"state_{k}{l + 1}": v for k in _ops.state_buffers(_ops.STATE_BUFFERS)
                 if k in st for l, v in enumerate(st[k])}
        extra["had_validation"] = np.asarray(self.had_validation_, np.bool_)
        if self.lr_schedule_ is not None:  # a named schedule's plan, which a resume continues
            extra["lr_schedule"] = np.str_(self.lr_schedule_[0])
            extra["lr_schedule_epochs"] = np.int64(self.lr_schedule_[1])
        es = self.early_stopping_state
        if es is not None:  # the early-stopping run a next fit continues
            extra.update(es_best=np.float64(es["best"]), es_wait=np.int64(es["wait"]),
                         es_best_epoch=np.int64(es["best_epoch"]))
            for k, v in (es["best_params"] or {}).items():
                extra[f"es_{k}"] = v
        members = dict(sizes=np.asarray(self.sizes), activation=acts,
                       loss=np.str_(self.loss_name), dtype=np.str_(self.dtype.name),
                       dropout=np.asarray(self._dropout, np.float64), seed=np.int64(self.seed),
                       step=np.int64(self.step_), epoch=np.int64(self.epoch_),
                       optimizer=np.str_(st["optimizer"] or ""), optimizer_t=np.int64(st["t"]),
                       loss_curve=np.asarray(self.loss_curve_, np.float64),
                       val_loss_curve=np.asarray(self.val_loss_curve_, np.float64),
                       **self.get_params(), **extra)
        # a crash or a full disk mid-write leaves the file that was there (_atomic)
        with atomic_write(path) as f:
            np.savez(f, **members)
        return path

    @classmethod
    def load(cls, path):
        """Load a model written by save(path) (path with or without ".npz"),
        with its optimizer state and counters when the file has them."""
        import os

        from ._checkpoint import npz_path, read_model
        from .bundle import is_bundle

        model = read_model(cls, path)
        p = path if os.path.exists(path) else npz_path(path)
        if is_bundle(p):
            warnings.warn(f"MLP.load: {os.fspath(p)} is a model file of fastbp train: it also "
                          "holds the feature standardization and the class names, which "
                          "MLP.load leaves out, so this network expects standardized rows and "
                          "predicts class indices; fastbp.bundle.load(path) gives the model "
                          "that takes raw rows", UserWarning, stacklevel=2)
        return model

    def summary(self, print_fn=None):
        """Print the layers, their output shapes and parameter counts, as
        Keras's Model.summary() does (print_fn: called with each line; default
        print)."""
        print_fn = print if print_fn is None else print_fn
        for line in self._summary_lines():
            print_fn(line)

    def _summary_lines(self):
        rows = [("input", f"(None, {self.sizes[0]})", "0")]
        for l in range(self.n_layers):
            act = self._layer_acts[l]
            name = f"dense_{l + 1} ({act})"
            if l < len(self._dropout) and self._dropout[l]:
                name += f", dropout {self._dropout[l]:g}"
            n = self.sizes[l] * self.sizes[l + 1] + self.sizes[l + 1]
            rows.append((name, f"(None, {self.sizes[l + 1]})", f"{n:,}"))
        total = sum(self.sizes[l] * self.sizes[l + 1] + self.sizes[l + 1]
                    for l in range(self.n_layers))
        w = [max(len(r[i]) for r in rows + [("Layer (activation)", "Output Shape", "Param #")])
             for i in range(3)]
        rule = "-" * (w[0] + w[1] + w[2] + 6)
        head = (f"Model: MLP {'-'.join(map(str, self.sizes))}, loss {self.loss_name}, "
                f"{self.dtype.name}, {self.device}")
        fmt = f"{{:<{w[0]}}}   {{:<{w[1]}}}   {{:>{w[2]}}}"
        out = [head, rule, fmt.format("Layer (activation)", "Output Shape", "Param #"), rule]
        out += [fmt.format(*r) for r in rows]
        nbytes = total * self.dtype.itemsize
        out += [rule, f"Total params: {total:,} ({nbytes / 1024:.1f} KiB)",
                f"Trained: {self.epoch_} epochs, {self.step_} steps"]
        return out

    def __repr__(self):
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        drop = "" if not any(self._dropout) else f", dropout={self.dropout!r}"
        mm = ("" if self._matmul_precision == "float32" else
              f", matmul_precision={self._matmul_precision!r}")
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name}{drop}{mm}{dev})")
