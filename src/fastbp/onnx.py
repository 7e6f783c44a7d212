"""Export a trained network to ONNX, to run it without fastbp (ONNX Runtime,
onnxruntime-web, ONNX Runtime Mobile, any ONNX backend).

``export(model, path)`` writes the file; ``to_onnx(model)`` returns the
``onnx.ModelProto``. ``model`` is a ``fastbp.MLP`` (the graph computes
``predict``, optionally ``predict_proba`` too) or a fitted estimator with
scikit-learn's MLP attributes (``coefs_``, ``intercepts_``, ``activation``,
``out_activation_``, ``n_outputs_``, and ``classes_`` for a classifier): fastbp's
own estimators and scikit-learn's ``MLPClassifier`` / ``MLPRegressor``, whose
graphs give what ``predict`` and ``predict_proba`` give. The graph is made of
standard operators only (Gemm, Relu, Sigmoid, Tanh, Softmax, Exp, and ArgMax,
Greater, Cast, Gather for labels), in the model's dtype. docs/onnx.md has the
input and output names; tests/test_onnx.py runs every graph in ONNX Runtime.

A fitted scikit-learn ``Pipeline`` whose last step is such an estimator and
whose other steps are ``StandardScaler``s (or "passthrough") exports too: the
scalers are folded into the first layer. A model file of the command line
(``fastbp.bundle``) exports with its standardization folded in the same way and
its class names as labels. For any other pipeline, ``register_skl2onnx()``
makes fastbp.sklearn's estimators known to skl2onnx, whose ``to_onnx`` then
converts the whole pipeline.

Graphs take float32 input unless ``input_dtype=np.float64`` is asked for; a
float64 model casts it to float64 first and computes in float64.

Needs the ``onnx`` package (``pip install fastbp[onnx]``), imported at call
time so that ``import fastbp.onnx`` works without it.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from . import ops as _ops

#: the opset a graph is stamped with unless export(opset=...) says otherwise,
#: and the IR version written with it. onnx's helper writes the newest of both
#: (IR 14 / opset 28 in onnx 1.23), which ONNX Runtime releases older than that
#: onnx refuse to load; IR 8 / opset 17 (onnx 1.12, mid-2022) loads in every ONNX
#: Runtime since 1.12 (float64 graphs: since 1.18, or with basic graph
#: optimizations; docs/onnx.md), and every operator used here has its current
#: definition at opset 13 or 14.
DEFAULT_OPSET = 17
DEFAULT_IR_VERSION = 8
#: the oldest opset accepted: Softmax normalizes one axis from opset 13 on
#: (before, it flattened the trailing axes), the definition the graphs rely on
MIN_OPSET = 13

INPUT = "input"
#: MLP outputs: predict's values, and predict_proba's when asked for
OUTPUT, PROBABILITIES = "output", "probabilities"
#: estimator outputs, named as skl2onnx names them for scikit-learn's MLPs
LABEL, VARIABLE = "label", "variable"

def _lowerings():
    """The ONNX lowering of each activation name: fastbp's (MLP) and scikit-learn's
    (estimators), from fastbp.ops; None for the identity. The output activations
    are the losses' links, and "exp" (scikit-learn's Poisson regressor)."""
    low = {}
    for a in _ops.ACTIVATIONS.values():
        low[a.name] = low[a.sklearn or a.name] = a.onnx
    hidden = tuple(low)
    low.setdefault("exp", _ops.onnx_unary("Exp"))  # Poisson's log link, inverted
    for l in _ops.LOSSES.values():
        low.setdefault(l.out_activation, _ops.onnx_unary(l.proba) if l.proba else None)
    outs = tuple(dict.fromkeys([l.out_activation for l in _ops.LOSSES.values()] + ["exp"]))
    return low, hidden, outs


_OPS, _HIDDEN, _OUT = _lowerings()


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastbp.onnx needs the onnx package: pip install 'fastbp[onnx]' "
                          "(or pip install onnx)") from None
    return onnx


def _input_dtype(input_dtype):
    try:
        dt = np.dtype(input_dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"fastbp.onnx: input_dtype must be np.float32 or np.float64, got "
                        f"{input_dtype!r}")
    return dt


def to_onnx(model, opset=None, *, probabilities=False, input_dtype=np.float32):
    """The ONNX graph of ``model`` as an ``onnx.ModelProto``; see export()."""
    onnx = _onnx()
    opset = _check_opset(opset, onnx)
    in_dt = _input_dtype(input_dtype)
    if not isinstance(probabilities, (bool, np.bool_)):
        raise TypeError(f"fastbp.onnx: probabilities must be True or False, got {probabilities!r}")
    parts = None
    if hasattr(model, "_onnx_parts"):          # a command-line model file (fastbp.bundle)
        parts = model._onnx_parts()
    elif hasattr(model, "steps") and hasattr(model, "named_steps"):   # a Pipeline
        parts = _pipeline_parts(model)
    elif hasattr(model, "coefs_"):
        parts = _estimator_weights(model)
    if parts is not None:
        if probabilities:
            raise ValueError("fastbp.onnx: probabilities=True is for an MLP; an estimator's graph "
                             "always has the outputs of predict and predict_proba")
        g = _estimator_graph(parts, onnx, in_dt)
    else:
        from .model import MLP

        if not isinstance(model, MLP):
            if hasattr(model, "fit") and hasattr(model, "get_params"):
                raise ValueError(f"fastbp.onnx: {type(model).__name__} is not fitted (no coefs_); "
                                 f"call fit before exporting it")
            raise TypeError(f"fastbp.onnx: model must be a fastbp.MLP or a fitted MLP estimator "
                            f"(with coefs_ and intercepts_), got {type(model).__name__}")
        g = _mlp_graph(model, bool(probabilities), onnx, in_dt)
    h = onnx.helper
    ir = DEFAULT_IR_VERSION if opset == DEFAULT_OPSET else \
        h.find_min_ir_version_for([h.make_opsetid("", opset)])
    from . import __version__

    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=ir,
                     producer_name="fastbp", producer_version=__version__)
    return m


def export(model, path, opset=None, *, probabilities=False, input_dtype=np.float32):
    """Write ``model`` to ``path`` as an ONNX file; returns the path.

    model : a fastbp.MLP, a fitted estimator with scikit-learn's MLP
        attributes (fastbp.sklearn's, or sklearn.neural_network's MLPClassifier
        and MLPRegressor), a fitted Pipeline of StandardScalers and such an
        estimator (the scalers folded into the first layer), or a command-line
        model file loaded with fastbp.bundle.load (its standardization folded
        in, its class names as labels).
    path : file name (str or os.PathLike), written as given: whole or not at
        all (a temporary file beside it, renamed over it when complete).
    opset : ONNX opset to stamp; None for DEFAULT_OPSET (17, with IR version 8,
        which ONNX Runtime 1.12 and every later release load). Another opset from
        13 to the installed onnx's newest is written with the oldest IR version
        that knows it.
    probabilities : for an MLP, add a second output "probabilities": the softmax
        of the outputs (loss "softmax_cross_entropy") or their sigmoid
        ("binary_cross_entropy"), as predict_proba gives; a ValueError for "mse".

    input_dtype : the graph input's dtype, np.float32 (default) or np.float64.
        A float64 model casts a float32 input to float64 and computes in
        float64 (its outputs are float64); a float32 model the reverse.

    The graph's input is "input", (N, inputs) of input_dtype, N free. Outputs: an MLP's "output" (predict: logits or values) and
    "probabilities" when asked; a classifier's "label" (predict: labels of the
    classes_ dtype, (N,), or an int64 (N, labels) indicator for multilabel) and
    "probabilities" (predict_proba); a regressor's "variable" (predict: (N,) for
    one output, (N, outputs) otherwise).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"fastbp.onnx: path must be a file name (str or os.PathLike), got "
                        f"{type(path).__name__}")
    from ._atomic import write_bytes

    m = to_onnx(model, opset, probabilities=probabilities, input_dtype=input_dtype)
    # what onnx.save_model writes, whole or not at all (fastbp._atomic)
    write_bytes(path, m.SerializeToString())
    return path


