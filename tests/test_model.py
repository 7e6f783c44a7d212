"""fastbp.MLP against fastbp.reference: the native training step, loss,
gradient and predict; zero allocation per step; init; fit; save/load; errors."""

import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import MLP, ops
from fastbp.model import epoch_order
from fastbp import reference as ref

from conftest import ACT_NAMES as ACTIVATIONS  # fastbp.ops' activations
# (loss name, kind of target)
TARGETS = [("softmax_cross_entropy", "labels"), ("softmax_cross_entropy", "probs"),
           ("mse", "values")]
TARGET_IDS = ["xent-labels", "xent-probs", "mse"]


def make_batch(rng, sizes, kind, dtype, N=6):
    x = rng.standard_normal((N, sizes[0])).astype(dtype)
    C = sizes[-1]
    if kind == "labels":
        t = rng.integers(0, C, N).astype(np.int64)
    elif kind == "probs":
        e = np.exp(rng.standard_normal((N, C)))
        t = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        t = rng.standard_normal((N, C)).astype(dtype)
    return x, t


def copy_params(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_params_close(got, want, rtol):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        mag = float(np.max(np.abs(want[k]))) or 1.0
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=rtol * mag, err_msg=k)


def clip_that_clips(params, x, t, act, loss, wd):
    """A clip_norm a third of the first step's gradient norm (so it does clip)."""
    _, g = ref.mlp_loss_and_grads(params, x, t, act, loss, wd)
    norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))
    assert norm > 0
    return norm / 3


def run_steps(sizes, act, loss, kind, dtype, wd, clip, mu, steps=3, lr=0.1, seed=0):
    """steps train_steps of MLP and of the reference from the same start;
    returns (model losses, reference losses, model params, reference params)."""
    rng = np.random.default_rng(seed)
    model = MLP(sizes, act, loss, dtype=dtype, seed=seed)
    params = copy_params(model)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    batches = [make_batch(rng, sizes, kind, dtype) for _ in range(steps)]
    clip_norm = None
    if clip:
        clip_norm = clip_that_clips(params, *batches[0], act, loss, wd)
    got, want = [], []
    for x, t in batches:
        got.append(model.train_step(x, t, lr, weight_decay=wd, clip_norm=clip_norm, momentum=mu))
        want.append(ref.mlp_train_step(params, x, t, lr, act, loss, weight_decay=wd,
                                       clip_norm=clip_norm, momentum=mu, velocity=velocity))
    return got, want, model.params, params


