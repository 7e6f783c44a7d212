/* fbp_internal.h - helpers shared by the kernel files; not part of the API.
 *
 * Threads: a kernel splits its work over fastbp's own pool (threads.c) only when
 * the work is large enough to pay for the hand-off, as measured on this machine
 * (fbp_threads_for_ns); smaller kernels run on the calling thread.
 *
 * Determinism: a reduction is cut into at most FBP_NBLK_MAX blocks whose size
 * depends on n only; each block is summed in a fixed order by one thread and the
 * partials are added in block order, so the thread count never changes a bit.
 */
#ifndef FBP_INTERNAL_H
#define FBP_INTERNAL_H

#include <stdio.h>
#include <stdlib.h>

#include "fastbp.h"

/* A switch's default: a code no case knows. The binding checks every code before
 * any C runs, so this is a bug in fastbp; computing something else instead
 * (the identity, Adam) would hide it, so the process stops with its name. */
__attribute__((noreturn, cold)) static inline void fbp_bad_code(const char *file, int line,
                                                                const char *what, int code)
{
    fprintf(stderr, "fastbp: %s:%d: unknown %s code %d (a bug in fastbp)\n", file, line, what,
            code);
    abort();
}
#define FBP_BAD_CODE(what, code) fbp_bad_code(__FILE__, __LINE__, what, (int)(code))

/* ---- runtime dispatch by instruction set ---------------------------------------
 * Wheels target the portable baseline (x86-64: SSE2). A worker written once as an
 * always-inline function `body` is compiled three times by
 * FBP_DISPATCHED(ret, name, body, params, args): as is, for AVX2+FMA and for
 * AVX-512 (F, DQ, BW, VL); name() calls the copy that fbp_isa (set once by
 * fbp_init_cpu from __builtin_cpu_supports) selects. -DFBP_NO_DISPATCH drops the
 * copies. Bodies return a value (int 0 when there is nothing to return). */
enum { FBP_ISA_BASE = 0, FBP_ISA_AVX2 = 1, FBP_ISA_AVX512 = 2 };
extern int fbp_isa;

#define FBP_CAT_(a, b) a##b
#define FBP_CAT(a, b) FBP_CAT_(a, b)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FBP_NO_DISPATCH)
#define FBP_HAVE_DISPATCH 1
#define FBP_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FBP_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512")))
#define FBP_DISPATCHED(ret, name, body, params, args)                                     \
    static ret FBP_CAT(name, _base) params { return body args; }                          \
    static FBP_TARGET_AVX2 ret FBP_CAT(name, _avx2) params { return body args; }          \
    static FBP_TARGET_AVX512 ret FBP_CAT(name, _avx512) params { return body args; }      \
    static inline ret name params                                                         \
    {                                                                                     \
        if (fbp_isa >= FBP_ISA_AVX512)                                                    \
            return FBP_CAT(name, _avx512) args;                                           \
        if (fbp_isa >= FBP_ISA_AVX2)                                                      \
            return FBP_CAT(name, _avx2) args;                                             \
        return FBP_CAT(name, _base) args;                                                 \
    }
#else
#define FBP_DISPATCHED(ret, name, body, params, args) \
    static inline ret name params { return body args; }
#endif

#if defined(__x86_64__) || defined(__i386__)
#define FBP_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FBP_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define FBP_CPU_RELAX() ((void)0)
#endif

#ifndef FBP_INLINE
#define FBP_INLINE static inline __attribute__((always_inline))
#endif

/* ---- threads (threads.c) -------------------------------------------------------- */


/* A part of a parallel loop: tasks [t0, t1) of the loop's ntasks. */
typedef void (*fbp_task_fn)(void *ctx, fbp_idx t0, fbp_idx t1);

/* fn over tasks [0, ntasks) on up to nt threads, the caller's among them. The
 * tasks are cut into parts (a function of ntasks and nt) that the threads claim
 * one at a time, so the caller takes the parts of a worker that has not started.
 * Which thread runs a task never changes a result: tasks write disjoint outputs
 * or their own partial, and a task's bounds never depend on who runs it. */
void fbp_parallel(int nt, fbp_idx ntasks, fbp_task_fn fn, void *ctx);

/* Costs measured on this machine (threads.c): the time of one element of a
 * memory pass (measured once), and of one multiply-add of the BLAS's sgemm
 * (dsize 4) or dgemm (8) as blocks run (-1 until one has). fbp_note_gemm records
 * a block's time. */
double fbp_pass_ns(void);
double fbp_gemm_ns(int dsize);
void fbp_note_gemm(int dsize, double madds, long ns);
/* The time of one byte of a batch's row gather, as serial gathers run (-1 until
 * one has): rows come from anywhere in the dataset, often past the caches, so a
 * memory pass's cost does not predict it. */
double fbp_gather_ns(void);
void fbp_note_gather(double bytes, long ns);
long fbp_now_ns(void);

