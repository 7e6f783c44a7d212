"""The registries (fastbp.ops): every registered op has everything an op needs.

For each activation, loss and optimizer: its native kernel (the C code agrees, and
the public functions exist), its NumPy twin (fastbp.reference), a gradient check
of that twin, its ONNX lowering (or an explicit refusal), and its CUDA support
(a kernel in csrc/cuda/, or an explicit NotImplementedError naming it). The tests
loop over the registries, so a new op is checked here without being listed.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import _core, ops, optim
from fastbp import reference as ref

from conftest import NUMGRAD_TOL, act_kernels, bwd_in, rel_err

ROOT = Path(__file__).resolve().parents[1]
ACTS = list(ops.ACTIVATIONS.values())
LOSSES = list(ops.LOSSES.values())
OPTS = list(ops.OPTIMIZERS.values())


def _c_enum(prefix):
    """code -> enum name of csrc/fbp_api.h, e.g. {0: "FBP_ACT_NONE", ...}."""
    text = (ROOT / "csrc" / "fbp_api.h").read_text()
    return {int(v): n for n, v in re.findall(rf"\b({prefix}\w+) = (\d+)", text)}


def _function_body(path, signature):
    text = (ROOT / path).read_text()
    start = text.index(signature)
    return text[start:text.index("\n}\n", start)]


def test_codes_agree_with_c():
    """What fastbp._core checks at import, seen from here too."""
    assert {n: c for n, c in _core.ACTIVATIONS.items() if n is not None} == \
        {a.name: a.code for a in ACTS}
    assert _core.LOSSES == {l.name: l.code for l in LOSSES}
    assert _core.OPTIMIZERS == {o.name: o.code for o in OPTS}


def test_every_c_count_has_its_static_assert():
    """A _Static_assert on each count sits beside its tables and switches: as many
    as there are tables per family, each with the registry's count."""
    counts = {"FBP_NACT": len(ACTS), "FBP_NLOSS": len(LOSSES), "FBP_NOPT": len(OPTS)}
    found = {k: [] for k in counts}
    for path in list((ROOT / "csrc").glob("*.[ch]")) + list((ROOT / "csrc" / "cuda").glob("*")):
        for name, n in re.findall(r"(?:_Static_assert|static_assert)\((FBP_N\w+) == (\d+)",
                                  path.read_text()):
            if name in found:
                found[name].append((path.name, int(n)))
    for name, n in counts.items():
        assert found[name], f"no static assert on {name}"
        assert all(v == n for _, v in found[name]), (name, n, found[name])


@pytest.mark.parametrize("a", ACTS, ids=lambda a: a.name)
def test_activation_entry(a):
    assert a.init in ("he", "xavier") and a.backward_input in ("output", "input")
    assert set(a.backends) <= set(ops.BACKENDS) and "cpu" in a.backends
    fwd, bwd = ref.ACTIVATIONS[a.name]  # the NumPy twin
    x = np.random.default_rng(3).standard_normal((4, 5))
    if a.kernels:  # the native kernels, against the twin
        kf, kb = act_kernels(a.name)
        np.testing.assert_allclose(kf(x), fwd(x), rtol=1e-12, atol=1e-15)
        dy = np.cos(x)
        np.testing.assert_allclose(kb(dy, bwd_in(a.name, x, fwd(x))),
                                   bwd(dy, bwd_in(a.name, x, fwd(x))), rtol=1e-12, atol=1e-15)
    else:
        assert a.name == "identity"
    # the twin's gradient against a numerical one
    x = np.where(np.abs(x) < 1e-2, x + 0.1, x)  # off ReLU's kink
    G = np.sin(3 * x)
    num = ref.numerical_gradient(lambda: np.sum(G * fwd(x)), x)
    assert rel_err(bwd(G, bwd_in(a.name, x, fwd(x))), num) < NUMGRAD_TOL
    # the MLP and the layers accept it, and the scikit-learn estimators by its name
    fastbp.MLP([3, 4, 2], a.name)
    fastbp.layers.Dense(3, 4, a.name)
    assert ops.sklearn_activation(a.sklearn or a.name) is a


