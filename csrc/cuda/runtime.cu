/* runtime.cu - errors, devices, copies, the cuBLAS handles, the row-major GEMM,
 * scratch memory, the final level of the reductions, and this backend's table.
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

/* Per host thread and device: grown on demand, kept for the thread's life. */
static thread_local void *t_scratch[FBPC_MAX_DEVICES];
static thread_local size_t t_scratch_size[FBPC_MAX_DEVICES];

int fbpc_scratch(size_t nbytes, void **p)
{
    int dev;
    CUDA_TRY(cudaGetDevice(&dev));
    if (dev < 0 || dev >= FBPC_MAX_DEVICES)
        return fbpc_fail("device %d: fastbp supports devices 0..%d", dev, FBPC_MAX_DEVICES - 1);
    if (t_scratch_size[dev] < nbytes) {
        if (t_scratch[dev])
            CUDA_TRY(cudaFree(t_scratch[dev])); /* synchronizes: no kernel still reads it */
        t_scratch[dev] = nullptr;
        t_scratch_size[dev] = 0;
        CUDA_TRY(cudaMalloc(&t_scratch[dev], nbytes));
        t_scratch_size[dev] = nbytes;
    }
    *p = t_scratch[dev];
    return 0;
}

int fbpc_read_doubles(cudaStream_t s, const double *src, double *out, idx n)
{
    CUDA_TRY(cudaMemcpyAsync(out, src, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

/* ---- the final level of the reductions -------------------------------------------------- */

struct FSumD {
    const double *x;
    __device__ double operator()(idx i) const { return x[i]; }
};

int k_sum_partials(cudaStream_t s, idx n, const double *x, double *part)
{
    return reduce1(s, n, FSumD{x}, OpSum(), part);
}

/* part (np,): dst[0] = op over part, in one block. */
template <class Op>
__global__ void __launch_bounds__(RED_THREADS) reduce2_kernel(idx np, const double *part,
                                                              double *dst, Op op)
{
    double a = 0.0;
    for (idx i = threadIdx.x; i < np; i += RED_THREADS)
        a = op(a, part[i]);
    a = block_reduce<RED_THREADS>(a, op, 0.0);
    if (threadIdx.x == 0)
        dst[0] = a;
}

int k_reduce_final(cudaStream_t s, idx np, const double *part, double *dst, int maxop)
{
    if (maxop)
        reduce2_kernel<<<1, RED_THREADS, 0, s>>>(np, part, dst, OpMax());
    else
        reduce2_kernel<<<1, RED_THREADS, 0, s>>>(np, part, dst, OpSum());
    LAUNCH_TRY();
    return 0;
}

/* ---- the backend table (fbp_api.h) ------------------------------------------------------- */

static fbp_backend make_backend()
{
    fbp_backend b;
    b.last_error = fbpc_last_error;
    b.bce = nullptr; /* not on CUDA yet */
#define ENTRY(name) b.name = fbpc_##name;
    FBP_BACKEND_ENTRIES(ENTRY)
#undef ENTRY
    return b;
}

static const fbp_backend g_backend = make_backend();

extern "C" const fbp_backend *fbpc_backend(void) { return &g_backend; }
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

template <class T>
static cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t oa, cublasOperation_t ob,
                                int m, int n, int k, const T *al, const T *A, int lda,
                                const T *B, int ldb, const T *be, T *C, int ldc)
{
    if constexpr (sizeof(T) == sizeof(float))
        return cublasSgemm(h, oa, ob, m, n, k, (const float *)al, (const float *)A, lda,
                           (const float *)B, ldb, (const float *)be, (float *)C, ldc);
    else
        return cublasDgemm(h, oa, ob, m, n, k, (const double *)al, (const double *)A, lda,
                           (const double *)B, ldb, (const double *)be, (double *)C, ldc);
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
    cublasStatus_t st = gemm_call(h, oa, ob, (int)N, (int)M, (int)K, &alpha, B, la, A, lb, &beta,
                                  C, lc);
    if (st != CUBLAS_STATUS_SUCCESS) /* the call's whole description: it names the culprit */
        return fbpc_fail("cuBLAS gemm (row-major M=%lld N=%lld K=%lld, ta=%d tb=%d, lda=%lld "
                         "ldb=%lld ldc=%lld, A=%p B=%p C=%p) failed: %s",
                         (long long)M, (long long)N, (long long)K, ta, tb, (long long)lda,
                         (long long)ldb, (long long)ldc, (const void *)A, (const void *)B,
                         (const void *)C, cublasGetStatusString(st));
    return 0;
}

template int gemm<float>(cublasHandle_t, cudaStream_t, int, int, idx, idx, idx, float,
                         const float *, idx, const float *, idx, float, float *, idx);
template int gemm<double>(cublasHandle_t, cudaStream_t, int, int, idx, idx, idx, double,
                          const double *, idx, const double *, idx, double, double *, idx);
