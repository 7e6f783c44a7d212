/* runtime.c - the BLAS table, the row-major GEMM wrapper and the CPU dispatch level.
 *
 * GEMM is never hand-written: we call the Fortran BLAS of the scipy-openblas32
 * package through function pointers (found at import by src/fastbp/_blas.py).
 * A row-major C = op(A).op(B) is the column-major C^T = op(B)^T.op(A)^T, so the
 * operands are swapped instead of copied (as scikit-learn's _cython_blas does).
 */
#ifndef FBP_T
#include <string.h>
#include "fbp_internal.h"

static fbp_sgemm_fn g_sgemm;
static fbp_dgemm_fn g_dgemm;
static fbp_blas_get_threads_fn g_blas_get_threads;
static fbp_blas_set_threads_fn g_blas_set_threads;
_Thread_local int fbp_serial;
int fbp_isa;

int fbp_init_cpu(int max_level)
{
    int level = FBP_ISA_BASE;
#ifdef FBP_HAVE_DISPATCH
    __builtin_cpu_init(); /* also checks that the OS saves the vector registers */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        level = FBP_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
            level = FBP_ISA_AVX512;
    }
#endif
    fbp_isa = level < max_level ? level : (max_level > 0 ? max_level : 0);
    return fbp_isa;
}

void fbp_set_blas(fbp_sgemm_fn sgemm, fbp_dgemm_fn dgemm, fbp_blas_get_threads_fn get_threads,
                  fbp_blas_set_threads_fn set_threads)
{
    g_sgemm = sgemm;
    g_dgemm = dgemm;
    g_blas_get_threads = get_threads;
    g_blas_set_threads = set_threads;
    set_threads(1);
}

/* The BLAS runs single-threaded inside our pool; threadpoolctl (or anyone) may
 * have raised its count since, and its own pool would then nest in ours. */
static inline void blas_one_thread(void)
{
    if (g_blas_get_threads() != 1)
        g_blas_set_threads(1);
}

/* A GEMM is cut into blocks of rows (or columns) of C, each one single-threaded
 * BLAS call, and the blocks are a function of the shape and of the machine
 * (its CPU count) alone, never of the thread count: a BLAS's result for an
 * element depends on where the call's edges fall (OpenBLAS's Haswell sgemm
 * kernel computes an edge tile differently from an inner one), so the same
 * blocks, run by any threads in any order, give bitwise the same C. Each block
 * does at least GEMM_PAR_MIN multiply-adds, which pays for a hand-off and keeps
 * it above OpenBLAS's small-matrix threshold (1e6 on x86-64); there are at most
 * as many blocks as CPUs, since each block re-packs the other operand (2-4%
 * per extra block when one thread runs them all; docs/threads.md). */
#define GEMM_PAR_MIN ((double)(1 << 20))

struct copy_ctx {
    size_t nbytes;
    const char *src;
    char *dst;
};

#define COPY_CHUNK ((size_t)1 << 20)

static void copy_task(void *p, fbp_idx t0, fbp_idx t1)
{
    const struct copy_ctx *c = p;
    size_t off = (size_t)t0 * COPY_CHUNK, end = (size_t)t1 * COPY_CHUNK;
    if (end > c->nbytes)
        end = c->nbytes;
    memcpy(c->dst + off, c->src + off, end - off);
}

void fbp_copy(size_t nbytes, const void *src, void *dst)
{
    struct copy_ctx c = {nbytes, src, dst};
    fbp_idx nch = (fbp_idx)((nbytes + COPY_CHUNK - 1) / COPY_CHUNK);
    fbp_parallel(fbp_threads_for((fbp_idx)(nbytes / sizeof(float)), FBP_COST_MEM), nch, copy_task, &c);
}

const char *fbp_last_error(void) { return ""; }

#define ENTRY(name) .name = fbp_##name,
const fbp_backend fbp_cpu = {.last_error = fbp_last_error, .bce = fbp_bce,
                             FBP_BACKEND_ENTRIES(ENTRY)};
#undef ENTRY

/* Rows (or columns) of the smallest of nb blocks of total, cut as fbp_gemm_block. */
static fbp_idx smallest_block(fbp_idx total, fbp_idx units, fbp_idx nb)
{
    fbp_idx least = total;
    for (fbp_idx b = 0; b < nb; b++) {
        fbp_idx i0, i1;
        fbp_gemm_block(total, units, nb, b, &i0, &i1);
        least = i1 - i0 < least ? i1 - i0 : least;
    }
    return least;
}

