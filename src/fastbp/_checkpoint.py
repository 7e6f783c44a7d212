"""MLP.load: a model file read without trusting it.

A file is an .npz archive (a zip of .npy members) written by MLP.save. Before
anything is allocated or decompressed, every declared size is checked (integers,
>= 1, within the BLAS's 32-bit limit) and every member's header is read on its
own (a few hundred bytes): its dtype must be the one the model needs, its shape
the one the sizes imply, and the zip directory's size of the member must be the
header plus exactly that many bytes. Only then is the model built and the data
read; a member whose stream ends early or fails its CRC is an error, not a
partial model.

Every way a file can be malformed is a ValueError (CheckpointError) naming the
file and, where one is at fault, the member: a missing member is also a
KeyError and a member of the wrong dtype also a TypeError, as they were before
this rule. What the zip and zlib modules raise on a damaged archive (zlib.error,
RuntimeError for an encrypted member, NotImplementedError for an unknown
compression, EOFError, struct.error, ...) is turned into one of these.
"""
import math
import os
import warnings
import zipfile

import numpy as np

from . import ops

BLAS_INT_MAX = 2**31 - 1
MAX_LAYERS = 10_000
MAX_EPOCHS = 10_000_000
#: the largest step or epoch count a file may hold: every count is then exact in
#: a float64 (Adam's bias correction takes t as one) and a model can train on
#: for 2**10 times as long again before its int64 counters could wrap
MAX_COUNT = 2**53


class CheckpointError(ValueError):
    """A model file MLP.load refuses: malformed, damaged, or not written by
    MLP.save."""


class _MissingMember(CheckpointError, KeyError):
    __str__ = ValueError.__str__  # KeyError's would quote the message


class _WrongDtype(CheckpointError, TypeError):
    pass


_KINDS = {ValueError: CheckpointError, KeyError: _MissingMember, TypeError: _WrongDtype}


def _fail(path, msg, exc=ValueError):
    raise _KINDS[exc](f"MLP.load: {path}: {msg}")


def _damaged(path, name, e):
    """A CheckpointError for member name (None: the archive itself) from what
    the zip, zlib or NumPy reader raised."""
    what = "the archive" if name is None else repr(name)
    msg = str(e) or type(e).__name__
    return CheckpointError(f"MLP.load: {path}: {what} could not be read ({type(e).__name__}: "
                           f"{msg}); the file is damaged or was not written by MLP.save")


def _foreign(e):
    """Whether e is an error a damaged archive raises in the readers (not ours,
    and not one about memory or an interrupt)."""
    return isinstance(e, Exception) and not isinstance(e, (CheckpointError, MemoryError))


def npz_path(path):
    """The file save() writes for path: NumPy's rule, ".npz" added if missing."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def _header(zf, name, path):
    """(info, shape, dtype, offset of the data) of member name, from its header."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        _fail(path, f"has no {name!r} (not a file written by MLP.save?)", KeyError)
    fmt = np.lib.format
    try:
        with zf.open(info) as f:
            try:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                else:
                    _fail(path, f"{name!r} has .npy format version {version}, expected 1.0 "
                                "or 2.0")
            except (ValueError, TypeError, SyntaxError) as e:
                if not _foreign(e):
                    raise
                _fail(path, f"{name!r} is not a valid .npy member: {e}")
            offset = f.tell()
    except Exception as e:
        if not _foreign(e):
            raise
        raise _damaged(path, name, e) from e
    if fortran:
        _fail(path, f"{name!r} is stored in Fortran order, which MLP.save never writes")
    if dtype.hasobject:
        _fail(path, f"{name!r} holds Python objects; a model file holds numbers and strings")
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size != offset + nbytes:
        _fail(path, f"{name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but the "
                    f"archive holds {info.file_size - offset} bytes of data for it")
    return info, shape, dtype


def _read(zf, name, path, shape=None, kinds=None):
    """Member name as an array, after its header has been checked."""
    info, got_shape, dtype = _header(zf, name, path)
    if shape is not None and got_shape != shape:
        _fail(path, f"{name!r} has shape {got_shape}, expected {shape}")
    if kinds is not None and dtype.kind not in kinds:
        _fail(path, f"{name!r} has dtype {dtype}, expected {kinds}")
    try:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except Exception as e:
        if not _foreign(e):
            raise
        raise _damaged(path, name, e) from e