def _check_opset(opset, onnx):
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, (bool, np.bool_)) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"fastbp.onnx: opset must be an integer or None, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"fastbp.onnx: opset must be in [{MIN_OPSET}, {newest}] (the installed "
                         f"onnx {onnx.__version__} knows up to {newest}), got {opset}")
    return int(opset)


class _Graph:
    """Nodes and initializers of a graph being built, in one dtype."""

    def __init__(self, onnx, dtype, input_dtype=None):
        self.onnx, self.h = onnx, onnx.helper
        self.dtype = np.dtype(dtype)
        self.elem = self.h.np_dtype_to_tensor_dtype(self.dtype)
        self.in_dtype = self.dtype if input_dtype is None else np.dtype(input_dtype)
        self.nodes, self.inits, self.outputs = [], [], []
        self.x0 = INPUT
        if self.in_dtype != self.dtype:  # the input cast to the compute dtype first
            self.x0 = self.op("Cast", [INPUT], "input_cast", to=self.elem)

    def const(self, name, value, dtype=None):
        a = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        self.inits.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def op(self, op_type, inputs, output, **attrs):
        if op_type == "Softmax":  # over the classes (opset 13's definition)
            attrs.setdefault("axis", 1)
        self.nodes.append(self.h.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def dense_stack(self, Ws, bs, acts, last):
        """Gemm (+ activation) per layer from INPUT; the last layer's result is
        named ``last``. W is (in, out) as in fastbp and scikit-learn, so no
        transposition: Gemm's Y = A B + C with C, the bias, broadcast over rows."""
        x, L = self.x0, len(Ws)
        for l, (W, b, act) in enumerate(zip(Ws, bs, acts), start=1):
            lower = _OPS[act]
            z = last if l == L and lower is None else f"z{l}"
            self.op("Gemm", [x, self.const(f"W{l}", W), self.const(f"b{l}", b)], z)
            x = z if lower is None else lower(self, z, last if l == L else f"h{l}")
        return x

    def output(self, name, elem, shape):
        self.outputs.append(self.h.make_tensor_value_info(name, elem, shape))

    def build(self, name, n_in, doc):
        inp = self.h.make_tensor_value_info(
            INPUT, self.h.np_dtype_to_tensor_dtype(self.in_dtype), ["N", n_in])
        return self.h.make_graph(self.nodes, name, [inp], self.outputs, self.inits,
                                 doc_string=doc)


def _mlp_graph(model, probabilities, onnx, input_dtype=None):
    proba = _ops.LOSSES[model.loss_name].proba
    if probabilities and proba is None:
        names = " or ".join(repr(l.name) for l in _ops.LOSSES.values() if l.proba)
        raise ValueError(f"fastbp.onnx: probabilities=True needs a classification loss "
                         f"({names}); this model's "
                         f"loss is {model.loss_name!r}, whose outputs are values")
    p = model.get_params()
    L = model.n_layers
    g = _Graph(onnx, model.dtype, input_dtype)
    g.dense_stack([p[f"W{l}"] for l in range(1, L + 1)], [p[f"b{l}"] for l in range(1, L + 1)],
                  model._layer_acts, OUTPUT)
    O = model.sizes[-1]
    g.output(OUTPUT, g.elem, ["N", O])
    if probabilities:
        g.op(proba, [OUTPUT], PROBABILITIES)
        g.output(PROBABILITIES, g.elem, ["N", O])
    return g.build("fastbp_mlp", model.sizes[0], repr(model))


def _estimator_weights(est):
    """(Ws, bs, hidden activations, output activation, outputs, dtype) of a
    fitted estimator with scikit-learn's MLP attributes, checked."""
    name = type(est).__name__
    try:
        Ws, bs = list(est.coefs_), list(est.intercepts_)
        act, out = est.activation, est.out_activation_
    except (AttributeError, TypeError) as e:
        raise TypeError(f"fastbp.onnx: {name} lacks the MLP attributes coefs_, intercepts_, "
                        f"activation and out_activation_ ({e})") from None
    Ws, bs = [np.asarray(W) for W in Ws], [np.asarray(b) for b in bs]
    if not Ws or len(Ws) != len(bs):
        raise ValueError(f"fastbp.onnx: {name} has {len(Ws)} coefs_ and {len(bs)} intercepts_; "
                         f"expected one of each per layer, at least one layer")
    dtype = Ws[0].dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"fastbp.onnx: {name}.coefs_ must be float32 or float64, got {dtype}")
    for l, (W, b) in enumerate(zip(Ws, bs)):
        if W.ndim != 2 or b.shape != W.shape[1:] or (l and W.shape[0] != Ws[l - 1].shape[1]):
            raise ValueError(f"fastbp.onnx: {name}: layer {l} has coefs_ {W.shape} and intercepts_ "
                             f"{b.shape} after {Ws[l - 1].shape if l else 'the input'}; "
                             f"expected (in, out) and (out,) chained layer to layer")
    n_hidden = len(Ws) - 1
    acts = [act] * n_hidden if isinstance(act, str) else list(act)
    if len(acts) != n_hidden or any(a not in _HIDDEN for a in acts):
        raise ValueError(f"fastbp.onnx: {name}.activation must be one of {_HIDDEN} (or a list of "
                         f"them, one per hidden layer: {n_hidden}), got {act!r}")
    if out not in _OUT:
        raise ValueError(f"fastbp.onnx: {name}.out_activation_ must be one of {_OUT}, got {out!r}")
    O = Ws[-1].shape[1]
    n_out = getattr(est, "n_outputs_", O)
    if n_out != O:
        raise ValueError(f"fastbp.onnx: {name}.n_outputs_ is {n_out} but the last layer has {O} "
                         f"outputs")
    classes = getattr(est, "classes_", None)
    return _Parts([W.astype(dtype, copy=False) for W in Ws],
                  [b.astype(dtype, copy=False) for b in bs], acts, out, O, dtype, classes, name)


