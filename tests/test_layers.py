"""fastbp.layers: the computational-graph nodes (textbook examples) and the
layer classes against fastbp.reference."""

import numpy as np
import pytest

from fastbp import ops
from fastbp import reference as ref
from fastbp.layers import (Add, Dense, Layer, MSELoss, Mul, ReLU, Sequential, Sigmoid,
                           SoftmaxCrossEntropy, Tanh)

ACT_LAYERS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def test_apple_mul():
    apple, count, tax = 100.0, 2, 1.1
    mul_apple, mul_tax = Mul(), Mul()
    apple_price = mul_apple.forward(apple, count)
    price = mul_tax.forward(apple_price, tax)
    assert apple_price == 200
    assert price == pytest.approx(220.0, rel=1e-15)
    dapple_price, dtax = mul_tax.backward(1.0)
    dapple, dcount = mul_apple.backward(dapple_price)
    assert dapple_price == pytest.approx(1.1, rel=1e-15)
    assert dapple == pytest.approx(2.2, rel=1e-15)
    assert dcount == pytest.approx(110.0, rel=1e-15)
    assert dtax == pytest.approx(200.0, rel=1e-15)


def test_apple_orange_add():
    apple, apple_num, orange, orange_num, tax = 100.0, 2, 150.0, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = Mul(), Mul(), Add(), Mul()
    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    total = add.forward(apple_price, orange_price)
    price = mul_tax.forward(total, tax)
    assert total == 650
    assert price == pytest.approx(715.0, rel=1e-15)
    dtotal, dtax = mul_tax.backward(1.0)
    dapple_price, dorange_price = add.backward(dtotal)
    assert dapple_price == dorange_price == pytest.approx(1.1, rel=1e-15)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    assert dapple == pytest.approx(2.2, rel=1e-15)
    assert dapple_num == pytest.approx(110.0, rel=1e-15)
    assert dorange == pytest.approx(3.3, rel=1e-15)
    assert dorange_num == pytest.approx(165.0, rel=1e-15)
    assert dtax == pytest.approx(650.0, rel=1e-15)


