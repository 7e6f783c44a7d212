"""Files a user keeps (models, ONNX exports, benchmark results) are written
whole or not at all.

``atomic_write(path)`` yields a binary file in path's directory under a
temporary name; when the block ends without an exception the data is flushed
and fsync'ed, the file is renamed over path (``os.replace``, atomic on POSIX and
Windows) and the directory is fsync'ed so the rename itself survives a power
loss. A kill, a Ctrl-C, a full disk or an exception in the block leaves path as
it was (the old file, or none) and removes the temporary file (a SIGKILL leaves
it, named ``.<name>.<random>.tmp``, beside path).

The new file gets the permissions a plain ``open(path, "wb")`` would give it:
those of the file it replaces, else 0o666 less the umask. A path that is a
symbolic link is written through: the link's target is replaced, the link kept.
"""
import contextlib
import os
import secrets
import stat


def _fsync_dir(directory):
    """fsync a directory, so a rename in it is durable; a no-op where the
    platform cannot open a directory (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """A binary file object whose contents replace path when the block ends
    without an exception (module docstring). Yields the open file."""
    path = os.fspath(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never write through a name someone else made; mode 0o666 is cut by
    # the umask as open() would cut it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = None
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = None  # the file object owns it now
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    _fsync_dir(directory)


def write_bytes(path, data):
    """data (bytes) as the whole contents of path, atomically."""
    with atomic_write(path) as f:
        f.write(data)
