"""The command line: python -m fastbp train | bench | info (also the `fastbp`
console script).

Most tests call fastbp.__main__.main in-process and catch SystemExit; a few run
a subprocess for what only a real program has: its name (sys.argv[0]), a
stderr that is no terminal, and its exit status. Training runs are tiny
(digits, one epoch, 8 hidden units); bench runs replace fastbp.bench.run and
environment with fakes, so nothing is timed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import bench
from fastbp.__main__ import main

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
TINY = ["train", "--epochs", "1", "--hidden", "8", "--no-progress"]
# MSE on diabetes (standardized targets) at lr 1e6: the first epoch's loss is nan
DIVERGE = ["--data", "diabetes", "--lr", "1e6"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def usage_error(capsys, argv):
    """main(argv) stops with argparse's usage error (exit 2): its stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "usage:" in err and "error:" in err, err
    return err


def run_program(args, tmp_path, stderr_to_file=False):
    """Run a program (argv list) with this checkout's fastbp; (rc, stdout, stderr),
    decoded as they are (no newline translation: a "\\r" stays one)."""
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200")
    if stderr_to_file:
        with open(tmp_path / "stderr.log", "w+b") as log:
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=log, env=env, timeout=120)
            log.seek(0)
            err = log.read()
    else:
        p = subprocess.run(args, capture_output=True, env=env, timeout=120)
        err = p.stderr
    return p.returncode, p.stdout.decode(), err.decode()


def console_script(tmp_path):
    """A stand-in for the installed `fastbp` script (what pip writes for
    [project.scripts] fastbp = "fastbp.__main__:main")."""
    path = tmp_path / "bin" / "fastbp"
    path.parent.mkdir(exist_ok=True)
    path.write_text("import sys\nfrom fastbp.__main__ import main\n"
                    "if __name__ == '__main__':\n    sys.exit(main())\n")
    return [sys.executable, str(path)]


