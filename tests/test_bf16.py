"""matmul_precision="bfloat16" (csrc/bf16.c, fastbp._bf16) against its NumPy twin
(reference.to_bfloat16, reference.matmul): the rounding bit for bit, the products
within a bound derived from the order of float32 accumulation, both paths
(emulated always; oneDNN where installed), determinism at any thread count, no
allocation per step, the float32 default untouched, and the refusals."""
import numpy as np
import pytest

import fastbp
from fastbp import MLP, _bf16, _core
from fastbp import reference as ref

U = 2.0 ** -24  # float32's unit roundoff
PATHS = ["emulated", "onednn"]


@pytest.fixture(params=PATHS)
def path(request):
    """Each bfloat16 path in turn; oneDNN's only where it is installed."""
    if request.param not in _bf16.available():
        pytest.skip("oneDNN is not installed (pip install 'fastbp[onednn]')")
    old = fastbp.get_bf16_provider()
    fastbp.set_bf16_provider(request.param)
    yield request.param
    fastbp.set_bf16_provider(old)


def _f32(bits):
    return np.array(bits, np.uint32).view(np.float32)


# ---- rounding ------------------------------------------------------------------------

def test_twin_rounds_to_nearest_even():
    one = 1.0
    cases = [
        (one + 2.0 ** -8, one),                    # halfway, 1.0 is even: down
        (one + 3 * 2.0 ** -8, one + 2.0 ** -6),    # halfway, 1 + 2^-7 is odd: up
        (one + 2.0 ** -8 + 2.0 ** -20, one + 2.0 ** -7),  # above halfway: up
        (-(one + 2.0 ** -8), -one),
        (3.4e38, np.inf),   # past halfway from bf16 max (3.3895e38) to 2^128: inf
        (-3.4e38, -np.inf),
        ((2 - 2.0 ** -7) * 2.0 ** 127, (2 - 2.0 ** -7) * 2.0 ** 127),  # bf16 max stays
        (np.inf, np.inf), (-np.inf, -np.inf), (0.0, 0.0),
    ]
    x = np.array([c[0] for c in cases], np.float32)
    want = np.array([c[1] for c in cases], np.float32)
    got = ref.to_bfloat16(x)
    np.testing.assert_array_equal(got, want)
    assert np.signbit(ref.to_bfloat16(np.float32(-0.0)))
    assert np.isnan(ref.to_bfloat16(np.float32(np.nan)))
    # a NaN whose payload sits in the low 16 bits alone stays NaN (not inf)
    assert np.isnan(ref.to_bfloat16(_f32([0x7F800001]))).all()
    assert (ref.to_bfloat16(x).view(np.uint32) & 0xFFFF == 0).all()


def test_c_rounding_matches_twin_bit_for_bit(rng):
    specials = _f32([0x7F800001, 0xFF800001, 0x7FC00000, 0x00000001, 0x80000001, 0x007FFFFF,
                     0x3F808000, 0x3F818000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0x80000000])
    x = np.concatenate([specials, rng.standard_normal(100_003).astype(np.float32),
                        rng.integers(0, 2 ** 32, 50_000, dtype=np.uint32).view(np.float32)])
    got, want = _core._round_bf16(x), ref.to_bfloat16(x)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


# ---- products against the twin --------------------------------------------------------

def _bound(a, b):
    """Twice float32's accumulation error bound for a (M, K) @ b (K, N) in any order:
    2 K u (|a| @ |b|) (the products of bf16 values are exact in float32)."""
    K = a.shape[1]
    return 2 * K * U * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))) + 1e-30


