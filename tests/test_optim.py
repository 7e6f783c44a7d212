"""sgd_update, clip_by_value, clip_by_global_norm, global_norm vs reference."""

import math
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import DTYPES, assert_close, raises

SIZES = [(1,), (7,), (33, 5), (4, 3, 2), (300_000,)]


def _close_norm(got, want, rtol=1e-12):
    assert type(got) is float, type(got)
    np.testing.assert_allclose(got, want, rtol=rtol)


# ---------------------------------------------------------------------------
# sgd
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_matches_reference(rng, dtype, wd, shape):
    p = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    g0 = g.copy()
    want = ref.sgd_update(p.copy(), g, 0.1, wd)
    got = fastbp.sgd_update(p, g, 0.1, wd)
    assert got is p
    assert_close(p, want, dtype)
    np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_weight_decay_uses_param(dtype):
    # g == 0: p *= (1 - lr * wd)
    q = np.full(4, 2.0, dtype)
    fastbp.sgd_update(q, np.zeros(4, dtype), 0.5, weight_decay=0.1)
    np.testing.assert_allclose(q, 2.0 * 0.95, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_numpy_scalars_and_ints(rng, dtype):
    p = rng.standard_normal(10).astype(dtype)
    g = rng.standard_normal(10).astype(dtype)
    want = ref.sgd_update(p.copy(), g, 1, 0.0)
    fastbp.sgd_update(p, g, np.int64(1), np.float32(0.0))
    assert_close(p, want, dtype)


# ---------------------------------------------------------------------------
# clip_by_value
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [0.0, 0.5, 2.0, np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value_matches_reference(rng, dtype, limit):
    gs = [rng.standard_normal(s).astype(dtype) for s in [(5,), (7, 3), (300_000,)]]
    want = [g.copy() for g in gs]
    ref.clip_by_value(want, limit)
    assert fastbp.clip_by_value(gs, limit) is None
    for g, w in zip(gs, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value_nan_stays_nan(dtype):
    g = np.array([np.nan, 5.0, -5.0, 0.5, np.inf, -np.inf], dtype)
    fastbp.clip_by_value([g], 1.0)
    np.testing.assert_array_equal(g, [np.nan, 1.0, -1.0, 0.5, 1.0, -1.0])


def test_clip_by_value_single_array_and_mixed_dtypes(rng):
    a = rng.standard_normal(20).astype(np.float32) * 4
    b = rng.standard_normal((4, 5)) * 4
    wa, wb = a.copy(), b.copy()
    ref.clip_by_value([wa, wb], 1.5)
    fastbp.clip_by_value(a, 1.5)  # a bare array is a list of one
    fastbp.clip_by_value([b], 1.5)
    np.testing.assert_array_equal(a, wa)
    np.testing.assert_array_equal(b, wb)


# ---------------------------------------------------------------------------
# clip_by_global_norm / global_norm
# ---------------------------------------------------------------------------

def _grads(rng, dtype, scale=1.0):
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in [(10,), (6, 7), (300_000,)]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e30, 0.0])
def test_global_norm_matches_reference(rng, dtype, scale):
    gs = _grads(rng, dtype, scale)
    _close_norm(fastbp.global_norm(gs), ref.global_norm(gs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_scales_when_over(rng, dtype):
    gs = _grads(rng, dtype)
    want = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm(want, 5.0)
    assert rnorm > 5.0
    norm = fastbp.clip_by_global_norm(gs, 5.0)
    _close_norm(norm, rnorm)
    for g, w in zip(gs, want):
        assert_close(g, w, dtype)
    _close_norm(fastbp.global_norm(gs), 5.0, rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_untouched_when_under(rng, dtype):
    gs = _grads(rng, dtype)
    before = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm([g.copy() for g in gs], 1e6)
    norm = fastbp.clip_by_global_norm(gs, 1e6)
    _close_norm(norm, rnorm)
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_non_finite_leaves_all_unchanged(rng, dtype, bad):
    gs = _grads(rng, dtype, scale=100.0)       # norm >> max_norm
    gs.append(rng.standard_normal(300_000))     # a float64 one too
    gs[1][2, 3] = bad
    before = [g.copy() for g in gs]
    norm = fastbp.clip_by_global_norm(gs, 1.0)
    assert type(norm) is float
    assert not math.isfinite(norm)
    assert math.isnan(norm) == math.isnan(bad)
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()
    assert math.isnan(fastbp.global_norm(gs)) == math.isnan(bad)


@pytest.mark.parametrize("n", [5, 300_000])
def test_clip_global_norm_huge_float64(rng, n):
    g1 = rng.standard_normal(n) * 1e200         # squares overflow float64
    g2 = rng.standard_normal((3, 4)) * 1e199
    m = 1e200
    want = m * float(np.linalg.norm(np.concatenate([g1 / m, (g2 / m).ravel()])))
    assert math.isfinite(want)
    _close_norm(fastbp.global_norm([g1, g2]), want)
    o1, o2 = g1.copy(), g2.copy()
    norm = fastbp.clip_by_global_norm([g1, g2], 2.0)
    _close_norm(norm, want)
    scale = 2.0 / want
    assert_close(g1, o1 * scale, np.float64)
    assert_close(g2, o2 * scale, np.float64)
    _close_norm(fastbp.global_norm([g1, g2]), 2.0)


def test_clip_global_norm_mixed_dtypes(rng):
    gs = [rng.standard_normal(100).astype(np.float32),
          rng.standard_normal((20, 30)),
          rng.standard_normal(300_000).astype(np.float32)]
    want = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm(want, 3.0)
    norm = fastbp.clip_by_global_norm(gs, 3.0)
    _close_norm(norm, rnorm)
    for g, w in zip(gs, want):
        assert_close(g, w, g.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm(rng, dtype):
    gs = _grads(rng, dtype)
    want = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs))
    before = [g.copy() for g in gs]
    _close_norm(fastbp.global_norm(gs), want)
    _close_norm(fastbp.global_norm(gs[0]), float(np.linalg.norm(gs[0].astype(np.float64))))
    assert fastbp.global_norm([]) == 0.0
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()


def test_clip_global_norm_zero_max_norm(rng):
    gs = _grads(rng, np.float64)
    fastbp.clip_by_global_norm(gs, 0.0)
    for g in gs:
        np.testing.assert_array_equal(g, 0)


# ---- input checks ----
# Bad inputs raise ValueError/TypeError naming what was expected and given.

# sgd_update, clip_by_value, clip_by_global_norm

def test_sgd_non_contiguous_param():
    p = np.ones(10)[::2]
    with raises(ValueError, "param must be C-contiguous, aligned and native-endian"):
        fastbp.sgd_update(p, np.ones(5), 0.1)
    np.testing.assert_array_equal(p, 1.0)


def test_sgd_big_endian_param_rejected():
    p = np.ones(4, ">f8")
    with raises(ValueError, "param must be C-contiguous, aligned and native-endian"):
        fastbp.sgd_update(p, np.ones(4), 0.1)


def test_sgd_list_param():
    with raises(TypeError, "param must be a numpy.ndarray (updated in place), got list"):
        fastbp.sgd_update([1.0, 2.0], np.ones(2), 0.1)


def test_sgd_shape_mismatch():
    with raises(ValueError, "grad must have the shape of param (4,), got (2, 2)"):
        fastbp.sgd_update(np.ones(4), np.ones((2, 2)), 0.1)


def test_sgd_grad_dtype_mismatch():
    with raises(TypeError, "grad has dtype float64 but the inputs are float32"):
        fastbp.sgd_update(np.ones(4, np.float32), np.ones(4), 0.1)


@pytest.mark.parametrize("lr, tname", [("0.1", "str"), (None, "NoneType"), (True, "bool"),
                                       (np.ones(1), "ndarray")])
def test_sgd_lr_not_real(lr, tname):
    p = np.ones(3)
    with raises(TypeError, f"lr must be a real number, got {tname}"):
        fastbp.sgd_update(p, np.ones(3), lr)
    np.testing.assert_array_equal(p, 1.0)


def test_sgd_read_only_param_and_overlap():
    p = np.ones(4)
    p.flags.writeable = False
    with raises(ValueError, "param is read-only"):
        fastbp.sgd_update(p, np.ones(4), 0.1)
    q = np.ones(8)
    with raises(ValueError, "param overlaps grad"):
        fastbp.sgd_update(q[:6], q[2:], 0.1)


def test_clip_value_negative_limit():
    with raises(ValueError, "limit must be >= 0, got -1.0"):
        fastbp.clip_by_value([np.ones(3)], -1.0)
    with raises(ValueError, "limit must be >= 0, got nan"):
        fastbp.clip_by_value([np.ones(3)], float("nan"))


def test_clip_value_non_array_grads():
    with raises(TypeError, "grads[1] must be a numpy.ndarray (clipped in place), got list"):
        fastbp.clip_by_value([np.ones(3), [1.0, 2.0]], 1.0)
    with raises(TypeError, "grads must be a list of arrays, got float"):
        fastbp.clip_by_value(1.5, 1.0)


def test_clip_value_int_arrays():
    with raises(TypeError, "grads[0] must be float32 or float64, got dtype int64"):
        fastbp.clip_by_value([np.ones(3, np.int64)], 1.0)


def test_clip_value_non_contiguous_grad_not_partially_clipped():
    a = np.full(4, 5.0)
    b = np.full(10, 5.0)[::2]
    with raises(ValueError, "grads[1] must be C-contiguous"):
        fastbp.clip_by_value([a, b], 1.0)
    # validation happens before any clipping
    np.testing.assert_array_equal(a, 5.0)


def test_clip_global_norm_negative_max_norm():
    g = np.full(3, 5.0)
    with raises(ValueError, "max_norm must be >= 0, got -0.5"):
        fastbp.clip_by_global_norm([g], -0.5)
    with raises(TypeError, "max_norm must be a real number, got str"):
        fastbp.clip_by_global_norm([g], "1")
    np.testing.assert_array_equal(g, 5.0)


# ---- the NumPy twin (fastbp.reference) ----
# Against explicit formulas and edge cases.

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_update(dtype, weight_decay):
    rng = np.random.default_rng(6)
    p = rng.standard_normal((4, 3)).astype(dtype)
    g = rng.standard_normal((4, 3)).astype(dtype)
    p0 = p.copy()
    out = ref.sgd_update(p, g, 0.05, weight_decay=weight_decay)
    assert out is p and p.dtype == dtype
    expected = p0.astype(np.float64) - 0.05 * (g + weight_decay * p0.astype(np.float64))
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(p, expected, rtol=rtol)
    assert not np.array_equal(p, p0)


def test_sgd_weight_decay_uses_old_param():
    p = np.array([2.0])
    ref.sgd_update(p, np.array([0.0]), 0.5, weight_decay=1.0)
    assert p[0] == 1.0  # 2 - 0.5 * (0 + 1 * 2)


def test_clip_by_value():
    a = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, np.nan])
    b = np.array([[10.0, -10.0]], dtype=np.float32)
    a_id = a
    assert ref.clip_by_value([a, b], 1.0) is None
    assert a is a_id
    np.testing.assert_array_equal(a, [-1.0, -0.5, 0.0, 0.5, 1.0, np.nan])
    np.testing.assert_array_equal(b, [[1.0, -1.0]])
    assert b.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_by_global_norm_scales(dtype):
    rng = np.random.default_rng(8)
    grads = [rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)]
    orig = [g.astype(np.float64) for g in grads]
    expected_total = math.sqrt(sum(np.sum(g ** 2) for g in orig))
    total = ref.clip_by_global_norm(grads, 1.0)
    assert isinstance(total, float)
    assert total == pytest.approx(expected_total, rel=1e-12)
    assert total > 1.0
    new_norm = math.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert new_norm == pytest.approx(1.0, rel=1e-6)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    for g, g0 in zip(grads, orig):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, g0 / expected_total, rtol=rtol)


