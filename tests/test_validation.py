"""Bad inputs raise ValueError/TypeError naming what was expected and given."""

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import DTYPES, assert_close, dense_inputs, raises

f32, f64 = np.float32, np.float64


# ---------------------------------------------------------------------------
# dense_forward
# ---------------------------------------------------------------------------

def test_forward_inner_dim_mismatch(rng):
    x, _, b = dense_inputs(rng)
    W = np.ones((5, 2))
    with raises(ValueError, "3 (dim 1) != 5 (dim 0)"):
        fastbp.dense_forward(x, W, b)


def test_forward_wrong_ndim(rng):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, "x must be 2-D, got 1-D array of shape (3,)"):
        fastbp.dense_forward(np.ones(3), W, b)
    with raises(ValueError, "W must be 2-D, got 3-D array of shape (3, 2, 1)"):
        fastbp.dense_forward(x, np.ones((3, 2, 1)), b)
    with raises(ValueError, "b must be 1-D, got 2-D"):
        fastbp.dense_forward(x, W, b[None])


def test_forward_int_x(rng):
    _, W, b = dense_inputs(rng)
    with raises(TypeError, "x must be a float32 or float64 array, got dtype int64"):
        fastbp.dense_forward(np.ones((4, 3), np.int64), W, b)


@pytest.mark.parametrize("bad", [np.float16, np.complex128, np.bool_, object])
def test_forward_other_bad_dtypes(rng, bad):
    _, W, b = dense_inputs(rng)
    with raises(TypeError, "x must be a float32 or float64 array, got dtype"):
        fastbp.dense_forward(np.ones((4, 3), dtype=bad), W, b)


def test_forward_mixed_dtypes(rng):
    x, W, b = dense_inputs(rng)
    with raises(TypeError, "W has dtype float32 but the inputs are float64"):
        fastbp.dense_forward(x, W.astype(f32), b)
    with raises(TypeError, "b has dtype float64 but the inputs are float32"):
        fastbp.dense_forward(x.astype(f32), W.astype(f32), b)


def test_forward_bias_wrong_length(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "b must have shape (2,) to match W (3, 2), got (3,)"):
        fastbp.dense_forward(x, W, np.ones(3))


@pytest.mark.parametrize("act", ["gelu", "ReLU", 1, ["relu"]])
def test_forward_unknown_activation(rng, act):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, f"unknown activation {act!r}"):
        fastbp.dense_forward(x, W, b, act)


def test_forward_bad_out(rng):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, "out must have shape (4, 2), got (2, 4)"):
        fastbp.dense_forward(x, W, b, out=np.empty((2, 4)))
    with raises(TypeError, "out must have dtype float64, got float32"):
        fastbp.dense_forward(x, W, b, out=np.empty((4, 2), f32))
    with raises(ValueError, "out must be C-contiguous"):
        fastbp.dense_forward(x, W, b, out=np.empty((4, 4))[:, ::2])
    with raises(ValueError, "out must be C-contiguous"):
        fastbp.dense_forward(x, W, b, out=np.asfortranarray(np.empty((4, 2))))
    ro = np.empty((4, 2))
    ro.flags.writeable = False
    with raises(ValueError, "out is read-only"):
        fastbp.dense_forward(x, W, b, out=ro)
    with raises(TypeError, "out must be a numpy.ndarray, got list"):
        fastbp.dense_forward(x, W, b, out=[[0.0] * 2] * 4)


def test_forward_out_overlaps_input(rng):
    buf = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 3))
    with raises(ValueError, "out overlaps x"):
        fastbp.dense_forward(buf, W, None, out=buf)
    big = rng.standard_normal(20)
    x = big[:12].reshape(4, 3)
    with raises(ValueError, "out overlaps x"):
        fastbp.dense_forward(x, W, None, out=big[6:18].reshape(4, 3))
    with raises(ValueError, "out overlaps W"):
        fastbp.dense_forward(rng.standard_normal((3, 3)), W, None, out=W)


# ---------------------------------------------------------------------------
# dense_backward
# ---------------------------------------------------------------------------

def test_backward_wrong_dy_shape(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "dy must have shape (4, 2) (x rows, W columns), got (4, 3)"):
        fastbp.dense_backward(np.ones((4, 3)), x, W)


def test_backward_missing_y(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "y (the forward output) is required with activation 'relu'"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, None, "relu")


def test_backward_wrong_y_shape(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "y must have the shape of dy (4, 2), got (2, 4)"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, np.ones((2, 4)), "tanh")


