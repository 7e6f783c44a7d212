"""fastbp.onnx: every exported graph passes onnx's full check and, run in ONNX
Runtime, gives what predict / predict_proba give: fastbp.MLP, and scikit-learn's
MLPClassifier / MLPRegressor (whose attributes fastbp's estimators share)."""

import io
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import fastbp
import fastbp.onnx as fonnx
from conftest import DTYPES, assert_close, raises

try:
    import onnx
    import onnxruntime as ort
except ImportError:
    onnx = ort = None
try:
    import sklearn.neural_network as sk
except ImportError:
    sk = None

needs_onnx = pytest.mark.skipif(ort is None, reason="needs onnx and onnxruntime "
                                "(pip install 'fastbp[onnx]')")
needs_sklearn = pytest.mark.skipif(ort is None or sk is None,
                                   reason="needs onnx, onnxruntime and scikit-learn")

ACTIVATIONS = ["relu", "sigmoid", "tanh", "identity", ["sigmoid", "relu"]]
LOSSES = ["softmax_cross_entropy", "mse", "binary_cross_entropy"]
BATCHES = (1, 7, 300)


def session(model_proto):
    """A one-thread ONNX Runtime session over the graph, after onnx's full check."""
    onnx.checker.check_model(model_proto, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(model_proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def random_mlp(sizes, activation, loss, dtype, seed=0):
    """An MLP with every parameter random, biases included (a trained model's
    are not zero, and a graph that dropped them must fail)."""
    m = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    m.set_params({k: rng.standard_normal(v.shape) * 0.7 for k, v in m.get_params().items()})
    return m


def act_id(a):
    return a if isinstance(a, str) else "-".join(a)


# ---- fastbp.MLP ---------------------------------------------------------------------------
@needs_onnx
@pytest.mark.parametrize("loss, probabilities",
                         [(loss, p) for loss in LOSSES for p in (False, True)
                          if not (p and loss == "mse")],  # mse: test_validation
                         ids=lambda v: {False: "output", True: "proba"}.get(v, v))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mlp_graph_matches_predict(dtype, activation, loss, probabilities):
    m = random_mlp([6, 16, 9, 4], activation, loss, dtype)
    s = session(fonnx.to_onnx(m, probabilities=probabilities, input_dtype=dtype))
    names = [o.name for o in s.get_outputs()]
    assert [i.name for i in s.get_inputs()] == ["input"]
    assert names == (["output", "probabilities"] if probabilities else ["output"])
    rng = np.random.default_rng(2)
    for N in BATCHES:
        x = (2 * rng.standard_normal((N, 6))).astype(dtype)
        got = s.run(None, {"input": x})
        assert_close(got[0], m.predict(x), dtype)
        if probabilities:
            assert_close(got[1], m.predict_proba(x), dtype)


@needs_onnx
@pytest.mark.parametrize("sizes", [[5, 3], [4, 1], [3, 2, 1], [2, 5, 5, 5, 2]],
                         ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mlp_graph_depths_and_widths(dtype, loss, sizes):
    m = random_mlp(sizes, "tanh", loss, dtype, seed=3)
    s = session(fonnx.to_onnx(m, probabilities=True, input_dtype=dtype))
    x = np.random.default_rng(4).standard_normal((33, sizes[0])).astype(dtype)
    out, proba = s.run(None, {"input": x})
    assert_close(out, m.predict(x), dtype)
    assert_close(proba, m.predict_proba(x), dtype)


@needs_onnx
def test_mlp_after_training_and_astype():
    """A trained model (the parameters fit wrote), and its float64 copy."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 8)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    m = fastbp.MLP([8, 12, 3], activation="relu", seed=0)
    m.fit(X, y, epochs=3, batch_size=32, lr=0.1, progress=False)
    for model in (m, m.astype(np.float64)):
        x = X.astype(model.dtype)
        out, proba = session(fonnx.to_onnx(model, probabilities=True, input_dtype=model.dtype)).run(
            None, {"input": x})
        assert_close(out, model.predict(x), model.dtype)
        assert_close(proba, model.predict_proba(x), model.dtype)


@needs_onnx
def test_export_writes_a_pinned_loadable_file(tmp_path):
    m = random_mlp([6, 8, 3], "relu", "softmax_cross_entropy", np.float32)
    path = tmp_path / "model.onnx"
    assert fonnx.export(m, path) == path
    assert fonnx.export(m, str(path), probabilities=True) == str(path)
    proto = onnx.load(str(path))
    assert proto.ir_version == 8 == fonnx.DEFAULT_IR_VERSION
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.producer_name == "fastbp" and proto.producer_version == fastbp.__version__
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "input" and dims[0].dim_param == "N" and dims[1].dim_value == 6
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.name for o in proto.graph.output] == ["output", "probabilities"]
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(6).standard_normal((5, 6)).astype(np.float32)
    out, proba = s.run(None, {"input": x})
    assert_close(out, m.predict(x), np.float32)
    assert_close(proba, m.predict_proba(x), np.float32)


@needs_onnx
def test_float64_graph_is_double_throughout():
    proto = fonnx.to_onnx(random_mlp([3, 4, 2], "sigmoid", "mse", np.float64),
                          input_dtype=np.float64)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert all(t.data_type == onnx.TensorProto.DOUBLE for t in proto.graph.initializer)
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Sigmoid", "Gemm"]


@needs_onnx
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_other_opsets_run(opset):
    m = random_mlp([4, 5, 3], "tanh", "softmax_cross_entropy", np.float64)
    proto = fonnx.to_onnx(m, opset=opset, probabilities=True)
    assert proto.opset_import[0].version == opset
    want_ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    assert proto.ir_version == want_ir
    # the default input is float32, cast to the float64 model's dtype in the graph
    x = np.random.default_rng(7).standard_normal((9, 4)).astype(np.float32)
    out, proba = session(proto).run(None, {"input": x})
    assert out.dtype == np.float64
    assert_close(out, m.predict(x), np.float64)
    assert_close(proba, m.predict_proba(x), np.float64)


@needs_onnx
def test_newest_opset_passes_the_checker():
    newest = onnx.defs.onnx_opset_version()
    proto = fonnx.to_onnx(random_mlp([4, 5, 3], "relu", "mse", np.float32), opset=newest)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == newest


# ---- scikit-learn's estimators (the attributes fastbp.sklearn shares) ---------------------
SK_ACTS = ["relu", "logistic", "tanh", "identity"]


def _labels(kind, X):
    s = X[:, 0] + 0.5 * X[:, 1]
    top3 = np.argmax(X[:, :3], axis=1)
    return {
        "binary-int": np.where(s > 0, 7, 3),
        "binary-str": np.where(s > 0, "yes", "no"),
        "binary-bool": s > 0.3,
        "multiclass-str": np.array(["cat", "dog", "emu"])[top3],
        "multiclass-int32": np.array([10, -2, 5], dtype=np.int32)[top3],
        "multiclass-float": np.array([1.0, 2.0, 5.0])[top3],
        "multilabel": (X[:, :3] > 0).astype(np.int64),
        "one-class": np.full(len(X), 4),
    }[kind]


def _margin(proba):
    """Per row, how far the decision may be from a tie: the smaller of the gap
    between the two top classes (argmax) and the distance of the nearest
    probability to 0.5 (thresholds)."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    return np.minimum(top2[:, 1] - top2[:, 0], np.abs(proba - 0.5).min(axis=1))


def assert_same_labels(got, want, proba, dtype):
    """Labels equal predict's, of the same type, on every row whose decision is
    further than the dtype's rounding from a tie (at most one row is not)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "U":
        assert got.dtype == object and all(isinstance(v, str) for v in got.ravel())
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
    clear = _margin(proba) > (1e-5 if np.dtype(dtype) == np.float32 else 1e-12)
    assert clear.sum() >= len(clear) - 1
    np.testing.assert_array_equal(got[clear], want[clear])


@needs_sklearn
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("activation", SK_ACTS)
@pytest.mark.parametrize("kind", ["binary-int", "binary-str", "binary-bool", "multiclass-str",
                                  "multiclass-int32", "multiclass-float", "multilabel",
                                  "one-class"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sklearn_classifier(dtype, kind, activation):
    rng = np.random.default_rng(8)
    X = (1.5 * rng.standard_normal((150, 5))).astype(dtype)
    clf = sk.MLPClassifier(hidden_layer_sizes=(8, 6), activation=activation, max_iter=40,
                           random_state=0)
    clf.fit(X, _labels(kind, X))
    assert clf.coefs_[0].dtype == dtype
    s = session(fonnx.to_onnx(clf, input_dtype=dtype))
    assert [o.name for o in s.get_outputs()] == ["label", "probabilities"]
    for N in (1, 7, len(X)):
        label, proba = s.run(None, {"input": X[:N]})
        want_proba = clf.predict_proba(X[:N])
        assert_close(proba, want_proba, dtype)
        assert_same_labels(label, clf.predict(X[:N]), want_proba, dtype)


@needs_sklearn
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("kind", ["binary-str", "multiclass-int32", "multilabel"])
def test_sklearn_classifier_ties_break_as_predict(kind):
    """All-zero weights: every probability is exactly 0.5 or 1/C, and predict's
    tie rules (p > 0.5 is positive; argmax takes the first class) must hold."""
    X = np.random.default_rng(9).standard_normal((20, 5))
    clf = sk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    clf.fit(X, _labels(kind, X))
    for a in clf.coefs_ + clf.intercepts_:
        a[...] = 0
    label, proba = session(fonnx.to_onnx(clf, input_dtype=np.float64)).run(None, {"input": X})
    np.testing.assert_array_equal(proba, clf.predict_proba(X))
    np.testing.assert_array_equal(label, clf.predict(X))


@needs_sklearn
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sklearn_regressor(dtype, outputs, loss):
    rng = np.random.default_rng(10)
    X = rng.standard_normal((150, 4)).astype(dtype)
    Y = X @ rng.standard_normal((4, outputs)) + 1
    if loss == "poisson":
        Y = np.exp(Y / 4)
    reg = sk.MLPRegressor(hidden_layer_sizes=(7, 5), activation="tanh", loss=loss, max_iter=40,
                          random_state=0)
    reg.fit(X, Y.ravel() if outputs == 1 else Y)
    s = session(fonnx.to_onnx(reg, input_dtype=dtype))
    assert [o.name for o in s.get_outputs()] == ["variable"]
    for N in (1, 7, len(X)):
        (got,) = s.run(None, {"input": X[:N]})
        assert_close(got, reg.predict(X[:N]), dtype)


@needs_onnx
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_duck_typed_estimator_with_per_layer_activations(dtype):
    """An estimator is read through scikit-learn's attribute names only, with
    a per-layer activation list as fastbp allows: checked against fastbp.MLP."""
    m = random_mlp([5, 9, 7, 4], ["sigmoid", "relu"], "softmax_cross_entropy", dtype, seed=11)
    p = m.get_params()
    fields = dict(coefs_=[p["W1"], p["W2"], p["W3"]], intercepts_=[p["b1"], p["b2"], p["b3"]],
                  activation=["logistic", "relu"], n_outputs_=4)
    reg = types.SimpleNamespace(out_activation_="identity", **fields)
    classes = np.array(["w", "x", "y", "z"])
    clf = types.SimpleNamespace(out_activation_="softmax", classes_=classes, **fields)
    x = np.random.default_rng(12).standard_normal((40, 5)).astype(dtype)
    (values,) = session(fonnx.to_onnx(reg, input_dtype=dtype)).run(None, {"input": x})
    assert_close(values, m.predict(x), dtype)
    label, proba = session(fonnx.to_onnx(clf, input_dtype=dtype)).run(None, {"input": x})
    assert_close(proba, m.predict_proba(x), dtype)
    assert_same_labels(label, classes[proba.argmax(axis=1)], proba, dtype)
    assert_same_labels(label, classes[m.predict(x).argmax(axis=1)], proba, dtype)


# ---- inputs the exporter refuses ----------------------------------------------------------
def _fitted_classifier():
    X = np.random.default_rng(13).standard_normal((30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = sk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
        return clf.fit(X, X[:, 0] > 0)


@needs_sklearn
def test_validation(tmp_path):
    m = random_mlp([3, 4, 2], "relu", "softmax_cross_entropy", np.float32)
    reg = random_mlp([3, 4, 2], "relu", "mse", np.float32)
    path = tmp_path / "m.onnx"
    newest = onnx.defs.onnx_opset_version()
    cases = [
        (lambda: fonnx.export(m, path, opset=12), ValueError,
         f"opset must be in [13, {newest}]"),
        (lambda: fonnx.export(m, path, opset=newest + 1), ValueError, f"got {newest + 1}"),
        (lambda: fonnx.export(m, path, opset=17.0), TypeError, "opset must be an integer"),
        (lambda: fonnx.export(m, path, opset=True), TypeError, "opset must be an integer"),
        (lambda: fonnx.export(m, path, probabilities=1), TypeError,
         "probabilities must be True or False, got 1"),
        (lambda: fonnx.export(reg, path, probabilities=True), ValueError,
         "this model's loss is 'mse'"),
        (lambda: fonnx.export(m, io.BytesIO()), TypeError,
         "path must be a file name (str or os.PathLike), got BytesIO"),
        (lambda: fonnx.export({"W1": 1}, path), TypeError,
         "model must be a fastbp.MLP or a fitted MLP estimator"),
        (lambda: fonnx.export(sk.MLPClassifier(), path), ValueError,
         "MLPClassifier is not fitted (no coefs_)"),
        (lambda: fonnx.export(_fitted_classifier(), path, probabilities=True), ValueError,
         "always has the outputs of predict and predict_proba"),
    ]
    for call, exc, fragment in cases:
        with raises(exc, fragment):
            call()
        assert not path.exists()


@needs_onnx
def test_validation_of_estimator_attributes(tmp_path):
    W1, W2 = np.ones((3, 4)), np.ones((4, 2))
    good = dict(coefs_=[W1, W2], intercepts_=[np.zeros(4), np.zeros(2)], activation="relu",
                out_activation_="softmax", classes_=np.array([0, 1]), n_outputs_=2)
    fonnx.to_onnx(types.SimpleNamespace(**good))
    bad = [
        (dict(intercepts_=[np.zeros(4)]), ValueError, "has 2 coefs_ and 1 intercepts_"),
        (dict(coefs_=[W1, np.ones((5, 2))]), ValueError,
         "layer 1 has coefs_ (5, 2) and intercepts_ (2,) after (3, 4)"),
        (dict(coefs_=[W1.astype(np.int64), W2]), TypeError,
         "coefs_ must be float32 or float64, got int64"),
        (dict(activation="softplus"), ValueError, "activation must be one of"),
        (dict(activation=["relu", "relu"]), ValueError, "one per hidden layer: 1"),
        (dict(out_activation_="exp"), ValueError, "has classes_ (a classifier) but "
                                                  "out_activation_ 'exp'"),
        (dict(n_outputs_=3), ValueError, "n_outputs_ is 3 but the last layer has 2"),
        (dict(classes_=np.array([0, 1, 2])), ValueError, "has 3 classes_ for 2 softmax"),
        (dict(classes_=np.array(["2020-01-01"], dtype="datetime64[D]").repeat(2)), TypeError,
         "classes_ must hold numbers or str, got dtype datetime64[D]"),
        (dict(classes_=np.array([[0, 1]])), ValueError, "classes_ must be a non-empty 1-d"),
    ]
    for change, exc, fragment in bad:
        with raises(exc, fragment):
            fonnx.to_onnx(types.SimpleNamespace(**{**good, **change}))
    no_classes = {k: v for k, v in good.items() if k != "classes_"}
    with raises(ValueError, "has no classes_ (a regressor) but out_activation_ 'softmax'"):
        fonnx.to_onnx(types.SimpleNamespace(**no_classes))
    del no_classes["activation"]
    with raises(TypeError, "lacks the MLP attributes"):
        fonnx.to_onnx(types.SimpleNamespace(**no_classes))


@needs_sklearn
def test_docs_examples(tmp_path, monkeypatch):
    """docs/onnx.md's python blocks run as written (they assert their results)."""
    doc = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "onnx.md")
    with open(doc, encoding="utf-8") as f:
        blocks = f.read().split("```python\n")[1:]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile("".join(b.split("```")[0] for b in blocks), "docs/onnx.md", "exec"), {})
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "clf.onnx").exists()


