"""threadpoolctl sees fastbp's thread pool (csrc/threads.c).

The pool stands where an OpenMP runtime would, so it is registered under the
"openmp" user API: ``threadpool_limits(1)`` and
``threadpool_limits(1, user_api="openmp")`` limit it, and ``threadpool_info()``
lists it (internal_api "fastbp"). fastbp's BLAS is listed on its own, as OpenBLAS.
"""
import contextlib
import operator

from threadpoolctl import LibController, register

from . import _core


class FastbpController(LibController):
    user_api = "openmp"
    internal_api = "fastbp"
    filename_prefixes = ("_core.",)  # fastbp/_core.*.so; the symbols below confirm it
    check_symbols = ("fbp_get_num_threads", "fbp_set_num_threads", "fbp_pool_workers")

    def get_num_threads(self):
        return self.dynlib.fbp_get_num_threads()

    def set_num_threads(self, num_threads):
        self.dynlib.fbp_set_num_threads(int(num_threads))

    def get_version(self):
        from . import __version__
        return __version__


register(FastbpController)


@contextlib.contextmanager
def local_threads(n):
    """Threads for the fastbp calls this Python thread makes inside the block,
    over the process-wide count (``set_num_threads``, ``threadpool_limits``);
    other threads keep theirs, so two threads can each set their own without a
    race (fastbp.sklearn's ``n_threads`` is this). n None: no change. Blocks
    nest; each restores the count it found.

        with fastbp.local_threads(1):
            model.fit(X, y)
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
            raise TypeError(f"local_threads: n must be an integer or None, got "
                            f"{type(n).__name__}")
        n = operator.index(n)
        if not 1 <= n <= 4096:
            raise ValueError(f"local_threads: n must be in [1, 4096], got {n}")
    before = _core._get_local_threads()
    if n is not None:
        _core._set_local_threads(n)
    try:
        yield
    finally:
        _core._set_local_threads(before)
