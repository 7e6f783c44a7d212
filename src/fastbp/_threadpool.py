"""threadpoolctl sees fastbp's thread pool (csrc/threads.c).

The pool stands where an OpenMP runtime would, so it is registered under the
"openmp" user API: ``threadpool_limits(1)`` and
``threadpool_limits(1, user_api="openmp")`` limit it, and ``threadpool_info()``
lists it (internal_api "fastbp"). fastbp's BLAS is listed on its own, as OpenBLAS.
"""
from threadpoolctl import LibController, register


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