def test_mul_add_on_arrays():
    rng = np.random.default_rng(0)
    x, y, d = rng.standard_normal((3, 4, 5))
    m = Mul()
    np.testing.assert_array_equal(m.forward(x, y), x * y)
    dx, dy = m.backward(d)
    np.testing.assert_array_equal(dx, d * y)
    np.testing.assert_array_equal(dy, d * x)
    a = Add()
    np.testing.assert_array_equal(a.forward(x, y), x + y)
    dx, dy = a.backward(d)
    np.testing.assert_array_equal(dx, d)
    np.testing.assert_array_equal(dy, d)


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", [None, "relu", "sigmoid", "tanh"])
def test_dense_forward_backward(act, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5)).astype(dtype)
    W = rng.standard_normal((5, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    dy = rng.standard_normal((6, 4)).astype(dtype)
    layer = Dense(W, b, act)
    assert layer.params["W"] is W and layer.params["b"] is b
    y = layer.forward(x)
    want_y = ref.dense_forward(x, W, b, act)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, want_y, rtol=_tol(dtype), atol=_tol(dtype))
    dx = layer.backward(dy)
    want_dx, want_dW, want_db = ref.dense_backward(dy, x, W, want_y, act)
    np.testing.assert_allclose(dx, want_dx, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    np.testing.assert_allclose(layer.dW, want_dW, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    np.testing.assert_allclose(layer.db, want_db, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    assert layer.grads["W"] is layer.dW and layer.grads["b"] is layer.db


def test_dense_init():
    relu = Dense.init(400, 300, "relu", seed=0)
    assert relu.W.dtype == np.float32 and relu.W.shape == (400, 300)
    assert relu.W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    assert not relu.b.any()
    tanh = Dense.init(400, 300, "tanh", dtype=np.float64, seed=0)
    assert tanh.W.dtype == np.float64
    assert tanh.W.std() == pytest.approx(np.sqrt(2 / 700), rel=0.03)
    np.testing.assert_array_equal(Dense.init(3, 2, seed=5).W, Dense.init(3, 2, seed=5).W)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_layers(name, dtype):
    rng = np.random.default_rng(2)
    x = (3 * rng.standard_normal((5, 7))).astype(dtype)
    dy = rng.standard_normal((5, 7)).astype(dtype)
    fwd, bwd = ref.ACTIVATIONS[name]
    layer = ACT_LAYERS[name]()
    y = layer.forward(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, fwd(x), rtol=_tol(dtype), atol=_tol(dtype))
    np.testing.assert_allclose(layer.backward(dy), bwd(dy, fwd(x)), rtol=_tol(dtype),
                               atol=_tol(dtype))
    assert layer.grads == {}


def test_layer_base():
    with pytest.raises(NotImplementedError):
        Layer().forward(np.zeros(2))
    with pytest.raises(NotImplementedError):
        Layer().backward(np.zeros(2))


def _net(rng, dtype, fused, act="relu"):
    W1 = (rng.standard_normal((5, 8)) / 2).astype(dtype)
    b1 = (0.1 * rng.standard_normal(8)).astype(dtype)
    W2 = (rng.standard_normal((8, 3)) / 3).astype(dtype)
    b2 = (0.1 * rng.standard_normal(3)).astype(dtype)
    params = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2.copy(), "b2": b2.copy()}
    if fused:
        layers = [Dense(W1, b1, act), Dense(W2, b2)]
    else:
        layers = [Dense(W1, b1), ACT_LAYERS[act](), Dense(W2, b2)]
    return params, layers


def _grads(layers):
    dense = [l for l in layers if isinstance(l, Dense)]
    return {"W1": dense[0].dW, "b1": dense[0].db, "W2": dense[1].dW, "b2": dense[1].db}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fused", [False, True], ids=["separate-act", "fused-act"])
@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_sequential_matches_reference(act, target, fused, dtype):
    rng = np.random.default_rng(3)
    params, layers = _net(rng, dtype, fused, act)
    net = Sequential(*layers)
    x = rng.standard_normal((7, 5)).astype(dtype)
    if target == "labels":
        t = rng.integers(0, 3, 7)
    else:
        t = rng.dirichlet(np.ones(3), 7).astype(dtype)
    loss = net.loss(x, t)
    want_loss, want = ref.mlp_loss_and_grads(params, x, t, act, "softmax_cross_entropy")
    assert loss == pytest.approx(want_loss, rel=_tol(dtype))
    dx = net.backward()
    assert dx.shape == x.shape
    got = _grads(layers)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=_tol(dtype), atol=_tol(dtype), err_msg=k)
    # dx: the reference's dense_backward chain, one layer further
    h = ref.mlp_forward(params, x, act)
    _, dlog = ref.softmax_cross_entropy(h[-1], t)
    dh1, _, _ = ref.dense_backward(dlog, h[0], params["W2"], h[1], None)
    want_dx, _, _ = ref.dense_backward(dh1, x, params["W1"], h[0], act)
    np.testing.assert_allclose(dx, want_dx, rtol=_tol(dtype), atol=_tol(dtype))


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequential_step_matches_reference_sgd(dtype, wd):
    rng = np.random.default_rng(4)
    params, layers = _net(rng, dtype, fused=False)
    net = Sequential(*layers)
    x = rng.standard_normal((7, 5)).astype(dtype)
    t = rng.integers(0, 3, 7)
    for _ in range(3):
        net.loss(x, t)
        net.backward()
        net.step(0.5, weight_decay=wd)
        ref.mlp_train_step(params, x, t, 0.5, "relu", "softmax_cross_entropy", weight_decay=wd)
    got = {"W1": layers[0].W, "b1": layers[0].b, "W2": layers[2].W, "b2": layers[2].b}
    for k in params:
        np.testing.assert_allclose(got[k], params[k], rtol=_tol(dtype), atol=_tol(dtype), err_msg=k)
    start = _net(np.random.default_rng(4), dtype, fused=False)[0]
    assert not np.allclose(got["W1"], start["W1"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_loss_layer(dtype):
    rng = np.random.default_rng(5)
    y = rng.standard_normal((6, 3)).astype(dtype)
    t = rng.standard_normal((6, 3)).astype(dtype)
    layer = MSELoss()
    want_loss, want_dy = ref.mse_loss(y, t)
    assert layer.forward(y, t) == pytest.approx(want_loss, rel=_tol(dtype))
    assert want_loss == pytest.approx(0.5 * np.sum((y.astype(float) - t) ** 2) / 6, rel=1e-5)
    np.testing.assert_allclose(layer.backward(), want_dy, rtol=_tol(dtype), atol=_tol(dtype))
    np.testing.assert_allclose(layer.backward(2.0), 2 * want_dy, rtol=_tol(dtype),
                               atol=_tol(dtype))


def test_softmax_xent_layer_dout():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 3))
    t = np.array([0, 2, 1, 2])
    layer = SoftmaxCrossEntropy()
    want_loss, want_dz = ref.softmax_cross_entropy(z, t)
    assert layer.forward(z, t) == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(layer.backward(), want_dz, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.backward(3.0), 3 * want_dz, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_sequential_mse_matches_reference(act):
    rng = np.random.default_rng(7)
    params, layers = _net(rng, np.float64, fused=False, act=act)
    net = Sequential(*layers, loss=MSELoss())
    x = rng.standard_normal((7, 5))
    t = rng.standard_normal((7, 3))
    want_loss, want = ref.mlp_loss_and_grads(params, x, t, act, "mse")
    assert net.loss(x, t) == pytest.approx(want_loss, rel=1e-12)
    net.backward()
    got = _grads(layers)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ---- construction: Dense(in, out), Dense(W, b), validation ------------------------------------

def test_layers_docstring_example():
    import doctest
    import fastbp.layers
    res = doctest.testmod(fastbp.layers, verbose=False)
    assert res.attempted >= 8 and res.failed == 0, res


@pytest.mark.parametrize("act", [None, "identity", "relu", "sigmoid", "tanh"])
def test_dense_from_sizes(act):
    layer = Dense(4, 5, act)
    assert layer.W.shape == (4, 5) and layer.W.dtype == np.float32
    assert layer.b.shape == (5,) and layer.b.dtype == np.float32 and not layer.b.any()
    assert layer.activation == act
    assert layer.W.flags.c_contiguous and layer.dW.shape == (4, 5)
    init = Dense.init(4, 5, act)
    np.testing.assert_array_equal(layer.W, init.W)
    x = np.ones((3, 4), np.float32)
    assert layer.forward(x).shape == (3, 5)
    assert layer.backward(np.ones((3, 5), np.float32)).shape == (3, 4)


def test_dense_from_sizes_init_and_keywords():
    he = Dense(400, 300, "relu", seed=1)
    assert he.W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    assert Dense(400, 300, seed=1).W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    xavier = Dense(400, 300, "sigmoid", dtype=np.float64, seed=1)
    assert xavier.W.dtype == np.float64 and xavier.b.dtype == np.float64
    assert xavier.W.std() == pytest.approx(np.sqrt(2 / 700), rel=0.03)
    np.testing.assert_array_equal(Dense(np.int64(3), np.int32(2), seed=5).W,
                                  Dense.init(3, 2, seed=5).W)
    assert not np.array_equal(Dense(3, 2, seed=5).W, Dense(3, 2, seed=6).W)
    assert Dense(3, 2, dtype="float64").W.dtype == np.float64


def _wb(dtype=np.float64, I=5, O=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((I, O)).astype(dtype), rng.standard_normal(O).astype(dtype)


W64, B64 = _wb()


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((4,), {}, TypeError, r"Dense: expected Dense\(in_features, out_features\), got "
                          r"in_features=4 and no out_features"),
    ((4.0,), {}, TypeError, r"Dense: expected Dense\(in_features, out_features\) with two "
                            r"integers or Dense\(W, b\) with NumPy arrays, got \(float, NoneType\)"),
    ((4.0, 5), {}, TypeError, r"got \(float, int\)"),
    ((True, 5), {}, TypeError, r"got \(bool, int\)"),
    ((4, W64), {}, TypeError, r"got \(int, ndarray\)"),
    ((W64, 4), {}, TypeError, r"got \(ndarray, int\)"),
    ((W64.tolist(), B64.tolist()), {}, TypeError, r"got \(list, list\)"),
    ((W64, B64.tolist()), {}, TypeError, r"got \(ndarray, list\)"),
    (("4", "5"), {}, TypeError, r"got \(str, str\)"),
    ((0, 5), {}, ValueError, r"Dense: in_features must be >= 1, got 0"),
    ((4, -1), {}, ValueError, r"Dense: out_features must be >= 1, got -1"),
    ((4, 5), {"dtype": np.int32}, TypeError, r"Dense: dtype must be float32 or float64, got int32"),
    ((4, 5), {"dtype": np.float16}, TypeError, r"got float16"),
    ((4, 5), {"dtype": "nonsense"}, TypeError, r"Dense: dtype must be float32 or float64, got "),
    ((W64, B64), {"dtype": np.float64}, TypeError,
     r"Dense: dtype and seed are for Dense\(in_features, out_features\)"),
    ((W64, B64), {"seed": 1}, TypeError, r"dtype and seed"),
    ((W64[0], B64), {}, ValueError, r"Dense: W must be a 2-D array .* got a 1-D array of shape \(4,\)"),
    ((W64[None], B64), {}, ValueError, r"got a 3-D array"),
    ((W64[:0], B64), {}, ValueError, r"Dense: W must have at least one row and one column, "
                                     r"got shape \(0, 4\)"),
    ((W64.astype(np.int64), B64), {}, TypeError, r"Dense: W must be float32 or float64, got int64"),
    ((W64.astype(np.float16), B64), {}, TypeError, r"got float16"),
    ((W64.astype(">f8"), B64), {}, TypeError, r"got >f8 \(non-native byte order\)"),
    ((W64, B64[:, None]), {}, ValueError, r"Dense: b must be a 1-D array of length 4 "
                                          r"\(W's columns\), got a 2-D array of shape \(4, 1\)"),
    ((W64, B64[:3]), {}, ValueError, r"Dense: b must be a 1-D array of length 4 .* got a 1-D "
                                     r"array of shape \(3,\)"),
    ((W64, B64.astype(np.float32)), {}, TypeError,
     r"Dense: b must have W's dtype float64, got float32"),
    ((W64, B64, "softmax"), {}, ValueError, r"Dense: activation must be one of None, "
                                            r"" + ", ".join(repr(n) for n in ops.ACTIVATIONS) + ", got 'softmax'"),
    ((W64, B64, "ReLU"), {}, ValueError, r"got 'ReLU'"),
    ((W64, B64, 1), {}, ValueError, r"got 1"),
    ((W64, B64, ["relu"]), {}, ValueError, r"got \['relu'\]"),
    ((4, 5, "softmax"), {}, ValueError, r"Dense: activation must be one of"),
])
def test_dense_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Dense(*args, **kwargs)


def test_dense_b_none_is_a_zero_bias():
    W, _ = _wb(np.float32)
    layer = Dense(W, None, "relu")
    assert layer.W is W
    assert layer.b.dtype == np.float32 and layer.b.shape == (4,) and not layer.b.any()
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), ref.dense_forward(x, W, np.zeros(4), "relu"),
                               rtol=1e-5, atol=1e-6)
    layer2 = Dense(W, None)
    assert layer2.b is not layer.b                 # each layer its own bias


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", [None, "relu", "tanh"])
@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly"])
def test_dense_non_c_contiguous_W(layout, act, dtype):
    """Forward, backward and SGD with a W that is not C-contiguous (or not
    writable): the layer keeps a C-contiguous copy, its own, and trains that."""
    rng = np.random.default_rng(8)
    W, b = _wb(dtype, seed=9)
    x = rng.standard_normal((6, 5)).astype(dtype)
    dy = rng.standard_normal((6, 4)).astype(dtype)
    if layout == "fortran":
        Wg, bg = np.asfortranarray(W), b.copy()    # b is C-contiguous: shared, trained
    elif layout == "strided":
        Wg = np.zeros((10, 8), dtype)[::2, ::2]
        Wg[...] = W
        bg = np.zeros(8, dtype)[::2]
        bg[...] = b
    else:
        Wg, bg = W.copy(), b.copy()
        Wg.flags.writeable = bg.flags.writeable = False
    layer = Dense(Wg, bg, act)
    assert layer.W is not Wg and layer.W.flags.c_contiguous and layer.W.flags.writeable
    assert layer.b.flags.c_contiguous and layer.b.flags.writeable
    assert (layer.b is bg) == (layout == "fortran")
    np.testing.assert_array_equal(layer.W, W)
    np.testing.assert_array_equal(layer.b, b)
    y = layer.forward(x)
    want_y = ref.dense_forward(x, W, b, act)
    np.testing.assert_allclose(y, want_y, rtol=_tol(dtype), atol=_tol(dtype))
    dx = layer.backward(dy)
    want_dx, want_dW, want_db = ref.dense_backward(dy, x, W, want_y, act)
    np.testing.assert_allclose(dx, want_dx, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    np.testing.assert_allclose(layer.dW, want_dW, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    np.testing.assert_allclose(layer.db, want_db, rtol=_tol(dtype), atol=_tol(dtype) * 10)
    Sequential(layer).step(0.1)
    np.testing.assert_allclose(layer.W, W - 0.1 * want_dW, rtol=_tol(dtype), atol=_tol(dtype))
    np.testing.assert_allclose(layer.b, b - 0.1 * want_db, rtol=_tol(dtype), atol=_tol(dtype))
    np.testing.assert_array_equal(Wg, W)           # the caller's array is not the layer's


def test_sequential_step_fortran_W_matches_reference():
    rng = np.random.default_rng(4)
    params, layers = _net(rng, np.float64, fused=True)
    layers = [Dense(np.asfortranarray(l.W), l.b, l.activation) for l in layers]
    net = Sequential(*layers)
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 3, 7)
    for _ in range(3):
        net.loss(x, t)
        net.backward()
        net.step(0.5)
        ref.mlp_train_step(params, x, t, 0.5, "relu", "softmax_cross_entropy")
    got = {"W1": layers[0].W, "b1": layers[0].b, "W2": layers[1].W, "b2": layers[1].b}
    for k in params:
        np.testing.assert_allclose(got[k], params[k], rtol=1e-12, atol=1e-12, err_msg=k)


# ---- Sequential: layers as arguments or one list/tuple, each one checked -------------------

@pytest.mark.parametrize("form", ["args", "list", "tuple"])
def test_sequential_list_or_args(form):
    rng = np.random.default_rng(3)
    params, layers = _net(rng, np.float64, fused=False)
    net = {"args": lambda: Sequential(*layers), "list": lambda: Sequential(layers),
           "tuple": lambda: Sequential(tuple(layers), loss=SoftmaxCrossEntropy())}[form]()
    assert net.layers == layers and net.layers is not layers
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 3, 7)
    want_loss, want = ref.mlp_loss_and_grads(params, x, t, "relu", "softmax_cross_entropy")
    assert net.loss(x, t) == pytest.approx(want_loss, rel=1e-12)
    net.backward()
    got = _grads(layers)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_sequential_empty():
    x = np.random.default_rng(0).standard_normal((3, 4))
    for net in (Sequential(), Sequential([]), Sequential(())):
        assert net.layers == []
        np.testing.assert_array_equal(net.forward(x), x)


