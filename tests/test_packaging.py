"""What pip and a wheel show: metadata, extras, what the wheel carries."""
import os
import re
import shutil
import subprocess

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import fastbp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_metadata_has_home_page_author_and_urls():
    proj = _pyproject()["project"]
    assert proj["authors"] and proj["urls"]["Homepage"].startswith("https://")
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(proj["urls"])


def test_readme_install_list_names_every_user_extra():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    listed = set(re.findall(r'pip install "\.\[(\w+)\]"', _readme()))
    assert extras == listed, (extras - listed, listed - extras)


def test_onnxruntime_pin_matches_the_docs():
    pins = [d for d in _pyproject()["project"]["optional-dependencies"]["onnx"]
            if d.startswith("onnxruntime")]
    assert pins == ["onnxruntime>=1.16"]
    with open(os.path.join(ROOT, "docs", "onnx.md")) as f:
        assert "ONNX Runtime 1.16 and later load it" in _readme() and "1.16.3" in f.read()


def test_generated_c_is_kept_out_of_wheels():
    excl = _pyproject()["tool"]["setuptools"]["exclude-package-data"]["fastbp"]
    assert "*.c" in excl and "*.cpp" in excl


def test_extension_is_stripped():
    """The built extension carries no debug sections or symbol table (a
    FASTBP_DEBUG or sanitizer build keeps them)."""
    so = fastbp._core.__file__
    if not shutil.which("readelf") or not so.endswith(".so"):
        pytest.skip("needs readelf and an ELF extension")
    dynamic = subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout
    if "libasan" in dynamic or os.environ.get("FASTBP_DEBUG") or os.environ.get("FASTBP_SANITIZE"):
        pytest.skip("a debug or sanitizer build")
    sections = subprocess.run(["readelf", "-S", "-W", so], capture_output=True, text=True).stdout
    assert ".text" in sections
    assert ".debug_" not in sections and ".symtab" not in sections, so


def test_source_tree_without_its_extension_says_so(tmp_path):
    """PYTHONPATH=src on a checkout that was pip-installed but not built in
    place: a clear ImportError naming both ways, not "circular import"."""
    import sys

    pkg = tmp_path / "src" / "fastbp"
    pkg.mkdir(parents=True)
    src = os.path.dirname(fastbp.__file__)
    for f in os.listdir(src):
        if f.endswith(".py"):
            shutil.copy(os.path.join(src, f), pkg / f)
    r = subprocess.run([sys.executable, "-c", "import fastbp"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / "src")}, timeout=60)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "fastbp's C extension (fastbp._core) is not built in" in last, r.stderr
    assert "build_ext --inplace" in last and "leave this directory off PYTHONPATH" in last
    assert "circular" not in last


def test_sdist_ships_every_file_the_binding_includes():
    """_core.pyx is split into include files (.pxi): each one must be in the
    package data and in MANIFEST.in, or an sdist does not build."""
    import fnmatch

    src = os.path.join(ROOT, "src", "fastbp")
    with open(os.path.join(src, "_core.pyx")) as f:
        included = re.findall(r'^include "([^"]+)"', f.read(), re.M)
    assert len(included) >= 5, included
    data = _pyproject()["tool"]["setuptools"]["package-data"]["fastbp"]
    with open(os.path.join(ROOT, "MANIFEST.in")) as f:
        manifest = [ln.split()[2:] for ln in f if ln.startswith("recursive-include src/fastbp")]
    for name in included:
        assert os.path.exists(os.path.join(src, name)), name
        assert any(fnmatch.fnmatch(name, p) for p in data), (name, data)
        assert any(fnmatch.fnmatch(name, p) for ps in manifest for p in ps), (name, manifest)