/* Threads for work_ns of work that splits into at most `most` parts: 1 unless
 * every thread gets at least twice the time a worker takes to join (its spin
 * hand-off, or its wake-up when all workers sleep; both measured as jobs run)
 * and at least FBP_PART_MIN_NS, and never while the pool backs off because its
 * recent jobs cost more than they saved (a busy neighbour, a late wake-up). */
int fbp_threads_for_ns(double work_ns, int most);

/* The least time a part of a parallel job should take: below it, the cache
 * lines a part hands to the next kernel on another core cost about what the
 * part saves. A policy, in time rather than elements, so it travels. */
#define FBP_PART_MIN_NS 5000.0

/* Work units of the element-wise loops: one pass over one element of memory
 * (FBP_COST_MEM), an exp or a tanh per element (FBP_COST_EXP), in units of
 * fbp_pass_ns(). */
#define FBP_COST_MEM 1 /* a pass over memory: relu, masks, mse, the updates */
#define FBP_COST_EXP 4 /* an exp or a tanh per element */
#define FBP_COST_GATHER 2 /* a gathered row, until fbp_gather_ns has measured one */
#define FBP_NBLK_MAX 64
#define FBP_RED_MIN ((fbp_idx)4096) /* smallest block of a flat reduction */
#define FBP_CHUNK ((fbp_idx)4096)   /* elements per task of an elementwise loop */

/* The machine's online CPUs (not this process's affinity mask, nor the thread
 * count): what the GEMMs' fixed blocks are cut by (runtime.c). */
int fbp_machine_cpus(void);

/* Set on the pool's workers: a task never starts a parallel loop of its own. */
extern _Thread_local int fbp_serial;

/* Threads for a loop over n elements of the given cost (see fbp_threads_for_ns). */
static inline int fbp_threads_for(fbp_idx n, int cost)
{
    if (fbp_serial)
        return 1;
    return fbp_threads_for_ns((double)n * (double)cost * fbp_pass_ns(), 1 << 30);
}

/* Block size of a flat reduction over n items, a function of n alone. */
static inline fbp_idx fbp_block_size(fbp_idx n, fbp_idx min_block)
{
    fbp_idx b = (n + FBP_NBLK_MAX - 1) / FBP_NBLK_MAX;
    return b < min_block ? min_block : b;
}

static inline fbp_idx fbp_nblocks(fbp_idx n, fbp_idx bs)
{
    return n <= 0 ? 0 : (n + bs - 1) / bs;
}

static inline double fbp_sum_partials(const double *part, fbp_idx nb)
{
    double s = 0.0;
    for (fbp_idx i = 0; i < nb; i++)
        s += part[i];
    return s;
}

/* [i0, i1) of task range [t0, t1) of an elementwise loop over n items in FBP_CHUNKs. */
static inline void fbp_chunk_range(fbp_idx n, fbp_idx t0, fbp_idx t1, fbp_idx *i0, fbp_idx *i1)
{
    *i0 = t0 * FBP_CHUNK;
    *i1 = t1 * FBP_CHUNK < n ? t1 * FBP_CHUNK : n;
}

/* ---- how a GEMM is cut (runtime.c) ------------------------------------------------
 * C (M, N) = op(A) op(B) with inner dim K is cut into nb blocks of its rows
 * (rows 1) or columns, each a multiple of FBP_GEMM_UNIT (the BLAS kernels'
 * register blocking divides it), a function of the shape and the machine's CPU
 * count alone, never of the thread count; each block is one single-threaded
 * BLAS call, so any threads give bitwise the same C. fbp_gemm and bf16.c's
 * fbp_gemm_bf16 cut alike. */
#define FBP_GEMM_UNIT 16
void fbp_gemm_cut(fbp_idx M, fbp_idx N, fbp_idx K, int *rows, fbp_idx *units, fbp_idx *nb);

/* Block b of nb over total rows (or columns) in `units` units: [*i0, *i1). */
static inline void fbp_gemm_block(fbp_idx total, fbp_idx units, fbp_idx nb, fbp_idx b,
                                  fbp_idx *i0, fbp_idx *i1)
{
    fbp_idx e = units * (b + 1) / nb * FBP_GEMM_UNIT;
    *i0 = units * b / nb * FBP_GEMM_UNIT;
    *i1 = e < total ? e : total;
}

/* A cut product: C (M, N) = op(A) op(B), inner dim K, row strides lda, ldb, ldc,
 * cut as fbp_gemm_cut says (rows: C's rows, else its columns). */
struct fbp_gemm_geom {
    int ta, tb, rows;
    fbp_idx M, N, K, lda, ldb, ldc, units, nblocks;
};

/* Block b of a cut product (fbp_gemm_block): its C is (*m, *n), and its op(A),
 * op(B) and C start *oa, *ob, *oc elements into the whole product's. Row i of
 * op(A) starts at A + i lda, or at column i of A; column j of op(B) at B + j, or
 * at row j of B. */