# ---------------------------------------------------------------------------
# train_step vs reference.mlp_train_step
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mu", [0.0, 0.9], ids=["sgd", "momentum"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("wd", [0.0, 0.01], ids=["wd0", "wd.01"])
@pytest.mark.parametrize("loss,kind", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_train_step_matches_reference_f64(act, loss, kind, wd, clip, mu):
    got, want, p_got, p_want = run_steps([5, 8, 3], act, loss, kind, np.float64, wd, clip, mu)
    for g, w in zip(got, want):
        assert type(g) is float
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    assert_params_close(p_got, p_want, 1e-12)


@pytest.mark.parametrize("loss,kind", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("opts", [(0.0, False, 0.0), (0.01, True, 0.9)], ids=["plain", "all"])
def test_train_step_deeper_net(act, loss, kind, opts):
    wd, clip, mu = opts
    got, want, p_got, p_want = run_steps([7, 11, 5, 3], act, loss, kind, np.float64,
                                         wd, clip, mu, steps=4)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert_params_close(p_got, p_want, 1e-11)


@pytest.mark.parametrize("loss,kind", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("opts", [(0.0, False, 0.0), (0.01, True, 0.9)], ids=["plain", "all"])
def test_train_step_float32(act, loss, kind, opts):
    wd, clip, mu = opts
    got, want, p_got, p_want = run_steps([7, 11, 5, 3], act, loss, kind, np.float32,
                                         wd, clip, mu)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert_params_close(p_got, p_want, 1e-5)


def test_train_step_really_updates_and_clip_and_momentum_matter():
    """Guards against a vacuous comparison: the options change the result."""
    base = run_steps([5, 8, 3], "tanh", "mse", "values", np.float64, 0.0, False, 0.0)[2]
    for wd, clip, mu in [(0.01, False, 0.0), (0.0, True, 0.0), (0.0, False, 0.9)]:
        other = run_steps([5, 8, 3], "tanh", "mse", "values", np.float64, wd, clip, mu)[2]
        assert not np.allclose(other["W1"], base["W1"], rtol=1e-6, atol=0)
    start = MLP([5, 8, 3], "tanh", "mse", dtype=np.float64, seed=0).params
    assert not np.allclose(base["W1"], start["W1"], rtol=1e-6, atol=0)


def test_train_step_returns_loss_before_update(rng):
    model = MLP([4, 6, 3], "relu", dtype=np.float64, seed=3)
    x, t = make_batch(rng, [4, 6, 3], "labels", np.float64)
    before = model.loss(x, t, weight_decay=0.1)
    assert model.train_step(x, t, 0.5, weight_decay=0.1) == pytest.approx(before, rel=1e-14)
    assert model.loss(x, t, weight_decay=0.1) < before


# ---------------------------------------------------------------------------
# loss / gradient / predict
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("loss,kind", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_and_gradient_match_reference(act, loss, kind, wd, dtype):
    rng = np.random.default_rng(1)
    sizes = [7, 11, 5, 3]
    model = MLP(sizes, act, loss, dtype=dtype, seed=2)
    x, t = make_batch(rng, sizes, kind, dtype, N=9)
    want_loss, want_g = ref.mlp_loss_and_grads(model.params, x, t, act, loss, wd)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    got_loss = model.loss(x, t, weight_decay=wd)
    assert type(got_loss) is float
    np.testing.assert_allclose(got_loss, want_loss, rtol=tol)
    g = model.gradient(x, t, weight_decay=wd)
    assert list(g) == list(model.params)
    for k in model.params:
        assert g[k].shape == model.params[k].shape and g[k].dtype == model.dtype
    assert_params_close(g, want_g, tol * (1 if dtype == np.float64 else 10))
    norms = model.grad_norms(x, t, weight_decay=wd)
    assert list(norms) == list(model.params)
    for k in norms:
        np.testing.assert_allclose(norms[k], np.linalg.norm(want_g[k].astype(np.float64)),
                                   rtol=tol * 10)


def test_gradient_is_a_copy(rng):
    model = MLP([4, 6, 3], "relu", dtype=np.float64)
    x, t = make_batch(rng, [4, 6, 3], "labels", np.float64)
    g1 = model.gradient(x, t)
    saved = {k: v.copy() for k, v in g1.items()}
    model.gradient(2 * x, (t + 1) % 3)
    for k in g1:
        np.testing.assert_array_equal(g1[k], saved[k])


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_matches_reference(act, dtype, rng):
    sizes = [7, 11, 5, 3]
    model = MLP(sizes, act, "mse", dtype=dtype, seed=4)
    for p in model.params.values():           # non-zero biases
        p += dtype(0.1) * rng.standard_normal(p.shape).astype(dtype)
    x = rng.standard_normal((10, 7)).astype(dtype)
    hs = ref.mlp_forward(model.params, x, act, 3)
    assert len(hs) == 3 and [h.shape[1] for h in hs] == sizes[1:]
    out = model.predict(x)
    assert out.dtype == dtype and out.shape == (10, 3)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, hs[-1], rtol=tol, atol=tol)
    for got, want in zip(model._hidden(x), hs[:-1]):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    if act == "relu":                            # the last layer is affine
        assert (out < 0).any()


# ---------------------------------------------------------------------------
# zero allocation per step
# ---------------------------------------------------------------------------

N_ALLOC, SIZES_ALLOC = 256, [64, 128, 10]
ALLOC_LIMIT = 4096


def _alloc_setup():
    rng = np.random.default_rng(0)
    model = MLP(SIZES_ALLOC, "relu", dtype=np.float32, seed=0)
    x = rng.standard_normal((N_ALLOC, SIZES_ALLOC[0])).astype(np.float32)
    y = rng.integers(0, SIZES_ALLOC[-1], N_ALLOC).astype(np.int64)
    # one batch-sized buffer (a hidden layer's outputs) is far above the limit
    assert N_ALLOC * SIZES_ALLOC[1] * 4 > 16 * ALLOC_LIMIT
    return model, x, y


def _traced_growth(fn, calls=100):
    """(peak growth, net growth) of traced memory over `calls` calls of fn."""
    fn()                                    # warm-up, before tracing
    tracemalloc.start()
    try:
        fn()                                # anything lazily created while tracing
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(calls):
            fn()
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, cur - base


@pytest.mark.parametrize("opts", [{}, {"weight_decay": 1e-3, "clip_norm": 1.0, "momentum": 0.9}],
                         ids=["plain", "wd-clip-momentum"])
def test_train_step_allocates_nothing(opts):
    model, x, y = _alloc_setup()
    peak, net = _traced_growth(lambda: model.train_step(x, y, 0.01, **opts))
    assert peak < ALLOC_LIMIT, f"train_step: traced peak grew by {peak} bytes"
    assert net < ALLOC_LIMIT


@pytest.mark.parametrize("opt", ["Adam", "AdamW", "SGD-nesterov"])
def test_train_step_with_every_option_allocates_nothing(opt):
    """Adam's moments, dropout's masks, sample weights and clipping live in the
    workspace too: after the first step, no allocation."""
    from fastbp import optim

    rng = np.random.default_rng(0)
    model = MLP(SIZES_ALLOC, "relu", dtype=np.float32, seed=0, dropout=0.3)
    x = rng.standard_normal((N_ALLOC, SIZES_ALLOC[0])).astype(np.float32)
    y = rng.integers(0, SIZES_ALLOC[-1], N_ALLOC).astype(np.int64)
    w = rng.random(N_ALLOC).astype(np.float32)
    o = {"Adam": optim.Adam(1e-3, weight_decay=1e-4), "AdamW": optim.AdamW(1e-3),
         "SGD-nesterov": optim.SGD(0.01, momentum=0.9, nesterov=True)}[opt]
    before = model.params["W1"].copy()
    peak, net = _traced_growth(lambda: model.train_step(x, y, optimizer=o, clip_norm=1.0,
                                                        clip_value=0.5, sample_weight=w))
    assert peak < ALLOC_LIMIT, f"train_step: traced peak grew by {peak} bytes"
    assert net < ALLOC_LIMIT
    assert model.step_ == 102 and model.optimizer_state["t"] == 102
    assert not np.array_equal(model.params["W1"], before)


def test_allocation_check_can_fail():
    """The same measure flags a call that allocates arrays (gradient copies dW)."""
    model, x, y = _alloc_setup()
    peak, _ = _traced_growth(lambda: model.gradient(x, y), calls=5)
    assert peak > ALLOC_LIMIT
    assert peak >= SIZES_ALLOC[0] * SIZES_ALLOC[1] * 4     # at least one copy of dW1


# ---------------------------------------------------------------------------
# init and parameter ownership
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("act", ACTIVATIONS)
def test_init_std_and_biases(act):
    sizes = [400, 300, 50]
    model = MLP(sizes, act, seed=0)
    assert list(model.params) == ["W1", "b1", "W2", "b2"]
    for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        W, b = model.params[f"W{l}"], model.params[f"b{l}"]
        assert W.shape == (fi, fo) and W.dtype == np.float32
        he = ops.ACTIVATIONS[act].init == "he"  # the first hidden layer's default
        want = np.sqrt(2 / fi) if he else np.sqrt(2 / (fi + fo))
        assert W.std() == pytest.approx(want, rel=0.03)
        assert abs(W.mean()) < 0.05 * want
        assert b.shape == (fo,) and not b.any()


def test_init_explicit_and_seed():
    a = MLP([5, 6, 2], "relu", seed=3)
    b = MLP([5, 6, 2], "relu", seed=3)
    c = MLP([5, 6, 2], "relu", seed=4)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    xav = MLP([5, 6, 2], "relu", seed=3, init="xavier")
    np.testing.assert_allclose(xav.params["W1"] / a.params["W1"],
                               np.sqrt(2 / 11) / np.sqrt(2 / 5), rtol=1e-6)
    z = MLP([5, 6, 2], "tanh", seed=3, init=0.0)
    assert not z.params["W1"].any()
    d64 = MLP([5, 6, 2], "relu", seed=3, dtype=np.float64)
    assert d64.params["W1"].dtype == np.float64
    np.testing.assert_allclose(d64.params["W1"], a.params["W1"], rtol=1e-6)


def test_params_writable_in_place(rng):
    model = MLP([4, 6, 3], "tanh", "mse", dtype=np.float64)
    x, t = make_batch(rng, [4, 6, 3], "values", np.float64)
    model.train_step(x, t, 0.1)                      # workspace built
    before = model.predict(x)
    model.params["W1"][...] *= 2
    model.params["b2"][...] += 0.5
    after = model.predict(x)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, ref.mlp_forward(model.params, x, "tanh")[-1], rtol=1e-12)
    # the next step sees the in-place change too
    params = copy_params(model)
    got = model.train_step(x, t, 0.1)
    want = ref.mlp_train_step(params, x, t, 0.1, "tanh", "mse")
    assert got == pytest.approx(want, rel=1e-12)
    assert_params_close(model.params, params, 1e-12)


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_replaced_param_is_honoured(rng, mu):
    sizes = [4, 6, 3]
    model = MLP(sizes, "relu", dtype=np.float64, seed=1)
    x, t = make_batch(rng, sizes, "labels", np.float64)
    model.train_step(x, t, 0.1, momentum=mu)         # workspace built on the old arrays
    new_W1 = rng.standard_normal((4, 6))
    model.params["W1"] = new_W1
    params = copy_params(model)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    if mu:
        # the velocity of the first step carries over: rebuild it in the reference
        st = model.optimizer_state
        for l in range(2):
            velocity[f"W{l + 1}"][...] = st["vW"][l]
            velocity[f"b{l + 1}"][...] = st["vb"][l]
    got = model.train_step(x, t, 0.1, momentum=mu)
    want = ref.mlp_train_step(params, x, t, 0.1, "relu", "softmax_cross_entropy",
                              momentum=mu, velocity=velocity)
    assert got == pytest.approx(want, rel=1e-12)
    assert model.params["W1"] is new_W1              # updated in place, not replaced
    assert_params_close(model.params, params, 1e-12)


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def test_fit_digits(digits):
    Xtr, Xte, ytr, yte = digits
    model = MLP([64, 128, 10], "relu", dtype=np.float32, seed=0)
    hist = model.fit(Xtr, ytr, epochs=30, batch_size=32, lr=0.1, progress=False)
    assert model.score(Xte, yte) >= 0.96
    assert len(hist["loss"]) == 30 and len(hist["accuracy"]) == 30
    assert all(np.isfinite(hist["loss"]))
    assert hist["loss"][-1] < 0.1 * hist["loss"][0]
    assert np.mean(hist["loss"][-5:]) < np.mean(hist["loss"][:5])
    assert hist["accuracy"][-1] > hist["accuracy"][0]
    assert "val_loss" not in hist and "grad_norms" not in hist


def test_fit_validation(digits):
    Xtr, Xte, ytr, yte = digits
    model = MLP([64, 32, 10], "tanh", dtype=np.float32, seed=0)
    hist = model.fit(Xtr, ytr, epochs=3, lr=0.1, validation=(Xte, yte), progress=False)
    assert len(hist["val_loss"]) == 3 and len(hist["val_accuracy"]) == 3
    assert hist["val_accuracy"][-1] == model.score(Xte, yte)
    assert hist["val_loss"][-1] == pytest.approx(model.loss(Xte, yte), rel=1e-6)
    assert hist["val_accuracy"][-1] > 0.8


def _tiny(seed=1):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((10, 3))
    y = rng.integers(0, 2, 10)
    return MLP([3, 4, 2], "tanh", dtype=np.float64, seed=seed), X, y


@pytest.mark.parametrize("opts", [{}, {"momentum": 0.9, "clip_norm": 0.05, "weight_decay": 0.01}],
                         ids=["plain", "momentum-clip-wd"])
def test_fit_uses_last_partial_batch(opts):
    model, X, y = _tiny()
    manual = _tiny()[0]
    lr, seed = 0.5, 7
    hist = model.fit(X, y, epochs=1, batch_size=4, lr=lr, seed=seed, progress=False, **opts)
    perm = epoch_order(10, seed, 0)
    losses, correct = [], 0
    for s in (0, 4, 8):
        idx = perm[s:s + 4]
        correct += int(np.sum(manual.predict(X[idx]).argmax(axis=1) == y[idx]))
        losses.append(manual.train_step(X[idx], y[idx], lr, **opts) * len(idx))
    assert_params_close(model.params, manual.params, 1e-12)
    assert hist["loss"][0] == pytest.approx(sum(losses) / 10, rel=1e-12)
    assert hist["accuracy"][0] == correct / 10
    # two steps only (the partial batch dropped) would give other weights
    dropped = _tiny()[0]
    for s in (0, 4):
        dropped.train_step(X[perm[s:s + 4]], y[perm[s:s + 4]], lr, **opts)
    assert not np.allclose(dropped.params["W1"], model.params["W1"], rtol=1e-6, atol=0)


def test_fit_no_shuffle_and_int32_labels():
    model, X, y = _tiny()
    manual = _tiny()[0]
    model.fit(X, y.astype(np.int32), epochs=2, batch_size=3, lr=0.3, shuffle=False,
              progress=False)
    for _ in range(2):
        for s in range(0, 10, 3):
            manual.train_step(X[s:s + 3], y[s:s + 3], 0.3)
    assert_params_close(model.params, manual.params, 1e-12)


def test_fit_regression_diabetes():
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    model = MLP([10, 16, 1], "tanh", "mse", dtype=np.float64, seed=0)
    hist = model.fit(Xtr, ytr, epochs=40, batch_size=32, lr=0.01,
                     validation=(Xte, yte), progress=False)
    assert "accuracy" not in hist and "val_accuracy" not in hist
    assert len(hist["val_r2"]) == 40
    assert model.score(Xte, yte) > 0.3
    assert hist["val_r2"][-1] == model.score(Xte, yte)
    assert hist["loss"][-1] < hist["loss"][0]


def test_fit_log_grad_norms():
    model, X, y = _tiny()
    seed, B = 3, 4
    hist = model.fit(X, y, epochs=2, batch_size=B, lr=0.2, seed=seed, progress=False,
                     log_grad_norms=True)
    gn = hist["grad_norms"]
    assert len(gn) == 2
    assert all(list(d) == ["W1", "b1", "W2", "b2"] for d in gn)
    assert all(isinstance(v, float) and v > 0 for d in gn for v in d.values())
    last = epoch_order(10, seed, 1)[8:]          # epoch 2's last (partial) batch
    _, g = ref.mlp_loss_and_grads(model.params, X[last], y[last], "tanh",
                                  "softmax_cross_entropy")
    for k in g:
        assert gn[-1][k] == pytest.approx(np.linalg.norm(g[k]), rel=1e-10)


def test_fit_momentum_and_clip_run(digits):
    Xtr, Xte, ytr, yte = digits
    model = MLP([64, 32, 10], "sigmoid", dtype=np.float32, seed=0)
    hist = model.fit(Xtr, ytr, epochs=4, lr=0.05, momentum=0.9, clip_norm=1.0,
                     weight_decay=1e-4, progress=False)
    assert all(np.isfinite(hist["loss"])) and hist["loss"][-1] < hist["loss"][0]
    assert model.score(Xte, yte) > 0.8


def test_fit_probability_targets():
    model, X, y = _tiny()
    manual = _tiny()[0]
    P = np.eye(2)[y] * 0.8 + 0.1
    hist = model.fit(X, P, epochs=1, batch_size=10, lr=0.3, shuffle=False, progress=False)
    assert "accuracy" not in hist
    want = manual.train_step(X, P, 0.3)
    assert hist["loss"][0] == pytest.approx(want, rel=1e-12)
    assert_params_close(model.params, manual.params, 1e-12)


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act,loss", [("relu", "softmax_cross_entropy"), ("sigmoid", "mse")])
def test_save_load_roundtrip(tmp_path, rng, dtype, act, loss):
    model = MLP([5, 7, 4, 3], act, loss, dtype=dtype, seed=9)
    x, t = make_batch(rng, [5, 7, 4, 3], "labels" if loss != "mse" else "values", dtype)
    for _ in range(3):
        model.train_step(x, t, 0.1)          # biases non-zero, weights off their init
    path = tmp_path / "model.npz"
    model.save(path)
    back = MLP.load(path)
    assert (back.sizes, back.activation, back.loss_name, back.dtype) == \
        (model.sizes, act, loss, np.dtype(dtype))
    for k in model.params:
        assert back.params[k].dtype == dtype
        np.testing.assert_array_equal(back.params[k], model.params[k])
    out = back.predict(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, model.predict(x))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.fixture
def clf():
    rng = np.random.default_rng(0)
    model = MLP([4, 5, 3], "relu", dtype=np.float32)
    X = rng.standard_normal((10, 4)).astype(np.float32)
    y = rng.integers(0, 3, 10).astype(np.int64)
    return model, X, y


def test_wrong_feature_width(clf):
    model, X, y = clf
    bad = np.zeros((10, 5), np.float32)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        model.train_step(bad, y, 0.1)
    with pytest.raises(ValueError, match=r"X must have shape \(n, 4\)"):
        model.fit(bad, y, progress=False)
    with pytest.raises(ValueError, match=r"predict: X must have shape \(n, 4\), got \(10, 5\)"):
        model.predict(bad)
    with pytest.raises(ValueError, match=r"X must have shape"):
        model.fit(X[0], y[:1], progress=False)


@pytest.mark.parametrize("bad_label", [3, 7, -1])
def test_labels_out_of_range(clf, bad_label):
    model, X, y = clf
    y = y.copy()
    y[4] = bad_label
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.train_step(X, y, 0.1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.fit(X, y, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.loss(X, y)
    for k in before:                       # nothing was trained on the bad batch
        np.testing.assert_array_equal(model.params[k], before[k])


def test_length_mismatch(clf):
    model, X, y = clf
    with pytest.raises(ValueError, match="X has 10 rows but y has 9"):
        model.fit(X, y[:9], progress=False)
    with pytest.raises(ValueError, match="got 9 labels for 10 rows"):
        model.train_step(X, y[:9], 0.1)
    with pytest.raises(ValueError, match="has 10 rows but y has 9"):
        model.fit(X, y, validation=(X, y[:9]), progress=False)


@pytest.mark.parametrize("sizes,exc,msg", [
    ([5], ValueError, "at least an input and an output"),
    ([], ValueError, "at least an input and an output"),
    ([4, 0, 3], ValueError, "must be >= 1"),
    ([4, -2, 3], ValueError, "must be >= 1"),
    ([4, 2.5, 3], TypeError, "sizes must be a sequence of integers"),
    ([4.0, 3], TypeError, "sizes must be a sequence of integers"),
    ([4, True], TypeError, "sizes must be a sequence of integers"),
    ([4, "3"], TypeError, "sizes must be a sequence of integers"),
    (5, TypeError, "sizes must be a sequence of integers"),
])
def test_bad_sizes(sizes, exc, msg):
    with pytest.raises(exc, match=msg):
        MLP(sizes)


def test_numpy_integer_sizes_accepted():
    assert MLP(np.array([4, 5, 3])).sizes == [4, 5, 3]


def test_unknown_activation_loss_dtype():
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        MLP([3, 2], "softplus")
    with pytest.raises(ValueError, match="unknown activation None"):
        MLP([3, 2], None)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        MLP([3, 2], "relu", "hinge")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        MLP([3, 2], dtype=np.int32)
    with pytest.raises(ValueError, match="init must be"):
        MLP([3, 2], init="uniform")


def test_float_labels_for_classification(clf):
    model, X, y = clf
    yf = y.astype(np.float32)
    with pytest.raises(TypeError, match="labels must be integers"):
        model.train_step(X, yf, 0.1)
    with pytest.raises(TypeError, match="class labels must be integers"):
        model.fit(X, yf, progress=False)


@pytest.mark.parametrize("clip", [0, 0.0, -1.0])
def test_bad_clip_norm(clf, clip):
    model, X, y = clf
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        model.train_step(X, y, 0.1, clip_norm=clip)
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        model.fit(X, y, clip_norm=clip, progress=False)


@pytest.mark.parametrize("kw,msg", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"epochs": -3}, "epochs must be an integer >= 1"),
])
def test_bad_fit_counts(clf, kw, msg):
    model, X, y = clf
    with pytest.raises(ValueError, match=msg):
        model.fit(X, y, progress=False, **kw)


def test_every_method_converts_to_the_models_dtype(clf):
    """The dtype rule (README, docs/training.md): an MLP's dtype is fixed at
    construction, and every method that takes data converts arrays of another
    real dtype to it, train_step included; the results are in the model's dtype.
    The same batch in either dtype gives the same step."""
    model, X, y = clf
    twin = MLP([4, 5, 3], "relu", seed=0)
    twin.set_params(model.get_params())
    X64 = X.astype(np.float64)
    assert model.train_step(X64, y, 0.1) == twin.train_step(X, y, 0.1)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, twin.params[k])
    for fn in ("predict", "predict_proba"):
        out = getattr(model, fn)(X64)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, getattr(twin, fn)(X))
    assert model.score(X64, y) == twin.score(X, y)
    assert model.loss(X64, y) == twin.loss(X, y)
    m64 = MLP([4, 5, 3], "tanh", "mse", dtype=np.float64)
    loss = m64.train_step(X, np.zeros((10, 3), np.float32), 0.1)  # float32 in, converted
    assert np.isfinite(loss) and m64.predict(X).dtype == np.float64
    hist = m64.fit(X, np.zeros((10, 3), np.int64), epochs=1)
    assert len(hist["loss"]) == 1
    # the kernels never convert: mixing dtypes raises there
    with pytest.raises(TypeError, match="dtype"):
        fastbp.dense_forward(X64, model.params["W1"], model.params["b1"])
    with pytest.raises(TypeError, match="X must hold real numbers .* got dtype <U1"):
        model.predict(np.full((2, 4), "a"))


