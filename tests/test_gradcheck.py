"""fastbp.gradient_check: passes a correct backprop, catches a wrong one,
skips ReLU kinks, honours max_points."""

import numpy as np
import pytest

import fastbp
from fastbp import MLP
from fastbp import reference as ref

SIZES = [5, 7, 6, 3]
from conftest import ACT_NAMES as ACTIVATIONS  # fastbp.ops' activations
TARGETS = [("softmax_cross_entropy", "labels"), ("softmax_cross_entropy", "probs"),
           ("mse", "values")]
TARGET_IDS = ["xent-labels", "xent-probs", "mse"]
TOL = 1e-7


def batch(kind, dtype, N=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, SIZES[0])).astype(dtype)
    C = SIZES[-1]
    if kind == "labels":
        t = rng.integers(0, C, N)
    elif kind == "probs":
        # dyadic probabilities: rows sum to exactly 1 in float32 too (the
        # gradient (softmax - t) / N is the loss's gradient only when they do)
        t = rng.permuted(np.tile([0.5, 0.375, 0.125], (N, 1)), axis=1).astype(dtype)
    else:
        t = rng.standard_normal((N, C)).astype(dtype)
    return x, t


def n_params(name):
    l = int(name[1:])
    return SIZES[l - 1] * SIZES[l] if name[0] == "W" else SIZES[l]


