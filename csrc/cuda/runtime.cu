/* runtime.cu - errors, devices, copies, the cuBLAS handles and the row-major GEMM.
 *
 * GEMM is cuBLAS in its default math mode (CUBLAS_DEFAULT_MATH: full FP32/FP64,
 * no TF32). A row-major C = op(A).op(B) is the column-major C^T = op(B)^T.op(A)^T,
 * so the operands are swapped instead of copied, exactly as csrc/runtime.c does
 * for the CPU BLAS.
 */
#include <stdarg.h>
#include <stdio.h>

#include <mutex>

#include "fbpc_internal.h"

static thread_local char g_err[1024];

int fbpc_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

extern "C" const char *fbpc_last_error(void) { return g_err; }

extern "C" int fbpc_device_count(int *n)
{
    *n = 0;
    if (cudaGetDeviceCount(n) != cudaSuccess) { /* no driver, no device: not an error */
        *n = 0;
        cudaGetLastError();
    }
    return 0;
}

extern "C" int fbpc_pointer_device(const void *p, int *dev)
{
    cudaPointerAttributes a;
    *dev = -1;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0; /* unknown to CUDA: host memory */
    }
    if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged)
        *dev = a.device;
    return 0;
}

extern "C" int fbpc_memcpy(int dev, void *stream, void *dst, const void *src, size_t nbytes)
{
    DEVICE_GUARD(dev);
    cudaStream_t s = (cudaStream_t)stream;
    if (!s) /* work of any stream may still write src or read dst */
        CUDA_TRY(cudaDeviceSynchronize());
    if (nbytes)
        CUDA_TRY(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

extern "C" int64_t fbpc_scratch_doubles(int64_t N, int64_t narrays)
{
    int64_t k = narrays < 1 ? 1 : narrays;
    return (N > 0 ? N : 0) + k * (RED_MAXBLK + 1) + 8;
}

int fbpc_blas_create(cublasHandle_t *h)
{
    BLAS_TRY(cublasCreate(h));
    cublasStatus_t st = cublasSetMathMode(*h, CUBLAS_DEFAULT_MATH); /* no TF32 */
    if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(*h);
        BLAS_TRY(st);
    }
    return 0;
}

#define FBPC_MAX_DEVICES 64
static cublasHandle_t g_handles[FBPC_MAX_DEVICES];
static std::mutex g_handles_lock;

int fbpc_blas(cudaStream_t s, cublasHandle_t *h)
{
    int dev;
    CUDA_TRY(cudaGetDevice(&dev));
    if (dev < 0 || dev >= FBPC_MAX_DEVICES)
        return fbpc_fail("device %d: fastbp supports devices 0..%d", dev, FBPC_MAX_DEVICES - 1);
    {
        std::lock_guard<std::mutex> lock(g_handles_lock);
        if (!g_handles[dev])
            TRY(fbpc_blas_create(&g_handles[dev]));
        *h = g_handles[dev];
    }
    BLAS_TRY(cublasSetStream(*h, s));
    return 0;
}

static cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t oa, cublasOperation_t ob,
                                int m, int n, int k, const float *al, const float *A, int lda,
                                const float *B, int ldb, const float *be, float *C, int ldc)
{
    return cublasSgemm(h, oa, ob, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}

static cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t oa, cublasOperation_t ob,
                                int m, int n, int k, const double *al, const double *A, int lda,
                                const double *B, int ldb, const double *be, double *C, int ldc)
{
    return cublasDgemm(h, oa, ob, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}

template <class T>
int gemm(cublasHandle_t h, cudaStream_t s, int ta, int tb, idx M, idx N, idx K, T alpha,
         const T *A, idx lda, const T *B, idx ldb, T beta, T *C, idx ldc)
{
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) { /* C = beta C, beta == 0 meaning "overwrite"; C is contiguous here */
        if (ldc != N)
            return fbpc_fail("gemm: K == 0 needs a contiguous C");
        if (beta == (T)0)
            CUDA_TRY(cudaMemsetAsync(C, 0, (size_t)(M * N) * sizeof(T), s));
        else
            TRY(k_scale<T>(s, M * N, C, beta));
        return 0;
    }
    cublasOperation_t oa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, ob = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    int la = (int)(ldb > 1 ? ldb : 1), lb = (int)(lda > 1 ? lda : 1), lc = (int)(ldc > 1 ? ldc : 1);
    BLAS_TRY(gemm_call(h, oa, ob, (int)N, (int)M, (int)K, &alpha, B, la, A, lb, &beta, C, lc));
    return 0;
}

template int gemm<float>(cublasHandle_t, cudaStream_t, int, int, idx, idx, idx, float,
                         const float *, idx, const float *, idx, float, float *, idx);
template int gemm<double>(cublasHandle_t, cudaStream_t, int, int, idx, idx, idx, double,
                          const double *, idx, const double *, idx, double, double *, idx);