def test_bad_regression_targets():
    m = MLP([4, 5, 3], "tanh", "mse", dtype=np.float64)
    X = np.zeros((6, 4))
    with pytest.raises(ValueError, match=r"targets must have shape \(6, 3\)"):
        m.train_step(X, np.zeros((6, 2)), 0.1)
    with pytest.raises(ValueError, match=r"targets must have shape \(6, 3\)"):
        m.fit(X, np.zeros((6, 2)), progress=False)


# ---------------------------------------------------------------------------
# per-layer activations, devices
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("acts", [["relu", "tanh"], ["identity", "sigmoid"], ["tanh", "relu"]])
def test_per_layer_activations_match_reference(acts):
    rng = np.random.default_rng(3)
    sizes = [5, 7, 6, 3]
    model = MLP(sizes, acts, dtype=np.float64, seed=1)
    params = copy_params(model)
    for _ in range(3):
        x, t = make_batch(rng, sizes, "labels", np.float64)
        got = model.train_step(x, t, 0.1, weight_decay=0.01)
        want = ref.mlp_train_step(params, x, t, 0.1, acts, "softmax_cross_entropy",
                                  weight_decay=0.01)
        assert abs(got - want) <= 1e-12 * abs(want)
    assert_params_close(model.params, params, 1e-12)
    np.testing.assert_allclose(model.predict(x), ref.mlp_forward(params, x, acts)[-1],
                               rtol=1e-12)