@pytest.mark.parametrize("wd", [0.0, 0.1], ids=["wd0", "wd.1"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss,kind", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_correct_backprop_passes(act, loss, kind, dtype, wd):
    model = MLP(SIZES, act, loss, dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    for p in model.params.values():               # non-zero biases
        p += (0.1 * rng.standard_normal(p.shape)).astype(dtype)
    before = {k: v.copy() for k, v in model.params.items()}
    x, t = batch(kind, dtype)
    res = fastbp.gradient_check(model, x, t, weight_decay=wd)
    assert list(res) == list(model.params)
    for k, err in res.items():
        assert err < TOL, (k, err, res.worst[k])
        assert res.checked[k] + res.skipped[k] == n_params(k)
        assert res.checked[k] >= n_params(k) // 2
    if act != "relu":
        assert not any(res.skipped.values())
    # the model itself is untouched (the check ran on a float64 copy)
    for k in before:
        assert model.params[k].dtype == dtype
        np.testing.assert_array_equal(model.params[k], before[k])


def _perturbed(gradient, name, idx, delta):
    def wrong(*args, **kwargs):
        g = gradient(*args, **kwargs)
        g[name][idx] += delta
        return g
    return wrong


def _assert_caught(res, name, idx, delta):
    assert res[name] > 1e-2, res
    assert res.worst[name][0] == idx
    ana, num = res.worst[name][1:]
    assert ana - num == pytest.approx(delta, rel=1e-6)
    for k, err in res.items():
        if k != name:
            assert err < TOL, (k, err)


@pytest.mark.parametrize("name,idx", [("W2", (1, 2)), ("b3", (0,))])
def test_detects_wrong_gradient(monkeypatch, name, idx):
    """A wrong MLP.gradient (patched on the class, which the float64 copy that
    the check runs on shares) is reported, at the perturbed entry."""
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    monkeypatch.setattr(MLP, "gradient", _perturbed(MLP.gradient, name, idx, 0.5))
    _assert_caught(fastbp.gradient_check(model, x, t), name, idx, 0.5)


def test_detects_wrong_gradient_of_the_model_instance(monkeypatch):
    """gradient_check documents that it compares *model*.gradient with central
    differences: a wrong gradient on the instance passed in must be caught."""
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    monkeypatch.setattr(model, "gradient", _perturbed(model.gradient, "W2", (1, 2), 0.5))
    g = model.gradient(x, t)
    assert g["W2"][1, 2] - MLP.gradient(model, x, t)["W2"][1, 2] == pytest.approx(0.5)
    _assert_caught(fastbp.gradient_check(model, x, t), "W2", (1, 2), 0.5)


def test_relu_kink_is_skipped_not_reported():
    model = MLP(SIZES, "relu", dtype=np.float64, seed=3)
    x, t = batch("labels", np.float64, seed=4)
    j, eps = 2, 1e-3
    W1, b1 = model.params["W1"], model.params["b1"]
    z = x @ W1[:, j]
    b1[j] = 1e-5 - z[0]                       # unit j of row 0 sits 1e-5 above its kink
    zj = x @ W1[:, j] + b1[j]
    assert abs(zj[0] - 1e-5) < 1e-12
    assert np.abs(zj[1:]).min() > 10 * eps    # the other rows are far from it
    assert np.abs(model.params["W2"][j]).max() > 0.1   # and the unit matters

    res = fastbp.gradient_check(model, x, t, eps=eps)
    assert res.skipped["b1"] >= 1
    assert res.checked["b1"] + res.skipped["b1"] == SIZES[1]
    assert res["b1"] < TOL
    assert all(err < TOL for err in res.values()), res

    # the point that was skipped would have been a false alarm
    params = {k: v.copy() for k, v in model.params.items()}
    _, g = ref.mlp_loss_and_grads(params, x, t, "relu", "softmax_cross_entropy")
    f = {}
    for k in (-2, -1, 1, 2):
        p = {**params, "b1": params["b1"].copy()}
        p["b1"][j] += k * eps
        f[k] = ref.mlp_loss_and_grads(p, x, t, "relu", "softmax_cross_entropy")[0]
    num = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * eps)
    assert fastbp.gradcheck.relative_error(g["b1"][j], num) > 1e-3


def test_dead_relu_layer_reports_zero_error():
    """Every unit of layer 2 is dead, so the loss is constant in W1, b1, W2, b2
    and W3: the analytic gradient is exactly 0 and so must the quotient be
    (f is the same at all four stencil points). No false alarm allowed."""
    model = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    model.params["b2"][:] = -100.0
    model.params["b3"][:] = [0.0, 0.0, 3.0]
    x = np.random.default_rng(0).standard_normal((4, 5))
    t = np.array([0, 1, 0, 1])
    g = model.gradient(x, t)
    res = fastbp.gradient_check(model, x, t)
    for k in ["W1", "b1", "W2", "b2", "W3"]:
        assert not g[k].any()
        assert res.checked[k] == n_params(k) and res.skipped[k] == 0
        assert res[k] < TOL, (k, res[k], res.worst[k])
        assert res.worst[k][2] == 0.0, (k, res.worst[k])
    assert res["b3"] < TOL


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_max_points_limits_checked(act):
    model = MLP(SIZES, act, dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    res = fastbp.gradient_check(model, x, t, max_points=5)
    for k in res:
        assert res.checked[k] + res.skipped[k] == min(5, n_params(k)), k
        if act == "tanh":
            assert res.checked[k] == min(5, n_params(k))
        assert res[k] < TOL
    full = fastbp.gradient_check(model, x, t)
    assert full.checked["W1"] + full.skipped["W1"] == n_params("W1") > 5


def test_relative_error_floor():
    err = fastbp.gradcheck.relative_error
    assert err(1.0, 1.0 + 1e-9) == pytest.approx(1e-9, rel=1e-3)
    assert err(0.0, 1e-14) == pytest.approx(1e-8)            # absolute below the floor
    assert err(2.0, 1.0) == pytest.approx(0.5)


# ---- hostile inputs ------------------------------------------------------------------

def test_nan_gradients_are_reported_not_zero():
    """A NaN weight makes the loss and every gradient NaN: that is a failure
    (error inf, worst at the first entry), never a perfect 0."""
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    model.params["W3"][0, 0] = np.nan
    x, t = batch("labels", np.float64)
    res = fastbp.gradient_check(model, x, t)
    for k in model.params:
        assert res[k] == np.inf, (k, res[k])
        assert not res[k] < TOL
        assert res.checked[k] == n_params(k)
        assert res.worst[k][0] == (0,) * model.params[k].ndim, (k, res.worst[k])
        assert np.isnan(res.worst[k][1]) and np.isnan(res.worst[k][2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_analytic_gradient_is_reported(monkeypatch, bad):
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)

    def wrong(self, *args, **kwargs):
        g = gradient(self, *args, **kwargs)
        g["W2"][1, 2] = bad
        return g
    gradient = MLP.gradient
    monkeypatch.setattr(MLP, "gradient", wrong)
    res = fastbp.gradient_check(model, x, t)
    assert res["W2"] == np.inf
    idx, ana, num = res.worst["W2"]
    assert idx == (1, 2)
    assert ana == bad or (np.isnan(bad) and np.isnan(ana))
    assert np.isfinite(num)
    assert all(res[k] < TOL for k in res if k != "W2"), res


def test_nonfinite_numeric_gradient_is_reported(monkeypatch):
    """The loss is inf at one stencil point of b3[0]: the quotient is -inf."""
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    b3, eps = model.params["b3"], 1e-3
    b0 = b3[0]
    loss = MLP.loss

    def inf_at_plus_2h(self, *args, **kwargs):
        return np.inf if b3[0] > b0 + 1.5 * eps else loss(self, *args, **kwargs)
    monkeypatch.setattr(MLP, "loss", inf_at_plus_2h)
    res = fastbp.gradient_check(model, x, t, eps=eps)
    assert res["b3"] == np.inf
    assert res.worst["b3"][0] == (0,)
    assert res.worst["b3"][2] == -np.inf
    assert all(res[k] < TOL for k in res if k != "b3"), res


@pytest.mark.parametrize("eps,exc", [
    (0, ValueError), (0.0, ValueError), (-1e-3, ValueError), (np.nan, ValueError),
    (np.inf, ValueError), (-np.inf, ValueError), (True, TypeError), ("1e-3", TypeError),
    (None, TypeError), (1e-3 + 0j, TypeError), (np.array([1e-3, 1e-3]), TypeError)])
def test_bad_eps_refused(eps, exc):
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    with pytest.raises(exc, match=r"^gradient_check: eps must be a finite real number > 0, "
                                  r"got "):
        fastbp.gradient_check(model, x, t, eps=eps)


@pytest.mark.parametrize("max_points,exc", [
    (0, ValueError), (-1, ValueError), (np.int64(0), ValueError), (2.0, TypeError),
    (2.5, TypeError), ("3", TypeError), (True, TypeError), (False, TypeError)])
def test_bad_max_points_refused(max_points, exc):
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    with pytest.raises(exc, match=r"^gradient_check: max_points must be None or an integer "
                                  r">= 1, got "):
        fastbp.gradient_check(model, x, t, max_points=max_points)


@pytest.mark.parametrize("floor,exc", [(0.0, ValueError), (-1.0, ValueError),
                                       (np.nan, ValueError), ("1", TypeError)])
def test_bad_floor_refused(floor, exc):
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    with pytest.raises(exc, match=r"^gradient_check: floor must be a finite real number > 0"):
        fastbp.gradient_check(model, x, t, floor=floor)


def test_valid_eps_and_max_points_types():
    model = MLP(SIZES, "tanh", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    res = fastbp.gradient_check(model, x, t, eps=np.float32(1e-3), max_points=np.int64(1))
    assert all(res.checked[k] == 1 for k in res) and all(res[k] < TOL for k in res)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("after", [1, 2, 3, 6, 11])
def test_interrupt_restores_parameters(monkeypatch, exc, after):
    """model.loss raising mid-stencil (entry perturbed by up to 2 eps) leaves
    every parameter bitwise as it was."""
    model = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    x, t = batch("labels", np.float64)
    before = {k: v.copy() for k, v in model.params.items()}
    loss, calls = MLP.loss, [0]

    def flaky(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            raise exc("interrupted")
        return loss(self, *args, **kwargs)
    monkeypatch.setattr(MLP, "loss", flaky)
    with pytest.raises(exc, match="interrupted"):
        fastbp.gradient_check(model, x, t)
    assert calls[0] == after + 1
    for k, v in before.items():
        assert model.params[k].tobytes() == v.tobytes(), k


def test_all_points_skipped_is_not_a_pass():
    """Every unit of layer 1 sits 1e-5 above its kink for row 0: each b1 entry
    straddles a kink and is skipped. Nothing was compared, so b1 reports nan
    (checked 0), not an error of 0."""
    model = MLP(SIZES, "relu", dtype=np.float64, seed=3)
    x, t = batch("labels", np.float64, seed=4)
    W1, b1 = model.params["W1"], model.params["b1"]
    b1[:] = 1e-5 - x[0] @ W1
    res = fastbp.gradient_check(model, x, t)
    assert res.checked["b1"] == 0 and res.skipped["b1"] == SIZES[1]
    assert np.isnan(res["b1"])
    assert not res["b1"] < TOL
    idx, ana, num = res.worst["b1"]
    assert idx is None and np.isnan(ana) and np.isnan(num)
    assert "b1: nan" in repr(res)
    # (row 0 then feeds layer 2 ~0, so with b2 = 0 its units sit at their kinks
    # too); the output layer has no kink and is compared as usual
    for k in ("W3", "b3"):
        assert res.checked[k] == n_params(k) and res[k] < TOL, (k, res[k])


def test_all_points_skipped_with_max_points():
    model = MLP(SIZES, "relu", dtype=np.float64, seed=3)
    x, t = batch("labels", np.float64, seed=4)
    model.params["b1"][:] = 1e-5 - x[0] @ model.params["W1"]
    res = fastbp.gradient_check(model, x, t, max_points=2)
    assert res.checked["b1"] == 0 and res.skipped["b1"] == 2
    assert np.isnan(res["b1"])
