"""fastbp.sklearn against sklearn.neural_network: the same fits side by side
(fastbp/bench_sklearn.py's workloads: the datasets scikit-learn ships, and
make_classification / make_regression at 60k x 100 with (256, 256) hidden).

    python -m pytest bench/bench_sklearn.py -q --benchmark-only

ends with each group's speed-ups over scikit-learn (the summary in
bench/conftest.py); ``python -m fastbp bench --vs-sklearn`` prints the same
comparison with the held-out scores. With --benchmark-disable (the test suite)
each body fits once on a few hundred rows, and both estimators must agree.
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")  # fastbp.sklearn needs 1.6

from fastbp import bench_sklearn as bs  # noqa: E402

CONTENDERS = ["sklearn", "fastbp", "fastbp-float32"]


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("workload", list(bs.WORKLOADS))
def test_fit(benchmark, workload, contender):
    if contender == "fastbp-float32" and workload not in bs.GENERATED:
        pytest.skip("float32 is timed on the generated workloads")
    quick = not benchmark.enabled
    Xtr, Xte, ytr, yte, _ = bs.load(workload, 400 if quick else None)
    extra = {"dtype": np.float32} if contender == "fastbp-float32" else {}
    sk, fb = bs.estimators(workload, 3 if quick else None, **extra)
    est = sk if contender == "sklearn" else fb

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return est.fit(Xtr, ytr)

    benchmark.group = f"sklearn-fit-{workload}"
    benchmark.extra_info["contender"] = contender
    if quick:
        benchmark(fit)
    else:
        benchmark.pedantic(fit, rounds=3 if workload in bs.SHIPPED else 1, iterations=1)
    score = est.score(Xte, yte)
    if contender != "sklearn":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sk.fit(Xtr, ytr).score(Xte, yte)
        assert abs(score - want) <= 0.01, (score, want)