def _exact(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


SHAPES = [(1, 1, 1), (7, 5, 3), (31, 257, 29), (64, 200, 256), (300, 4, 2)]


@pytest.mark.parametrize("N,I,O", SHAPES)
def test_dense_forward_within_accumulation_bound(path, rng, N, I, O):
    x = rng.standard_normal((N, I)).astype(np.float32)
    W = rng.standard_normal((I, O)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    y = fastbp.dense_forward(x, W, b, matmul_precision="bfloat16")
    x16, W16 = ref.to_bfloat16(x), ref.to_bfloat16(W)
    exact = _exact(x16, W16) + b
    bound = _bound(x16, W16) + np.abs(exact) * U * 2  # + the bias add's rounding
    assert (np.abs(y - exact) <= bound).all()
    np.testing.assert_allclose(y, ref.dense_forward(x, W, b, None, "bfloat16"), rtol=0,
                               atol=float(2 * bound.max()))
    # the operands were rounded: float32 products are far outside the bound
    if I > 4:
        y32 = fastbp.dense_forward(x, W, b)
        assert (np.abs(y32 - exact) > bound).mean() > 0.5


@pytest.mark.parametrize("N,I,O", SHAPES)
def test_dense_backward_within_accumulation_bound(path, rng, N, I, O):
    x = rng.standard_normal((N, I)).astype(np.float32)
    W = rng.standard_normal((I, O)).astype(np.float32)
    y = np.maximum(rng.standard_normal((N, O)), 0).astype(np.float32)
    dy = rng.standard_normal((N, O)).astype(np.float32)
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, "relu", matmul_precision="bfloat16")
    dz = ref.relu_backward(dy, y)  # exact: the C mask is the same
    g16, x16, W16 = ref.to_bfloat16(dz), ref.to_bfloat16(x), ref.to_bfloat16(W)
    assert (np.abs(dx - _exact(g16, W16.T)) <= _bound(g16, W16.T)).all()
    assert (np.abs(dW - _exact(x16.T, g16)) <= _bound(x16.T, g16)).all()
    _, _, db32 = fastbp.dense_backward(dy, x, W, y, "relu")
    np.testing.assert_array_equal(db, db32)  # no product: float32's own numbers
    rdx, rdW, _ = ref.dense_backward(dy, x, W, y, "relu", "bfloat16")
    np.testing.assert_allclose(dx, rdx, rtol=0, atol=float(2 * _bound(g16, W16.T).max()))
    np.testing.assert_allclose(dW, rdW, rtol=0, atol=float(2 * _bound(x16.T, g16).max()))


def test_emulated_path_is_the_float32_product_of_rounded_operands(rng):
    """The emulated path is exactly fastbp's float32 path on rounded operands."""
    old = fastbp.get_bf16_provider()
    fastbp.set_bf16_provider("emulated")
    try:
        x = rng.standard_normal((64, 200)).astype(np.float32)
        W = rng.standard_normal((200, 256)).astype(np.float32)
        b = rng.standard_normal(256).astype(np.float32)
        y = fastbp.dense_forward(x, W, b, "tanh", matmul_precision="bfloat16")
        y32 = fastbp.dense_forward(ref.to_bfloat16(x), ref.to_bfloat16(W), b, "tanh")
        np.testing.assert_array_equal(y, y32)
    finally:
        fastbp.set_bf16_provider(old)


def test_paths_agree_within_accumulation_bound(rng):
    if "onednn" not in _bf16.available():
        pytest.skip("oneDNN is not installed")
    old = fastbp.get_bf16_provider()
    x = rng.standard_normal((128, 784)).astype(np.float32)
    W = rng.standard_normal((784, 512)).astype(np.float32)
    out = {}
    try:
        for p in PATHS:
            fastbp.set_bf16_provider(p)
            out[p] = fastbp.dense_forward(x, W, None, matmul_precision="bfloat16")
    finally:
        fastbp.set_bf16_provider(old)
    bound = 2 * _bound(ref.to_bfloat16(x), ref.to_bfloat16(W))
    assert (np.abs(out["onednn"] - out["emulated"]) <= bound).all()


# ---- the training step ---------------------------------------------------------------------

def _close_to_twin(got, want_fn, a16, g16):
    """Most elements within the accumulation bound of the twin's (float64 sums of
    the same rounded operands), all within one bf16 rounding of the operands: a
    float32 difference upstream may move an operand across a bf16 rounding
    boundary (a relative 2^-8 change of that one term)."""
    want = want_fn()
    tight = _bound(a16, g16)
    loose = 2.0 ** -7 * np.abs(a16.astype(np.float64)) @ np.abs(g16.astype(np.float64)) + 1e-12
    err = np.abs(got - want)
    return (err <= tight).mean() >= 0.9 and (err <= loose).all()


def test_step_gradients_match_twin(path, rng):
    """The native step's gradients (MLP.gradient: the same step with GRAD mode)
    against the twin, layer by layer, from the twin's own rounded operands;
    the float32 gradients fail the same check (the test can fail)."""
    sizes = [20, 32, 16, 5]
    m = MLP(sizes, "relu", seed=3, matmul_precision="bfloat16")
    x = rng.standard_normal((24, 20)).astype(np.float32)
    t = rng.integers(0, 5, 24)
    g = m.gradient(x, t)
    params = {k: v.copy() for k, v in m.params.items()}
    _, rg = ref.mlp_loss_and_grads(params, x, t, "relu", "softmax_cross_entropy",
                                   matmul_precision="bfloat16")
    # the twin's layer inputs and output gradients, to scale the bounds
    hs = ref.mlp_forward(params, x, "relu", matmul_precision="bfloat16")
    _, dh = ref.softmax_cross_entropy(hs[-1], t)
    L = len(sizes) - 1
    ok32 = []
    g32 = MLP(sizes, "relu", seed=3).gradient(x, t)
    for l in range(L, 0, -1):
        inp = x if l == 1 else hs[l - 2]
        dz = dh if l == L else ref.relu_backward(dh, hs[l - 1])
        a16, g16 = ref.to_bfloat16(inp).T, ref.to_bfloat16(dz)
        assert _close_to_twin(g[f"W{l}"], lambda: rg[f"W{l}"].astype(np.float64), a16, g16)
        ok32.append(_close_to_twin(g32[f"W{l}"], lambda: _exact(a16, g16), a16, g16))
        np.testing.assert_allclose(g[f"b{l}"], rg[f"b{l}"], rtol=1e-4, atol=1e-6)
        dh = dz @ params[f"W{l}"].T
    assert not all(ok32)


def test_train_step_follows_twin(path, rng):
    """A few steps: parameters stay within float32-accumulation noise of the twin's
    (much closer to it than to the float32 model's)."""
    sizes = [30, 64, 10]
    x = rng.standard_normal((32, 30)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    m = MLP(sizes, "tanh", seed=1, matmul_precision="bfloat16")
    m32 = MLP(sizes, "tanh", seed=1)
    params = {k: v.copy() for k, v in m.params.items()}
    for _ in range(3):
        lm = m.train_step(x, t, 0.1)
        m32.train_step(x, t, 0.1)
        lr_ = ref.mlp_train_step(params, x, t, 0.1, "tanh", "softmax_cross_entropy",
                                 matmul_precision="bfloat16")
        assert abs(lm - lr_) <= 1e-4 * abs(lr_)
    for k in params:
        d_twin = np.abs(m.params[k] - params[k]).max()
        d_f32 = np.abs(m32.params[k] - params[k]).max()
        assert d_twin <= 1e-5 and d_twin < d_f32 / 10, (k, d_twin, d_f32)


def test_predict_and_loss_use_bfloat16(path, rng):
    m = MLP([40, 64, 3], "relu", seed=2, matmul_precision="bfloat16")
    x = rng.standard_normal((50, 40)).astype(np.float32)
    t = rng.integers(0, 3, 50)
    params = {k: v.copy() for k, v in m.params.items()}
    want = ref.mlp_forward(params, x, "relu", matmul_precision="bfloat16")[-1]
    want32 = ref.mlp_forward(params, x, "relu")[-1]
    z = m.predict(x)
    assert np.abs(z - want).max() < np.abs(want32 - want).max() / 10
    p = m.predict_proba(x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    loss, _ = ref.softmax_cross_entropy(want.astype(np.float64), t)
    assert abs(m.loss(x, t) - loss) < 1e-5


@pytest.mark.parametrize("opt", ["sgd", "adam-dropout-clip"])
def test_bitwise_at_any_thread_count(path, restore_threads, rng, opt):
    """fit() twice at 1 thread and at 2 (every kernel and product split: the
    suite's _force_parallel): bitwise the same parameters."""
    X = rng.standard_normal((300, 200)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    kw = {"dropout": 0.2} if opt != "sgd" else {}
    fit_kw = {"optimizer": fastbp.optim.Adam(1e-3), "clip_norm": 1.0} if opt != "sgd" else \
        {"lr": 0.05}
    out = []
    for threads in (1, 2, 2, 1):
        fastbp.set_num_threads(threads)
        m = MLP([200, 256, 10], "relu", seed=0, matmul_precision="bfloat16", **kw)
        m.fit(X, y, epochs=2, batch_size=64, seed=0, **fit_kw)
        out.append(m.get_params())
    for o in out[1:]:
        for k in o:
            np.testing.assert_array_equal(o[k], out[0][k])


def test_step_allocates_nothing_after_the_first(path):
    from test_model import ALLOC_LIMIT, _alloc_setup, _traced_growth

    model, x, y = _alloc_setup()
    model.matmul_precision = "bfloat16"
    peak, net = _traced_growth(lambda: model.train_step(x, y, 0.01))
    assert peak < ALLOC_LIMIT and net < ALLOC_LIMIT, (peak, net)


def test_float32_default_is_untouched(rng):
    """A model switched to bfloat16 and back steps as one that never was, bit for
    bit; and bfloat16 steps differ from float32 ones."""
    x = rng.standard_normal((16, 30)).astype(np.float32)
    t = rng.integers(0, 4, 16)
    a, b, c = (MLP([30, 20, 4], seed=5) for _ in range(3))
    b.matmul_precision = "bfloat16"
    b.train_step(x, t, 0.1)
    b.set_params(a.get_params())
    b.matmul_precision = "float32"
    c.matmul_precision = "bfloat16"
    for m in (a, b, c):
        m.train_step(x, t, 0.1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)


# ---- refusals, configuration, front ends ---------------------------------------------------

def test_float64_and_bad_names_are_refused(rng):
    with pytest.raises(TypeError, match="expected float32, got float64"):
        MLP([4, 3], dtype=np.float64, matmul_precision="bfloat16")
    m = MLP([4, 3], dtype=np.float64)
    with pytest.raises(TypeError, match="float32"):
        m.matmul_precision = "bfloat16"
    assert m.matmul_precision == "float32"
    with pytest.raises(ValueError, match="'float32', 'bfloat16'.*got 'bf16'"):
        MLP([4, 3], matmul_precision="bf16")
    x, W = np.ones((2, 4)), np.ones((4, 3))
    with pytest.raises(TypeError, match="expected float32, got float64"):
        fastbp.dense_forward(x, W, None, matmul_precision="bfloat16")
    with pytest.raises(TypeError, match="expected float32, got float64"):
        fastbp.dense_backward(np.ones((2, 3)), x, W, matmul_precision="bfloat16")
    with pytest.raises(ValueError, match="set_bf16_provider"):
        fastbp.set_bf16_provider("amx")


def test_cuda_refuses_with_a_clear_error():
    with pytest.raises(NotImplementedError, match="matmul_precision='bfloat16' is CPU only"):
        MLP([4, 3], device="cuda", matmul_precision="bfloat16")


def test_info_says_which_path_and_what_to_install(monkeypatch, capsys):
    fastbp.show_config()
    out = capsys.readouterr().out
    assert "bf16:" in out and fastbp.get_bf16_provider() in out.replace("oneDNN", "onednn")
    old = _bf16._state.copy()
    monkeypatch.setattr(_bf16, "_onednn_path", lambda: None)
    monkeypatch.setattr(_bf16, "hardware", lambda: "AMX-BF16")
    try:
        _bf16._state["name"] = None
        info = _bf16.info()
        assert info["path"] == "emulated"
        assert 'pip install "fastbp[onednn]"' in info["note"] and "AMX-BF16" in info["note"]
        monkeypatch.setattr(_bf16, "hardware", lambda: None)
        assert "no bfloat16 hardware" in _bf16.info()["note"]
    finally:
        _bf16._state.update(old)
        _core._set_gemm_bf16(_bf16._provider().gemm if old["name"] == "onednn" else 0)


def test_bf16_floor_runs():
    if "onednn" not in _bf16.available():
        pytest.skip("oneDNN is not installed")
    old = fastbp.get_bf16_provider()
    fastbp.set_bf16_provider("onednn")
    try:
        assert _core.StepFloorBF16([64, 32, 10], 16).run(2, 2) > 0
    finally:
        fastbp.set_bf16_provider(old)
    fastbp.set_bf16_provider("emulated")
    try:
        with pytest.raises(RuntimeError, match="onednn"):
            _core.StepFloorBF16([64, 32, 10], 16).run()
    finally:
        fastbp.set_bf16_provider(old)


def test_sklearn_estimators_take_the_option(rng):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier, MLPRegressor

    X = rng.standard_normal((200, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    kw = dict(hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    a = MLPClassifier(matmul_precision="bfloat16", **kw).fit(X, y)
    b = MLPClassifier(**kw).fit(X.astype(np.float32), y)
    assert a.get_params()["matmul_precision"] == "bfloat16"
    assert a.coefs_[0].dtype == np.float32  # dtype None: float32 for bfloat16
    assert abs(a.score(X, y) - b.score(X, y)) < 0.05
    assert not np.array_equal(a.coefs_[0], b.coefs_[0])
    with pytest.raises(ValueError, match="dtype float32 or None, got float64"):
        MLPRegressor(matmul_precision="bfloat16", dtype=np.float64, **kw).fit(X, X[:, 0])
    r = MLPRegressor(matmul_precision="bfloat16", solver="lbfgs", **kw).fit(X, X[:, 0])
    assert r.score(X, X[:, 0]) > 0.9


def test_cli_train_and_bench_take_the_option(tmp_path):
    from fastbp.__main__ import build_parser, main

    assert main(["train", "--data", "digits", "--epochs", "1", "--no-progress",
                 "--matmul-precision", "bfloat16"]) == 0
    assert main(["train", "--data", "digits", "--epochs", "1", "--no-progress",
                 "--matmul-precision", "bfloat16", "--dtype", "float64"]) == 2
    args = build_parser().parse_args(["bench", "--matmul-precision", "bfloat16"])
    assert args.matmul_precision == "bfloat16"