def test_activation_list_is_checked():
    with pytest.raises(ValueError, match="got 1 activations for 2 hidden layers"):
        MLP([4, 5, 6, 3], ["relu"])
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP([4, 5, 6, 3], ["relu", "swish"])


def test_reference_momentum_needs_a_velocity():
    model = MLP([3, 4, 2], dtype=np.float64)
    with pytest.raises(ValueError, match="needs a velocity dict"):
        ref.mlp_train_step(copy_params(model), np.ones((2, 3)), np.array([0, 1]), 0.1, "relu",
                           "softmax_cross_entropy", momentum=0.9)


def test_device_is_checked():
    from fastbp import cuda

    with pytest.raises(ValueError, match="device must be one of"):
        MLP([3, 2], device="tpu")
    if not cuda.is_available():
        with pytest.raises(RuntimeError, match="fastbp.cuda is not available"):
            MLP([3, 2], device="cuda")


def _gpu_ready():
    from fastbp import cuda
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return cuda.is_available()


@pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA device, the CUDA extension and CuPy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_on_cuda_matches_the_cpu(dtype):
    rng = np.random.default_rng(4)
    sizes = [6, 9, 4]
    cpu = MLP(sizes, "tanh", dtype=dtype, seed=2)
    gpu = MLP(sizes, "tanh", dtype=dtype, seed=2, device="cuda")
    X = rng.standard_normal((40, 6)).astype(dtype)
    y = rng.integers(0, 4, 40)
    for m in (cpu, gpu):
        m.train_step(X[:8], y[:8], 0.1, weight_decay=0.01, momentum=0.9)
        m.fit(X, y, epochs=2, batch_size=16, lr=0.05, progress=False)
    tol = 1e-5 if dtype == np.float32 else 1e-12  # the bar for the device MLP
    for k, v in cpu.get_params().items():
        np.testing.assert_allclose(gpu.get_params()[k], v, rtol=tol, atol=tol)
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=tol, atol=tol)
    np.testing.assert_allclose(gpu.loss(X, y), cpu.loss(X, y), rtol=tol)
    for k, g in cpu.gradient(X, y).items():
        np.testing.assert_allclose(gpu.gradient(X, y)[k], g, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# hostile inputs: aliasing, scalars, model files
# ---------------------------------------------------------------------------

def test_batch_aliasing_a_parameter_is_refused():
    """x (or the targets) sharing memory with a parameter would be read while
    the step updates it: refused, and nothing changes."""
    model = MLP([4, 4, 4], "relu", "mse", dtype=np.float64, seed=0)
    before = copy_params(model)
    t = np.zeros((4, 4))
    with pytest.raises(ValueError, match="x overlaps the model's W1 in memory"):
        model.train_step(model.params["W1"], t, 0.5)
    with pytest.raises(ValueError, match="target overlaps the model's W2 in memory"):
        model.train_step(np.ones((4, 4)), model.params["W2"], 0.5)
    with pytest.raises(ValueError, match="overlaps the model's b1"):
        model.train_step(model.params["b1"].reshape(1, 4), t[:1], 0.5)
    assert_params_close(model.params, before, 0.0)
    from fastbp import _core

    with pytest.raises(ValueError, match="X overlaps the model's W2"):
        _core.mlp_epoch(model._engine.workspace(4), model.params["W2"], t, None, np.arange(4),
                        2, 0, 2, _core.StepOptions(_core.STEP_TRAIN, lr=0.1))


@pytest.mark.parametrize("x", [np.float32(1), 3.0, np.ones(4, np.float32)])
def test_train_step_on_a_scalar_or_1d_batch_says_so(x):
    model = MLP([4, 3, 2])
    with pytest.raises(ValueError, match=r"x must be 2-D, got [01]-D array"):
        model.train_step(x, np.zeros(1, np.int64), 0.1)


def test_save_then_load_the_same_path(tmp_path):
    model = MLP([3, 4, 2], "tanh", dtype=np.float64, seed=3)
    written = model.save(tmp_path / "m")
    assert written == str(tmp_path / "m.npz")
    back = MLP.load(tmp_path / "m")
    for k, v in model.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    assert MLP.load(written).activation == "tanh"


def _write(path, **members):
    np.savez(path, **members)
    return path


def _good(sizes=(3, 4, 2), dtype="float32"):
    m = dict(sizes=np.asarray(sizes), activation=np.str_("relu"),
             loss=np.str_("softmax_cross_entropy"), dtype=np.str_(dtype))
    for l in range(1, len(sizes)):
        m[f"W{l}"] = np.zeros((sizes[l - 1], sizes[l]), dtype)
        m[f"b{l}"] = np.zeros(sizes[l], dtype)
    return m


def test_load_checks_declared_sizes_before_allocating(tmp_path):
    """A 2 KB file declaring a 20000 x 20000 layer is refused at once (before,
    the model was built, 4.6 GB, and only then compared with the file)."""
    import time

    m = _good()
    m["sizes"] = np.asarray([20000, 20000, 3])
    p = _write(tmp_path / "big.npz", **m)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"'W1' has shape \(3, 4\), expected \(20000, 20000\)"):
        MLP.load(p)
    assert time.perf_counter() - t0 < 1.0
    m["sizes"] = np.asarray([100000, 100000, 3])
    with pytest.raises(ValueError, match="expected"):
        MLP.load(_write(tmp_path / "bigger.npz", **m))


