"""fastbp.sklearn: scikit-learn's MLPClassifier and MLPRegressor on fastbp's engine.

    from fastbp.sklearn import MLPClassifier   # was: from sklearn.neural_network ...

The constructor parameters, their defaults, the fitted attributes and the methods
are scikit-learn's, and so are the numbers: this module follows
sklearn/neural_network/_multilayer_perceptron.py step for step (validation,
label binarizing, Glorot-uniform initialisation and its random_state draws, the
held-out split of early stopping, the shuffles, the stopping rules, the
warnings), while every training step is one native call (csrc/step.c): the
solvers are scikit-learn's update rules ("sklearn_sgd", "sklearn_adam" in
csrc/optim.c), its L2 term is alpha over each batch's sample count or weight
sum (fbp_step_opts.alpha), its log-loss is reported with its clipped
probabilities (fbp_step_opts.loss_eps), and sgd and adam run MLP.fit's epoch
loop (fastbp._train.run_epochs) over a fastbp._runners.NativeRunner
(_core.mlp_epoch calls), with scikit-learn's rules as its policy
(_SklearnPolicy). lbfgs runs SciPy's L-BFGS-B, as scikit-learn does, over the
native loss and gradient (one mlp_step per evaluation).

Extras scikit-learn's MLP lacks (docs/sklearn.md):
    dtype      compute in np.float32 (or float64) whatever the input's dtype;
               None: the input's, as scikit-learn
    n_threads  fastbp's threads for this estimator's fit and predict calls, in the
               calling thread only (fastbp.local_threads): other threads and the
               process-wide count are untouched
    dropout    inverted dropout on the hidden layers in training steps (sgd, adam)
    class_weight  (MLPClassifier) None, "balanced", a {label: weight} dict (or for
               multilabel targets a list of them), multiplying sample_weight as
               sklearn.utils.class_weight.compute_sample_weight gives it
    matmul_precision  "float32" (default) or "bfloat16": every product's operands
               rounded to bfloat16, accumulated in float32 (fastbp.MLP's option);
               computes in float32 when dtype is None, refuses dtype float64

Sparse inputs are accepted and made dense (the engine is dense).
"""
import math
import warnings
from itertools import chain
from numbers import Integral, Real

import numpy as np

try:
    import scipy.optimize
    import scipy.sparse
    from scipy.special import expit
    from sklearn.base import (BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context,
                              is_classifier)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import (Interval, InvalidParameterError, Options,
                                                 StrOptions)
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                          unique_labels)
    from sklearn.utils.optimize import _check_optimize_result
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as _e:  # scipy or scikit-learn missing, or a scikit-learn too old
    raise ImportError(f"fastbp.sklearn needs scikit-learn >= 1.6 and SciPy: pip install "
                      f"'fastbp[sklearn]' ({_e})") from _e

from . import _core, _train
from ._runners import NativeRunner
from ._threadpool import local_threads
from . import ops as _ops

# the one interval of fastbp._runners (MLP.fit's too), read here at each fit
# so that a test can shorten it (tests/test_sklearn.py)
from ._runners import CHUNK_SECONDS as _CHUNK_SECONDS

try:  # scikit-learn >= 1.7: iprint only where SciPy still takes it
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover
    def _get_additional_lbfgs_options_dict(key, value):
        return {key: value}

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ["sgd", "adam"]
#: scikit-learn's hidden activation names -> fastbp's, and fastbp's own names for
#: the activations scikit-learn lacks (an extension, docs/sklearn.md); fastbp.ops
_ACTIVATIONS = {(a.sklearn or a.name): a.name for a in _ops.ACTIVATIONS.values()}
#: the output activation -> the engine's loss (the canonical link of each)
_LOSSES = {l.out_activation: l.name for l in _ops.LOSSES.values()}
#: the module fastbp.sklearn's warnings are attributed to, for warning filters:
#: scikit-learn's MLP module, so that a filter written for scikit-learn's
#: estimators, filterwarnings("ignore", category=ConvergenceWarning,
#: module="sklearn") as in scikit-learn's own examples, matches them too
WARNING_MODULE = "sklearn.neural_network._multilayer_perceptron"
__warningregistry__ = {}


