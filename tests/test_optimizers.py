"""fastbp.optim (SGD, Adam, AdamW) in MLP.train_step: against torch.optim itself
(two parameter groups: the weights with weight_decay, the biases without), against
reference.mlp_train_step(optimizer=, state=, step=), the model's optimizer state
across calls, and the optimizers' argument checks."""

import numpy as np
import pytest

from fastbp import MLP, optim
from fastbp import reference as ref

from conftest import raises

SIZES = [6, 9, 7, 4]          # two hidden layers
STEPS = 25


def max_rel(a, b):
    """max |a - b| / max |b|: the relative difference of a tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def batch(rng, sizes, loss, dtype, N=8):
    x = rng.standard_normal((N, sizes[0])).astype(dtype)
    C = sizes[-1]
    if loss == "softmax_cross_entropy":
        return x, rng.integers(0, C, N)
    if loss == "binary_cross_entropy":
        return x, rng.random((N, C)).astype(dtype)
    return x, rng.standard_normal((N, C)).astype(dtype)


# ---------------------------------------------------------------------------
# against torch.optim
# ---------------------------------------------------------------------------

@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


def torch_loss(torch, loss, z, t):
    F = torch.nn.functional
    if loss == "softmax_cross_entropy":
        return F.cross_entropy(z, torch.as_tensor(t))
    t = torch.as_tensor(t)
    if loss == "mse":
        return 0.5 * ((z - t) ** 2).sum() / z.shape[0]
    return F.binary_cross_entropy_with_logits(z, t, reduction="sum") / z.shape[0]


def vs_torch(torch, opt, topt, *, acts=("tanh", "relu"), loss="softmax_cross_entropy",
             dtype=np.float64, clip_norm=None, clip_value=None, steps=STEPS, sizes=SIZES):
    """steps of model.train_step(optimizer=opt) and of torch.optim (topt(groups)) from
    the same start on the same batches; returns (max relative difference of the
    parameters, of the losses, how far the parameters moved)."""
    model = MLP(sizes, list(acts), loss, dtype=dtype, seed=1)
    start = model.get_params()
    L = len(sizes) - 1
    W = [torch.tensor(start[f"W{l}"], requires_grad=True) for l in range(1, L + 1)]
    b = [torch.tensor(start[f"b{l}"], requires_grad=True) for l in range(1, L + 1)]
    wd = opt.weight_decay
    topt = topt([{"params": W}, {"params": b, "weight_decay": 0.0}])
    act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
           "identity": lambda h: h}
    rng = np.random.default_rng(2)
    loss_diff = 0.0
    for _ in range(steps):
        x, t = batch(rng, sizes, loss, dtype)
        got = model.train_step(x, t, optimizer=opt, clip_norm=clip_norm, clip_value=clip_value)
        h = torch.tensor(x)
        for l in range(L):
            h = h @ W[l] + b[l]
            if l < L - 1:
                h = act[acts[l]](h)
        value = torch_loss(torch, loss, h, t)
        topt.zero_grad()
        value.backward()
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(W + b, clip_value)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(W + b, clip_norm)
        want = value.item()
        if opt.name != "AdamW":  # fastbp's loss has the coupled decay's term
            want += 0.5 * wd * sum(float((w.detach().double() ** 2).sum()) for w in W)
        loss_diff = max(loss_diff, abs(got - want) / abs(want))
        topt.step()
    diff = moved = 0.0
    for l in range(L):
        for name, tt in ((f"W{l + 1}", W[l]), (f"b{l + 1}", b[l])):
            got = model.params[name]
            assert got.dtype == dtype
            diff = max(diff, max_rel(got, tt.detach().numpy()))
            moved = max(moved, max_rel(got, start[name]) if name[0] == "W" else 0.0)
    return diff, loss_diff, moved


def _sgd(torch, **kw):
    return optim.SGD(0.1, **kw), lambda g: torch.optim.SGD(g, 0.1, **kw)


def _adam(torch, kind, **kw):
    return (getattr(optim, kind)(0.01, **kw),
            lambda g: getattr(torch.optim, kind)(g, 0.01, **kw))


OPTIMIZERS = {
    "sgd": lambda torch: _sgd(torch),
    "sgd-wd": lambda torch: _sgd(torch, weight_decay=0.01),
    "momentum": lambda torch: _sgd(torch, momentum=0.9),
    "momentum-dampening-wd": lambda torch: _sgd(torch, momentum=0.9, dampening=0.3,
                                                weight_decay=0.01),
    "nesterov-wd": lambda torch: _sgd(torch, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda torch: _adam(torch, "Adam"),
    "adam-wd-betas-eps": lambda torch: _adam(torch, "Adam", betas=(0.8, 0.99), eps=1e-6,
                                             weight_decay=0.01),
    "adamw": lambda torch: _adam(torch, "AdamW"),
    "adamw-wd-betas": lambda torch: _adam(torch, "AdamW", betas=(0.85, 0.995),
                                          weight_decay=0.1),
}


@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_matches_torch_optim_f64(torch, case):
    opt, topt = OPTIMIZERS[case](torch)
    diff, loss_diff, moved = vs_torch(torch, opt, topt)
    assert moved > 1e-3, "the parameters hardly moved: a vacuous comparison"
    assert diff <= 1e-10, f"{case}: parameters differ from torch by {diff:.3g}"
    assert loss_diff <= 1e-10, f"{case}: losses differ from torch by {loss_diff:.3g}"


@pytest.mark.parametrize("clip", [dict(clip_norm=0.05), dict(clip_value=0.02),
                                  dict(clip_norm=0.05, clip_value=0.02)],
                         ids=["clip_norm", "clip_value", "both"])
@pytest.mark.parametrize("case", ["momentum-dampening-wd", "adam-wd-betas-eps", "adamw"])
def test_clipping_matches_torch(torch, case, clip):
    """clip_grad_value_ first, then clip_grad_norm_, then the step (as train_step
    documents); the limits are small enough to clip on every step."""
    opt, topt = OPTIMIZERS[case](torch)
    diff, loss_diff, moved = vs_torch(torch, opt, topt, **clip)
    assert moved > 1e-3
    assert diff <= 1e-10 and loss_diff <= 1e-10, (diff, loss_diff)


@pytest.mark.parametrize("acts,loss", [(("identity", "sigmoid"), "mse"),
                                       (("relu", "identity"), "binary_cross_entropy"),
                                       (("sigmoid", "tanh"), "softmax_cross_entropy")])
@pytest.mark.parametrize("case", ["nesterov-wd", "adam-wd-betas-eps", "adamw-wd-betas"])
def test_per_layer_activations_and_losses_match_torch(torch, case, acts, loss):
    opt, topt = OPTIMIZERS[case](torch)
    diff, loss_diff, moved = vs_torch(torch, opt, topt, acts=acts, loss=loss, clip_norm=0.5)
    assert moved > 1e-4
    assert diff <= 1e-10 and loss_diff <= 1e-10, (diff, loss_diff)


@pytest.mark.parametrize("case", ["momentum-dampening-wd", "nesterov-wd", "adam-wd-betas-eps",
                                  "adamw-wd-betas"])
def test_matches_torch_optim_f32(torch, case):
    opt, topt = OPTIMIZERS[case](torch)
    diff, loss_diff, moved = vs_torch(torch, opt, topt, dtype=np.float32, clip_norm=0.5)
    assert moved > 1e-3
    assert diff <= 1e-5 and loss_diff <= 1e-5, (diff, loss_diff)


def test_torch_comparison_can_fail(torch):
    """The same harness tells optimizers apart: fastbp's Nesterov against torch's
    plain momentum, and fastbp's Adam against torch's AdamW, differ far above 1e-10."""
    diff = vs_torch(torch, optim.SGD(0.1, momentum=0.9, nesterov=True),
                    lambda g: torch.optim.SGD(g, 0.1, momentum=0.9), steps=5)[0]
    assert diff > 1e-4
    diff = vs_torch(torch, optim.Adam(0.01, weight_decay=0.1),
                    lambda g: torch.optim.AdamW(g, 0.01, weight_decay=0.1), steps=5)[0]
    assert diff > 1e-6


# ---------------------------------------------------------------------------
# against reference.mlp_train_step
# ---------------------------------------------------------------------------

def ref_optimizer(opt):
    """The reference's optimizer dict from a fastbp.optim optimizer."""
    d = opt.options()
    d["name"] = d.pop("optimizer")
    return d