class _Parts:
    """What an estimator graph is built from: the layers (Ws, bs), the hidden
    activations, the output activation, the outputs, the dtype, classes_ (None
    for a regressor) and a name for messages."""

    def __init__(self, Ws, bs, acts, out, O, dtype, classes, name):
        self.Ws, self.bs, self.acts, self.out, self.O = Ws, bs, acts, out, O
        self.dtype, self.classes, self.name = np.dtype(dtype), classes, name

    def fold_input(self, mean, scale):
        """Fold x -> (x - mean) / scale into the first layer, in float64:
        W1 / scale (row-wise), b1 - (mean / scale) W1. mean or scale None: 0 or 1."""
        W, b = self.Ws[0].astype(np.float64), self.bs[0].astype(np.float64)
        n = W.shape[0]
        mean = np.zeros(n) if mean is None else np.asarray(mean, np.float64).reshape(-1)
        scale = np.ones(n) if scale is None else np.asarray(scale, np.float64).reshape(-1)
        if mean.shape != (n,) or scale.shape != (n,):
            raise ValueError(f"fastbp.onnx: {self.name}: the standardization has "
                             f"{mean.shape[0]} means and {scale.shape[0]} scales for {n} inputs")
        self.Ws[0] = (W / scale[:, None]).astype(self.dtype)
        self.bs[0] = (b - (mean / scale) @ W).astype(self.dtype)

    def fold_output(self, mean, scale):
        """Fold y -> y scale + mean into the last (identity) layer, in float64."""
        W, b = self.Ws[-1].astype(np.float64), self.bs[-1].astype(np.float64)
        self.Ws[-1] = (W * scale).astype(self.dtype)
        self.bs[-1] = (b * scale + mean).astype(self.dtype)