@pytest.mark.parametrize("a", ACTS, ids=lambda a: a.name)
def test_activation_onnx_lowering(a):
    """The lowering runs in ONNX Runtime and gives the twin's values."""
    if a.onnx is None:
        assert a.name == "identity"  # the Gemm alone
        return
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from fastbp.onnx import DEFAULT_OPSET, _Graph

    # float32: ONNX Runtime's CPU Erf has no float64 kernel (docs/onnx.md)
    g = _Graph(onnx, np.float32)
    a.onnx(g, "input", "y")
    g.output("y", g.elem, ["N", 3])
    m = onnx.helper.make_model(g.build("act", 3, a.name),
                               opset_imports=[onnx.helper.make_opsetid("", DEFAULT_OPSET)],
                               ir_version=8)
    onnx.checker.check_model(m)
    x = np.linspace(-4, 4, 12).reshape(4, 3).astype(np.float32)
    got = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref.ACTIVATIONS[a.name][0](x.astype(np.float64)),
                               rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("a", ACTS, ids=lambda a: a.name)
def test_activation_cuda_kernel_or_refusal(a):
    """"cuda": act_apply and act_mask (csrc/cuda/fbpc_internal.h) have its case;
    otherwise the binding refuses it on CUDA arrays by name. "cuda_step" likewise
    for the GPU step (CudaMLP)."""
    enum = _c_enum("FBP_ACT_")[a.code]
    for fn in ("T act_apply(int act, T v)", "T act_mask(int act, T y)"):
        body = _function_body("csrc/cuda/fbpc_internal.h", fn)
        assert (f"case {enum}:" in body) == ("cuda" in a.backends), (fn, enum)
    for backend in ("cuda", "cuda_step"):
        if backend in a.backends:
            ops.require("f", backend, "activation", [a.name])
        else:
            with pytest.raises(NotImplementedError, match=f"f: activation '{a.name}' is not"):
                ops.require("f", backend, "activation", [a.name])


@pytest.mark.parametrize("l", LOSSES, ids=lambda l: l.name)
def test_loss_entry(l):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 3))
    t = (rng.integers(0, 3, 6) if l.name == "softmax_cross_entropy" else
         rng.uniform(0, 1, (6, 3)))
    loss, dz = getattr(fastbp, l.kernel)(z, t)  # the native kernel, against the twin
    rloss, rdz = getattr(ref, l.kernel)(z, t)
    assert abs(loss - rloss) <= 1e-12 * max(1.0, abs(rloss))
    np.testing.assert_allclose(dz, rdz, rtol=1e-12, atol=1e-15)
    num = ref.numerical_gradient(lambda: getattr(ref, l.kernel)(z, t)[0], z)
    assert rel_err(rdz, num) < NUMGRAD_TOL
    # ONNX: the probabilities' operator, or an explicit refusal for a regression loss
    m = fastbp.MLP([3, 3], loss=l.name, dtype=np.float64)
    pytest.importorskip("onnx")
    from fastbp import onnx as fonnx
    if l.proba is None:
        with pytest.raises(ValueError, match="probabilities=True needs a classification loss"):
            fonnx.to_onnx(m, probabilities=True)
    else:
        fonnx.to_onnx(m, probabilities=True)
    if "cuda_step" not in l.backends:
        with pytest.raises(NotImplementedError, match=f"loss '{l.name}'"):
            ops.require("f", "cuda_step", "loss", [l.name])


