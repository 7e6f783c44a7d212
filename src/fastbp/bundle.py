"""fastbp.bundle: a trained network together with the preprocessing it expects,
in one .npz file. What ``fastbp train ... --save model.npz`` writes and
``fastbp predict``, ``fastbp export`` and ``fastbp info`` read.

    bundle = fastbp.bundle.load("model.npz")
    bundle.predict(frame_or_array)       # raw rows in, class names (or values) out
    bundle.predict_proba(rows)           # classification: (n, classes), classes_ order
    bundle.model                         # the fastbp.MLP, which expects standardized rows

The file is MLP.save's archive (``MLP.load`` reads the network from it) plus
members named ``prep_*``:

    prep_feature_names  (features,) str    the input columns, in order
    prep_mean, prep_scale (features,) float64   x -> (x - mean) / scale
    prep_task           str                "classification" or "regression"
    prep_target         str                the target column's name
    prep_classes        (classes,) str     classification: the class names, in
                                           the order of the network's outputs
    prep_y_mean, prep_y_scale (outputs,) float64   regression: the network
                                           predicts (y - y_mean) / y_scale

Safety: every member is read with ``allow_pickle=False`` (numbers and
strings only), so loading a file never runs code from it. The command line
never reads pickle or joblib files.
"""
import os
import tempfile
import zipfile

import numpy as np

from .model import MLP

FORMAT = 1
_TASKS = ("classification", "regression")


