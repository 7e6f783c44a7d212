"""fastbp.ops: the registries, one entry per op; each fact about an op is written here.

Every activation, loss and optimizer fastbp knows has one entry below, and every
other place that needs to know about ops reads it from here: the model's and the
layers' checks and default inits, fastbp.sklearn's names, the ONNX lowering, the
CLI's choices, the checkpoint reader's whitelist, the step's state checks
(fastbp._core) and the tests' parametrizations. The C codes are those of
csrc/fbp_api.h; fastbp._core checks at import that both agree (names, codes,
counts), so a code added on one side only fails at once.

Adding an op: docs/dev/adding-an-op.md.
"""
import functools
import math
from dataclasses import dataclass, field

__all__ = ["Activation", "Loss", "OptimizerInfo", "ACTIVATIONS", "LOSSES", "OPTIMIZERS",
           "Backend", "BACKENDS", "OPTIONS", "supports", "require",
           "activation", "hidden_names", "sklearn_activation", "optimizer_info",
           "state_buffers", "STATE_BUFFERS"]


#: the step's options that not every backend runs, each with the words its
#: refusal names it by ("mlp_step: nesterov=True is not supported on the GPU yet")
OPTIONS = {
    "update": "a step from given gradients (mode UPDATE)",
    "backward": "a data-parallel step (mode BACKWARD)",
    "nesterov": "nesterov=True",
    "dampening": "dampening",
    "clip_value": "clip_value",
    "norm": "a data-parallel normalization (norm)",
    "alpha": "alpha (scikit-learn's L2 term)",
    "loss_eps": "loss_eps (scikit-learn's clipped log-loss)",
    "sample_weight": "sample_weight",
    "dropout": "dropout",
    "bfloat16": "matmul_precision='bfloat16'",
}

_KIND = {"activation": "ACTIVATIONS", "loss": "LOSSES", "optimizer": "OPTIMIZERS"}


@dataclass(frozen=True)
class Backend:
    """Where ops run, answering what it runs: an op (kind "activation", "loss",
    "optimizer") where its registry entry lists the backend, an option (kind
    "option", an OPTIONS key) where `options` has it (None: every option).
    where: how a refusal names the place ("on the GPU")."""
    name: str
    where: str
    options: frozenset = None

    def supports(self, kind, name):
        if kind == "option":
            return self.options is None or name in self.options
        return self.name in globals()[_KIND[kind]][name].backends

    def require(self, fn, uses):
        """NotImplementedError naming the first of uses, (kind, name) pairs, that
        this backend does not run: the one refusal of every backend and caller."""
        for kind, name in uses:
            if not self.supports(kind, name):
                what = OPTIONS[name] if kind == "option" else f"{kind} {name!r}"
                raise NotImplementedError(f"{fn}: {what} is not supported {self.where} yet "
                                          "(docs/cuda.md lists what is)")


#: where an op runs: "cpu" (csrc/, every op and option), "cuda" (its standalone
#: kernels on CUDA arrays, csrc/cuda/), "cuda_step" (in the GPU MLP's training step,
#: csrc/cuda/step.cu: SGD with momentum, weight decay and clip_norm, none of OPTIONS)
BACKENDS = {b.name: b for b in (
    Backend("cpu", "here"),
    Backend("cuda", "on CUDA arrays", frozenset()),
    Backend("cuda_step", "on the GPU", frozenset()),
)}


def supports(backend, kind, name):
    """Whether backend (a BACKENDS name) runs the op or option `name` of kind."""
    return BACKENDS[backend].supports(kind, name)


def require(fn, backend, kind, names):
    """NotImplementedError naming the first of names (of one kind) the backend lacks."""
    BACKENDS[backend].require(fn, [(kind, name) for name in names])


# ---- activations -------------------------------------------------------------------

def onnx_unary(op_type):
    """An ONNX lowering of one standard operator."""
    def lower(g, z, out):
        return g.op(op_type, [z], out)
    lower.ops = (op_type,)
    return lower


def _onnx_gelu(g, z, out):
    """x (1 + erf(x / sqrt(2))) / 2 from Erf: opset 17 has no Gelu (opset 20 does)."""
    e = g.op("Erf", [g.op("Mul", [z, g.const(f"{out}_rsqrt2", math.sqrt(0.5))], f"{out}_s")],
             f"{out}_erf")
    one = g.op("Add", [e, g.const(f"{out}_one", 1.0)], f"{out}_1p")
    return g.op("Mul", [g.op("Mul", [z, one], f"{out}_x1p"), g.const(f"{out}_half", 0.5)], out)