def _warn(message, category=UserWarning):
    """warnings.warn(message, category) with the warning attributed to
    WARNING_MODULE (a filter's ``module`` regex is matched against the module
    name the warning is attributed to) and to the line of fastbp/sklearn.py
    that calls this (what Python shows), deduplicated as warnings.warn does."""
    import sys

    frame = sys._getframe(1)
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=WARNING_MODULE, registry=__warningregistry__,
                           module_globals=frame.f_globals)


def _pack(coefs_, intercepts_):
    """Pack the parameters into a single vector (scikit-learn's order)."""
    return np.hstack([np.ravel(l) for l in list(coefs_) + list(intercepts_)])


class _Solver:
    """scikit-learn's SGDOptimizer or AdamOptimizer (_stochastic_optimizers.py):
    the settings it was made with, its learning rate and step count, and its
    state arrays, which the native step updates ("vW", "vb": the velocities or
    first moments; "sW", "sb": the second moments). Made by fit, kept by
    partial_fit, as scikit-learn keeps its _optimizer."""

    def __init__(self, est, coefs, intercepts, dtype):
        self.solver = est.solver
        self.learning_rate_init = est.learning_rate_init
        self.learning_rate = float(est.learning_rate_init)
        self.t = 0  # steps taken: Adam's t, and the dropout masks' step key
        names = ()
        if self.solver == "sgd":
            self.lr_schedule = est.learning_rate
            self.momentum = est.momentum
            self.nesterov = est.nesterovs_momentum
            self.power_t = est.power_t
            if self.momentum != 0:
                names = ("vW", "vb")
        else:
            self.beta_1, self.beta_2, self.epsilon = est.beta_1, est.beta_2, est.epsilon
            names = ("vW", "vb", "sW", "sb")
        self.state = {k: [np.zeros(np.shape(a), dtype) for a in
                          (coefs if k.endswith("W") else intercepts)] for k in names}

    def options(self, est, dtype):
        """The StepOptions of a training step, t and step set per call."""
        eps = float(np.finfo(dtype).eps) if is_classifier(est) else 0.0
        common = dict(alpha=est.alpha, loss_eps=eps, seed=est._dropout_seed())
        if self.solver == "sgd":
            return _core.StepOptions(_core.STEP_TRAIN, "sklearn_sgd", lr=self.learning_rate,
                                     momentum=self.momentum, nesterov=self.nesterov, **common)
        return _core.StepOptions(_core.STEP_TRAIN, "sklearn_adam", lr=self.learning_rate_init,
                                 betas=(self.beta_1, self.beta_2), eps=self.epsilon, **common)

    def iteration_ends(self, time_step):
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.solver != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def as_dtype(self, dtype):
        for group in self.state.values():
            for i, a in enumerate(group):
                if a.dtype != dtype:
                    group[i] = a.astype(dtype)