def test_clip_by_global_norm_leaves_small():
    grads = [np.array([0.3, 0.4]), np.array([[0.0]])]
    copies = [g.copy() for g in grads]
    assert ref.clip_by_global_norm(grads, 1.0) == pytest.approx(0.5, rel=1e-15)
    for g, c in zip(grads, copies):
        np.testing.assert_array_equal(g, c)


def test_clip_by_global_norm_float64_accumulation():
    # 1e30**2 overflows float32 but not float64.
    grads = [np.full(4, 1e30, dtype=np.float32)]
    total = ref.clip_by_global_norm(grads, 1.0)
    assert total == pytest.approx(2e30, rel=1e-6)
    np.testing.assert_allclose(grads[0], 0.5, rtol=1e-6)


@pytest.mark.parametrize("bad, expect_nan", [(np.inf, False), (-np.inf, False), (np.nan, True)])
def test_clip_by_global_norm_non_finite(bad, expect_nan):
    grads = [np.array([1.0, 2.0, bad]), np.array([100.0], dtype=np.float32)]
    copies = [g.copy() for g in grads]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = ref.clip_by_global_norm(grads, 1.0)
    if expect_nan:
        assert math.isnan(total)
    else:
        assert total == math.inf
    for g, c in zip(grads, copies):
        np.testing.assert_array_equal(g, c)