def _onnx_gelu_tanh(g, z, out):
    """x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2."""
    c = lambda name, v: g.const(f"{out}_{name}", v)  # noqa: E731
    x3 = g.op("Mul", [g.op("Mul", [z, z], f"{out}_x2"), z], f"{out}_x3")
    inner = g.op("Add", [z, g.op("Mul", [x3, c("kappa", 0.044715)], f"{out}_kx3")],
                 f"{out}_in")
    th = g.op("Tanh", [g.op("Mul", [inner, c("beta", math.sqrt(2 / math.pi))], f"{out}_bin")],
              f"{out}_th")
    one = g.op("Add", [th, c("one", 1.0)], f"{out}_1p")
    return g.op("Mul", [g.op("Mul", [z, one], f"{out}_x1p"), c("half", 0.5)], out)


def _onnx_silu(g, z, out):
    """x sigmoid(x) (opset 17 has no Swish)."""
    return g.op("Mul", [z, g.op("Sigmoid", [z], f"{out}_sig")], out)


@dataclass(frozen=True)
class Activation:
    """One activation.

    name: what users pass (MLP, Dense, fastbp.sklearn's extension names) and C's
    fbp_act_name; code: enum fbp_act; sklearn: scikit-learn's MLP name for it, or
    None where scikit-learn has none (fastbp.sklearn still accepts ``name`` as an
    extension, docs/sklearn.md); onnx: lower(g, z, out) building act(z) in an ONNX
    graph (fastbp.onnx._Graph), None for the identity; init: the default weight
    init of a layer it follows ("he" or "xavier"); backward_input: what the
    derivative is computed from, "output" (y: the mask-from-output path, no extra
    memory) or "input" (the pre-activation z, which the training workspace then
    keeps for the layers that use it); backends: where it runs (BACKENDS);
    kernels: the names of its
    public functions in fastbp (None for the identity, which has none), called with
    kernel_kwargs ((name, value) pairs: gelu's approximate=) for this entry.
    """
    name: str
    code: int
    sklearn: object
    onnx: object
    init: str
    backward_input: str
    backends: tuple = ("cpu", "cuda", "cuda_step")
    kernels: tuple = None
    kernel_kwargs: tuple = ()
    formula: str = ""


ACTIVATIONS = {a.name: a for a in (
    Activation("identity", 0, "identity", None, "he", "output", formula="y = x"),
    Activation("relu", 1, "relu", onnx_unary("Relu"), "he", "output",
               kernels=("relu_forward", "relu_backward"), formula="y = max(x, 0)"),
    Activation("sigmoid", 2, "logistic", onnx_unary("Sigmoid"), "xavier", "output",
               kernels=("sigmoid_forward", "sigmoid_backward"), formula="y = 1 / (1 + exp(-x))"),
    Activation("tanh", 3, "tanh", onnx_unary("Tanh"), "xavier", "output",
               kernels=("tanh_forward", "tanh_backward"), formula="y = tanh(x)"),
    Activation("gelu", 4, None, _onnx_gelu, "he", "input", ("cpu", "cuda"),
               ("gelu_forward", "gelu_backward"), (("approximate", "none"),),
               "y = x Phi(x) = x (1 + erf(x / sqrt(2))) / 2"),
    Activation("gelu_tanh", 5, None, _onnx_gelu_tanh, "he", "input", ("cpu", "cuda"),
               ("gelu_forward", "gelu_backward"), (("approximate", "tanh"),),
               "y = x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2"),
    Activation("silu", 6, None, _onnx_silu, "he", "input", ("cpu", "cuda"),
               ("silu_forward", "silu_backward"), formula="y = x sigmoid(x)"),
)}


def hidden_names():
    """The activation names a hidden layer takes, in code order."""
    return tuple(ACTIVATIONS)


def activation(fn, name, allow_none=False):
    """The entry of an activation name (None: the identity, where allowed);
    ValueError naming the choices otherwise."""
    if name is None and allow_none:
        return ACTIVATIONS["identity"]
    if isinstance(name, str) and name in ACTIVATIONS:
        return ACTIVATIONS[name]
    choices = ", ".join(repr(n) for n in ACTIVATIONS)
    raise ValueError(f"{fn}: unknown activation {name!r}; expected one of "
                     f"{'None, ' if allow_none else ''}{choices}")


def sklearn_activation(name):
    """scikit-learn's activation name (or fastbp.sklearn's extension name) -> the
    entry; None if unknown."""
    for a in ACTIVATIONS.values():
        if name == (a.sklearn or a.name):
            return a
    return None


# ---- losses ------------------------------------------------------------------------

@dataclass(frozen=True)
class Loss:
    """One loss, fused with the output activation it is the canonical link of.

    name: MLP's loss= and C's fbp_loss_name; code: enum fbp_loss; out_activation:
    scikit-learn's out_activation_ for it; proba: the ONNX operator that turns the
    outputs into predict_proba's probabilities (None: a regression loss);
    classify: its targets are classes (accuracy is its score, not r2); kernel: the
    public function; backends.
    """
    name: str
    code: int
    out_activation: str
    proba: object
    classify: bool
    kernel: str
    backends: tuple = ("cpu", "cuda", "cuda_step")