def _pipeline_parts(pipe):
    """A fitted Pipeline of StandardScalers (or "passthrough"/None) and, last, an
    MLP estimator: its parts with the scalers folded into the first layer."""
    steps = list(pipe.steps)
    name = type(pipe).__name__
    if not steps:
        raise ValueError(f"fastbp.onnx: the {name} has no steps")
    last_name, est = steps[-1]
    if not hasattr(est, "coefs_"):
        if hasattr(est, "fit") and hasattr(est, "hidden_layer_sizes"):
            raise ValueError(f"fastbp.onnx: the {name}'s last step {last_name!r} "
                             f"({type(est).__name__}) is not fitted (no coefs_); fit the "
                             f"{name} before exporting it")
        raise TypeError(f"fastbp.onnx: a {name} exports when its last step is an MLP estimator; "
                        f"{last_name!r} is a {type(est).__name__}. For other pipelines call "
                        "fastbp.onnx.register_skl2onnx() and convert with skl2onnx.to_onnx")
    parts = _estimator_weights(est)
    for step_name, step in reversed(steps[:-1]):   # the step nearest the MLP first
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if type(step).__name__ != "StandardScaler":
            raise TypeError(f"fastbp.onnx: the {name}'s step {step_name!r} is a "
                            f"{type(step).__name__}; fastbp.onnx folds StandardScalers only. "
                            "Call fastbp.onnx.register_skl2onnx() and convert the pipeline "
                            "with skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32))")
        if not hasattr(step, "n_features_in_"):
            raise ValueError(f"fastbp.onnx: the {name}'s step {step_name!r} is not fitted; fit "
                             f"the {name} before exporting it")
        parts.fold_input(getattr(step, "mean_", None), getattr(step, "scale_", None))
    return parts