def test_load_refuses_a_member_whose_data_is_not_there(tmp_path):
    """A member whose header declares more data than the archive holds (a
    rewritten header) is refused from the zip directory, before any read."""
    import zipfile

    m = _good()
    p = _write(tmp_path / "m.npz", **m)
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members["W1.npy"]
    members["W1.npy"] = raw.replace(b"(3, 4)", b"(9, 4)")  # the same header length
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="'W1' declares shape"):
        MLP.load(bad)


def test_load_refuses_a_huge_compressed_member_before_reading_it(tmp_path):
    """2 GB of zeros compress to a few MB: the shape is checked from the header
    alone, so such a member is refused without being decompressed."""
    import time
    import zipfile

    m = _good()
    p = tmp_path / "m.npz"
    np.savez(p, **m)
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            if n != "W1.npy":
                z.writestr(n, data)
        with z.open("W1.npy", "w", force_zip64=True) as f:  # (16384, 16384) float64 = 2 GiB
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (16384, 16384)})
            zeros = bytes(1 << 24)
            for _ in range(128):
                f.write(zeros)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"'W1' has shape \(16384, 16384\), expected \(3, 4\)"):
        MLP.load(p)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("change, exc, msg", [
    (dict(sizes=np.asarray([3.0, 4.5, 2.0])), ValueError, "sizes must be integers"),
    (dict(sizes=np.asarray([3, 0, 2])), ValueError, "every width must be in"),
    (dict(W1=np.zeros((3, 4), np.complex64)), TypeError, "'W1' has dtype complex64"),
    (dict(W1=np.zeros((3, 4), np.float64)), TypeError, "'W1' has dtype float64, expected float32"),
    (dict(dtype=np.str_("int8")), ValueError, "dtype must be 'float32' or 'float64'"),
    (dict(activation=np.str_("swish")), ValueError, "describes no valid model"),
])
def test_load_rejects_bad_members(tmp_path, change, exc, msg):
    m = _good()
    m.update(change)
    with pytest.raises(exc, match=msg):
        MLP.load(_write(tmp_path / "m.npz", **m))