# ---- the module name ----------------------------------------------------------------------
def _run(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


@needs_onnx
def test_fastbp_onnx_does_not_shadow_onnx():
    r = _run("import fastbp.onnx, onnx, fastbp\n"
             "assert onnx.__name__ == 'onnx' and hasattr(onnx, 'checker'), onnx\n"
             "assert fastbp.onnx.__name__ == 'fastbp.onnx' and fastbp.onnx is not onnx\n"
             "import onnx.helper; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_without_the_onnx_package():
    r = _run("import sys; sys.modules['onnx'] = None\n"
             "import fastbp, fastbp.onnx\n"
             "try:\n"
             "    fastbp.onnx.export(fastbp.MLP([2, 2]), 'never.onnx')\n"
             "except ImportError as e:\n"
             "    print(e)\n")
    assert r.returncode == 0, r.stderr
    assert "pip install 'fastbp[onnx]'" in r.stdout, r.stdout


# ---- float32 input by default; pipelines; skl2onnx ---------------------------------------

@needs_sklearn
def test_estimator_fitted_on_a_dataframe_takes_float32():
    """An estimator fitted on float64 data (a DataFrame) exports a graph whose
    input is float32, as ONNX users feed it; the float64 weights compute in
    float64 after a Cast, so ONNX Runtime equals predict on the same values."""
    pd = pytest.importorskip("pandas")
    from fastbp.sklearn import MLPClassifier

    rng = np.random.default_rng(20)
    df = pd.DataFrame(rng.standard_normal((80, 3)), columns=["a", "b", "c"])
    y = np.where(df["a"] + df["b"] > 0, "yes", "no")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=30, random_state=0).fit(df, y)
    assert clf.coefs_[0].dtype == np.float64
    proto = fonnx.to_onnx(clf)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = df.to_numpy(np.float32)
    label, proba = session(proto).run(None, {"input": x})
    x_df = df.astype(np.float32)
    np.testing.assert_allclose(proba, clf.predict_proba(x_df), rtol=1e-12, atol=1e-12)
    assert list(label) == list(clf.predict(x_df))


@needs_sklearn
@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_pipeline_with_a_scaler_exports_folded(tmp_path, which):
    """fastbp.onnx.export(Pipeline([StandardScaler(), our estimator])): the scaler
    folded into the first layer; ONNX Runtime on raw float32 rows agrees with the
    pipeline's predict to 1e-5."""
    from sklearn.datasets import load_diabetes, load_wine
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fastbp.sklearn import MLPClassifier, MLPRegressor

    if which == "classifier":
        X, y = load_wine(return_X_y=True)
        y = np.array(["barolo", "grignolino", "barbera"])[y]
        est = MLPClassifier(max_iter=60, random_state=0)
    else:
        X, y = load_diabetes(return_X_y=True)
        est = MLPRegressor(max_iter=60, random_state=0, learning_rate_init=0.01)
    pipe = make_pipeline(StandardScaler(), est)
    with pytest.raises(ValueError, match="is not fitted .*fit the Pipeline before exporting"):
        fonnx.export(pipe, str(tmp_path / "p.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X, y)
    path = fonnx.export(pipe, str(tmp_path / "p.onnx"))
    s = session(onnx.load(path))
    x = X.astype(np.float32)
    got = s.run(None, {"input": x})
    if which == "classifier":
        np.testing.assert_allclose(got[1], pipe.predict_proba(x), rtol=1e-5, atol=1e-5)
        assert list(got[0]) == list(pipe.predict(x))
    else:
        want = pipe.predict(x)
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    with pytest.raises(TypeError, match="folds StandardScalers only.*register_skl2onnx"):
        from sklearn.preprocessing import MinMaxScaler
        fonnx.to_onnx(make_pipeline(MinMaxScaler().fit(X), est))


@needs_sklearn
def test_skl2onnx_converts_a_pipeline_holding_our_estimators():
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    from fastbp.sklearn import MLPClassifier, MLPRegressor

    fonnx.register_skl2onnx()
    fonnx.register_skl2onnx()                       # twice is fine
    X, y = load_breast_cancer(return_X_y=True)
    y = np.array(["malignant", "benign"])[y]
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(max_iter=30,
                                                                        random_state=0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X, y)
    x = X.astype(np.float32)
    onx = skl2onnx.to_onnx(pipe, x[:1], options={"zipmap": False})
    label, proba = session(onx).run(None, {"X": x})
    np.testing.assert_allclose(proba, pipe.predict_proba(X), rtol=1e-5, atol=1e-5)
    assert list(label) == list(pipe.predict(X))
    # the lead's form, with skl2onnx's default ZipMap of the probabilities
    onx = skl2onnx.to_onnx(pipe, x[:1])
    label, zipped = ort.InferenceSession(onx.SerializeToString()).run(None, {"X": x[:3]})
    assert list(label) == list(pipe.predict(X[:3]))
    assert zipped[0]["benign"] == pytest.approx(pipe.predict_proba(X[:1])[0, 0], abs=1e-5)
    # a regressor after a scaler skl2onnx converts (not one fastbp.onnx folds)
    Xr, yr = load_diabetes(return_X_y=True)
    reg = Pipeline([("mm", MinMaxScaler()), ("mlp", MLPRegressor(max_iter=40, random_state=0,
                                                                 learning_rate_init=0.01))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(Xr, yr)
    (got,) = session(skl2onnx.to_onnx(reg, Xr[:1].astype(np.float32))).run(
        None, {"X": Xr.astype(np.float32)})
    want = reg.predict(Xr)
    assert got.shape == (len(Xr), 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_sklearn
def test_skl2onnx_registration_on_import_when_skl2onnx_is_loaded():
    """import skl2onnx, then fastbp.sklearn: registered with no call."""
    code = ("import numpy as np, warnings, skl2onnx\n"
            "from fastbp.sklearn import MLPRegressor\n"
            "X = np.random.default_rng(0).standard_normal((30, 3))\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('ignore')\n"
            "    r = MLPRegressor(max_iter=3).fit(X, X[:, 0])\n"
            "skl2onnx.to_onnx(r, X[:1].astype(np.float32))\n"
            "print('ok')\n")
    out = _run(code)
    assert out.stdout.strip() == "ok", out