def zero_state(params):
    return {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}


ALL = [optim.SGD(0.1), optim.SGD(0.1, weight_decay=0.02),
       optim.SGD(0.1, momentum=0.9, dampening=0.2, weight_decay=0.01),
       optim.SGD(0.05, momentum=0.8, nesterov=True),
       optim.Adam(0.01), optim.Adam(0.02, betas=(0.7, 0.9), eps=1e-5, weight_decay=0.05),
       optim.AdamW(0.01), optim.AdamW(0.01, betas=(0.8, 0.95), weight_decay=0.2)]


@pytest.mark.parametrize("clip", [{}, dict(clip_norm=0.1, clip_value=0.05)], ids=["", "clip"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_matches_reference(opt, dtype, clip):
    rng = np.random.default_rng(3)
    sizes = [5, 8, 6, 3]
    model = MLP(sizes, ["tanh", "relu"], dtype=dtype, seed=2)
    params = model.get_params()
    state = zero_state(params)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for s in range(6):
        x, t = batch(rng, sizes, "softmax_cross_entropy", dtype, N=7)
        got = model.train_step(x, t, optimizer=opt, **clip)
        want = ref.mlp_train_step(params, x, t, None, ["tanh", "relu"], "softmax_cross_entropy",
                                  optimizer=ref_optimizer(opt), state=state, step=s + 1, **clip)
        np.testing.assert_allclose(got, want, rtol=tol)
    for k in params:
        assert max_rel(model.params[k], params[k]) <= tol, k
    st = model.optimizer_state
    assert st["optimizer"] == opt.name and st["t"] == 6 and model.step_ == 6
    for kind, names in (("v", ("vW", "vb")), ("s", ("sW", "sb"))):
        if kind not in opt.state:
            assert names[0] not in st
            continue
        for l in range(1, len(sizes)):
            assert max_rel(st[names[0]][l - 1], state[f"W{l}"][kind]) <= tol * 10
            assert max_rel(st[names[1]][l - 1], state[f"b{l}"][kind]) <= tol * 10


def _steps(model, opts, rng, sizes):
    for opt in opts:
        x, t = batch(rng, sizes, "mse", np.float64, N=5)
        model.train_step(x, t, optimizer=opt)


def _ref_steps(params, opts_and_t, rng, sizes, state):
    for opt, t_opt in opts_and_t:
        x, t = batch(rng, sizes, "mse", np.float64, N=5)
        if t_opt == 1:
            state.clear()
            state.update(zero_state(params))
        ref.mlp_train_step(params, x, t, None, "tanh", "mse", optimizer=ref_optimizer(opt),
                           state=state, step=t_opt)


def test_state_carries_across_calls_and_resets_on_a_new_kind():
    """Equal settings in a new object continue the state (as one torch.optim
    object would); another kind (SGD -> Adam -> AdamW, plain SGD -> momentum)
    starts from zeros at t = 1; same-kind changes of settings carry on."""
    sizes = [4, 6, 3]
    a, b = optim.Adam(0.01), optim.Adam(0.01)
    mom, mom2 = optim.SGD(0.05, momentum=0.9), optim.SGD(0.02, momentum=0.5)
    w = optim.AdamW(0.01)
    plan = [(a, 1), (b, 2), (a, 3), (mom, 1), (mom2, 2), (w, 1), (w, 2), (a, 1),
            (optim.SGD(0.1), 1), (mom, 1), (mom, 2)]
    model = MLP(sizes, "tanh", "mse", dtype=np.float64, seed=0)
    params, state = model.get_params(), {}
    _steps(model, [o for o, _ in plan], np.random.default_rng(4), sizes)
    _ref_steps(params, plan, np.random.default_rng(4), sizes, state)
    for k in params:
        assert max_rel(model.params[k], params[k]) <= 1e-12, k
    assert model.optimizer_state["t"] == 2 and model.optimizer_state["optimizer"] == "SGD"
    assert model.step_ == len(plan)
    # and the plan's resets matter: never resetting gives other parameters
    params2, state2 = MLP(sizes, "tanh", "mse", dtype=np.float64, seed=0).get_params(), {}
    _ref_steps(params2, [(o, i + 1) for i, (o, _) in enumerate(plan)],
               np.random.default_rng(4), sizes, state2)
    assert max_rel(params2["W1"], params["W1"]) > 1e-6


def test_a_refused_step_with_a_new_kind_keeps_the_state():
    """A step that switches optimizer kind but refuses its inputs leaves the old
    optimizer's state and count as they were: the next good step continues them."""
    sizes = [4, 6, 3]
    rng = np.random.default_rng(6)
    x, t = batch(rng, sizes, "softmax_cross_entropy", np.float64)
    a = MLP(sizes, "relu", dtype=np.float64, seed=0)
    b = MLP(sizes, "relu", dtype=np.float64, seed=0)
    adam = optim.Adam(0.01)
    a.train_step(x, t, optimizer=adam)
    b.train_step(x, t, optimizer=adam)
    st = a.optimizer_state
    for bad in (dict(t=np.array([0, 1, 5, 0, 1, 2, 0, 1])), dict(x=x[:, :3]),
                dict(sample_weight=-np.ones(8))):
        args = dict(x=x, t=t, optimizer=optim.SGD(0.1, momentum=0.9))
        args.update(bad)
        with pytest.raises(ValueError):
            a.train_step(args.pop("x"), args.pop("t"), **args)
        now = a.optimizer_state
        assert now["optimizer"] == "Adam" and now["t"] == 1 and a.step_ == 1
        for k in ("vW", "vb", "sW", "sb"):
            assert all(np.array_equal(p, q) for p, q in zip(now[k], st[k])), k
    a.train_step(x, t, optimizer=adam)
    b.train_step(x, t, optimizer=adam)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])