static inline void fbp_gemm_block_at(const struct fbp_gemm_geom *g, fbp_idx b, fbp_idx *m,
                                     fbp_idx *n, fbp_idx *oa, fbp_idx *ob, fbp_idx *oc)
{
    fbp_idx i0, i1;
    fbp_gemm_block(g->rows ? g->M : g->N, g->units, g->nblocks, b, &i0, &i1);
    *m = g->rows ? i1 - i0 : g->M;
    *n = g->rows ? g->N : i1 - i0;
    *oa = g->rows ? (g->ta ? i0 : i0 * g->lda) : 0;
    *ob = g->rows ? 0 : (g->tb ? i0 * g->ldb : i0);
    *oc = g->rows ? i0 * g->ldc : i0;
}

/* ---- the typed kernels one file calls in another ------------------------------------
 * Compiled once per element type from one source (fbp_generic.h): T float with
 * suffix _f32, T double with _f64. Shapes as in fastbp.h. */
#define FBP_DECLARE(T, S)                                                               \
    /* runtime.c. Row-major C (M, N) = alpha op(A) (M, K) . op(B) (K, N) + beta C;     \
     * ta/tb transpose A/B; lda/ldb/ldc are row strides. Split into independent     \
     * single-threaded BLAS calls over the pool. */                                     \
    void fbp_gemm_##S(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, T alpha,        \
                      const T *A, fbp_idx lda, const T *B, fbp_idx ldb, T beta, T *C,  \
                      fbp_idx ldc);                                                     \
    /* dense.c. y (N, O) in place: y = act(y + b), b (O,) or NULL. dy, y, dz (N, O),   \
     * db (O,): dz = dy act'(y) and db (+)= column sums of dz in one pass (dz may     \
     * alias dy; NULL with act NONE). */                                               \
    void fbp_bias_act_##S(fbp_idx N, fbp_idx O, const T *b, int act, T *y);            \
    /* dense.c. z, y (N, O): z += b, y = act(z) (z kept for the backward pass). */    \
    void fbp_bias_act_keep_##S(fbp_idx N, fbp_idx O, const T *b, int act, T *z, T *y); \
    void fbp_act_backward_bias_grad_##S(fbp_idx N, fbp_idx O, int act, const T *dy,     \
                                        const T *y, const uint8_t *keep, T scale,      \
                                        T *dz, T *db, int accumulate);                  \
    /* dropout.c. h, hd, keep (N, O): hd = h keep / (1 - p), keep from fbp_rng.h. */   \
    void fbp_dropout_##S(fbp_idx N, fbp_idx O, const T *h, T *hd, uint8_t *keep,       \
                         double p, uint64_t seed, int64_t step, int layer, int64_t row0); \
    /* losses.c. Return the sum over rows of w_r loss_r (w NULL: 1) over W and     \
     * write dz = w_r (p - t) / W, the gradient of that (W: the batch's total       \
     * weight: N, sum w, or a data-parallel batch's); labels NULL: targets t. eps   \
     * > 0: the log-losses reported as scikit-learn's, probabilities clipped to     \
     * [eps, 1 - eps] (fbp_step_opts.loss_eps). */                                   \
    double fbp_softmax_xent_##S(fbp_idx N, fbp_idx C, const T *z, const int64_t *labels, \
                                const T *t, const T *w, double W, double eps, T *dz);    \
    double fbp_mse_##S(fbp_idx N, fbp_idx D, const T *y, const T *t, const T *w,        \
                       double W, T *dy);                                                \
    double fbp_bce_##S(fbp_idx N, fbp_idx C, const T *z, const T *t, const T *w,        \
                       double W, double eps, T *dz);                                    \
    double fbp_poisson_##S(fbp_idx N, fbp_idx C, const T *z, const T *t, const T *w,    \
                           double W, T *dz);                                            \
    /* optim.c. p -= lr (g + wd p); x *= s; dst += a src; x to [-a, a]. */             \
    void fbp_sgd_##S(fbp_idx n, T *p, const T *g, T lr, T wd);                         \
    void fbp_scale_##S(fbp_idx n, T *x, T s);                                          \
    void fbp_axpy_##S(fbp_idx n, T a, const T *src, T *dst);                           \
    void fbp_clip_value_##S(fbp_idx n, T *g, T limit);                                 \
    /* One parameter's optimizer step (PyTorch's rules), p, g (n,) and the state      \
     * v, s (n,) the optimizer keeps (NULL where it keeps none); wd: this tensor's.   \
     */                                                                                 \
    void fbp_optimizer_step_##S(fbp_idx n, T *p, const T *g, T *v, T *s, T *a,         \
                                const fbp_step_opts *o, double wd);                    \
    double fbp_sumsq_##S(fbp_idx n, const T *x);

FBP_DECLARE(float, f32)
FBP_DECLARE(double, f64)
#undef FBP_DECLARE

#endif /* FBP_INTERNAL_H */