LOSSES = {l.name: l for l in (
    Loss("softmax_cross_entropy", 0, "softmax", "Softmax", True, "softmax_cross_entropy"),
    Loss("mse", 1, "identity", None, False, "mse_loss"),
    Loss("binary_cross_entropy", 2, "logistic", "Sigmoid", True, "binary_cross_entropy",
         backends=("cpu",)),
    Loss("poisson", 3, "exp", None, False, "poisson_loss", backends=("cpu",)),
)}


# ---- optimizers --------------------------------------------------------------------

#: the state buffers of each kind of optimizer state, per parameter (W: the
#: weights', b: the biases'): "v" momentum or first moment, "s" second moment
#: (Adam's, RMSprop's square average), "g" centered RMSprop's gradient average
STATE_BUFFERS = {"v": ("vW", "vb"), "s": ("sW", "sb"), "g": ("gW", "gb")}


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer of the native step.

    name: C's fbp_opt_name and the checkpoint's optimizer field; code: enum
    fbp_opt; state(options) -> the state kinds (STATE_BUFFERS keys) the step with
    those options updates; decoupled: weight decay applied to the parameters
    (AdamW's p *= 1 - lr wd), not added to the loss gradient, so the loss has no
    reg term; defaults: its options and their defaults (fastbp.optim's names);
    public: fastbp.optim has a class for it (the sklearn_* rules are
    fastbp.sklearn's own); backends: where the step runs it.
    """
    name: str
    code: int
    state: object
    decoupled: bool
    defaults: dict = field(default_factory=dict)
    public: bool = True
    backends: tuple = ("cpu",)

    @property
    def all_state(self):
        """Every state kind some setting of the optimizer uses."""
        fullest = self.state({"momentum": 1.0, "centered": True})
        return tuple(k for k in STATE_BUFFERS if k in fullest)

    @property
    def checkpoint_fields(self):
        """The names its state takes in a model file: state_<buffer><layer>."""
        return tuple(f"state_{b}" for k in self.all_state for b in STATE_BUFFERS[k])


def _setting(o, name, default):
    """An option of o: a dict of options, or an optimizer object."""
    return o.get(name, default) if isinstance(o, dict) else getattr(o, name, default)


def _momentum_state(o):
    return ("v",) if _setting(o, "momentum", 0.0) != 0.0 else ()


def _adam_state(o):
    return ("v", "s")


def _rmsprop_state(o):
    return (("v",) if _setting(o, "momentum", 0.0) != 0.0 else ()) + ("s",) + \
        (("g",) if _setting(o, "centered", False) else ())


_SGD = dict(lr=None, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0)
_ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

OPTIMIZERS = {o.name: o for o in (
    OptimizerInfo("SGD", 0, _momentum_state, False, _SGD, backends=("cpu", "cuda_step")),
    OptimizerInfo("Adam", 1, _adam_state, False, _ADAM),
    OptimizerInfo("AdamW", 2, _adam_state, True, dict(_ADAM, weight_decay=1e-2)),
    OptimizerInfo("sklearn_sgd", 3, _momentum_state, False,
                  dict(lr=None, momentum=0.0, nesterov=False), public=False),
    OptimizerInfo("sklearn_adam", 4, _adam_state, False,
                  dict(lr=None, betas=(0.9, 0.999), eps=1e-8), public=False),
    OptimizerInfo("RMSprop", 5, _rmsprop_state, False,
                  dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                       centered=False)),
)}


def optimizer_info(fn, name):
    """The entry of an optimizer name; ValueError naming the choices otherwise."""
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"{fn}: unknown optimizer {name!r}; expected one of "
                         f"{sorted(OPTIMIZERS)}") from None


@functools.lru_cache(maxsize=None)
def _state_buffers(kinds):
    return tuple(b for k in kinds for b in STATE_BUFFERS[k])


def state_buffers(kinds):
    """The workspace buffer names of state kinds, weights' then biases' per kind
    (remembered: a training step asks each time, and allocates nothing)."""
    return _state_buffers(tuple(kinds))


def _check_counts():
    # codes are dense from 0, as the C tables index them; the CPU runs every op
    # (fastbp._core asks a backend only for CUDA arrays and the GPU step)
    for reg in (ACTIVATIONS, LOSSES, OPTIMIZERS):
        assert sorted(e.code for e in reg.values()) == list(range(len(reg))), reg
        assert all("cpu" in e.backends and set(e.backends) <= set(BACKENDS)
                   for e in reg.values()), reg


_check_counts()