# ---------------------------------------------------------------------------
# scikit-learn's MLP solvers in the native step (fastbp.sklearn's engine):
# optimizer "sklearn_sgd" / "sklearn_adam", alpha, loss_eps, mlp_epoch's losses
# ---------------------------------------------------------------------------

from fastbp import _core  # noqa: E402

SK_SOLVERS = {
    "sgd": {"name": "sklearn_sgd", "lr": 0.1},
    "momentum": {"name": "sklearn_sgd", "lr": 0.1, "momentum": 0.9},
    "nesterov": {"name": "sklearn_sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "adam": {"name": "sklearn_adam", "lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-7},
}


def _sk_net(rng, sizes, loss, dtype, N, state_names):
    """Parameters, optimizer state, a workspace over them, and the reference's
    copies keyed like reference.mlp_train_step wants them."""
    W = [(rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
         for i, o in zip(sizes[:-1], sizes[1:])]
    b = [(rng.standard_normal(o) / 4).astype(dtype) for o in sizes[1:]]
    state = {k: [np.zeros_like(a) for a in (W if k.endswith("W") else b)] for k in state_names}
    ws = _core.MLPWorkspace(W, b, "tanh", loss, N, state)
    params, rstate = {}, {}
    for l in range(len(W)):
        params[f"W{l + 1}"], params[f"b{l + 1}"] = W[l].copy(), b[l].copy()
        for key, kind in (("W", "W"), ("b", "b")):
            rstate[f"{key}{l + 1}"] = {s: np.zeros_like(params[f"{key}{l + 1}"]) for s in "vs"}
    return W, b, ws, params, rstate


def _sk_target(rng, loss, N, C, dtype):
    if loss == "softmax_cross_entropy":
        return rng.integers(0, C, N).astype(np.int64)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (N, C)).astype(dtype)
    return rng.standard_normal((N, C)).astype(dtype)