def test_shorthand_is_sgd_and_cannot_mix_with_optimizer():
    rng = np.random.default_rng(5)
    sizes = [4, 6, 3]
    x, t = batch(rng, sizes, "softmax_cross_entropy", np.float64)
    a = MLP(sizes, "relu", dtype=np.float64, seed=0)
    b = MLP(sizes, "relu", dtype=np.float64, seed=0)
    for _ in range(3):
        la = a.train_step(x, t, 0.1, weight_decay=0.01, momentum=0.9)
        lb = b.train_step(x, t, optimizer=optim.SGD(0.1, momentum=0.9, weight_decay=0.01))
        assert la == lb
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])
    before = a.get_params()
    for kw in (dict(lr=0.1), dict(momentum=0.9), dict(weight_decay=0.01)):
        with raises(ValueError, "lr=, momentum= and weight_decay= are the shorthand for SGD"):
            a.train_step(x, t, optimizer=optim.Adam(), **kw)
        with raises(ValueError, "lr=, momentum= and weight_decay= are the shorthand for SGD"):
            a.fit(x, t, epochs=1, optimizer=optim.Adam(), **kw)
    with raises(TypeError, "give lr (plain SGD) or optimizer="):
        a.train_step(x, t)
    with raises(TypeError, "optimizer must be a fastbp.optim optimizer (SGD, Adam, AdamW, RMSprop), "
                           "got str"):
        a.train_step(x, t, optimizer="adam")
    pytest.importorskip("torch")
    import torch
    with raises(TypeError, "got SGD"):  # torch's own optimizer is not one of ours
        a.fit(x, t, optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1))
    for k in before:
        assert np.array_equal(a.params[k], before[k])
    assert a.step_ == 3


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make, exc, msg", [
    (lambda: optim.SGD(-0.1), ValueError, "SGD: lr must be 0.0 <= lr, got -0.1"),
    (lambda: optim.SGD(float("nan")), ValueError, "SGD: lr must be a finite real number, got nan"),
    (lambda: optim.SGD("0.1"), TypeError, "SGD: lr must be a real number, got str '0.1'"),
    (lambda: optim.SGD(None), TypeError, "SGD: lr must be a real number, got NoneType"),
    (lambda: optim.SGD(True), TypeError, "SGD: lr must be a real number, got bool"),
    (lambda: optim.SGD(0.1, momentum=-0.5), ValueError, "SGD: momentum must be 0.0 <= momentum"),
    (lambda: optim.SGD(0.1, weight_decay=-1), ValueError, "weight_decay must be 0.0 <= weight_decay"),
    (lambda: optim.SGD(0.1, dampening=float("inf")), ValueError, "dampening must be a finite"),
    (lambda: optim.SGD(0.1, nesterov="yes"), TypeError, "SGD: nesterov must be a bool, got 'yes'"),
    (lambda: optim.SGD(0.1, nesterov=True), ValueError,
     "SGD: Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.Adam(-1e-3), ValueError, "Adam: lr must be 0.0 <= lr, got -0.001"),
    (lambda: optim.Adam(betas=(1.0, 0.999)), ValueError,
     "Adam: betas[0] must be 0.0 <= betas[0] < 1.0, got 1.0"),
    (lambda: optim.Adam(betas=(0.9, -0.1)), ValueError, "betas[1] must be 0.0 <= betas[1] < 1.0"),
    (lambda: optim.Adam(betas=0.9), ValueError, "Adam: betas must be a pair, got 0.9"),
    (lambda: optim.Adam(betas=(0.9, 0.99, 0.9)), ValueError, "betas must be a pair"),
    (lambda: optim.Adam(betas=("a", 0.9)), TypeError, "betas[0] must be a real number, got str"),
    (lambda: optim.Adam(eps=-1e-8), ValueError, "Adam: eps must be 0.0 <= eps"),
    (lambda: optim.AdamW(weight_decay=-0.01), ValueError,
     "AdamW: weight_decay must be 0.0 <= weight_decay, got -0.01"),
    (lambda: optim.AdamW(eps=[1e-8]), TypeError, "AdamW: eps must be a real number, got list"),
])
def test_argument_checks(make, exc, msg):
    with raises(exc, msg):
        make()


def test_defaults_and_settings_follow_torch():
    torch = pytest.importorskip("torch")
    p = [torch.zeros(1, requires_grad=True)]
    for ours, theirs in ((optim.Adam(), torch.optim.Adam(p)), (optim.AdamW(), torch.optim.AdamW(p)),
                         (optim.SGD(0.1), torch.optim.SGD(p, 0.1))):
        d = theirs.defaults
        for k, v in vars(ours).items():
            assert d[k] == (tuple(v) if k == "betas" else v), (type(ours).__name__, k)
    assert optim.SGD(0.1, momentum=0.9).state == ("v",) and optim.SGD(0.1).state == ()
    assert optim.Adam().state == ("v", "s")
    assert optim.Adam(0.1) == optim.Adam(0.1) and optim.Adam(0.1) != optim.AdamW(0.1, weight_decay=0)
    assert repr(optim.SGD(0.5, nesterov=True, momentum=0.9)).startswith("SGD(lr=0.5, momentum=0.9")