class _SklearnPolicy:
    """scikit-learn's _fit_stochastic, epoch by epoch, as the policy of
    fastbp._train.run_epochs (the loop MLP.fit runs too, with its own policy):
    before an epoch, the shuffle of the sample indices (drawn from
    random_state, from the last epoch's order) and the solver's learning rate;
    after it, the loss as scikit-learn sums it, n_iter_, t_, loss_curve_, the
    verbose line, the no-improvement count (the validation score or the
    training loss, with tol), the learning-rate schedule, its stopping rule
    (n_iter_no_change; 'adaptive' divides the rate instead) and the
    ConvergenceWarning.

    opts: the solver's StepOptions (opt.options), set for the fit's first
    step; losses: the runner's (batches, 2) array of each batch's (loss, reg);
    validation: (X_val, y_val, sample_weight_val), Nones without early_stopping."""

    def __init__(self, est, opts, n_samples, B, losses, incremental, validation):
        self.est, self.opt, self.opts, self.losses = est, est._optimizer, opts, losses
        self.n_samples, self.incremental, self.validation = n_samples, incremental, validation
        self.sample_idx = np.arange(n_samples, dtype=int)
        nb = len(losses)
        self.rows = [B] * (nb - 1) + [n_samples - (nb - 1) * B]  # each batch's rows
        # scikit-learn's squared loss is averaged over the outputs, its gradient not
        self.per_output = float(est.n_outputs_) if est.out_activation_ == "identity" else 1.0

    def before_epoch(self, i):
        est, opt = self.est, self.opt
        if est.shuffle:
            # sklearn.utils.shuffle(sample_idx, random_state=...) is resample's
            # permutation: the same draws, without its ~80 us of input handling
            # per epoch
            perm = np.arange(self.n_samples)
            est._random_state.shuffle(perm)
            self.sample_idx = self.sample_idx[perm]
        self.opts.lr = opt.learning_rate if opt.solver == "sgd" else opt.learning_rate_init
        return self.sample_idx, self.opts

    def steps_ran(self, opts):
        # the runner moves opts past the steps it ran, even when Ctrl-C cuts the
        # fit short right after a call: the solver's step count is taken from it
        self.opt.t = opts.t - 1

    def after_epoch(self, i, sums):
        est, opt = self.est, self.opt
        accumulated_loss = 0.0
        for (loss, reg), r in zip(self.losses.tolist(), self.rows):
            accumulated_loss += (loss / self.per_output + reg) * r

        est.n_iter_ += 1
        est.loss_ = accumulated_loss / self.n_samples

        est.t_ += self.n_samples
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

        # update no_improvement_count based on training loss or
        # validation score according to early_stopping
        early_stopping = est.early_stopping
        est._update_no_improvement_count(early_stopping, *self.validation)

        # for learning rate that needs to be updated at iteration end
        opt.iteration_ends(est.t_)

        if est._no_improvement_count > est.n_iter_no_change:
            # not better than last `n_iter_no_change` iterations by tol
            # stop or decrease learning rate
            if early_stopping:
                msg = ("Validation score did not improve more than "
                       "tol=%f for %d consecutive epochs."
                       % (est.tol, est.n_iter_no_change))
            else:
                msg = ("Training loss did not improve more than tol=%f"
                       " for %d consecutive epochs." % (est.tol, est.n_iter_no_change))

            is_stopping = opt.trigger_stopping(msg, est.verbose)
            if is_stopping:
                return True
            else:
                est._no_improvement_count = 0

        if self.incremental:
            return True

        if est.n_iter_ == est.max_iter:
            _warn("Stochastic Optimizer: Maximum iterations (%d) "
                  "reached and the optimization hasn't converged yet."
                  % est.max_iter, ConvergenceWarning)
        return False


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: scikit-learn's
    BaseMultilayerPerceptron over the native engine."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # fastbp's extras
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64}),
                  np.dtype],
        "n_threads": [None, Interval(Integral, 1, 4096, closed="both")],  # the pool's range
        "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
        "matmul_precision": [StrOptions({"float32", "bfloat16"})],
    }

    # ---- the network ------------------------------------------------------------------------
    def _n_threads(self):
        """n_threads, which the parameter validation checked but for a bool (an
        Integral to it)."""
        if isinstance(self.n_threads, (bool, np.bool_)):
            raise InvalidParameterError(
                f"The 'n_threads' parameter of {type(self).__name__} must be None or an int in "
                f"the range [1, 4096]. Got {self.n_threads!r} instead.")
        return self.n_threads

    def _compute_dtype(self, X_dtype):
        """The dtype the engine computes in: the dtype parameter, or X's (float32
        with matmul_precision "bfloat16", which needs float32)."""
        bf16 = self._matmul_precision() == "bfloat16"
        if self.dtype is None:
            return np.dtype(np.float32) if bf16 else np.dtype(X_dtype)
        dt = np.dtype(self.dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32, float64 or None, got {self.dtype!r}")
        if bf16 and dt != np.float32:
            raise ValueError(f"matmul_precision='bfloat16' rounds float32 operands; expected "
                             f"dtype float32 or None, got {dt}")
        return dt

    def _matmul_precision(self):
        return getattr(self, "matmul_precision", "float32")  # estimators pickled before it

    def _model_dtype(self):
        """The dtype of the fitted network (predictions are computed in it)."""
        if self.dtype is not None:
            return self._compute_dtype(None)
        dt = np.asarray(self.coefs_[0]).dtype
        return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)

    def _dropout_rates(self):
        """One rate per layer (the output layer's 0), or None."""
        n_hidden = self.n_layers_ - 2
        p = self.dropout
        rates = [float(p)] * n_hidden if isinstance(p, Real) else [float(r) for r in p]
        if len(rates) != n_hidden or not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"dropout must be a rate in [0, 1) or one per hidden layer "
                             f"({n_hidden}), got {p!r}")
        return rates + [0.0] if any(rates) else None

    def _dropout_seed(self):
        return getattr(self, "_drop_seed", 0)

    def _engine_loss(self):
        if self.out_activation_ not in _LOSSES:
            raise ValueError(f"no native loss for the output activation {self.out_activation_!r}")
        return _LOSSES[self.out_activation_]

    def _own_params(self, dtype, layer_units):
        """coefs_ and intercepts_ as lists of C-contiguous, writable arrays of dtype
        with the network's shapes (copies only of those that are not): whatever
        the user assigned, training continues from it, in place as scikit-learn's."""
        self.coefs_, self.intercepts_ = list(self.coefs_), list(self.intercepts_)
        L = len(layer_units) - 1
        if len(self.coefs_) != L or len(self.intercepts_) != L:
            raise ValueError(f"coefs_ and intercepts_ must hold {L} arrays each, got "
                             f"{len(self.coefs_)} and {len(self.intercepts_)}")
        for group, shape_of in ((self.coefs_, lambda i: (layer_units[i], layer_units[i + 1])),
                                (self.intercepts_, lambda i: (layer_units[i + 1],))):
            name = "coefs_" if group is self.coefs_ else "intercepts_"
            for i, a in enumerate(group):
                if np.shape(a) != shape_of(i):
                    raise ValueError(f"{name}[{i}] must have shape {shape_of(i)}, got "
                                     f"{np.shape(a)}")
                if not (isinstance(a, np.ndarray) and a.dtype == dtype and
                        a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
                    group[i] = np.array(a, dtype=dtype, order="C")

    def _workspace(self, cap, dtype, state=None, dropout=None):
        acts = [_ACTIVATIONS[self.activation]] * (self.n_layers_ - 2) + ["identity"]
        ws = _core.MLPWorkspace(self.coefs_, self.intercepts_, acts, self._engine_loss(),
                                cap, state, dropout)
        ws.set_matmul_precision(self._matmul_precision())
        return ws

    def _targets(self, y, dtype):
        """y (n, outputs) as the engine wants it: class indices (softmax) or floats."""
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(y, dtype=dtype)

    @staticmethod
    def _dense(X, dtype):
        if scipy.sparse.issparse(X):
            X = X.toarray()
        return np.ascontiguousarray(X, dtype=dtype)

    # ---- scikit-learn's flow ---------------------------------------------------------------
    def _initialize(self, y, layer_units, dtype):
        # set all attributes, allocate weights etc. for first call
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:  # binary and multilabel
            self.out_activation_ = "logistic"
        self.coefs_ = []
        self.intercepts_ = []
        for i in range(self.n_layers_ - 1):
            coef_init, intercept_init = self._init_coef(layer_units[i], layer_units[i + 1], dtype)
            self.coefs_.append(coef_init)
            self.intercepts_.append(intercept_init)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _init_coef(self, fan_in, fan_out, dtype):
        # Glorot et al.'s initialisation, scikit-learn's draws in its order
        factor = 6.0
        if self.activation == "logistic":
            factor = 2.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        coef_init = coef_init.astype(dtype, copy=False)
        intercept_init = intercept_init.astype(dtype, copy=False)
        return coef_init, intercept_init

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % hidden_layer_sizes)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
            if (sample_weight < 0).any():
                i = int(np.argmax(sample_weight < 0))
                raise ValueError(f"sample_weight must be >= 0, got {sample_weight[i]} at index {i}: "
                                 "fastbp's engine takes the weighted mean of the rows' losses, "
                                 "which needs weights >= 0 (scikit-learn's MLP accepts negative "
                                 "ones; docs/sklearn.md lists the difference)")
        sample_weight = self._with_class_weight(y, sample_weight, incremental)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        dtype = self._compute_dtype(X.dtype)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        self._own_params(dtype, layer_units)
        X = self._dense(X, dtype)
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, dtype=dtype)

        # n_threads for this thread's calls alone: two estimators fitting in two
        # threads (GridSearchCV's threading backend) each keep their own, and the
        # process-wide count is never changed (it was set and restored: racy)
        with local_threads(self._n_threads()):
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(X, y, sample_weight, layer_units, incremental, dtype)
            elif self.solver == "lbfgs":
                self._fit_lbfgs(X, y, sample_weight, layer_units, dtype)

        weights = chain(self.coefs_, self.intercepts_)
        if not all(np.isfinite(w).all() for w in weights):
            raise ValueError("Solver produced non-finite parameter weights. The input data may"
                             " contain large values and need to be preprocessed.")
        return self

    def _fit_lbfgs(self, X, y, sample_weight, layer_units, dtype):
        if self._dropout_rates() is not None:
            raise ValueError("dropout needs a stochastic solver ('sgd' or 'adam'); lbfgs "
                             "minimizes a fixed function")
        self._coef_indptr = []
        self._intercept_indptr = []
        start = 0
        for i in range(self.n_layers_ - 1):
            n_fan_in, n_fan_out = layer_units[i], layer_units[i + 1]
            end = start + (n_fan_in * n_fan_out)
            self._coef_indptr.append((start, end, (n_fan_in, n_fan_out)))
            start = end
        for i in range(self.n_layers_ - 1):
            end = start + layer_units[i + 1]
            self._intercept_indptr.append((start, end))
            start = end

        packed_coef_inter = _pack(self.coefs_, self.intercepts_)
        if self.verbose is True or self.verbose >= 1:
            iprint = 1
        else:
            iprint = -1
        # the workspace holds its own parameter arrays, which each evaluation fills
        self.coefs_ = [c.copy() for c in self.coefs_]
        self.intercepts_ = [b.copy() for b in self.intercepts_]
        ws = self._workspace(X.shape[0], dtype)
        target = self._targets(y, dtype)
        eps = float(np.finfo(dtype).eps) if is_classifier(self) else 0.0
        opts = _core.StepOptions(_core.STEP_GRAD, alpha=self.alpha, loss_eps=eps)
        per_output = self.n_outputs_ if self.out_activation_ == "identity" else 1
        views = [(ws.W[i].reshape(-1), ws.dW[i].reshape(-1)) for i in range(self.n_layers_ - 1)]
        views += [(ws.b[i], ws.db[i]) for i in range(self.n_layers_ - 1)]
        bounds = [(s, e) for s, e, _ in self._coef_indptr] + self._intercept_indptr

        def loss_grad(packed):
            for (p, _), (s, e) in zip(views, bounds):
                p[...] = packed[s:e]
            loss, reg, _, _ = _core.mlp_step(ws, X, target, opts, sample_weight)
            grad = np.empty(start)  # SciPy may keep the one it was given
            for (_, g), (s, e) in zip(views, bounds):
                grad[s:e] = g
            # scikit-learn's squared loss is averaged over the outputs, its gradient not
            return loss / per_output + reg, grad

        opt_res = scipy.optimize.minimize(
            loss_grad, packed_coef_inter, method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **_get_additional_lbfgs_options_dict("iprint", iprint)})
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = opt_res.fun
        self._unpack(opt_res.x, dtype)

    def _unpack(self, packed_parameters, dtype):
        for i in range(self.n_layers_ - 1):
            start, end, shape = self._coef_indptr[i]
            self.coefs_[i] = np.reshape(packed_parameters[start:end], shape).astype(dtype)
            start, end = self._intercept_indptr[i]
            self.intercepts_[i] = packed_parameters[start:end].astype(dtype)

    def _fit_stochastic(self, X, y, sample_weight, layer_units, incremental, dtype):
        dropout = self._dropout_rates()
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = _Solver(self, self.coefs_, self.intercepts_, dtype)
            if dropout is not None:
                self._drop_seed = int(self._random_state.randint(np.iinfo(np.int32).max))
        opt = self._optimizer
        opt.as_dtype(dtype)

        # early_stopping in partial_fit doesn't make sense
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # don't stratify in multilabel classification (nor, as scikit-learn,
            # in multiclass: n_outputs_ is the number of classes there)
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            # the same split as train_test_split(X, y[, sample_weight]) makes: it
            # depends on the row count, the stratification and random_state only
            train, val = train_test_split(np.arange(X.shape[0]), random_state=self._random_state,
                                          test_size=self.validation_fraction,
                                          stratify=stratify)
            X_train, X_val, y_train, y_val = X[train], X[val], y[train], y[val]
            if sample_weight is None:
                sample_weight_train = sample_weight_val = None
            else:
                sample_weight_train, sample_weight_val = sample_weight[train], sample_weight[val]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, y_train, sample_weight_train = X, y, sample_weight
            X_val = y_val = sample_weight_val = None

        n_samples = X_train.shape[0]

        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                _warn("Got `batch_size` less than 1 or larger than "
                      "sample size. It is going to be clipped")
            batch_size = np.clip(self.batch_size, 1, n_samples)
        B = int(batch_size)

        ws = self._workspace(B, dtype, opt.state, dropout)
        target = self._targets(y_train, dtype)
        X_train = np.ascontiguousarray(X_train)
        nb = -(-n_samples // B)
        # each batch's (loss, reg) of an epoch: scikit-learn sums them its own way
        runner = NativeRunner(lambda rows: ws, seconds=_CHUNK_SECONDS, losses=np.empty((nb, 2)))
        opts = opt.options(self, dtype)
        opts.t, opts.step = opt.t + 1, opt.t  # the first step's; the runner moves them on
        policy = _SklearnPolicy(self, opts, n_samples, B, runner.losses, incremental,
                                (X_val, y_val, sample_weight_val))
        try:
            self.n_iter_ = 0
            _train.run_epochs(runner, policy, range(self.max_iter), X_train, target,
                              sample_weight_train, B)
        except KeyboardInterrupt:
            _warn("Training interrupted by user.")

        if early_stopping:
            # restore best weights
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight):
        if early_stopping:
            # compute validation score (can be NaN), use that for stopping
            val_score = self._score(X, y, sample_weight=sample_weight)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            # update best parameters
            # use validation_scores_, not loss_curve_
            # let's hope no-one overloads .score with mse
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _with_class_weight(self, y, sample_weight, incremental):
        return sample_weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y (as scikit-learn's).

        X : {array-like, sparse matrix} (n_samples, n_features); sparse input is
        made dense. y : (n_samples,) or (n_samples, n_outputs). sample_weight :
        (n_samples,) or None. Returns self.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic"
                                 " optimizers. %s is not stochastic." % self.solver)
        return True

    def _forward_pass_fast(self, X, check_input=True):
        """The output layer's activation for X, computed natively in the model's
        dtype; returned in the dtype X and the parameters promote to (as
        scikit-learn's NumPy pass)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        dtype = self._model_dtype()
        out_dtype = np.result_type(X.dtype, dtype)
        h = self._dense(X, dtype)
        hidden = _ACTIVATIONS[self.activation]
        with local_threads(self._n_threads()):
            for i in range(self.n_layers_ - 1):
                act = hidden if i != self.n_layers_ - 2 else None
                h = _core.dense_forward(h, np.asarray(self.coefs_[i], dtype),
                                        np.asarray(self.intercepts_[i], dtype), act,
                                        matmul_precision=self._matmul_precision())
        h = h.astype(out_dtype, copy=False)
        if self.out_activation_ == "softmax":
            tmp = h - h.max(axis=1)[:, np.newaxis]
            np.exp(tmp, out=h)
            h /= h.sum(axis=1)[:, np.newaxis]
        elif self.out_activation_ == "logistic":
            expit(h, out=h)
        elif self.out_activation_ == "exp":
            np.exp(h, out=h)
        return h

    def _score_with_function(self, X, y, sample_weight, score_function):
        """Private score method without input validation."""
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer Perceptron classifier: scikit-learn's
    sklearn.neural_network.MLPClassifier (same parameters, attributes, methods
    and results) trained by fastbp's native engine.

    It optimizes the log-loss with lbfgs, sgd or adam. See
    sklearn.neural_network.MLPClassifier for every parameter and attribute
    below; only the extras are described here.

    Extra parameters
    ----------------
    dtype : None, "float32", "float64" (or the NumPy types), default None
        The dtype the network computes and stores its parameters in; None: the
        input's (float64, or float32 for float32 input), as scikit-learn.
        np.float32 on float64 input trains about twice as fast.
    n_threads : int in [1, 4096] or None, default None
        fastbp's threads for this estimator's fit, predict and predict_proba,
        in the calling thread only (fastbp.local_threads): the process-wide
        count (fastbp.set_num_threads) and other threads are untouched. None:
        the calling thread's count as it is.
    dropout : float in [0, 1) or one per hidden layer, default 0.0
        Inverted dropout on the hidden layers' outputs in training steps (sgd
        and adam only); the masks are a function of random_state, the step,
        the layer and the position.
    class_weight : None, "balanced", dict {label: weight}, or for multilabel
        targets a list of {0: w, 1: w} dicts, default None
        Multiplies sample_weight as
        sklearn.utils.class_weight.compute_sample_weight(class_weight, y)
        gives it ("balanced" is refused by partial_fit, whose batches see only
        part of the classes).
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [None, dict, list, StrOptions({"balanced"})],
    }
    loss = "log_loss"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads=None, dropout=0.0, class_weight=None,
                 matmul_precision="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.class_weight = class_weight
        self.matmul_precision = matmul_precision

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)

        # incremental warm_start classes_ def  action
        #    0            0         0        define classes_
        #    0            1         0        define classes_
        #    0            0         1        redefine classes_
        #    0            1         1        check compat warm_start
        #    1            1         1        check compat warm_start
        #    1            0         1        check compat last fit
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has {classes}.")

        # This downcast to bool is to prevent upcasting when working with
        # float32 data
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _with_class_weight(self, y, sample_weight, incremental):
        """sample_weight times the class weights of y's rows (y binarized)."""
        if self.class_weight is None:
            return sample_weight
        if isinstance(self.class_weight, str) and incremental:
            # scikit-learn's SGDClassifier refuses it in the same words
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. In order to use "
                "'balanced' weights, use compute_class_weight('balanced', classes=classes, "
                "y=y). In place of y you can use a large enough sample of the full training "
                "set target to properly estimate the class frequency distributions. Pass the "
                "resulting weights as the class_weight parameter.")
        if self._label_binarizer.y_type_.startswith("multilabel"):
            labels = np.asarray(y, dtype=np.int64)  # one output per label column
        else:
            labels = self._label_binarizer.inverse_transform(y)
        cw = compute_sample_weight(self.class_weight, labels)
        return cw if sample_weight is None else sample_weight * cw

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier: (n_samples,) or
        (n_samples, n_classes) for multilabel targets."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        """Private predict method with optional input validation"""
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return super()._score_with_function(X, y, sample_weight=sample_weight,
                                            score_function=accuracy_score)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data (as
        scikit-learn's; classes is needed on the first call)."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """The log of predict_proba(X)."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates (n_samples, n_classes), classes in classes_ order."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        else:
            return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer Perceptron regressor: scikit-learn's
    sklearn.neural_network.MLPRegressor (same parameters, attributes, methods
    and results) trained by fastbp's native engine.

    It optimizes the squared error (or with loss="poisson" the half Poisson
    deviance, its output the exp of the last layer) with lbfgs, sgd or adam. See
    sklearn.neural_network.MLPRegressor for every parameter and attribute;
    the extras dtype, n_threads and dropout are MLPClassifier's.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads=None, dropout=0.0, matmul_precision="float32"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.matmul_precision = matmul_precision

    def predict(self, X):
        """Predict using the multi-layer perceptron model: (n_samples,) or
        (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        """Private predict method with optional input validation"""
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X, y, sample_weight=None):
        return super()._score_with_function(X, y, sample_weight=sample_weight,
                                            score_function=r2_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    # scikit-learn's MLPRegressor makes partial_fit available for every solver
    # (its condition is the method est._check_solver, not its result); so does
    # this one, with the same effect: lbfgs continues from the current weights
    @available_if(lambda est: est._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)


# skl2onnx converters for both estimators (fastbp.onnx.register_skl2onnx), registered
# here when skl2onnx is already imported; otherwise call register_skl2onnx() before
# skl2onnx.to_onnx (importing skl2onnx costs ~0.8 s, too much for every import of
# this module)
def _register_if_skl2onnx():
    import sys

    if "skl2onnx" in sys.modules:
        from .onnx import register_skl2onnx

        register_skl2onnx()


_register_if_skl2onnx()