def _classes_tensor(classes, name):
    """classes_ as a constant tensor of their own type: strings or numbers."""
    c = np.asarray(classes)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"fastbp.onnx: {name}.classes_ must be a non-empty 1-d array, got shape "
                         f"{c.shape}")
    if c.dtype.kind == "U" or (c.dtype == object and all(isinstance(v, str) for v in c)):
        return c.astype(object)
    if c.dtype.kind in "biuf":
        return c
    raise TypeError(f"fastbp.onnx: {name}.classes_ must hold numbers or str, got dtype {c.dtype}")


def _estimator_graph(parts, onnx, input_dtype=None):
    Ws, bs, acts, out, O, dtype = (parts.Ws, parts.bs, parts.acts, parts.out, parts.O,
                                   parts.dtype)
    name = parts.name
    g = _Graph(onnx, dtype, input_dtype)
    T = onnx.TensorProto
    if parts.classes is None:
        if out not in ("identity", "exp"):
            raise ValueError(f"fastbp.onnx: {name} has no classes_ (a regressor) but "
                             f"out_activation_ {out!r}; expected 'identity' or 'exp'")
        y = g.dense_stack(Ws, bs, acts + [out], VARIABLE if O > 1 else "y")
        if O == 1:  # predict ravels a single output
            g.op("Reshape", [y, g.const("flat", [-1], np.int64)], VARIABLE)
        g.output(VARIABLE, g.elem, ["N", O] if O > 1 else ["N"])
        return g.build("fastbp_regressor", Ws[0].shape[0], f"{name}: predict as {VARIABLE!r}")
    classes = _classes_tensor(parts.classes, name)
    C = len(classes)
    label_elem = T.STRING if classes.dtype == object else \
        onnx.helper.np_dtype_to_tensor_dtype(classes.dtype)
    if out == "softmax":
        if C != O:
            raise ValueError(f"fastbp.onnx: {name} has {C} classes_ for {O} softmax outputs")
        proba = g.dense_stack(Ws, bs, acts + ["softmax"], PROBABILITIES)
        top = g.op("ArgMax", [proba], "argmax", axis=1, keepdims=0)
        g.op("Gather", [g.const("classes", classes, classes.dtype), top], LABEL, axis=0)
        shapes = (["N"], ["N", C])
    elif out == "logistic" and O == 1:
        if C > 2:
            raise ValueError(f"fastbp.onnx: {name} has {C} classes_ for one logistic output; "
                             f"expected 2 (or 1)")
        # LabelBinarizer: the positive class where p > 0.5; a one-class fit
        # predicts its class everywhere, hence the repeated entry
        p = g.dense_stack(Ws, bs, acts + ["logistic"], "p")
        g.op("Concat", [g.op("Sub", [g.const("one", 1), p], "q"), p], PROBABILITIES, axis=1)
        pos = g.op("Cast", [g.op("Greater", [p, g.const("half", 0.5)], "positive")],
                   "positive_i64", to=T.INT64)
        idx = g.op("Reshape", [pos, g.const("flat", [-1], np.int64)], "class_index")
        table = classes if C == 2 else np.concatenate([classes, classes])
        g.op("Gather", [g.const("classes", table, table.dtype), idx], LABEL, axis=0)
        shapes = (["N"], ["N", 2])
    elif out == "logistic":
        if C != O:
            raise ValueError(f"fastbp.onnx: {name} has {C} classes_ for {O} logistic outputs")
        p = g.dense_stack(Ws, bs, acts + ["logistic"], PROBABILITIES)
        g.op("Cast", [g.op("Greater", [p, g.const("half", 0.5)], "positive")], LABEL,
             to=T.INT64)
        label_elem = T.INT64  # multilabel: predict gives the 0/1 indicator matrix
        shapes = (["N", C], ["N", C])
    else:
        raise ValueError(f"fastbp.onnx: {name} has classes_ (a classifier) but out_activation_ "
                         f"{out!r}; expected 'softmax' or 'logistic'")
    g.output(LABEL, label_elem, shapes[0])
    g.output(PROBABILITIES, g.elem, shapes[1])
    return g.build("fastbp_classifier", Ws[0].shape[0],
                   f"{name}: predict as {LABEL!r}, predict_proba as {PROBABILITIES!r}")


# ---- skl2onnx ----------------------------------------------------------------------------