@pytest.mark.parametrize("given", ["none", "dW", "db"])
def test_backward_accumulate_needs_buffers(rng, given):
    x, W, _ = dense_inputs(rng)
    kw = {}
    if given == "dW":
        kw["dW"] = np.zeros((3, 2))
    if given == "db":
        kw["db"] = np.zeros(2)
    with raises(ValueError, "accumulate=True needs the dW and db buffers"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, accumulate=True, **kw)


def test_backward_dz_partially_overlapping_dy(rng):
    x, W, _ = dense_inputs(rng)
    buf = rng.standard_normal((5, 2))
    dy, dz = buf[:4], buf[1:]
    y = np.tanh(rng.standard_normal((4, 2)))
    with raises(ValueError, "dz overlaps dy"):
        fastbp.dense_backward(dy, x, W, y, "tanh", dz=dz)


def test_backward_buffer_wrong_shape_and_dtype(rng):
    x, W, _ = dense_inputs(rng)
    dy = np.ones((4, 2))
    with raises(ValueError, "dW must have shape (3, 2), got (2, 3)"):
        fastbp.dense_backward(dy, x, W, dW=np.zeros((2, 3)))
    with raises(TypeError, "db must have dtype float64, got float32"):
        fastbp.dense_backward(dy, x, W, db=np.zeros(2, f32))
    with raises(ValueError, "dx must have shape (4, 3), got (3, 4)"):
        fastbp.dense_backward(dy, x, W, dx=np.zeros((3, 4)))
    with raises(ValueError, "dx given with need_dx=False"):
        fastbp.dense_backward(dy, x, W, dx=np.zeros((4, 3)), need_dx=False)


def test_backward_output_overlaps_input(rng):
    x, W, _ = dense_inputs(rng, O=3)
    dy = rng.standard_normal((4, 3))
    with raises(ValueError, "dW overlaps W"):
        fastbp.dense_backward(dy, x, W, dW=W)
    with raises(ValueError, "dx overlaps x"):
        fastbp.dense_backward(dy, x, W, dx=x)


def test_backward_mixed_dtypes(rng):
    x, W, _ = dense_inputs(rng)
    with raises(TypeError, "x has dtype float32 but the inputs are float64"):
        fastbp.dense_backward(np.ones((4, 2)), x.astype(f32), W)


# ---------------------------------------------------------------------------
# softmax_cross_entropy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.uint64])
def test_xent_label_too_large(rng, dtype):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "labels must be in [0, 4), got values in [0, 4]"):
        fastbp.softmax_cross_entropy(z, np.array([0, 4, 1], dtype))


def test_xent_negative_label(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "labels must be in [0, 4), got values in [-1, 2]"):
        fastbp.softmax_cross_entropy(z, np.array([0, -1, 2], np.int8))


def test_xent_float_labels(rng):
    z = rng.standard_normal((3, 4))
    with raises(TypeError, "1-D targets must be integer class labels, got dtype float64"):
        fastbp.softmax_cross_entropy(z, np.array([0.0, 1.0, 2.0]))


def test_xent_bool_labels(rng):
    z = rng.standard_normal((3, 4))
    with raises(TypeError, "1-D targets must be integer class labels, got dtype bool"):
        fastbp.softmax_cross_entropy(z, np.array([True, False, True]))


def test_xent_wrong_label_count(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "got 2 labels for 3 rows of logits"):
        fastbp.softmax_cross_entropy(z, np.array([0, 1]))


def test_xent_3d_target(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "got 3-D array of shape (3, 4, 1)"):
        fastbp.softmax_cross_entropy(z, np.ones((3, 4, 1)))
    with raises(ValueError, "got 0-D array of shape ()"):
        fastbp.softmax_cross_entropy(z, np.int64(1))


def test_xent_prob_target_wrong_shape_or_dtype(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "probability targets must have the logits' shape (3, 4), got (3, 5)"):
        fastbp.softmax_cross_entropy(z, np.full((3, 5), 0.2))
    with raises(TypeError, "target has dtype float32 but the inputs are float64"):
        fastbp.softmax_cross_entropy(z, np.full((3, 4), 0.25, f32))
    with raises(TypeError, "target must be a float32 or float64 array, got dtype int64"):
        fastbp.softmax_cross_entropy(z, np.zeros((3, 4), np.int64))


def test_xent_zero_classes():
    with raises(ValueError, "logits must have at least one class, got shape (3, 0)"):
        fastbp.softmax_cross_entropy(np.zeros((3, 0)), np.zeros(3, np.int64))


def test_xent_logits_wrong_ndim():
    with raises(ValueError, "logits must be 2-D, got 1-D"):
        fastbp.softmax_cross_entropy(np.zeros(3), np.zeros(3, np.int64))