_D = Dense(3, 2)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    (([_D, ReLU(), 3],), {}, TypeError,
     r"Sequential: layer 2 must be a layer \(an object with forward and backward\), got int"),
    ((_D, [ReLU()]), {}, TypeError, r"Sequential: layer 1 must be a layer .* got list"),
    (([_D], [ReLU()]), {}, TypeError, r"Sequential: layer 0 must be a layer .* got list"),
    ((_D, None), {}, TypeError, r"layer 1 .* got NoneType"),
    ((np.zeros((3, 2)),), {}, TypeError, r"layer 0 .* got ndarray"),
    (("relu",), {}, TypeError, r"layer 0 .* got str"),
    ((_D, ReLU), {}, TypeError, r"Sequential: layer 1 is the class ReLU, not a layer; "
                                r"did you mean ReLU\(\)\?"),
    ((_D, SoftmaxCrossEntropy()), {}, TypeError,
     r"Sequential: layer 1 is a loss \(SoftmaxCrossEntropy\); pass it as loss="),
    (([_D, MSELoss()],), {}, TypeError, r"layer 1 is a loss \(MSELoss\)"),
    ((_D,), {"loss": "mse"}, TypeError,
     r"Sequential: loss must be a loss layer \(an object with forward and backward\), got str"),
    ((_D,), {"loss": MSELoss}, TypeError, r"Sequential: loss is the class MSELoss, not a layer; "
                                          r"did you mean MSELoss\(\)\?"),
])
def test_sequential_bad_layers(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Sequential(*args, **kwargs)


def test_sequential_duck_typed_layer():
    class Scale:
        def forward(self, x):
            return 2 * x

        def backward(self, dout):
            return 2 * dout
    x = np.ones((2, 3))
    np.testing.assert_array_equal(Sequential([Scale(), Scale()]).forward(x), 4 * x)