@pytest.mark.parametrize("o", OPTS, ids=lambda o: o.name)
def test_optimizer_entry(o):
    """The native step and the twin's optimizer_step agree over three steps (with
    every state the optimizer may keep), from the registry's defaults."""
    settings = dict(o.defaults, lr=0.05)
    for k in ("momentum", "centered"):
        if k in settings:
            settings[k] = 0.5 if k == "momentum" else True
    if "weight_decay" in settings:
        settings["weight_decay"] = 0.01
    if o.public:
        opt = getattr(optim, o.name)(**settings)
        assert opt.name == o.name and set(opt.state) == set(o.all_state)
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    m = fastbp.MLP([4, 5, 3], "tanh", dtype=np.float64, seed=1)
    params = m.get_params()
    W, b = m._param_lists()
    state = {k: [np.zeros_like(a) for a in (W if k.endswith("W") else b)]
             for k in ops.state_buffers(o.all_state)}
    ws = _core.MLPWorkspace(W, b, m._layer_acts, m.loss_name, 16, state)
    opts = _core.StepOptions(_core.STEP_TRAIN, **(opt.options() if o.public else
                                                   dict(settings, optimizer=o.name)))
    rstate = {k: {kind: np.zeros_like(v) for kind in o.all_state} for k, v in params.items()}
    spec = dict(settings, name=o.name)
    for step in range(1, 4):
        _core.mlp_step(ws, X, y, opts)
        ref.mlp_train_step(params, X, y, None, "tanh", "softmax_cross_entropy",
                           optimizer=spec, state=rstate, step=step)
    for k, v in m.get_params().items():
        np.testing.assert_allclose(v, params[k], rtol=1e-11, atol=1e-13)
    if "cuda_step" not in o.backends:
        with pytest.raises(NotImplementedError, match=f"optimizer '{o.name}'"):
            ops.require("f", "cuda_step", "optimizer", [o.name])


# ---- backends: each answers what it runs ---------------------------------------------------

REGISTRIES = {"activation": ops.ACTIVATIONS, "loss": ops.LOSSES, "optimizer": ops.OPTIMIZERS}


@pytest.mark.parametrize("backend", list(ops.BACKENDS))
def test_backend_answers_from_the_registry(backend):
    """A backend's answer for an op is its registry entry's `backends`; the CPU
    runs every op and option; a refusal has one form for every backend."""
    be = ops.BACKENDS[backend]
    where = {"cpu": "here", "cuda": "on CUDA arrays", "cuda_step": "on the GPU"}[backend]
    for kind, reg in REGISTRIES.items():
        for name, entry in reg.items():
            runs = backend in entry.backends
            assert be.supports(kind, name) == ops.supports(backend, kind, name) == runs
            assert runs or backend != "cpu", (kind, name)
            if not runs:
                with pytest.raises(NotImplementedError,
                                   match=re.escape(f"f: {kind} {name!r} is not supported "
                                                   f"{where} yet (docs/cuda.md lists what is)")):
                    be.require("f", [(kind, name)])
    for option, words in ops.OPTIONS.items():
        assert be.supports("option", option) == (backend == "cpu")
        if backend != "cpu":
            with pytest.raises(NotImplementedError,
                               match=re.escape(f"f: {words} is not supported {where} yet")):
                be.require("f", [("option", option)])


def test_backend_names_the_first_use_it_lacks():
    be = ops.BACKENDS["cuda_step"]
    be.require("f", [("optimizer", "SGD"), ("loss", "mse")])
    with pytest.raises(NotImplementedError, match=r"f: optimizer 'Adam' is not"):
        be.require("f", [("loss", "mse"), ("optimizer", "Adam"), ("option", "nesterov")])
    ops.BACKENDS["cpu"].require("f", [("optimizer", "Adam"), ("option", "nesterov")])


@pytest.mark.parametrize("l", [l for l in LOSSES if "cuda" not in l.backends],
                         ids=lambda l: l.name)
def test_loss_kernel_without_cuda_asks_the_backend(l):
    """A loss kernel CUDA arrays lack asks the backend (fastbp._core's _require)
    before anything else; the CUDA table's optional entry agrees at load."""
    src = (ROOT / "src" / "fastbp" / "_kernels.pxi").read_text()
    body = src[src.index(f"def {l.kernel}("):]
    body = body[:body.index("\ndef ")]
    assert f'_require(fn, dz.device, "loss", "{l.name}")' in body