@pytest.mark.parametrize("start, overlaps", [(12, False), (11, True), (1, True), (0, False)])
def test_out_overlap_is_exact_at_the_edges(rng, start, overlaps):
    """Contiguous arrays get an exact interval test: an out that starts right
    after x is fine, one shared element is refused, a shifted alias is refused,
    and another view of exactly x's memory runs in place like x itself."""
    big = rng.standard_normal(40)
    x = big[:12].reshape(4, 3)
    want = np.maximum(x, 0)
    out = big[start:start + 12].reshape(4, 3)
    if overlaps:
        with raises(ValueError, "out overlaps x"):
            fastbp.relu_forward(x, out=out)
    else:
        fastbp.relu_forward(x, out=out)
        np.testing.assert_array_equal(out, want)


def test_xent_bad_out(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "out must have shape (3, 4), got (4, 3)"):
        fastbp.softmax_cross_entropy(z, np.array([0, 1, 2]), out=np.empty((4, 3)))
    t = np.full((3, 4), 0.25)
    with raises(ValueError, "out overlaps target"):
        fastbp.softmax_cross_entropy(z, t, out=t)


# ---------------------------------------------------------------------------
# mse_loss
# ---------------------------------------------------------------------------

def test_mse_shape_mismatch():
    with raises(ValueError, "target must have the shape of pred (3, 2), got (2, 3)"):
        fastbp.mse_loss(np.ones((3, 2)), np.ones((2, 3)))


def test_mse_0d_pred():
    with raises(ValueError, "pred must have a batch dimension, got a 0-D array"):
        fastbp.mse_loss(np.float64(1.0), np.float64(1.0))


def test_mse_mixed_dtypes():
    with raises(TypeError, "target has dtype float32 but the inputs are float64"):
        fastbp.mse_loss(np.ones(3), np.ones(3, f32))


# ---------------------------------------------------------------------------
# optimizer and clipping
# ---------------------------------------------------------------------------

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
        fastbp.sgd_update(np.ones(4, f32), np.ones(4), 0.1)


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


# ---------------------------------------------------------------------------
# accepted inputs: Python lists, big-endian arrays
# ---------------------------------------------------------------------------

def test_python_lists_of_floats_are_accepted():
    x = [[1.0, 2.0], [3.0, -4.0]]
    W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]
    b = [0.1, 0.2, 0.3]
    y = fastbp.dense_forward(x, W, b, "relu")
    assert_close(y, ref.dense_forward(np.array(x), np.array(W), np.array(b), "relu"), f64)
    assert_close(fastbp.tanh_forward([0.5, -2.0]), np.tanh([0.5, -2.0]), f64)
    loss, d = fastbp.mse_loss([1.0, 2.0], [0.0, 0.0])
    assert loss == 1.25


def test_python_lists_of_ints_rejected():
    with raises(TypeError, "x must be a float32 or float64 array, got dtype int64"):
        fastbp.dense_forward([[1, 2]], [[1.0], [2.0]], None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_big_endian_inputs(rng, dtype):
    be = np.dtype(dtype).newbyteorder(">")
    x, W, b = dense_inputs(rng, 6, 5, 4, dtype=dtype)
    dy = rng.standard_normal((6, 4)).astype(dtype)
    y = fastbp.dense_forward(x.astype(be), W.astype(be), b.astype(be), "sigmoid")
    assert y.dtype == np.dtype(dtype) and y.dtype.isnative
    want = ref.dense_forward(x, W, b, "sigmoid")
    assert_close(y, want, dtype)
    grads = fastbp.dense_backward(dy.astype(be), x.astype(be), W, y.astype(be), "sigmoid")
    for g, w in zip(grads, ref.dense_backward(dy, x, W, y, "sigmoid")):
        assert_close(g, w, dtype)
    labels = np.array([0, 3, 1, 2, 2, 0], ">i8")
    loss, dz = fastbp.softmax_cross_entropy(x[:, :4].astype(be), labels)
    rloss, rdz = ref.softmax_cross_entropy(x[:, :4], labels.astype(np.int64))
    np.testing.assert_allclose(loss, rloss, rtol=1e-12 if dtype == f64 else 1e-5)
    assert_close(dz, rdz, dtype)
    loss, dp = fastbp.mse_loss(x.astype(be), np.zeros_like(x).astype(be))
    assert_close(dp, ref.mse_loss(x, np.zeros_like(x))[1], dtype)
    assert_close(fastbp.relu_backward(dy.astype(be), y.astype(be)), ref.relu_backward(dy, y), dtype)