def _skl2onnx_shapes(operator):
    """skl2onnx's shape calculator: a classifier's label (its classes' type) and
    probabilities, or a regressor's variable, in the input's float type."""
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)

    est = operator.raw_operator
    x = operator.inputs[0].type
    N = x.shape[0] if x.shape else None
    ftype = DoubleTensorType if isinstance(x, DoubleTensorType) else FloatTensorType
    if hasattr(est, "classes_"):
        classes = np.asarray(est.classes_)
        if est.out_activation_ == "logistic" and est.n_outputs_ > 1:
            raise NotImplementedError("fastbp.onnx: skl2onnx conversion of a multilabel "
                                      "classifier; export it alone with fastbp.onnx.export")
        label = StringTensorType if classes.dtype.kind in "UO" else Int64TensorType
        if label is Int64TensorType and classes.dtype.kind not in "biu":
            raise NotImplementedError(f"fastbp.onnx: skl2onnx needs integer or string classes_, "
                                      f"got dtype {classes.dtype}")
        n_proba = max(len(classes), 2)
        operator.outputs[0].type = label([N])
        operator.outputs[1].type = ftype([N, n_proba])
    else:
        operator.outputs[0].type = ftype([N, est.n_outputs_])


def _skl2onnx_convert(scope, operator, container):
    """skl2onnx's converter: fastbp.onnx's graph of the estimator, computed in the
    input's float type, inlined into the container with unique names."""
    import onnx

    est = operator.raw_operator
    x = operator.inputs[0]
    dt = np.float64 if x.type.__class__.__name__ == "DoubleTensorType" else np.float32
    parts = _estimator_weights(est)
    parts.Ws = [W.astype(dt) for W in parts.Ws]
    parts.bs = [b.astype(dt) for b in parts.bs]
    parts.dtype = np.dtype(dt)
    g = _estimator_graph(parts, onnx, dt)
    rename = {INPUT: x.full_name}
    outs = [o.name for o in g.output]
    for o, var in zip(outs, operator.outputs):
        rename[o] = var.full_name
    if not hasattr(est, "classes_") and est.n_outputs_ == 1:
        # skl2onnx's regressors give (N, 1): reshape the (N,) of predict back
        rename[VARIABLE] = scope.get_unique_variable_name("variable_flat")
        container.add_node("Reshape", [rename[VARIABLE], _skl2onnx_const(
            scope, container, "shape", np.array([-1, 1], np.int64))],
            [operator.outputs[0].full_name], name=scope.get_unique_operator_name("Reshape"))

    def name_of(n):
        if n not in rename:
            rename[n] = scope.get_unique_variable_name(f"fastbp_{n}")
        return rename[n]

    for init in g.initializer:
        a = onnx.numpy_helper.to_array(init)
        container.add_initializer(name_of(init.name), init.data_type, list(a.shape),
                                  a.flatten().tolist() if a.dtype != object else
                                  [v.encode() if isinstance(v, str) else v for v in a.flatten()])
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        container.add_node(node.op_type, [name_of(i) for i in node.input],
                           [name_of(o) for o in node.output],
                           name=scope.get_unique_operator_name(f"fastbp_{node.op_type}"),
                           **attrs)


def _skl2onnx_const(scope, container, stem, value):
    import onnx

    name = scope.get_unique_variable_name(stem)
    container.add_initializer(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                              list(value.shape), value.flatten().tolist())
    return name


def register_skl2onnx():
    """Register fastbp.sklearn's MLPClassifier and MLPRegressor with skl2onnx
    (skl2onnx.update_registered_converter), so that skl2onnx.to_onnx converts
    pipelines holding them:

        fastbp.onnx.register_skl2onnx()
        onx = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32),
                               options={"zipmap": False})

    The estimators' graphs are fastbp.onnx's, computed in the input's float
    type. Classifier outputs: "label", "probabilities" (skl2onnx's ZipMap
    unless zipmap=False); regressor: "variable" (N, outputs). Needs skl2onnx
    (pip install skl2onnx). Safe to call more than once."""
    try:
        from skl2onnx import update_registered_converter
    except ImportError:
        raise ImportError("fastbp.onnx.register_skl2onnx needs skl2onnx: pip install skl2onnx")
    from .sklearn import MLPClassifier, MLPRegressor

    update_registered_converter(MLPClassifier, "FastbpMLPClassifier", _skl2onnx_shapes,
                                _skl2onnx_convert, options={"zipmap": [True, False, "columns"],
                                                            "nocl": [True, False]})
    update_registered_converter(MLPRegressor, "FastbpMLPRegressor", _skl2onnx_shapes,
                                _skl2onnx_convert)
