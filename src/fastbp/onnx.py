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
    for l in _ops.LOSSES.values():
        low.setdefault(l.out_activation, _ops.onnx_unary(l.proba) if l.proba else None)
    low.setdefault("exp", _ops.onnx_unary("Exp"))
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


def to_onnx(model, opset=None, *, probabilities=False):
    """The ONNX graph of ``model`` as an ``onnx.ModelProto``; see export()."""
    onnx = _onnx()
    opset = _check_opset(opset, onnx)
    if not isinstance(probabilities, (bool, np.bool_)):
        raise TypeError(f"fastbp.onnx: probabilities must be True or False, got {probabilities!r}")
    if hasattr(model, "coefs_"):
        if probabilities:
            raise ValueError("fastbp.onnx: probabilities=True is for an MLP; an estimator's graph "
                             "always has the outputs of predict and predict_proba")
        g = _estimator_graph(model, onnx)
    else:
        from .model import MLP

        if not isinstance(model, MLP):
            if hasattr(model, "fit") and hasattr(model, "get_params"):
                raise ValueError(f"fastbp.onnx: {type(model).__name__} is not fitted (no coefs_); "
                                 f"call fit before exporting it")
            raise TypeError(f"fastbp.onnx: model must be a fastbp.MLP or a fitted MLP estimator "
                            f"(with coefs_ and intercepts_), got {type(model).__name__}")
        g = _mlp_graph(model, bool(probabilities), onnx)
    h = onnx.helper
    ir = DEFAULT_IR_VERSION if opset == DEFAULT_OPSET else \
        h.find_min_ir_version_for([h.make_opsetid("", opset)])
    from . import __version__

    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=ir,
                     producer_name="fastbp", producer_version=__version__)
    return m


def export(model, path, opset=None, *, probabilities=False):
    """Write ``model`` to ``path`` as an ONNX file; returns the path.

    model : a fastbp.MLP, or a fitted estimator with scikit-learn's MLP
        attributes (fastbp.sklearn's, or sklearn.neural_network's MLPClassifier
        and MLPRegressor).
    path : file name (str or os.PathLike), written as given.
    opset : ONNX opset to stamp; None for DEFAULT_OPSET (17, with IR version 8,
        which ONNX Runtime 1.12 and every later release load). Another opset from
        13 to the installed onnx's newest is written with the oldest IR version
        that knows it.
    probabilities : for an MLP, add a second output "probabilities": the softmax
        of the outputs (loss "softmax_cross_entropy") or their sigmoid
        ("binary_cross_entropy"), as predict_proba gives; a ValueError for "mse".

    The graph's input is "input", (N, inputs) in the model's dtype (float32 or
    float64), N free. Outputs: an MLP's "output" (predict: logits or values) and
    "probabilities" when asked; a classifier's "label" (predict: labels of the
    classes_ dtype, (N,), or an int64 (N, labels) indicator for multilabel) and
    "probabilities" (predict_proba); a regressor's "variable" (predict: (N,) for
    one output, (N, outputs) otherwise).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"fastbp.onnx: path must be a file name (str or os.PathLike), got "
                        f"{type(path).__name__}")
    m = to_onnx(model, opset, probabilities=probabilities)
    _onnx().save_model(m, path)
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

    def __init__(self, onnx, dtype):
        self.onnx, self.h = onnx, onnx.helper
        self.dtype = np.dtype(dtype)
        self.elem = self.h.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.inits, self.outputs = [], [], []

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
        x, L = INPUT, len(Ws)
        for l, (W, b, act) in enumerate(zip(Ws, bs, acts), start=1):
            lower = _OPS[act]
            z = last if l == L and lower is None else f"z{l}"
            self.op("Gemm", [x, self.const(f"W{l}", W), self.const(f"b{l}", b)], z)
            x = z if lower is None else lower(self, z, last if l == L else f"h{l}")
        return x

    def output(self, name, elem, shape):
        self.outputs.append(self.h.make_tensor_value_info(name, elem, shape))

    def build(self, name, n_in, doc):
        inp = self.h.make_tensor_value_info(INPUT, self.elem, ["N", n_in])
        return self.h.make_graph(self.nodes, name, [inp], self.outputs, self.inits,
                                 doc_string=doc)


def _mlp_graph(model, probabilities, onnx):
    proba = _ops.LOSSES[model.loss_name].proba
    if probabilities and proba is None:
        names = " or ".join(repr(l.name) for l in _ops.LOSSES.values() if l.proba)
        raise ValueError(f"fastbp.onnx: probabilities=True needs a classification loss "
                         f"({names}); this model's "
                         f"loss is {model.loss_name!r}, whose outputs are values")
    p = model.get_params()
    L = model.n_layers
    g = _Graph(onnx, model.dtype)
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
    return ([W.astype(dtype, copy=False) for W in Ws], [b.astype(dtype, copy=False) for b in bs],
            acts, out, O, dtype)


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


def _estimator_graph(est, onnx):
    Ws, bs, acts, out, O, dtype = _estimator_weights(est)
    name = type(est).__name__
    g = _Graph(onnx, dtype)
    T = onnx.TensorProto
    if not hasattr(est, "classes_"):
        if out not in ("identity", "exp"):
            raise ValueError(f"fastbp.onnx: {name} has no classes_ (a regressor) but "
                             f"out_activation_ {out!r}; expected 'identity' or 'exp'")
        y = g.dense_stack(Ws, bs, acts + [out], VARIABLE if O > 1 else "y")
        if O == 1:  # predict ravels a single output
            g.op("Reshape", [y, g.const("flat", [-1], np.int64)], VARIABLE)
        g.output(VARIABLE, g.elem, ["N", O] if O > 1 else ["N"])
        return g.build("fastbp_regressor", Ws[0].shape[0], f"{name}: predict as {VARIABLE!r}")
    classes = _classes_tensor(est.classes_, name)
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