@pytest.fixture
def fake_bench(monkeypatch, tmp_path):
    """bench without timing anything: run() returns fixed rows (and records its
    calls), environment() is empty; the working directory is tmp_path."""
    calls = []

    def run(sizes=None, repeat=None, threads=None, with_torch=None, optimizer="sgd",
            dtype=np.float32):
        calls.append((sizes, repeat, threads) + ((optimizer,) if optimizer != "sgd" else ())
                     + ((np.dtype(dtype).name,) if dtype != np.float32 else ()))
        return [{"size": s, "batch": bench.SIZES[s][0], "widths": bench.SIZES[s][1],
                 "ms": {"fastbp": 2.0, "floor": 1.0, "numpy": 4.0},
                 "ratio_to_floor": {"fastbp": 2.0, "floor": 1.0, "numpy": 4.0}}
                for s in sizes or ["book", "small"]]

    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "environment", lambda: {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_BENCH_DIR", raising=False)
    return calls


# ---- 1. values out of range: argparse's usage error, exit 2 ------------------------------

BAD_TRAIN = [
    (["--epochs", "0"], "--epochs", "'0'"),
    (["--epochs", "-3"], "--epochs", "'-3'"),
    (["--batch-size", "0"], "--batch-size", "'0'"),
    (["--hidden", "0"], "--hidden", "'0'"),
    (["--hidden", "16", "-1"], "--hidden", "'-1'"),
    (["--threads", "0"], "--threads", "'0'"),
    (["--threads", "5000"], "--threads", "'5000'"),
    (["--lr", "0"], "--lr", "'0'"),
    (["--lr", "-0.1"], "--lr", "'-0.1'"),
    (["--lr", "nan"], "--lr", "'nan'"),
    (["--lr", "inf"], "--lr", "'inf'"),
    (["--momentum", "1"], "--momentum", "'1'"),
    (["--momentum", "-0.5"], "--momentum", "'-0.5'"),
    (["--momentum", "nan"], "--momentum", "'nan'"),
    (["--weight-decay=-1e-4"], "--weight-decay", "'-1e-4'"),
    (["--weight-decay", "-0.5"], "--weight-decay", "'-0.5'"),
    (["--weight-decay", "nan"], "--weight-decay", "'nan'"),
    (["--weight-decay", "inf"], "--weight-decay", "'inf'"),
    (["--seed", "-1"], "--seed", "'-1'"),
    (["--epochs", "two"], "--epochs", "'two'"),
]


@pytest.mark.parametrize("bad, option, given", BAD_TRAIN, ids=[" ".join(b[0]) for b in BAD_TRAIN])
def test_train_rejects_out_of_range_values(capsys, bad, option, given):
    err = usage_error(capsys, TINY + bad)
    assert f"argument {option}" in err and given in err and "expected" in err, err
    assert "Traceback" not in err


BAD_BENCH = [
    (["--repeat", "-1"], "--repeat", "'-1'"),
    (["--repeat", "0"], "--repeat", "'0'"),
    (["--threads", "0"], "--threads", "'0'"),
    (["--sizes", "small", "bogus"], "--sizes", "'bogus'"),
]


@pytest.mark.parametrize("bad, option, given", BAD_BENCH, ids=[" ".join(b[0]) for b in BAD_BENCH])
def test_bench_rejects_out_of_range_values(capsys, fake_bench, bad, option, given):
    err = usage_error(capsys, ["bench", *bad])
    assert f"argument {option}" in err and given in err and "expected" in err, err
    assert fake_bench == []  # nothing ran


def test_bench_optimizer_must_be_known(capsys, fake_bench):
    err = usage_error(capsys, ["bench", "--optimizer", "rmsprop"])
    assert "--optimizer" in err and "'rmsprop'" in err and "adam" in err, err
    assert fake_bench == []


def test_bench_sizes_message_lists_the_sizes(capsys, fake_bench):
    err = usage_error(capsys, ["bench", "--sizes", "bogus"])
    for name in bench.SIZES:
        assert name in err, err


def test_good_values_pass(capsys, fake_bench):
    assert main(["bench", "--sizes", "book", "wide", "--repeat", "3", "--threads", "1"]) == 0
    assert fake_bench == [(["book", "wide"], 3, 1)]
    assert main(["bench", "--sizes", "small", "--optimizer", "adam", "--repeat", "2"]) == 0
    assert fake_bench[-1] == (["small"], 2, None, "adam")
    assert "optimizer: Adam(lr=1e-06)" in capsys.readouterr().out
    assert main(["bench", "--sizes", "digits", "--dtype", "float64", "--repeat", "2"]) == 0
    assert fake_bench[-1] == (["digits"], 2, None, "float64")
    assert "float64, optimizer: SGD" in capsys.readouterr().out
    assert main(TINY + ["--momentum", "0.9", "--weight-decay", "0", "--lr", "0.05",
                        "--threads", "1", "--hidden", "8", "4"]) == 0
    assert "64-8-4-10" in capsys.readouterr().out


# ---- 2. output paths are checked before the work starts ------------------------------------

def test_save_into_a_missing_directory(capsys, tmp_path):
    path = str(tmp_path / "nowhere" / "model.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert "argument --save" in err and path in err and "does not exist" in err, err


def test_save_to_a_directory(capsys, tmp_path):
    err = usage_error(capsys, TINY + ["--save", str(tmp_path)])
    assert str(tmp_path) in err and "directory" in err, err
    assert not os.path.exists(str(tmp_path) + ".npz")


def test_save_under_a_file(capsys, tmp_path):
    (tmp_path / "plain").write_text("")
    path = str(tmp_path / "plain" / "model.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert path in err, err


def test_save_into_a_read_only_directory(capsys, monkeypatch, tmp_path):
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    real_access = os.access
    # as if read-only (a real chmod means nothing to root)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if os.fspath(p) == ro and mode & os.W_OK else real_access(p, mode, **kw)))
    path = os.path.join(ro, "m.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert path in err and "not writable" in err, err
    err = usage_error(capsys, ["bench", "--json", os.path.join(ro, "new", "r.json")])
    assert "not writable" in err, err


@pytest.mark.parametrize("option", ["--json", "--png"])
def test_bench_output_is_a_directory(capsys, fake_bench, tmp_path, option):
    (tmp_path / "out").mkdir()
    err = usage_error(capsys, ["bench", option, "out"])
    assert f"argument {option}" in err and "'out'" in err and "directory" in err, err
    assert fake_bench == []


@pytest.mark.parametrize("option", ["--json", "--png"])
def test_bench_output_under_a_file(capsys, fake_bench, tmp_path, option):
    (tmp_path / "plain").write_text("")
    err = usage_error(capsys, ["bench", option, "plain/x"])
    assert f"argument {option}" in err and "plain/x" in err, err
    assert fake_bench == []


def test_bench_creates_missing_directories(capsys, fake_bench, tmp_path):
    assert main(["bench", "--json", "a/b/r.json", "--png", ""]) == 0
    assert (tmp_path / "a" / "b" / "r.json").is_file()
    assert "wrote a/b/r.json" in capsys.readouterr().out


# ---- 3. the messages name the files really written ---------------------------------------

def test_save_reports_the_file_written(capsys, tmp_path):
    path = str(tmp_path / "model")
    assert main(TINY + ["--save", path]) == 0
    out = capsys.readouterr().out
    assert f"saved to {path}.npz (" in out, out
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path + ".npz").st_mode & 0o777 == 0o666 & ~umask
    # MLP.load reads the network alone, and says what it leaves out
    with pytest.warns(UserWarning, match="holds the feature standardization and the class "
                                         "names.*fastbp.bundle.load"):
        assert fastbp.MLP.load(path + ".npz").sizes == [64, 8, 10]


def test_png_goes_where_asked(capsys, fake_bench, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["bench", "--json", "r.json", "--png", "chart"]) == 0
    out = capsys.readouterr().out
    assert "wrote r.json\n" in out and "wrote chart\n" in out, out
    assert (tmp_path / "chart").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "chart.png").exists()
    assert (tmp_path / "r.json").is_file()


# ---- 4. a diverged run fails ------------------------------------------------------------

def test_divergence_exits_1(capsys):
    assert main(TINY + DIVERGE) == 1
    err = capsys.readouterr().err
    assert "fastbp train: the loss diverged (nan) at epoch 1; lower --lr" in err, err


def test_non_finite_score_exits_1(capsys, monkeypatch):
    monkeypatch.setattr(fastbp.MLP, "score", lambda self, X, y: float("inf"))
    assert main(TINY) == 1
    err = capsys.readouterr().err
    assert "fastbp train: the loss diverged" in err and "inf" in err and "lower --lr" in err


def test_non_finite_weights_exit_1(capsys, monkeypatch):
    # losses measured before each update, an accuracy finite whatever the outputs:
    # only the weights show a last update that diverged
    fit = fastbp.MLP.fit

    def diverging_fit(self, *args, **kw):
        hist = fit(self, *args, **kw)
        next(iter(self.params.values()))[...] = np.nan
        return hist

    monkeypatch.setattr(fastbp.MLP, "fit", diverging_fit)
    assert main(TINY) == 1
    err = capsys.readouterr().err
    assert "the loss diverged (" in err and "not finite) after epoch 1; lower --lr" in err, err


def test_divergence_does_not_save(capsys, tmp_path):
    assert main(TINY + DIVERGE + ["--save", str(tmp_path / "m.npz")]) == 1
    assert not (tmp_path / "m.npz").exists()


def test_console_script_exit_status(tmp_path):
    script = console_script(tmp_path)
    rc, out, err = run_program(script + TINY + DIVERGE, tmp_path)
    assert rc == 1 and "the loss diverged (nan) at epoch 1" in err, (rc, out, err)
    rc, out, err = run_program(script + ["train", "--epochs", "0"], tmp_path)
    assert rc == 2 and "Traceback" not in err, (rc, out, err)


# ---- 5. --help: the program's name, the defaults -----------------------------------------

@pytest.mark.parametrize("argv0, prog", [
    ("/usr/lib/python3/site-packages/fastbp/__main__.py", "python -m fastbp"),
    ("/usr/local/bin/fastbp", "fastbp"),
    ("fastbp-dev", "fastbp-dev"),
])
def test_help_names_the_program(capsys, monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog} train ")


def test_help_names_the_program_when_run(tmp_path):
    rc, out, _ = run_program([sys.executable, "-m", "fastbp", "--help"], tmp_path)
    assert rc == 0 and out.startswith("usage: python -m fastbp "), out
    rc, out, _ = run_program(console_script(tmp_path) + ["bench", "--help"], tmp_path)
    assert rc == 0 and out.startswith("usage: fastbp bench "), out


def test_help_shows_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for text in ["(default: digits)", "(default: 128)", "(default: relu)", "(default: 30)",
                 "(default: 32)", "(default: 0.1; 0.01 for diabetes)", "(default: 0.0)",
                 "(default: float32)", "(default: 0)"]:
        assert text in out, (text, out)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    for text in ["default: DIR/step.json", "default: DIR/step.png", "~/.cache/fastbp/bench-results",
                 "never the working directory", "(default: all:"]:
        assert text in out, (text, out)


# ---- 6. the progress bar only on a terminal ----------------------------------------------

def test_no_progress_bar_into_a_log(tmp_path):
    rc, out, err = run_program([sys.executable, "-m", "fastbp", "train", "--epochs", "2",
                                "--hidden", "8"], tmp_path, stderr_to_file=True)
    assert rc == 0, err
    assert "\r" not in err, repr(err)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 0 cols: no bar
    env = dict(os.environ, PYTHONPATH=SRC)
    try:
        p = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--epochs", "2",
                              "--hidden", "8"], stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        assert p.wait(timeout=120) == 0
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert b"\r" in err and b"epoch" in err, err


def test_progress_follows_stderr(capsys):
    assert main(["train", "--epochs", "2", "--hidden", "8"]) == 0
    assert "\r" not in capsys.readouterr().err  # capsys's stderr is no terminal
    assert main(["train", "--epochs", "2", "--hidden", "8", "--progress"]) == 0
    assert "\r" in capsys.readouterr().err
    err = usage_error(capsys, TINY + ["--progress"])
    assert "not allowed with" in err


# ---- 7. bench's default outputs --------------------------------------------------------

def test_bench_default_outputs(capsys, fake_bench, tmp_path, monkeypatch):
    """The default outputs go to the user's cache directory, never the working
    directory; --out-dir and $FASTBP_BENCH_DIR name another."""
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    d = tmp_path / "cache" / "fastbp" / "bench-results"
    assert (d / "step.json").is_file()
    assert f"wrote {d / 'step.json'}\n" in out
    assert os.listdir(tmp_path) == ["cache"]          # nothing in the working directory
    assert main(["bench", "--out-dir", "here"]) == 0
    assert (tmp_path / "here" / "step.json").is_file()
    monkeypatch.setenv("FASTBP_BENCH_DIR", str(tmp_path / "env"))
    assert main(["bench", "--png", ""]) == 0
    assert os.listdir(tmp_path / "env") == ["step.json"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (d / "step.png").read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {d / 'step.png'}\n" in out


def test_bench_empty_path_skips_the_output(capsys, fake_bench, tmp_path):
    assert main(["bench", "--json", "", "--png", ""]) == 0
    assert "wrote" not in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


# ---- bench --vs-sklearn ---------------------------------------------------------------------

@pytest.fixture
def fake_sklearn_bench(monkeypatch, tmp_path):
    """bench --vs-sklearn without fitting anything: bench_sklearn.run returns a
    fixed row per workload (and records its calls); the working directory is
    tmp_path."""
    pytest.importorskip("sklearn")
    from fastbp import bench_sklearn

    calls = []

    def run(names=None, threads=None, repeat=None, n_samples=None, max_iter=None):
        calls.append((names, threads, repeat))
        return [{"dataset": n, "task": "classification", "rows": 10, "features": 3,
                 "hidden": [4], "dtype": "float64", "threads": threads or 2,
                 "sklearn_s": 3.0, "fastbp_s": 1.0, "speedup": 3.0, "sklearn_iter": 5,
                 "fastbp_iter": 5, "sklearn_score": 0.9, "fastbp_score": 0.9}
                for n in names or ["digits"]]

    monkeypatch.setattr(bench_sklearn, "run", run)
    monkeypatch.setattr(bench, "environment", lambda: {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_BENCH_DIR", raising=False)
    return calls


def test_bench_vs_sklearn_runs_its_workloads(capsys, fake_sklearn_bench, tmp_path):
    assert main(["bench", "--vs-sklearn", "--datasets", "wine", "diabetes", "--threads", "1",
                 "--repeat", "2", "--out-dir", "bench-results"]) == 0
    assert fake_sklearn_bench == [(["wine", "diabetes"], 1, 2)]
    out = capsys.readouterr().out
    assert "wine" in out and "3.00x" in out and "wrote bench-results/sklearn.json" in out, out
    assert (tmp_path / "bench-results" / "sklearn.json").is_file()
    assert not (tmp_path / "bench-results" / "step.json").exists()
    assert main(["bench", "--vs-sklearn", "--json", ""]) == 0
    assert fake_sklearn_bench[-1] == (None, None, None)


def test_bench_datasets_are_checked(capsys, fake_sklearn_bench):
    err = usage_error(capsys, ["bench", "--vs-sklearn", "--datasets", "mnist"])
    assert "argument --datasets" in err and "'mnist'" in err and "digits" in err, err
    err = usage_error(capsys, ["bench", "--datasets", "wine"])
    assert "argument --datasets" in err and "--vs-sklearn" in err, err
    assert fake_sklearn_bench == []



# ---- 8. the user's own data (issue 26) ------------------------------------------------------

pd = pytest.importorskip("pandas")


def _csv(tmp_path, n=240, seed=0, name="data.csv"):
    """A CSV of 4 numeric features on very different scales and a string label."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)) * [1, 100, 0.01, 5] + [0, 1000, 0, -3]
    z = X[:, 0] + (X[:, 1] - 1000) / 100 - X[:, 2] * 100
    label = np.where(z > 0.5, "high", np.where(z < -0.5, "low", "mid"))
    df = pd.DataFrame(X, columns=["alpha", "beta", "gamma", "delta"])
    df["grade"] = label
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path), df


def one_line_error(capsys, argv):
    """main(argv) returns 2 with one line on stderr, argparse's form."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and "Traceback" not in err, err
    return err


def test_train_predict_export_info_on_a_csv(capsys, tmp_path):
    path, df = _csv(tmp_path)
    model = str(tmp_path / "m.npz")
    assert main(["train", path, "--target", "grade", "--epochs", "20", "--hidden", "16",
                 "--optimizer", "adam", "--lr", "0.01", "--save", model, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "target 'grade': classification (the target holds labels" in out, out
    acc = float(out.split("test accuracy ")[1].split()[0])
    # predict on the raw test rows (the same split) gives the training run's test score
    from fastbp.__main__ import split_rows

    codes = np.unique(df["grade"], return_inverse=True)[1]
    _, te = split_rows(len(df), codes, 0.25, 0, True)
    df.iloc[te].drop(columns="grade").to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", model, str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["grade"] and set(pred["grade"]) <= {"high", "low", "mid"}
    assert round(np.mean(pred["grade"].to_numpy() == df["grade"].to_numpy()[te]), 4) == acc
    assert f"on raw rows its test accuracy is {acc:.4f}" in out
    # probabilities, to standard output, columns named by class
    capsys.readouterr()
    assert main(["predict", model, path, "--proba"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "proba_high,proba_low,proba_mid" and len(lines) == len(df) + 1
    assert abs(sum(map(float, lines[1].split(","))) - 1) < 1e-5
    # the ONNX file takes raw float32 rows and agrees with predict
    pytest.importorskip("onnxruntime")
    assert main(["export", model, str(tmp_path / "m.onnx"), "--check", path]) == 0
    out = capsys.readouterr().out
    assert f"labels equal predict's on {len(df)}/{len(df)}" in out and "(agrees to 1e-5)" in out
    assert main(["info", model]) == 0
    out = capsys.readouterr().out
    assert "classification, target 'grade'" in out and "features (4): alpha, beta, gamma, delta" in out
    assert "classes (3): high, low, mid" in out and "Total params: 131" in out


def test_regression_on_parquet_and_numpy_files(capsys, tmp_path):
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3))
    y = 50 + 10 * X[:, 0] - 5 * X[:, 1] ** 2
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(price=y)
    df.to_parquet(tmp_path / "d.parquet")
    model = str(tmp_path / "r.npz")
    assert main(["train", str(tmp_path / "d.parquet"), "--target", "price", "--epochs", "60",
                 "--hidden", "16", "--optimizer", "adam", "--lr", "0.01", "--save", model,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "regression (the target holds real numbers)" in out
    r2 = float(out.split("test R^2 ")[1].split()[0])
    assert r2 > 0.8
    assert main(["predict", model, str(tmp_path / "d.parquet")]) == 0
    values = np.array(capsys.readouterr().out.splitlines()[1:], float)
    assert np.corrcoef(values, y)[0, 1] > 0.9 and abs(values.mean() - y.mean()) < 5
    np.savez(tmp_path / "d.npz", X=X, y=y, feature_names=np.array(["a", "b", "c"]))
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    for f in ("d.npz", "d.npy"):
        assert main(["train", str(tmp_path / f), "--epochs", "2", "--no-progress"]) == 0
        assert "regression" in capsys.readouterr().out
    # --task overrides: 3 integer codes are classes, unless told otherwise
    np.savez(tmp_path / "k.npz", X=X, y=(X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    assert main(["train", str(tmp_path / "k.npz"), "--epochs", "1", "--no-progress"]) == 0
    assert "classification (the target holds 3 distinct whole numbers)" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "k.npz"), "--epochs", "1", "--task", "regression",
                 "--no-progress"]) == 0
    assert "regression (--task)" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(__import__("fastbp.__main__").__main__.DATASETS))
def test_every_bundled_dataset_trains(capsys, name):
    assert main(["train", "--data", name, "--epochs", "1", "--hidden", "4", "--no-progress"]) == 0
    assert main(["train", name, "--epochs", "1", "--hidden", "4", "--optimizer", "adamw",
                 "--no-progress"]) == 0


def test_bad_data_gets_one_line_naming_what_to_fix(capsys, tmp_path):
    path, df = _csv(tmp_path)
    err = one_line_error(capsys, ["train", path, "--target", "grades"])
    assert "no column 'grades' for --target; the columns are alpha, beta, gamma, delta, grade" in err
    err = one_line_error(capsys, ["train", path])
    assert "say which column is the target with --target COLUMN" in err
    df2 = df.assign(city=["x"] * len(df))
    df2.to_csv(tmp_path / "s.csv", index=False)
    err = one_line_error(capsys, ["train", str(tmp_path / "s.csv"), "--target", "grade"])
    assert "feature column 'city' is not numeric" in err and "'x'" in err
    df3 = df.copy()
    df3.loc[7, "beta"] = np.nan
    df3.to_csv(tmp_path / "n.csv", index=False)
    err = one_line_error(capsys, ["train", str(tmp_path / "n.csv"), "--target", "grade"])
    assert "feature column 'beta' holds nan (row 7; 1 row(s)" in err
    df.assign(grade="ok").to_csv(tmp_path / "o.csv", index=False)
    err = one_line_error(capsys, ["train", str(tmp_path / "o.csv"), "--target", "grade"])
    assert "has one class ('ok')" in err
    err = one_line_error(capsys, ["train", str(tmp_path / "missing.csv")])
    assert "no such file: " in err and "bundled datasets" in err
    err = one_line_error(capsys, ["train", path, "--target", "grade", "--task", "regression"])
    assert "regression needs a numeric target" in err
    # predict: a file without the model's columns; not a model file
    assert main(["train", path, "--target", "grade", "--epochs", "1", "--save",
                 str(tmp_path / "m"), "--no-progress"]) == 0
    capsys.readouterr()
    df.drop(columns="gamma").to_csv(tmp_path / "g.csv", index=False)
    err = one_line_error(capsys, ["predict", str(tmp_path / "m.npz"), str(tmp_path / "g.csv")])
    assert "lacks the model's feature column(s) 'gamma'" in err
    err = one_line_error(capsys, ["predict", path, path])
    assert "not a model file of fastbp train --save" in err


def test_missing_pandas_names_the_extra(capsys, monkeypatch, tmp_path):
    path, _ = _csv(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    err = one_line_error(capsys, ["train", path, "--target", "grade"])
    assert "reading .csv files needs pandas: pip install 'fastbp[data]'" in err


def test_divergence_is_said_once(capsys):
    """One line on stderr, in the epoch count of the history (from 1); no
    RuntimeWarning echoed, no test score line for a run that stopped."""
    assert main(TINY + DIVERGE) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "RuntimeWarning" not in err, err
    assert "the loss diverged (nan) at epoch 1; lower --lr (it was 1e+06); nothing was saved" in err
    assert "test R^2" not in out


def test_plot_writes_a_png(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    png = tmp_path / "c.png"
    assert main(["train", "--data", "iris", "--epochs", "3", "--hidden", "4", "--plot", str(png),
                 "--no-progress"]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = one_line_error(capsys, ["train", "--data", "iris", "--epochs", "1", "--plot",
                                  str(tmp_path / "d.png"), "--no-progress"])
    assert "fastbp.plot needs matplotlib: pip install 'fastbp[plot]'" in err

# ---- Ctrl-C during train (issue 25, defect 9) ----------------------------------------

def interrupt_after_two_epochs(monkeypatch):
    """MLP.fit that trains two epochs, then raises KeyboardInterrupt in the
    third, as Ctrl-C does between two native calls."""
    real = fastbp.MLP.fit

    def fit(self, *args, **kwargs):
        def stop(model, epoch, history):
            if epoch == 1:
                raise KeyboardInterrupt
        return real(self, *args, **dict(kwargs, callbacks=[stop]))
    monkeypatch.setattr(fastbp.MLP, "fit", fit)


def test_ctrl_c_saves_what_was_trained_and_exits_130(capsys, monkeypatch, tmp_path):
    """Before: a KeyboardInterrupt traceback, and nothing saved."""
    interrupt_after_two_epochs(monkeypatch)
    path = tmp_path / "model.npz"
    assert main(["train", "--epochs", "50", "--hidden", "8", "--no-progress",
                 "--save", str(path)]) == 130
    out, err = capsys.readouterr()
    assert err == (f"fastbp train: interrupted in epoch 3 of 50 (after 86 steps); saved the "
                   f"model to {path}\n"), err
    model = fastbp.MLP.load(path)
    assert (model.epoch_, model.step_, model.sizes) == (2, 86, [64, 8, 10])


def test_ctrl_c_without_save_says_nothing_was_saved(capsys, monkeypatch, tmp_path):
    interrupt_after_two_epochs(monkeypatch)
    assert main(["train", "--epochs", "50", "--hidden", "8", "--no-progress"]) == 130
    assert capsys.readouterr().err == ("fastbp train: interrupted in epoch 3 of 50 (after 86 "
                                       "steps); nothing saved (no --save)\n")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_elsewhere_exits_130_without_a_traceback(capsys, monkeypatch):
    import fastbp.__main__ as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_toy_table", interrupted)  # loading the data
    assert main(TINY) == 130
    assert capsys.readouterr().err.endswith(" train: interrupted\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_sigint_to_the_program_saves_and_exits_130(tmp_path):
    """The real thing: SIGINT to `python -m fastbp train` once it has printed
    its first line (the fit starts right after)."""
    import signal
    import time

    path = tmp_path / "run.npz"
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--epochs", "1000000",
                          "--hidden", "16", "--no-progress", "--save", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().startswith("fastbp "), p.stderr.read()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp train: interrupted in epoch "), err
    assert lines[0].endswith(f"; saved the model to {path}"), err
    model = fastbp.MLP.load(path)
    assert model.step_ > 0 and model.sizes == [64, 16, 10]