def _string(zf, name, path):
    a = _read(zf, name, path, kinds="U")
    if a.ndim > 1 or a.size > MAX_LAYERS:
        _fail(path, f"{name!r} must be a string or a list of strings, got shape {a.shape}")
    return str(a) if a.ndim == 0 else [str(s) for s in a]


def read_model(cls, path):
    """The model (of class cls) that save(path) wrote."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(npz_path(path)):
        path = npz_path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"MLP.load: no such file: {path!r}") from None
    except (zipfile.BadZipFile, IsADirectoryError):
        _fail(path, "not an .npz archive written by MLP.save (a .npy file holds one array, "
                    "not a model)")
    except OSError:  # permissions, I/O: not the file's content
        raise
    except Exception as e:  # a damaged zip directory (EOFError, struct.error, ...)
        if not _foreign(e):
            raise
        raise _damaged(path, None, e) from e
    with zf:
        _, shape, dtype = _header(zf, "sizes", path)
        if dtype.kind not in "iu":
            _fail(path, f"sizes must be integers, got dtype {dtype}")
        if len(shape) != 1 or not 2 <= shape[0] <= MAX_LAYERS + 1:
            _fail(path, f"sizes must be a list of 2 to {MAX_LAYERS + 1} widths, got shape {shape}")
        sizes = [int(s) for s in _read(zf, "sizes", path)]
        if min(sizes) < 1 or max(sizes) > BLAS_INT_MAX:
            _fail(path, f"every width must be in [1, {BLAS_INT_MAX}], got {sizes}")
        dt = _string(zf, "dtype", path)
        if dt not in ("float32", "float64"):
            _fail(path, f"dtype must be 'float32' or 'float64', got {dt!r}")
        dt = np.dtype(dt)
        activation, loss = _string(zf, "activation", path), _string(zf, "loss", path)
        L = len(sizes) - 1
        wanted = {}
        for l in range(1, L + 1):
            wanted[f"W{l}"] = (sizes[l - 1], sizes[l])
            wanted[f"b{l}"] = (sizes[l],)
        for name, shp in wanted.items():  # every header before any allocation
            _, got, got_dt = _header(zf, name, path)
            if got != shp:
                _fail(path, f"{name!r} has shape {got}, expected {shp} from sizes {sizes}")
            if got_dt.kind != "f" or got_dt.itemsize != dt.itemsize:
                _fail(path, f"{name!r} has dtype {got_dt}, expected {dt}", TypeError)
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        extra = _training_state(zf, path, names, L, dt, wanted)
        try:
            model = cls(sizes, activation=activation, loss=loss, dtype=dt, init=0.0,
                        seed=extra["seed"], dropout=extra["dropout"])
        except (TypeError, ValueError) as e:
            _fail(path, f"describes no valid model: {e}")
        for name in wanted:
            model._params[name][...] = _read(zf, name, path)
        state = {}
        for kind in extra["state"]:
            state[kind] = [_read(zf, f"state_{kind}{l}", path) for l in range(1, L + 1)]
        curves = [_read(zf, name, path) if extra["curves"] else []
                  for name in ("loss_curve", "val_loss_curve")]
        had = _read(zf, "had_validation", path) if extra["had_validation"] else None
        es = extra["early_stop"]
        if es is not None:
            es["params"] = ({name: _read(zf, f"es_{name}", path) for name in wanted}
                            if es["params"] else None)
            es["epoch"] = extra["epoch"]
        model.training_state.restore(extra["optimizer"], extra["optimizer_t"], state,
                                     extra["step"], extra["epoch"], curves, had,
                                     extra["lr_schedule"], es)
    _warn_nonfinite(path, model)
    return model


def _warn_nonfinite(path, model):
    """A RuntimeWarning naming the parameters (and optimizer state) that hold
    NaN or inf: such a model predicts NaN, and fit refuses it."""
    bad = [f"{k!r} ({int(np.size(v) - np.isfinite(v).sum())} of {np.size(v)})"
           for k, v in model._params.items() if not np.isfinite(v).all()]
    bad += [f"state {k}{l + 1}" for k, group in model.training_state.buffers.items()
            if group is not None
            for l, v in enumerate(group) if not np.isfinite(v).all()]
    if bad:
        warnings.warn(f"MLP.load: {path}: NaN or inf in {', '.join(bad)}; the model predicts "
                      "NaN there, and fit refuses it until its parameters are replaced "
                      "(set_params)", RuntimeWarning, stacklevel=4)


def _integer(zf, name, path, default, most=None):
    """An optional integer member in [0, most] (files written before it existed
    lack it)."""
    if name + ".npy" not in zf.namelist():
        return default
    a = _read(zf, name, path, shape=(), kinds="iu")
    if int(a) < 0:
        _fail(path, f"{name!r} must be >= 0, got {int(a)}")
    if most is not None and int(a) > most:
        _fail(path, f"{name!r} must be at most {most} (2**53), got {int(a)}")
    return int(a)


def _settings(info):
    """Settings that reach every state an optimizer may keep: its defaults with each
    state-switching flag off and on."""
    flags = [k for k in ("momentum", "centered") if k in info.defaults]
    out = []
    for bits in range(1 << len(flags)):
        s = dict(info.defaults)
        for i, k in enumerate(flags):
            s[k] = 1.0 if bits >> i & 1 else 0.0
        out.append(s)
    return out


def _training_state(zf, path, names, L, dt, wanted):
    """The optional members a model file has since checkpoints resume training:
    seed, dropout, step and epoch counters, the optimizer's name, step count and
    state, each checked (headers first) before anything is read in bulk."""
    out = {"seed": _integer(zf, "seed", path, 0),
           "step": _integer(zf, "step", path, 0, MAX_COUNT),
           "epoch": _integer(zf, "epoch", path, 0, MAX_COUNT),
           "optimizer_t": _integer(zf, "optimizer_t", path, 0, MAX_COUNT), "dropout": 0.0}
    if "dropout" in names:
        d = _read(zf, "dropout", path, shape=(L - 1,), kinds="f")
        out["dropout"] = [float(p) for p in d]
    opt = _string(zf, "optimizer", path) if "optimizer" in names else ""
    public = [o for o in ops.OPTIMIZERS.values() if o.public]
    if opt and opt not in [o.name for o in public]:
        _fail(path, f"optimizer must be one of {', '.join(repr(o.name) for o in public)} or '', "
                    f"got {opt!r}")
    out["optimizer"] = opt or None
    kinds = [k for k in ops.state_buffers(ops.STATE_BUFFERS) if f"state_{k}1" in names]
    if opt:  # the state of one of its settings (fastbp.ops: the optimizer's state kinds)
        info = ops.OPTIMIZERS[opt]
        allowed = sorted({ops.state_buffers(info.state(s)) for s in _settings(info)} - {()})
        if kinds and tuple(kinds) not in allowed:
            _fail(path, f"an {opt} state holds {' or '.join(', '.join(a) for a in allowed)}; "
                        f"got {kinds}")
    if kinds and not opt:
        _fail(path, "optimizer state without an optimizer name")
    for k in kinds:
        for l in range(1, L + 1):
            name = f"state_{k}{l}"
            shp = wanted[f"{k[1]}{l}"]
            if name not in names:
                _fail(path, f"has no {name!r} (a partial optimizer state)", KeyError)
            _, got, got_dt = _header(zf, name, path)
            if got != shp:
                _fail(path, f"{name!r} has shape {got}, expected {shp} from sizes")
            if got_dt != dt:
                _fail(path, f"{name!r} has dtype {got_dt}, expected {dt}", TypeError)
    out["state"] = kinds
    # the loss curves: one float64 per epoch (files from before they were kept
    # have none); epochs are capped so that a file cannot declare a huge curve
    have = [name in names for name in ("loss_curve", "val_loss_curve")]
    if have[0] != have[1]:
        _fail(path, "loss_curve and val_loss_curve must both be there, or neither")
    # one value per epoch: every epoch's, or the last ones' (a model whose file
    # had counters but no curves kept them only from then on)
    most = min(out["epoch"], MAX_EPOCHS)
    k = None
    if have[0]:
        for name in ("loss_curve", "val_loss_curve"):
            _, got, got_dt = _header(zf, name, path)
            if len(got) != 1 or not got[0] <= most or got_dt != np.float64 or \
                    k not in (None, got[0]):
                _fail(path, f"{name!r} must be float64 of one shape (k,), k <= {most} (one "
                            f"value per epoch, {MAX_EPOCHS} at most), got {got_dt} {got}")
            k = got[0]
    out["curves"] = have[0]
    # which epochs had a validation set (files from before the flags have none:
    # NaN in val_loss_curve meant none)
    out["had_validation"] = "had_validation" in names
    if out["had_validation"]:
        if not have[0]:
            _fail(path, "had_validation without the loss curves it flags")
        _, got, got_dt = _header(zf, "had_validation", path)
        if got != (k,) or got_dt != np.bool_:
            _fail(path, f"'had_validation' must be bool of shape ({k},) (one flag per value of "
                        f"the loss curves), got {got_dt} {got}")
    out["lr_schedule"] = _schedule_plan(zf, path, names, out["epoch"])
    out["early_stop"] = _early_stop(zf, path, names, out["epoch"], dt, wanted)
    return out


def _schedule_plan(zf, path, names, epoch):
    """(name, total epochs) of the named schedule the model trained with, or None."""
    have = ["lr_schedule" in names, "lr_schedule_epochs" in names]
    if have[0] != have[1]:
        _fail(path, "lr_schedule and lr_schedule_epochs must both be there, or neither")
    if not have[0]:
        return None
    from .optim import HORIZON_SCHEDULES

    name = _string(zf, "lr_schedule", path)
    if name not in HORIZON_SCHEDULES:
        _fail(path, f"'lr_schedule' must be one of {HORIZON_SCHEDULES}, got {name!r}")
    horizon = _integer(zf, "lr_schedule_epochs", path, None, MAX_COUNT)
    if horizon < 1:
        _fail(path, f"'lr_schedule_epochs' must be >= 1, got {horizon}")
    return name, horizon


def _early_stop(zf, path, names, epoch, dt, wanted):
    """The early-stopping run a next fit continues (best loss, wait, best epoch,
    whether the best parameters are there; their headers checked), or None."""
    keys = ("es_best", "es_wait", "es_best_epoch")
    have = [k in names for k in keys]
    if not any(have):
        if any(f"es_{k}" in names for k in wanted):
            _fail(path, "early-stopping parameters without es_best, es_wait and es_best_epoch")
        return None
    if not all(have):
        _fail(path, f"an early-stopping state needs {', '.join(keys)}, got "
                    f"{[k for k, h in zip(keys, have) if h]}")
    best = float(_read(zf, "es_best", path, shape=(), kinds="f"))
    if best != best or best == -math.inf:
        _fail(path, f"'es_best' must be a loss (a number, or inf before any), got {best}")
    wait = _integer(zf, "es_wait", path, None, MAX_COUNT)
    if wait > epoch:
        _fail(path, f"'es_wait' is {wait}, more than the model's {epoch} epochs")
    best_epoch = int(_read(zf, "es_best_epoch", path, shape=(), kinds="iu"))
    if not -1 <= best_epoch < epoch:
        _fail(path, f"'es_best_epoch' must be in [-1, {epoch}) (an epoch of the model, or -1 "
                    f"for none yet), got {best_epoch}")
    present = [f"es_{k}" in names for k in wanted]
    if any(present) and not all(present):
        _fail(path, "has only some of the early-stopping parameters (es_W1, es_b1, ...)", KeyError)
    if all(present) and best_epoch < 0:
        _fail(path, "early-stopping parameters without a best epoch")
    if all(present):
        for k, shp in wanted.items():
            _, got, got_dt = _header(zf, f"es_{k}", path)
            if got != shp:
                _fail(path, f"'es_{k}' has shape {got}, expected {shp} from sizes")
            if got_dt != dt:
                _fail(path, f"'es_{k}' has dtype {got_dt}, expected {dt}", TypeError)
    return {"best": best, "wait": wait, "best_epoch": best_epoch, "params": all(present)}