def _sk_opts(opt, **kw):
    return _core.StepOptions(_core.STEP_TRAIN, opt["name"], lr=opt["lr"],
                             momentum=opt.get("momentum", 0.0),
                             nesterov=opt.get("nesterov", False),
                             betas=opt.get("betas", (0.9, 0.999)), eps=opt.get("eps", 1e-8),
                             **kw)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
@pytest.mark.parametrize("solver", list(SK_SOLVERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sklearn_solver_steps_match_reference(rng, dtype, solver, loss, weighted):
    """Four steps (the last on a smaller batch) of each scikit-learn solver with
    alpha and loss_eps, against reference.mlp_train_step."""
    opt = SK_SOLVERS[solver]
    sizes, N, alpha = [5, 9, 7, 3], 8, 0.3
    names = ("vW", "vb") if opt.get("momentum") else ("vW", "vb", "sW", "sb") \
        if opt["name"] == "sklearn_adam" else ()
    W, b, ws, params, rstate = _sk_net(rng, sizes, loss, dtype, N, names)
    eps = float(np.finfo(dtype).eps) if loss != "mse" else 0.0
    opts = _sk_opts(opt, alpha=alpha, loss_eps=eps)
    for step, n in enumerate([N, N, N, 5], start=1):
        x = rng.standard_normal((n, sizes[0])).astype(dtype)
        t = _sk_target(rng, loss, n, sizes[-1], dtype)
        w = rng.uniform(0.5, 2.0, n).astype(dtype) if weighted else None
        opts.t = step
        got, reg, _, _ = _core.mlp_step(ws, x, t, opts, w)
        want = ref.mlp_train_step(params, x, t, None, "tanh", loss, optimizer=opt,
                                  state=rstate, step=step, sample_weight=w, alpha=alpha,
                                  loss_eps=eps)
        np.testing.assert_allclose(got + reg, want, rtol=1e-12 if dtype == np.float64 else 1e-5)
    for l in range(len(W)):
        assert_close(W[l], params[f"W{l + 1}"], dtype, scale=10)
        assert_close(b[l], params[f"b{l + 1}"], dtype, scale=10)


def test_sklearn_solvers_differ_from_torch_ones(rng):
    """The sklearn kinds are not PyTorch's under another name: sklearn's velocity
    holds lr (v = mu v - lr g), so once lr changes (invscaling, adaptive) the
    momentum steps differ; its Adam adds eps to sqrt(v), torch's to the
    bias-corrected sqrt(v) / sqrt(1 - beta2^t)."""
    torch_like = {"nesterov": {"name": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True},
                  "adam": {"name": "Adam", "lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-7}}
    for sk, scale, lrs in (("nesterov", 1.0, (0.1, 0.02)), ("adam", 1e-6, (0.01, 0.01))):
        p = rng.standard_normal(50)
        a, b = p.copy(), p.copy()
        sa, sb = ({"v": np.zeros(50), "s": np.zeros(50)} for _ in range(2))
        for t, lr in enumerate(lrs, start=1):
            g = rng.standard_normal(50) * scale
            ref.optimizer_step(a, g, sa, dict(SK_SOLVERS[sk], lr=lr), t, 0.0)
            ref.optimizer_step(b, g, sb, dict(torch_like[sk], lr=lr), t, 0.0)
        assert np.max(np.abs(a - b)) > 1e-4


def test_sklearn_solver_formulas_by_hand():
    """sklearn_sgd with Nesterov and sklearn_adam, one element, two steps, written
    out as in sklearn/neural_network/_stochastic_optimizers.py."""
    g1, g2, p0, lr, mu = 0.5, -0.25, 1.0, 0.1, 0.9
    v1 = -lr * g1
    p1 = p0 + (mu * v1 - lr * g1)
    v2 = mu * v1 - lr * g2
    p2 = p1 + (mu * v2 - lr * g2)
    p, st = np.array([p0]), {"v": np.zeros(1)}
    for t, g in ((1, g1), (2, g2)):
        ref.optimizer_step(p, np.array([g]), st, SK_SOLVERS["nesterov"], t, 0.0)
    np.testing.assert_allclose(p, [p2], rtol=1e-15)
    b1, b2, eps, lr = 0.8, 0.99, 1e-7, 0.01
    m, v, q = 0.0, 0.0, p0
    for t, g in ((1, g1), (2, g2)):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        q += -(lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)) * m / (np.sqrt(v) + eps)
    p, st = np.array([p0]), {"v": np.zeros(1), "s": np.zeros(1)}
    for t, g in ((1, g1), (2, g2)):
        ref.optimizer_step(p, np.array([g]), st, SK_SOLVERS["adam"], t, 0.0)
    np.testing.assert_allclose(p, [q], rtol=1e-15)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_eps_clips_the_reported_loss_only(rng, dtype, loss):
    """Saturated outputs (|logit| ~ 60): loss_eps caps the reported log-loss at
    -log(eps) per row (xent) or output (BCE), as reference._log_loss_clipped;
    the gradient is the unclipped one."""
    sizes, N = [4, 3], 6
    _, _, ws, params, _ = _sk_net(rng, sizes, loss, dtype, N, ())
    ws.W[0][...] = params["W1"] = (60 * rng.standard_normal((4, 3))).astype(dtype)
    x = rng.standard_normal((N, 4)).astype(dtype)
    t = _sk_target(rng, loss, N, 3, dtype)
    eps = float(np.finfo(dtype).eps)
    plain, _, _, _ = _core.mlp_step(ws, x, t, _core.StepOptions(_core.STEP_GRAD))
    g_plain = ws.dW[0].copy()
    clipped, _, _, _ = _core.mlp_step(ws, x, t, _core.StepOptions(_core.STEP_GRAD, loss_eps=eps))
    want = ref._log_loss_clipped(loss, ref.mlp_forward(params, x, "tanh")[-1], t, eps)
    np.testing.assert_allclose(clipped, want, rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert clipped < plain  # some term was capped
    np.testing.assert_array_equal(ws.dW[0], g_plain)


def test_loss_eps_matches_sklearn_log_loss(rng):
    """The peer: sklearn's own log_loss and binary_log_loss on the probabilities."""
    base = pytest.importorskip("sklearn.neural_network._base")
    z = 30 * rng.standard_normal((50, 3))
    labels = rng.integers(0, 3, 50)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    eps = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(ref._log_loss_clipped("softmax_cross_entropy", z, labels, eps),
                               base.log_loss(np.eye(3)[labels], p), rtol=1e-9)
    # sklearn's 1 - expit(z) loses digits for 15 < z < 37 (cancellation), so the
    # binary case is compared on moderate logits, plus saturated ones (|z| = 50)
    # where both clip
    z = 5 * rng.standard_normal((50, 3))
    z[:5] = 50 * np.sign(z[:5])
    t = rng.integers(0, 2, (50, 3)).astype(float)
    np.testing.assert_allclose(ref._log_loss_clipped("binary_cross_entropy", z, t, eps),
                               base.binary_log_loss(t, 1 / (1 + np.exp(-z))), rtol=1e-9)


def test_alpha_is_a_decay_over_the_batch_weight(rng):
    """alpha on a batch of N rows is weight_decay alpha / N; with sample weights,
    alpha / sum w; with norm, alpha / norm."""
    sizes, N = [4, 6, 2], 5
    x = rng.standard_normal((N, 4))
    t = rng.standard_normal((N, 2))
    w = rng.uniform(0.5, 2, N)

    def grads(**kw):
        sw = kw.pop("sample_weight", None)
        _, _, ws, _, _ = _sk_net(np.random.default_rng(1), sizes, "mse", np.float64, N, ())
        out = _core.mlp_step(ws, x, t, _core.StepOptions(_core.STEP_GRAD, **kw), sw)
        return out[1], ws.dW[0].copy()

    for kw, wd in (({}, 0.7 / N), ({"sample_weight": w}, 0.7 / w.sum()),
                   ({"norm": 3.0}, 0.7 / 3.0)):
        sw = kw.get("sample_weight")
        reg_a, g_a = grads(alpha=0.7, **kw)
        reg_w, g_w = grads(weight_decay=wd, **{k: v for k, v in kw.items()})
        np.testing.assert_allclose(reg_a, reg_w, rtol=1e-14)
        np.testing.assert_allclose(g_a, g_w, rtol=1e-14)
        assert reg_a > 0 and (sw is None or sw is w)


def test_mlp_epoch_reports_each_batch(rng):
    """mlp_epoch's losses: each batch's (loss, reg), the same as steps one by one
    (the last batch partial, so its alpha decay is its own)."""
    sizes, n, B = [4, 6, 3], 23, 5
    X = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n).astype(np.int64)
    order = rng.permutation(n)
    opt = SK_SOLVERS["nesterov"]
    _, _, ws, _, _ = _sk_net(np.random.default_rng(3), sizes, "softmax_cross_entropy",
                             np.float64, B, ("vW", "vb"))
    _, _, ws2, _, _ = _sk_net(np.random.default_rng(3), sizes, "softmax_cross_entropy",
                              np.float64, B, ("vW", "vb"))
    nb = -(-n // B)
    losses = np.full((nb, 2), np.nan)
    lsum, wsum, _, _ = _core.mlp_epoch(ws, X, y, None, order, B, 0, nb,
                                       _sk_opts(opt, alpha=0.5), losses=losses)
    opts = _sk_opts(opt, alpha=0.5)
    want = []
    for s in range(nb):
        idx = order[s * B:(s + 1) * B]
        opts.t = s + 1
        want.append(_core.mlp_step(ws2, X[idx], y[idx], opts)[:2])
    np.testing.assert_allclose(losses, want, rtol=1e-13)
    rows = np.minimum(B, n - B * np.arange(nb))
    np.testing.assert_allclose(lsum, np.sum(losses.sum(axis=1) * rows), rtol=1e-13)
    assert wsum == n
    assert losses[-1, 1] != losses[-2, 1]  # the partial batch's own decay
    for W1, W2 in zip(ws.W, ws2.W):
        np.testing.assert_allclose(W1, W2, rtol=1e-13)


def test_mlp_epoch_losses_are_checked(rng):
    sizes, n, B = [4, 6, 3], 10, 5
    X = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n).astype(np.int64)
    _, _, ws, _, _ = _sk_net(rng, sizes, "softmax_cross_entropy", np.float64, B, ())
    opts = _sk_opts(SK_SOLVERS["sgd"])
    with raises(ValueError, "losses must have shape (2, 2), got (1, 2)"):
        _core.mlp_epoch(ws, X, y, None, np.arange(n), B, 0, 2, opts, losses=np.zeros((1, 2)))
    with raises(TypeError, "losses must be a float64 NumPy array, got float32"):
        _core.mlp_epoch(ws, X, y, None, np.arange(n), B, 0, 2, opts,
                        losses=np.zeros((2, 2), np.float32))
    with raises(ValueError, "losses is read-only"):
        ro = np.zeros((2, 2))
        ro.flags.writeable = False
        _core.mlp_epoch(ws, X, y, None, np.arange(n), B, 0, 2, opts, losses=ro)
    with raises(ValueError, "losses overlaps X in memory"):
        _core.mlp_epoch(ws, X, y, None, np.arange(n), B, 0, 2, opts,
                        losses=X[:1].reshape(2, 2))
    for bad in ([0, 1, 2, 3, 4, 5, 6, 7, 8, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 10],
                [-1, 1, 2, 3, 4, 5, 6, 7, 8, 9]):
        with raises(ValueError, "order must be a permutation of range(10)"):
            _core.mlp_epoch(ws, X, y, None, np.array(bad), B, 0, 2, opts)
    with raises(ValueError, "loss_eps must be in [0, 0.5)"):
        _core.StepOptions(loss_eps=0.5)
    with raises(ValueError, "unknown optimizer 'sklearn'"):
        _core.StepOptions(optimizer="sklearn")
    with raises(ValueError, "the sklearn_adam step needs a workspace built with its state"):
        _core.mlp_step(ws, X[:5], y[:5], _sk_opts(SK_SOLVERS["adam"]))