void fbp_gemm_cut(fbp_idx M, fbp_idx N, fbp_idx K, int *rows, fbp_idx *units, fbp_idx *nb)
{
    /* Split the longer side of C: each block then re-reads (packs) the whole of
     * the other operand, and that operand is the smaller one. */
    int r = M >= N;
    fbp_idx total = r ? M : N, u = fbp_nblocks(total, FBP_GEMM_UNIT);
    double other = (double)(r ? N : M) * (double)K;
    fbp_idx most = fbp_machine_cpus() < 64 ? fbp_machine_cpus() : 64;
    fbp_idx n = u < most ? u : most;
    while (n > 1 && (double)smallest_block(total, u, n) * other < GEMM_PAR_MIN)
        n--;
    *rows = r;
    *units = u;
    *nb = n;
}

#define BLAS_S g_sgemm
#define BLAS_D g_dgemm
#define FBP_SELF "runtime.c"
#include "fbp_generic.h"

#else /* generic section */

/* The raw call: row-major C = alpha op(A) op(B) + beta C as the column-major
 * C^T = op(B)^T op(A)^T, operands swapped. */
static void FN(gemm_blas)(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, T alpha,
                          const T *A, fbp_idx lda, const T *B, fbp_idx ldb, T beta, T *C,
                          fbp_idx ldc)
{
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

struct FN(gemm_ctx) {
    struct fbp_gemm_geom g;
    T alpha, beta;
    const T *A, *B;
    T *C;
};

/* Blocks [b0, b1) of C (fbp_gemm_block_at), one BLAS call each. */
static void FN(gemm_task)(void *p, fbp_idx b0, fbp_idx b1)
{
    const struct FN(gemm_ctx) *c = p;
    const struct fbp_gemm_geom *g = &c->g;
    for (fbp_idx b = b0; b < b1; b++) {
        fbp_idx M, N, oa, ob, oc;
        fbp_gemm_block_at(g, b, &M, &N, &oa, &ob, &oc);
        long t0 = fbp_now_ns();
        FN(gemm_blas)(g->ta, g->tb, M, N, g->K, c->alpha, c->A + oa, g->lda, c->B + ob, g->ldb,
                      c->beta, c->C + oc, g->ldc);
        fbp_note_gemm(sizeof(T), (double)M * (double)N * (double)g->K, fbp_now_ns() - t0);
    }
}

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
    blas_one_thread();
    int rows;
    fbp_idx units, nb;
    fbp_gemm_cut(M, N, K, &rows, &units, &nb);
    struct FN(gemm_ctx) c = {{ta, tb, rows, M, N, K, lda, ldb, ldc, units, nb},
                             alpha, beta, A, B, C};
    if (nb == 1) {
        FN(gemm_blas)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* until a block has timed the BLAS (ns < 0), products run on the caller */
    double ns = fbp_gemm_ns(sizeof(T));
    int nt = fbp_threads_for_ns(ns * (double)M * (double)N * (double)K, (int)nb);
    fbp_parallel(nt, nb, FN(gemm_task), &c);
}

/* The floor of a training step: the step's products alone, each one whole BLAS
 * call on `threads` of the BLAS's own threads, no fastbp code between them (the
 * benchmarks' "floor"). widths has L + 1 entries; per layer l, h[l] is
 * (N, widths[l]), dz[l + 1] (N, widths[l + 1]), dh[l] (N, widths[l]), W[l] and
 * dW[l] (widths[l], widths[l + 1]): the forward h W, the weight gradient h^T dz
 * and, except for layer 0, the input gradient dz W^T. Then n_state elements of
 * src copied to dst on fastbp's pool (an optimizer's state streamed once).
 * Returns the mean of `reps` steps, in ns, as the benchmarks time every other
 * contender; the BLAS is left at one thread. */
double FN(fbp_step_floor)(int L, const fbp_idx *widths, fbp_idx N, T *const *h, T *const *dz,
                          T *const *dh, T *const *W, T *const *dW, const T *src, T *dst,
                          fbp_idx n_state, int threads, int reps)
{
    g_blas_set_threads(threads < 1 ? 1 : threads);
    long t0 = fbp_now_ns();
    for (int r = 0; r < reps; r++) {
        for (int l = 0; l < L; l++)
            FN(gemm_blas)(0, 0, N, widths[l + 1], widths[l], 1, h[l], widths[l], W[l],
                          widths[l + 1], 0, h[l + 1], widths[l + 1]);
        for (int l = L - 1; l >= 0; l--) {
            FN(gemm_blas)(1, 0, widths[l], widths[l + 1], N, 1, h[l], widths[l], dz[l + 1],
                          widths[l + 1], 0, dW[l], widths[l + 1]);
            if (l > 0)
                FN(gemm_blas)(0, 1, N, widths[l], widths[l + 1], 1, dz[l + 1], widths[l + 1],
                              W[l], widths[l + 1], 0, dh[l], widths[l]);
        }
        if (n_state)
            fbp_copy((size_t)n_state * sizeof(T), src, dst);
    }
    double mean = (double)(fbp_now_ns() - t0) / (reps > 0 ? reps : 1);
    g_blas_set_threads(1);
    return mean;
}

#endif
