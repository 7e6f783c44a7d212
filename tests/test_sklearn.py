"""fastbp.sklearn against scikit-learn itself: the same numbers as
sklearn.neural_network's MLPClassifier and MLPRegressor (loss curves and
coefficients to 1e-9 in float64, per solver and task), scikit-learn's own
estimator checks, and the extras (dtype, n_threads, dropout, class_weight)."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")  # fastbp.sklearn needs 1.6
sknn = pytest.importorskip("sklearn.neural_network")
sgd_opt = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")

import scipy.sparse  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp import reference as ref  # noqa: E402
from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

from conftest import raises, sigint_child  # noqa: E402

RTOL = 1e-9  # the parity bar for float64


def _data(task, n=150, seed=0):
    """A small problem of each kind: 150 rows, so batch_size 32 leaves a partial
    last batch of 22 (its L2 term is alpha / 22)."""
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, 6))
    W = rng.standard_normal((6, 3))
    Z = X @ W + 0.5 * rng.standard_normal((n, 3))
    if task == "multiclass":
        y = np.argmax(Z, axis=1)
    elif task == "binary":
        y = (Z[:, 0] > 0).astype(int)
    elif task == "multilabel":
        y = (Z > 0).astype(int)
    else:
        y = Z[:, :2]
    return X, y


def _pair(task, **params):
    """(scikit-learn's estimator, ours) with the same parameters."""
    if task == "regression":
        return sknn.MLPRegressor(**params), MLPRegressor(**params)
    return sknn.MLPClassifier(**params), MLPClassifier(**params)


def _fit_both(sk, fb, *args, **kw):
    """sk.fit and fb.fit on the same arguments, their ConvergenceWarning ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(*args, **kw)
        fb.fit(*args, **kw)


def _assert_same_fit(sk, fb, rtol=RTOL):
    """The fitted state of both: counters, loss curve and parameters."""
    assert fb.n_iter_ == sk.n_iter_
    assert fb.t_ == sk.t_
    assert fb.n_layers_ == sk.n_layers_ and fb.n_outputs_ == sk.n_outputs_
    assert fb.out_activation_ == sk.out_activation_
    if hasattr(sk, "loss_curve_"):
        assert len(fb.loss_curve_) == len(sk.loss_curve_)
        np.testing.assert_allclose(fb.loss_curve_, sk.loss_curve_, rtol=rtol)
    np.testing.assert_allclose(fb.loss_, sk.loss_, rtol=rtol)
    assert len(fb.coefs_) == len(sk.coefs_)
    for a, b in zip(fb.coefs_ + fb.intercepts_, sk.coefs_ + sk.intercepts_):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


SOLVERS = {
    "sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
    "momentum": dict(solver="sgd", nesterovs_momentum=False, learning_rate_init=0.02),
    "nesterov": dict(solver="sgd", learning_rate_init=0.02),
    "invscaling": dict(solver="sgd", learning_rate="invscaling", power_t=0.3,
                       learning_rate_init=0.05),
    # tol and n_iter_no_change such that the rate is divided by 5 several times
    "adaptive": dict(solver="sgd", learning_rate="adaptive", tol=0.05, n_iter_no_change=1,
                     learning_rate_init=0.05),
    "adam": dict(solver="adam", learning_rate_init=0.01, beta_1=0.8, beta_2=0.99,
                 epsilon=1e-7),
}
TASKS = ["multiclass", "binary", "multilabel", "regression"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_same_loss_curve_and_coefs_as_sklearn(solver, task):
    X, y = _data(task)
    params = dict(hidden_layer_sizes=(9, 7), activation="tanh", alpha=0.01, batch_size=32,
                  max_iter=12, shuffle=False, random_state=0, **SOLVERS[solver])
    sk, fb = _pair(task, **params)
    _fit_both(sk, fb, X, y)
    _assert_same_fit(sk, fb)
    assert fb.best_loss_ == pytest.approx(sk.best_loss_, rel=RTOL)
    if solver == "adaptive":  # the schedule did act
        assert sk._optimizer.learning_rate < params["learning_rate_init"]
        assert fb._optimizer.learning_rate == pytest.approx(sk._optimizer.learning_rate)
    if task == "regression":
        np.testing.assert_allclose(fb.predict(X), sk.predict(X), rtol=1e-8)
    else:
        np.testing.assert_allclose(fb.predict_proba(X), sk.predict_proba(X), rtol=1e-8,
                                   atol=1e-12)
        np.testing.assert_allclose(fb.predict_log_proba(X), sk.predict_log_proba(X),
                                   rtol=1e-8, atol=1e-8)
        np.testing.assert_array_equal(fb.predict(X), sk.predict(X))
    assert fb.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-12)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("solver", ["nesterov", "adam"])
def test_float32_input_trains_as_sklearns_float32(solver, task):
    """On float32 data both compute in float32 (scikit-learn keeps X's dtype):
    the same fit to float32's tolerance."""
    X, y = _data(task)
    X = X.astype(np.float32)
    y = y.astype(np.float32) if task == "regression" else y
    params = dict(hidden_layer_sizes=(9, 7), activation="tanh", alpha=0.01, batch_size=32,
                  max_iter=12, shuffle=False, random_state=0, **SOLVERS[solver])
    sk, fb = _pair(task, **params)
    _fit_both(sk, fb, X, y)
    assert fb.coefs_[0].dtype == sk.coefs_[0].dtype == np.float32
    _assert_same_fit(sk, fb, rtol=1e-5)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("solver", ["nesterov", "adam"])
def test_same_fit_with_shuffles_sample_weights_and_early_stopping(solver, task):
    """random_state's draws in scikit-learn's order (init, the held-out split,
    each epoch's shuffle), weighted batches (alpha over each batch's weight sum;
    the loss curve weights batches by their rows), the best weights restored."""
    X, y = _data(task, n=200)
    w = np.random.RandomState(1).uniform(0.2, 3.0, len(X))
    params = dict(hidden_layer_sizes=(8,), activation="relu", alpha=0.1, batch_size=40,
                  max_iter=25, random_state=3, early_stopping=True, validation_fraction=0.2,
                  n_iter_no_change=4, tol=1e-3, **SOLVERS[solver])
    sk, fb = _pair(task, **params)
    _fit_both(sk, fb, X, y, sample_weight=w)
    _assert_same_fit(sk, fb)
    np.testing.assert_allclose(fb.validation_scores_, sk.validation_scores_, rtol=RTOL)
    assert fb.best_validation_score_ == pytest.approx(sk.best_validation_score_, rel=RTOL)
    assert fb.best_loss_ is None and sk.best_loss_ is None


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_lbfgs_reaches_sklearns_loss(task):
    X, y = _data(task)
    sk, fb = _pair(task, solver="lbfgs", hidden_layer_sizes=(10,), alpha=0.01, max_iter=60,
                   random_state=0, tol=1e-6)
    _fit_both(sk, fb, X, y)
    assert fb.loss_ == pytest.approx(sk.loss_, rel=1e-6)
    assert abs(fb.n_iter_ - sk.n_iter_) <= 2
    assert not hasattr(fb, "loss_curve_")


def test_lbfgs_objective_is_sklearns():
    """One evaluation of the function our L-BFGS-B minimizes equals scikit-learn's
    (its squared error averaged over the outputs, its gradient not, alpha over
    the rows) at the same packed parameters."""
    X, y = _data("regression")
    sk, fb = _pair("regression", solver="lbfgs", hidden_layer_sizes=(5,), alpha=0.3,
                   max_iter=2, random_state=0)
    seen = {}
    real = fastbp.sklearn.scipy.optimize.minimize

    def spy(fun, x0, **kw):
        seen["fun"], seen["x0"] = fun, np.array(x0)
        return real(fun, x0, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        fastbp.sklearn.scipy.optimize.minimize = spy
        try:
            fb.fit(X, y)
        finally:
            fastbp.sklearn.scipy.optimize.minimize = real
    x = seen["x0"] + 0.01
    got_loss, got_grad = seen["fun"](x)
    L = sk.n_layers_
    want_loss, want_grad = sk._loss_grad_lbfgs(
        x, X, y, None, [X] + [None] * (L - 1), [None] * (L - 1),
        [np.empty_like(c) for c in sk.coefs_], [np.empty_like(b) for b in sk.intercepts_])
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-13)


def test_warm_start_from_assigned_coefs_matches_sklearn():
    """coefs_ and intercepts_ are assignable lists: ours, given scikit-learn's
    parameters (as float32, F-ordered and in a tuple, which fit takes as they
    are), continues from them exactly as scikit-learn does (warm_start)."""
    X, y = _data("multiclass")
    params = dict(hidden_layer_sizes=(6,), solver="adam", alpha=0.01, max_iter=3,
                  shuffle=False, random_state=0, warm_start=True)
    sk, fb = sknn.MLPClassifier(**params), MLPClassifier(**dict(params, random_state=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
        fb.fit(X, y)  # another random_state: other weights, now replaced
        fb.coefs_ = tuple(np.asfortranarray(c) for c in sk.coefs_)
        fb.intercepts_ = [b.copy() for b in sk.intercepts_]
        fb.loss_curve_, fb.best_loss_ = list(sk.loss_curve_), sk.best_loss_
        fb._no_improvement_count, fb.t_ = sk._no_improvement_count, sk.t_
        sk.set_params(max_iter=8).fit(X, y)
        fb.set_params(max_iter=8).fit(X, y)
    _assert_same_fit(sk, fb)
    assert isinstance(fb.coefs_, list)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("solver", ["nesterov", "adam", "invscaling"])
def test_partial_fit_matches_sklearn(solver, task):
    """partial_fit keeps the solver (velocities, Adam's step, the learning rate)
    from call to call, as scikit-learn's _optimizer."""
    X, y = _data(task)
    params = dict(hidden_layer_sizes=(7,), alpha=0.01, batch_size=25, random_state=0,
                  **SOLVERS[solver])
    sk, fb = _pair(task, **params)
    kw = {"classes": np.unique(y)} if task != "regression" else {}
    for k in range(4):
        rows = slice(30 * k, 30 * k + 60)
        sk.partial_fit(X[rows], y[rows], **kw)
        fb.partial_fit(X[rows], y[rows], **kw)
    _assert_same_fit(sk, fb)


def test_string_labels_and_verbose_output(capsys):
    X, y = _data("multiclass")
    labels = np.array(["ant", "bee", "cat"], dtype=object)[y]
    params = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, verbose=True,
                  early_stopping=True, solver="sgd", learning_rate="adaptive")
    sk, fb = _pair("multiclass", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, labels)
        out_sk = capsys.readouterr().out
        fb.fit(X, labels)
        out_fb = capsys.readouterr().out
    assert out_fb.splitlines() == out_sk.splitlines()
    assert "Iteration 3, loss =" in out_fb
    np.testing.assert_array_equal(fb.classes_, sk.classes_)
    np.testing.assert_array_equal(fb.predict(X), sk.predict(X))
    assert fb.predict(X).dtype == sk.predict(X).dtype


# ---------------------------------------------------------------------------
# scikit-learn's own estimator checks
# ---------------------------------------------------------------------------

@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------
# the solvers' update rules against scikit-learn's optimizer classes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["momentum", "nesterov", "adam"])
def test_reference_solvers_are_sklearns_optimizers(kind):
    rng = np.random.default_rng(0)
    p = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    mine = [a.copy() for a in p]
    opt = dict(SOLVERS[kind])
    if kind == "adam":
        sk = sgd_opt.AdamOptimizer(p, opt["learning_rate_init"], opt["beta_1"], opt["beta_2"],
                                   opt["epsilon"])
        spec = {"name": "sklearn_adam", "lr": opt["learning_rate_init"],
                "betas": (opt["beta_1"], opt["beta_2"]), "eps": opt["epsilon"]}
    else:
        nest = kind == "nesterov"
        sk = sgd_opt.SGDOptimizer(p, 0.02, "constant", 0.9, nest)
        spec = {"name": "sklearn_sgd", "lr": 0.02, "momentum": 0.9, "nesterov": nest}
    state = [{"v": np.zeros_like(a), "s": np.zeros_like(a)} for a in p]
    for t in range(1, 5):
        grads = [rng.standard_normal(a.shape) for a in p]
        sk.update_params(p, grads)
        for a, g, st in zip(mine, grads, state):
            ref.optimizer_step(a, g, st, spec, t, 0.0)
    for a, b in zip(mine, p):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# ---------------------------------------------------------------------------
# inputs, attributes and errors
# ---------------------------------------------------------------------------

def test_sparse_input_is_the_dense_fit():
    X, y = _data("multiclass")
    X[X < 0.3] = 0
    a = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    b = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a.fit(X, y)
        b.fit(scipy.sparse.csr_matrix(X), y)
    for c, d in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(scipy.sparse.csc_array(X)))


def test_pickle_keeps_the_solver_state():
    X, y = _data("regression")
    a = MLPRegressor(hidden_layer_sizes=(5,), random_state=0, batch_size=30)
    a.partial_fit(X, y)
    b = pickle.loads(pickle.dumps(a))
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    for c, d in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(c, d)


def test_assigned_coefs_of_the_wrong_shape_are_refused():
    X, y = _data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    before = [c.copy() for c in est.coefs_]
    est.coefs_[1] = np.zeros((4, 3))
    with raises(ValueError, "coefs_[1] must have shape (5, 3), got (4, 3)"):
        est.fit(X, y)
    est.coefs_ = est.coefs_[:1]
    with raises(ValueError, "coefs_ and intercepts_ must hold 2 arrays each, got 1 and 2"):
        est.fit(X, y)
    np.testing.assert_array_equal(est.coefs_[0], before[0])


def test_sklearn_errors_are_kept():
    X, y = _data("multiclass")
    with raises(ValueError, "partial_fit does not support early_stopping=True"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    for est in (MLPClassifier(solver="lbfgs"), sknn.MLPClassifier(solver="lbfgs")):
        with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
            est.partial_fit
    with pytest.raises(ValueError, match="The 'solver' parameter of MLPClassifier must be"):
        MLPClassifier(solver="newton").fit(X, y)
    with raises(ValueError, "The validation set is too small"):
        MLPClassifier(early_stopping=True, validation_fraction=0.01).fit(X[:50], y[:50])


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_poisson_loss_fits_as_scikit_learn(solver, outputs):
    """MLPRegressor(loss="poisson"): exp output, half Poisson deviance, the same
    loss curve and weights as scikit-learn's (float64, from one random_state)."""
    rng = np.random.RandomState(3)
    X = rng.standard_normal((150, 6))
    y = rng.poisson(np.exp(0.4 * X[:, :outputs] - 0.2)).astype(np.float64)
    y = y[:, 0] if outputs == 1 else y
    params = dict(loss="poisson", hidden_layer_sizes=(8,), solver=solver, max_iter=15,
                  random_state=0, batch_size=32, learning_rate_init=0.01, tol=0)
    sk, fb = _pair("regression", **params)
    _fit_both(sk, fb, X, y)
    assert fb.out_activation_ == "exp"
    _assert_same_fit(sk, fb, rtol=1e-9 if solver != "lbfgs" else 1e-7)
    np.testing.assert_allclose(fb.predict(X), sk.predict(X), rtol=1e-7)
    assert fb.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-7)


def test_warnings_match_filters_written_for_scikit_learn():
    """scikit-learn's examples silence its MLP with filterwarnings("ignore",
    category=ConvergenceWarning, module="sklearn"): the module regex is matched
    against the module the warning is attributed to, which for fastbp.sklearn's
    warnings is scikit-learn's MLP module (fastbp.sklearn.WARNING_MODULE)."""
    X, y = _data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")
        est.fit(X, y)                              # would raise if not matched
    with pytest.warns(ConvergenceWarning, match="Maximum iterations") as rec:
        est.fit(X, y)
    w = rec[0]
    assert w.filename == fastbp.sklearn.__file__   # the line shown is ours
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a filter for another module does not match it
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="numpy")
        with pytest.raises(ConvergenceWarning):
            est.fit(X, y)


def test_missing_extra_is_named(tmp_path):
    """Without SciPy (or scikit-learn) the import names the extra to install."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['scipy'] = None\n"
            "try:\n    import fastbp.sklearn\n"
            "except ImportError as e:\n    print(e)\n")
    import os

    src = os.path.dirname(os.path.dirname(fastbp.__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": src})
    assert "fastbp.sklearn needs scikit-learn >= 1.6 and SciPy: pip install " \
           "'fastbp[sklearn]'" in out.stdout, out


# ---------------------------------------------------------------------------
# the extras
# ---------------------------------------------------------------------------

def test_dtype_float32_on_float64_input():
    X, y = _data("multiclass")
    params = dict(hidden_layer_sizes=(8,), max_iter=10, random_state=0, shuffle=False)
    a = MLPClassifier(**params, dtype=np.float32)
    b = MLPClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a.fit(X, y)
        b.fit(X, y)
    assert all(c.dtype == np.float32 for c in a.coefs_ + a.intercepts_)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-5)
    proba = a.predict_proba(X)
    assert proba.dtype == np.float64  # X's dtype and the parameters', promoted
    np.testing.assert_allclose(proba, b.predict_proba(X), atol=1e-5)
    assert a.predict_proba(X.astype(np.float32)).dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = MLPClassifier(**params, dtype="float64").set_params(max_iter=1)
        assert c.fit(X.astype(np.float32), y).coefs_[0].dtype == np.float64


def test_dtype_is_checked():
    X, y = _data("multiclass")
    with pytest.raises(ValueError, match="The 'dtype' parameter of MLPClassifier must be"):
        MLPClassifier(dtype="float16").fit(X, y)
    with raises(ValueError, "dtype must be float32, float64 or None, got dtype('int32')"):
        MLPClassifier(dtype=np.dtype("int32")).fit(X, y)


def test_n_threads_is_restored_and_changes_nothing(restore_threads):
    X, y = _data("multiclass", n=400)
    fastbp.set_num_threads(2)
    fits = []
    for n in (1, 2):
        est = MLPClassifier(hidden_layer_sizes=(300,), max_iter=2, random_state=0, n_threads=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(est.fit(X, y))
        assert fastbp.get_num_threads() == 2
    for c, d in zip(fits[0].coefs_, fits[1].coefs_):
        np.testing.assert_array_equal(c, d)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_threads_of_two_fits_in_threads_do_not_race(restore_threads, monkeypatch):
    """Two estimators fitting in two threads (GridSearchCV's threading backend),
    interleaved as the race needs: A enters, B enters, A leaves, B leaves.
    With a set-and-restore of the process-wide count, B's later calls ran at
    A's restored count and the process was left at A's n_threads; now each
    thread's calls run at its own n_threads and the process count is untouched."""
    import threading

    from fastbp import sklearn as fbsk

    X, y = _data("multiclass", n=200)
    fastbp.set_num_threads(2)
    seen = {"A": [], "B": []}
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    real = fbsk._core.mlp_epoch

    def spy(*args, **kwargs):
        name = threading.current_thread().name
        seen[name].append(fastbp.get_num_threads())
        if name == "A" and len(seen["A"]) == 1:
            a_in.set()
            assert b_in.wait(30)
        if name == "B" and len(seen["B"]) == 1:
            b_in.set()
            assert a_done.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(fbsk._core, "mlp_epoch", spy)
    errors = []

    def fit(n, done=None):
        try:
            MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                          n_threads=n).fit(X, y)   # (warnings: not thread-safe to catch)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            if done is not None:
                done.set()

    a = threading.Thread(target=fit, args=(3, a_done), name="A")
    b = threading.Thread(target=fit, args=(1,), name="B")
    a.start()
    assert a_in.wait(30)
    b.start()
    a.join(60)
    b.join(60)
    assert not errors, errors
    assert set(seen["A"]) == {3} and set(seen["B"]) == {1}, seen
    assert fastbp.get_num_threads() == 2


def test_n_threads_applies_to_predict_and_is_checked_up_front(restore_threads, monkeypatch):
    from fastbp import sklearn as fbsk

    X, y = _data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, n_threads=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    seen, real = [], fbsk._core.dense_forward
    monkeypatch.setattr(fbsk._core, "dense_forward",
                        lambda *a, **k: seen.append(fastbp.get_num_threads()) or real(*a, **k))
    before = fastbp.get_num_threads()
    est.predict_proba(X)
    assert set(seen) == {3} and fastbp.get_num_threads() == before
    # the pool's range, before any training (fit failed at its first native call)
    with pytest.raises(ValueError, match=r"The 'n_threads' parameter of MLPClassifier must be "
                                         r"None or an int in the range \[1, 4096\]"):
        MLPClassifier(n_threads=5000).fit(X, y)


def test_negative_sample_weights_are_refused_up_front():
    """scikit-learn's MLP accepts them; fastbp's engine cannot (a weighted mean
    needs weights >= 0): refused before training, naming the difference
    (docs/sklearn.md lists it)."""
    X, y = _data("multiclass")
    w = np.ones(len(y))
    w[3] = -0.5
    with raises(ValueError, "sample_weight must be >= 0, got -0.5 at index 3: fastbp's engine "
                            "takes the weighted mean"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=w)


def test_dropout_trains_another_network_reproducibly():
    X, y = _data("multiclass")
    params = dict(hidden_layer_sizes=(16, 8), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPClassifier(**params).fit(X, y)
        d1 = MLPClassifier(**params, dropout=0.3).fit(X, y)
        d2 = MLPClassifier(**params, dropout=[0.3, 0.0]).fit(X, y)
        d3 = MLPClassifier(**params, dropout=0.3).fit(X, y)
    assert not np.allclose(d1.coefs_[0], plain.coefs_[0])
    assert not np.allclose(d1.coefs_[0], d2.coefs_[0])
    for c, d in zip(d1.coefs_, d3.coefs_):
        np.testing.assert_array_equal(c, d)
    with raises(ValueError, "dropout needs a stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)
    with raises(ValueError, "dropout must be a rate in [0, 1) or one per hidden layer (2)"):
        MLPClassifier(**params, dropout=[0.1]).fit(X, y)


def test_class_weight_is_sample_weight():
    X, y = _data("multiclass")
    params = dict(hidden_layer_sizes=(6,), max_iter=4, random_state=0)
    cw = {0: 2.0, 1: 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**params, class_weight=cw).fit(X, y, sample_weight=np.full(len(y), 3.0))
        b = MLPClassifier(**params).fit(X, y, sample_weight=3.0 * np.array([cw.get(k, 1.0)
                                                                              for k in y]))
        c = MLPClassifier(**params, class_weight="balanced").fit(X, y)
        d = MLPClassifier(**params).fit(X, y)
    for p, q in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(p, q, rtol=1e-13)
    assert not np.allclose(c.coefs_[0], d.coefs_[0])
    with raises(ValueError, "class_weight 'balanced' is not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])
    Xm, Ym = _data("multilabel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(**params, class_weight="balanced").fit(Xm, Ym)


# ---------------------------------------------------------------------------
# epochs in several native calls; Ctrl-C
# ---------------------------------------------------------------------------

def test_loss_curve_does_not_depend_on_the_chunks(monkeypatch):
    """An epoch runs in native calls sized by their measured time; the loss curve
    and the weights are the same however it is split."""
    X, y = _data("multiclass", n=300)
    fits = []
    for seconds in (1e-12, 1e9):  # one batch per call; calls of 1, 4, 16, ... batches
        monkeypatch.setattr(fastbp.sklearn, "_CHUNK_SECONDS", seconds)
        est = MLPClassifier(hidden_layer_sizes=(8,), batch_size=7, max_iter=3, random_state=0,
                            solver="sgd")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(est.fit(X, y))
    assert fits[0].loss_curve_ == fits[1].loss_curve_  # bitwise
    assert fits[0]._optimizer.t == fits[1]._optimizer.t == 3 * 43
    np.testing.assert_array_equal(fits[0].coefs_[0], fits[1].coefs_[0])


def test_sgd_and_adam_run_the_epoch_loop_of_mlp_fit(monkeypatch):
    """fit and partial_fit (sgd, adam) run MLP.fit's epoch loop,
    fastbp._train.run_epochs, with scikit-learn's rules as its policy: every
    epoch the estimator counts went through that loop."""
    from fastbp import _train

    loop, epochs = _train.run_epochs, []

    def counting(runner, policy, it, *args):
        def counted():
            for i in it:
                epochs[-1] += 1
                yield i
        epochs.append(0)
        return loop(runner, policy, counted(), *args)

    monkeypatch.setattr(_train, "run_epochs", counting)
    X, y = _data("multiclass")
    for solver in ("sgd", "adam"):
        est = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=3, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        assert epochs[-1] == est.n_iter_ == len(est.loss_curve_) == 3
        est.partial_fit(X, y)
        assert epochs[-1] == est.n_iter_ == 1 and len(est.loss_curve_) == 4
    reg = MLPRegressor(hidden_layer_sizes=(4,), early_stopping=True, n_iter_no_change=1,
                       tol=1e9, max_iter=50, random_state=0).fit(*_data("regression"))
    assert epochs[-1] == reg.n_iter_ == len(reg.validation_scores_) == 3  # stopped by the rule
    m = fastbp.MLP([6, 4, 3], loss="softmax_cross_entropy", seed=0)
    m.fit(X, y, epochs=2)
    assert epochs == [3, 1, 3, 1, 3, 2]


CHILD = r"""
import json, time, warnings
import numpy as np
from fastbp.sklearn import MLPClassifier
rng = np.random.default_rng(0)
n = 100_000
X, y = rng.standard_normal((n, 100)), rng.integers(0, 10, n)
est = MLPClassifier(hidden_layer_sizes=(512, 512), batch_size=32, max_iter=50, random_state=0)
print("ready", flush=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    est.fit(X, y)
t = time.monotonic()
print(json.dumps({"t": t, "warnings": [str(w.message) for w in caught], "n_iter": est.n_iter_,
                  "curve": len(est.loss_curve_), "opt_t": est._optimizer.t,
                  "batches": -(-n // 32)}), flush=True)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGINT"), reason="needs POSIX signals")
def test_ctrl_c_ends_the_fit_as_sklearns_does():
    """SIGINT during fit: scikit-learn's behaviour (the fit returns, warns
    "Training interrupted by user." and keeps its weights), within a native
    call's 0.25 s, with the solver's step count that of the steps taken."""
    res, sent = sigint_child(CHILD)
    assert "Training interrupted by user." in res["warnings"], res
    assert 0 <= res["t"] - sent < 1.0, res["t"] - sent
    assert res["curve"] == res["n_iter"]
    nb = res["batches"]
    assert 0 < res["opt_t"] and res["n_iter"] * nb <= res["opt_t"] < (res["n_iter"] + 1) * nb


def test_onnx_export_of_the_estimators(tmp_path):
    """fastbp.onnx takes fastbp.sklearn's fitted estimators (float64 and float32)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastbp import onnx as fonnx

    X, y = _data("multiclass")
    _, yr = _data("regression")
    params = dict(hidden_layer_sizes=(7,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ests = [MLPClassifier(**params).fit(X, y),
                MLPClassifier(**params, dtype=np.float32).fit(X, y),
                MLPRegressor(**params).fit(X, yr)]
    for k, est in enumerate(ests):
        # float32 input by default; the float64 estimators take float64 when asked
        for in_dt in ({np.float32, est.coefs_[0].dtype.type}):
            sess = ort.InferenceSession(fonnx.export(est, str(tmp_path / f"m{k}.onnx"),
                                                     input_dtype=in_dt))
            x = X.astype(in_dt)
            out = sess.run(None, {sess.get_inputs()[0].name: x})
            tol = 1e-6 if est.coefs_[0].dtype == np.float32 else 1e-12
            if hasattr(est, "predict_proba"):
                np.testing.assert_array_equal(out[0], est.predict(x))
                np.testing.assert_allclose(out[1], est.predict_proba(x), rtol=tol, atol=tol)
            else:
                np.testing.assert_allclose(out[0], est.predict(x), rtol=tol, atol=tol)
