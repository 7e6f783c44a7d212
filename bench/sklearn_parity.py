"""Parity figures of fastbp.sklearn against the installed scikit-learn: for each
solver and task, the largest relative difference of the float64 loss curve and
of the final coefs_/intercepts_ (tests/test_sklearn.py asserts 1e-9 on the same
runs), and for lbfgs the final loss.

    python bench/sklearn_parity.py                 # fastbp installed (pip install .)
    PYTHONPATH=src python bench/sklearn_parity.py  # a checkout built in place
"""
import sys
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, "tests")
from test_sklearn import SOLVERS, TASKS, _data, _pair  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main():
    print(f"scikit-learn {sklearn.__version__}; float64; 150 rows x 6 features, hidden (9, 7) "
          "tanh, alpha=0.01, batch_size=32 (a partial last batch), 12 epochs, shuffle=False")
    print(f"{'solver':<11} " + "  ".join(f"{t:>23}" for t in TASKS))
    print(f"{'':<11} " + "  ".join(f"{'loss curve':>11} {'coefs':>11}" for _ in TASKS))
    for solver in SOLVERS:
        cells = []
        for task in TASKS:
            X, y = _data(task)
            sk, fb = _pair(task, hidden_layer_sizes=(9, 7), activation="tanh", alpha=0.01,
                           batch_size=32, max_iter=12, shuffle=False, random_state=0,
                           **SOLVERS[solver])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                sk.fit(X, y)
                fb.fit(X, y)
            lc = rel(fb.loss_curve_, sk.loss_curve_)
            co = max(rel(a, b) for a, b in zip(fb.coefs_ + fb.intercepts_,
                                               sk.coefs_ + sk.intercepts_))
            cells.append(f"{lc:>11.1e} {co:>11.1e}")
        print(f"{solver:<11} " + "  ".join(cells))
    for task in ("multiclass", "binary", "multilabel", "regression"):
        X, y = _data(task)
        sk, fb = _pair(task, solver="lbfgs", hidden_layer_sizes=(10,), alpha=0.01, max_iter=60,
                       random_state=0, tol=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk.fit(X, y)
            fb.fit(X, y)
        print(f"lbfgs {task:<11} loss_ {fb.loss_:.12g} vs {sk.loss_:.12g} (rel "
              f"{abs(fb.loss_ - sk.loss_) / sk.loss_:.1e}), n_iter_ {fb.n_iter_} vs {sk.n_iter_}")


if __name__ == "__main__":
    main()