def test_load_names_what_is_wrong_with_the_file(tmp_path):
    m = _good()
    del m["b2"]
    with pytest.raises(KeyError, match="has no 'b2'"):
        MLP.load(_write(tmp_path / "m.npz", **m))
    np.save(tmp_path / "w.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        MLP.load(tmp_path / "w.npy")
    with pytest.raises(FileNotFoundError, match="no such file"):
        MLP.load(tmp_path / "nothing.npz")



def test_a_trained_model_pickles_and_copies(rng):
    """The native workspace is left out of pickles and copies and rebuilt on the
    next call (it made copy.deepcopy raise after a first step); the copy trains
    on exactly as the original, with its optimizer state."""
    import copy
    import pickle

    from fastbp import optim

    X, y = rng.standard_normal((32, 5)), rng.integers(0, 3, 32)
    m = MLP([5, 8, 3], "tanh", dtype=np.float64, seed=0, dropout=0.2)
    m.fit(X, y, epochs=2, batch_size=8, optimizer=optim.Adam(0.01))
    for make in (copy.deepcopy, lambda a: pickle.loads(pickle.dumps(a))):
        twin = make(m)
        assert twin.optimizer_state["t"] == m.optimizer_state["t"]
        for other in (m, twin):
            other.train_step(X[:8], y[:8], optimizer=optim.Adam(0.01))
        for k in m.params:
            np.testing.assert_array_equal(twin.params[k], m.params[k])
            assert twin.params[k] is not m.params[k]
        m = twin


# ---------------------------------------------------------------------------
# Poisson loss; NaN inputs; summary
# ---------------------------------------------------------------------------

def test_poisson_step_matches_the_reference():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((24, 5))
    y = rng.poisson(np.exp(0.5 * X[:, :2])).astype(np.float64)   # counts, 2 outputs
    model = MLP([5, 7, 2], "tanh", "poisson", dtype=np.float64, seed=2)
    params = model.get_params()
    w = rng.random(24)
    for _ in range(3):
        got = model.train_step(X, y, 0.05, sample_weight=w)
        want = ref.mlp_train_step(params, X, y, 0.05, "tanh", "poisson", sample_weight=w)
        assert got == pytest.approx(want, rel=1e-12)
    for k, v in params.items():
        np.testing.assert_allclose(model.params[k], v, rtol=1e-12, atol=1e-14)
    hist = model.fit(X, y, epochs=40, batch_size=8, lr=0.05)
    assert hist["loss"][-1] < hist["loss"][0] and "accuracy" not in hist
    # score: R^2 of the means exp(output)
    mu = np.exp(model.predict(X))
    r2 = 1 - ((y - mu) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    assert model.score(X, y) == pytest.approx(r2)
    with pytest.raises(ValueError, match="poisson targets must be >= 0"):
        model.fit(X, -y, epochs=1)
    with pytest.raises(ValueError, match="loss 'poisson' predicts values"):
        model.predict_proba(X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "loss", "gradient"])
def test_nan_input_is_refused_everywhere_as_fit_refuses_it(clf, method):
    model, X, y = clf
    bad = X.copy()
    bad[3, 2] = np.nan
    args = (bad,) if method in ("predict", "predict_proba") else (bad, y)
    with pytest.raises(ValueError, match=r"X must be finite, got nan at row 3, column 2"):
        getattr(model, method)(*args)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got inf at row 3"):
        getattr(model, method)(*args)


def test_summary_lists_layers_shapes_and_parameter_counts(capsys):
    m = MLP([64, 128, 32, 10], ["relu", "tanh"], dropout=[0.2, 0.0])
    m.summary()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Model: MLP 64-128-32-10, loss softmax_cross_entropy, float32, cpu"
    rows = [l.split() for l in out if l.startswith(("input", "dense_"))]
    assert [r[0] for r in rows] == ["input", "dense_1", "dense_2", "dense_3"]
    assert out[5].split("   ")[0].strip() == "dense_1 (relu), dropout 0.2"
    assert [r[-1] for r in rows] == ["0", "8,320", "4,128", "330"]
    assert [r[-3] + r[-2] for r in rows] == ["(None,64)", "(None,128)", "(None,32)", "(None,10)"]
    total = sum(v.size for v in m.params.values())
    assert f"Total params: {total:,} ({total * 4 / 1024:.1f} KiB)" in out
    lines = []
    m.summary(print_fn=lines.append)
    assert lines == out


def test_train_step_sees_a_changed_optimizer():
    """train_step keeps its checked settings between calls (_step_plan): a
    changed optimizer attribute, clip or shorthand lr must still take effect."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def run(changes):
        m = fastbp.MLP([5, 8, 3], seed=0)
        opt = fastbp.optim.SGD(0.1, momentum=0.9)
        for change in changes:
            kw = change(opt) or {}
            m.train_step(X, y, optimizer=opt, **kw)
        return m

    same = run([lambda o: None] * 3)
    lr_changed = run([lambda o: None, lambda o: setattr(o, "lr", 0.01), lambda o: None])
    clipped = run([lambda o: None, lambda o: {"clip_norm": 1e-3}, lambda o: None])
    assert not np.array_equal(same.params["W1"], lr_changed.params["W1"])
    assert not np.array_equal(same.params["W1"], clipped.params["W1"])
    # the lr change, replayed from scratch with two optimizers, gives the same bits
    m = fastbp.MLP([5, 8, 3], seed=0)
    m.train_step(X, y, optimizer=fastbp.optim.SGD(0.1, momentum=0.9))
    opt2 = fastbp.optim.SGD(0.01, momentum=0.9)
    m.train_step(X, y, optimizer=opt2)
    m.train_step(X, y, optimizer=opt2)
    for k in m.params:
        assert np.array_equal(m.params[k], lr_changed.params[k])
    # a bad value set on the optimizer is refused, and the model is unchanged
    opt = fastbp.optim.SGD(0.1)
    m.train_step(X, y, optimizer=opt)
    before = {k: v.copy() for k, v in m.params.items()}
    opt.lr = "x"
    with pytest.raises(TypeError, match="lr must be a real number"):
        m.train_step(X, y, optimizer=opt)
    for k in before:
        assert np.array_equal(m.params[k], before[k])
    # the shorthand: a new lr is a new SGD
    a, b = fastbp.MLP([5, 8, 3], seed=0), fastbp.MLP([5, 8, 3], seed=0)
    a.train_step(X, y, lr=0.1)
    a.train_step(X, y, lr=0.2)
    b.train_step(X, y, optimizer=fastbp.optim.SGD(0.1))
    b.train_step(X, y, optimizer=fastbp.optim.SGD(0.2))
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])


# ---- the epoch order: csrc/fbp_rng.h's shuffle, its twin and its checks ---------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 257, 2048])
def test_epoch_order_matches_twin(n):
    """fastbp._core.epoch_order is reference.epoch_order, element by element, for
    seeds up to 2**64 - 1, epochs and ranks; each is a permutation of range(n)."""
    for seed, epoch, rank in ((0, 0, 0), (7, 3, 0), (2**64 - 1, 2**40, 5), (1, 0, 1)):
        got = fastbp._core.epoch_order(n, seed, epoch, rank)
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, ref.epoch_order(n, seed, epoch, rank))
        np.testing.assert_array_equal(np.sort(got), np.arange(n))


def test_epoch_order_depends_on_seed_epoch_and_rank():
    base = fastbp._core.epoch_order(100, 1, 2, 0)
    for other in ((2, 2, 0), (1, 3, 0), (1, 2, 1)):
        assert not np.array_equal(fastbp._core.epoch_order(100, *other), base), other
    np.testing.assert_array_equal(epoch_order(100, 1, 2), base)


def test_epoch_order_is_uniform():
    """Each of the 3! orders of 3 rows, over 6000 epochs: within 5 sigma of 1000."""
    counts = {}
    for e in range(6000):
        key = tuple(fastbp._core.epoch_order(3, 11, e))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6
    assert all(abs(c - 1000) < 5 * (6000 * (1 / 6) * (5 / 6)) ** 0.5 for c in counts.values())


@pytest.mark.parametrize("args, exc, msg", [
    ((-1, 0, 0), ValueError, "epoch_order: n must be in [0, 4294967296), got -1"),
    ((2**32, 0, 0), ValueError, "n must be in [0, 4294967296)"),
    ((3, -1, 0), ValueError, "seed must be in [0, 18446744073709551616), got -1"),
    ((3, 2**64, 0), ValueError, "seed must be in"),
    ((3, 0, -2), ValueError, "epoch must be in [0, 9223372036854775808), got -2"),
    ((3, 0, 0, -1), ValueError, "rank must be in"),
    ((3.0, 0, 0), TypeError, "epoch_order: n must be an integer, got float"),
    ((3, True, 0), TypeError, "seed must be an integer, got bool"),
    ((3, 0, "1"), TypeError, "epoch must be an integer, got str"),
])
def test_epoch_order_checks(args, exc, msg):
    with pytest.raises(exc) as e:
        fastbp._core.epoch_order(*args)
    assert msg in str(e.value)


def test_fit_refuses_a_seed_past_64_bits():
    X, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    model = MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        model.fit(X, y, epochs=1, seed=2**64, progress=False)