class Bundle:
    """A fastbp.MLP plus the preprocessing of the rows it was trained on."""

    def __init__(self, model, feature_names, mean, scale, task, target="target",
                 classes=None, y_mean=None, y_scale=None):
        if task not in _TASKS:
            raise ValueError(f"Bundle: task must be one of {_TASKS}, got {task!r}")
        self.model = model
        self.feature_names = [str(f) for f in feature_names]
        n = model.sizes[0]
        self.mean = np.asarray(mean, np.float64).reshape(-1)
        self.scale = np.asarray(scale, np.float64).reshape(-1)
        if not (len(self.feature_names) == self.mean.size == self.scale.size == n):
            raise ValueError(f"Bundle: {len(self.feature_names)} feature names, "
                             f"{self.mean.size} means and {self.scale.size} scales for a "
                             f"network of {n} inputs")
        self.task, self.target = task, str(target)
        self.classes = None if classes is None else np.asarray([str(c) for c in classes])
        O = model.sizes[-1]
        if task == "classification" and (self.classes is None or len(self.classes) != O):
            raise ValueError(f"Bundle: a classifier needs one class name per output ({O})")
        self.y_mean = np.zeros(O) if y_mean is None else np.asarray(y_mean, np.float64).reshape(-1)
        self.y_scale = np.ones(O) if y_scale is None else np.asarray(y_scale, np.float64).reshape(-1)

    # ---- rows in -------------------------------------------------------------------------
    def matrix(self, rows, fn="predict"):
        """rows as a float64 (n, features) matrix: a DataFrame (or a dict of
        columns) by column name (extra columns, the target among them, are
        ignored), or an array of the features in their order."""
        if hasattr(rows, "columns") or isinstance(rows, dict):
            cols = list(rows.columns) if hasattr(rows, "columns") else list(rows)
            missing = [f for f in self.feature_names if f not in cols]
            if missing:
                raise ValueError(f"{fn}: the data lacks the model's feature column(s) "
                                 f"{', '.join(map(repr, missing[:5]))}"
                                 f"{' ...' if len(missing) > 5 else ''} (the model was trained "
                                 f"on {len(self.feature_names)} columns)")
            out = []
            for f in self.feature_names:
                col = np.asarray(rows[f])
                if col.dtype.kind not in "biuf":
                    raise ValueError(f"{fn}: column {f!r} must be numeric, got dtype {col.dtype} "
                                     f"(e.g. {col[0]!r})")
                out.append(col.astype(np.float64))
            X = np.column_stack(out) if out else np.empty((0, 0))
        else:
            X = np.asarray(rows)
            if X.dtype.kind not in "biuf":
                raise ValueError(f"{fn}: rows must be numeric, got dtype {X.dtype}")
            X = X.astype(np.float64)
            if X.ndim != 2 or X.shape[1] != len(self.feature_names):
                raise ValueError(f"{fn}: expected rows of shape (n, {len(self.feature_names)}), "
                                 f"got {X.shape}")
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{fn}: column {self.feature_names[c]!r} holds {X[r, c]} (row {r}; "
                             f"{int(bad.any(axis=1).sum())} row(s) in all): the model needs "
                             "finite values; impute or drop them")
        return X

    def transform(self, rows, fn="predict"):
        """The standardized rows the network takes, in its dtype."""
        return ((self.matrix(rows, fn) - self.mean) / self.scale).astype(self.model.dtype)

    # ---- answers ----------------------------------------------------------------------
    def predict(self, rows):
        """Class names (classification) or values in the target's units."""
        z = self.model.predict(self.transform(rows))
        if self.task == "classification":
            return self.classes[z.argmax(axis=1)]
        y = z.astype(np.float64) * self.y_scale + self.y_mean
        return y[:, 0] if y.shape[1] == 1 else y

    def predict_proba(self, rows):
        if self.task != "classification":
            raise ValueError("predict_proba: a regression model predicts values")
        return self.model.predict_proba(self.transform(rows, "predict_proba"))

    def score(self, rows, y):
        """Accuracy (classification) or R^2 on raw rows and targets."""
        pred = self.predict(rows)
        y = np.asarray(y)
        if self.task == "classification":
            return float(np.mean(pred == y.astype(str)))
        y = y.astype(np.float64).reshape(pred.shape)
        ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
        return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0

    # ---- ONNX (fastbp.onnx.export takes a Bundle) ------------------------------------
    def _onnx_parts(self):
        from .onnx import _Parts

        p = self.model.get_params()
        L = self.model.n_layers
        acts = ["logistic" if a == "sigmoid" else a for a in self.model._layer_acts[:-1]]
        if self.task == "classification":
            out = "softmax" if self.model.loss_name == "softmax_cross_entropy" else "logistic"
            classes = self.classes
        else:
            out = "exp" if self.model.loss_name == "poisson" else "identity"
            classes = None
        parts = _Parts([p[f"W{l}"] for l in range(1, L + 1)], [p[f"b{l}"] for l in range(1, L + 1)],
                       acts, out, self.model.sizes[-1], self.model.dtype, classes, "Bundle")
        parts.fold_input(self.mean, self.scale)
        if self.task == "regression" and out == "identity":
            parts.fold_output(self.y_mean, self.y_scale)
        return parts

    # ---- the file ---------------------------------------------------------------------
    def save(self, path):
        """Write the bundle (MLP.save's archive plus the prep_* members) to path
        (".npz" added if missing), through a temporary file renamed into place.
        Returns the path written."""
        from ._checkpoint import npz_path

        path = npz_path(path)
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=d)
        os.close(fd)
        try:
            self.model.save(tmp)
            extra = dict(prep_format=np.int64(FORMAT),
                         prep_feature_names=np.asarray(self.feature_names, dtype=np.str_),
                         prep_mean=self.mean, prep_scale=self.scale,
                         prep_task=np.str_(self.task), prep_target=np.str_(self.target),
                         prep_y_mean=self.y_mean, prep_y_scale=self.y_scale)
            if self.classes is not None:
                extra["prep_classes"] = self.classes.astype(np.str_)
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_STORED) as zf:
                for name, a in extra.items():
                    with zf.open(name + ".npy", "w") as f:
                        np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)      # mkstemp's 0600 -> what open() would give
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def describe(self):
        """Lines describing the bundle: task, target, features, classes, the
        network (MLP.summary)."""
        feats = ", ".join(self.feature_names[:8]) + (" ..." if len(self.feature_names) > 8 else "")
        lines = [f"fastbp model file: {self.task}, target {self.target!r}",
                 f"features ({len(self.feature_names)}): {feats}",
                 "preprocessing: each feature standardized, (x - mean) / scale, with the "
                 "training rows' statistics (folded into the first layer on export)"]
        if self.classes is not None:
            lines.append(f"classes ({len(self.classes)}): {', '.join(self.classes[:10])}"
                         f"{' ...' if len(self.classes) > 10 else ''}")
        lines += self.model._summary_lines()
        return lines


def is_bundle(path):
    """Whether path is an .npz archive holding a bundle's prep_* members."""
    try:
        with zipfile.ZipFile(path) as zf:
            return "prep_feature_names.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load(path):
    """The Bundle that Bundle.save (fastbp train --save) wrote to path. Reads
    numbers and strings only (allow_pickle=False)."""
    from ._checkpoint import npz_path

    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(npz_path(path)):
        path = npz_path(path)
    from ._checkpoint import read_model

    model = read_model(MLP, path)   # not MLP.load, which warns about the preprocessing
    with np.load(path, allow_pickle=False) as z:
        if "prep_feature_names" not in z.files:
            raise ValueError(f"fastbp.bundle.load: {path}: an MLP file without preprocessing "
                             "(written by MLP.save, not by fastbp train --save); load it with "
                             "fastbp.MLP.load, it expects rows already preprocessed")
        get = lambda k: z[k] if k in z.files else None  # noqa: E731
        try:
            return Bundle(model, get("prep_feature_names"), get("prep_mean"), get("prep_scale"),
                          str(get("prep_task")), str(get("prep_target")), get("prep_classes"),
                          get("prep_y_mean"), get("prep_y_scale"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"fastbp.bundle.load: {path}: {e}") from None
