/* runtime.c - the BLAS table, the row-major GEMM wrapper and our thread count.
 *
 * GEMM is never hand-written: we call the Fortran BLAS that SciPy ships, through
 * the function pointers of scipy.linalg.cython_blas (set by _core.pyx at import).
 * A row-major C = op(A).op(B) is the column-major C^T = op(B)^T.op(A)^T, so the
 * operands are swapped instead of copied (as scikit-learn's _cython_blas does).
 */
#ifndef FBP_T
#include <string.h>
#include "fbp_internal.h"

static fbp_sgemm_fn g_sgemm;
static fbp_dgemm_fn g_dgemm;
static int g_num_threads; /* 0: follow omp_get_max_threads() */
_Thread_local int fbp_serial;
int fbp_avx2;

int fbp_init_cpu(int enable)
{
#ifdef FBP_HAVE_DISPATCH
    __builtin_cpu_init();
    fbp_avx2 = enable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)enable;
    fbp_avx2 = 0;
#endif
    return fbp_avx2;
}

void fbp_set_blas(fbp_sgemm_fn sgemm, fbp_dgemm_fn dgemm)
{
    g_sgemm = sgemm;
    g_dgemm = dgemm;
}

void fbp_set_num_threads(int n) { g_num_threads = n > 0 ? n : 0; }

int fbp_get_num_threads(void)
{
#ifdef _OPENMP
    return g_num_threads > 0 ? g_num_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

int fbp_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void fbp_copy(size_t nbytes, const void *src, void *dst)
{
    const size_t chunk = (size_t)1 << 20;
    fbp_idx nch = (fbp_idx)((nbytes + chunk - 1) / chunk);
    int nt = fbp_threads_for((fbp_idx)(nbytes / sizeof(float)));
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx c = 0; c < nch; c++) {
        size_t off = (size_t)c * chunk, len = nbytes - off < chunk ? nbytes - off : chunk;
        memcpy((char *)dst + off, (const char *)src + off, len);
    }
}

#define BLAS_S g_sgemm
#define BLAS_D g_dgemm
#define FBP_SELF "runtime.c"
#include "fbp_generic.h"

#else /* generic section */

void FN(fbp_gemm)(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, T alpha,
                  const T *A, fbp_idx lda, const T *B, fbp_idx ldb, T beta,
                  T *C, fbp_idx ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) { /* C = beta * C, with beta == 0 meaning "overwrite" */
        for (fbp_idx i = 0; i < M; i++)
            for (fbp_idx j = 0; j < N; j++)
                C[i * ldc + j] = beta == (T)0 ? (T)0 : beta * C[i * ldc + j];
        return;
    }
    char opa = tb ? 'T' : 'N', opb = ta ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K;
    int la = (int)(ldb > 1 ? ldb : 1), lb = (int)(lda > 1 ? lda : 1);
    int lc = (int)(ldc > 1 ? ldc : 1);
    T a = alpha, b = beta;
    if (sizeof(T) == sizeof(float))
        BLAS_S(&opa, &opb, &m, &n, &k, (float *)&a, (float *)B, &la, (float *)A, &lb,
               (float *)&b, (float *)C, &lc);
    else
        BLAS_D(&opa, &opb, &m, &n, &k, (double *)&a, (double *)B, &la, (double *)A, &lb,
               (double *)&b, (double *)C, &lc);
}

#endif
