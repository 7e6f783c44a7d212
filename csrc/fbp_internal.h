/* fbp_internal.h - helpers shared by the kernel files; not part of the API.
 *
 * Threads: a kernel runs on several OpenMP threads only when its work is large
 * enough to pay for the fork/join (FBP_PAR_MIN elements per thread), because on
 * small arrays the join costs more than the loop and our idle workers would
 * compete with BLAS's threads for the cores.
 *
 * Determinism: a reduction is cut into at most FBP_NBLK_MAX blocks whose size
 * depends on n only; each block is summed in a fixed order by one thread and the
 * partials are added in block order, so the thread count never changes a bit.
 */
#ifndef FBP_INTERNAL_H
#define FBP_INTERNAL_H

#include "fastbp.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Runtime dispatch for the exp-heavy workers. Wheels target plain x86-64
 * (SSE2); a worker marked FBP_DISPATCH is compiled twice, once as is and once
 * for AVX2+FMA, and fbp_avx2 (set once by fbp_init_cpu at import, from
 * __builtin_cpu_supports) picks the copy: about 2x on softmax and sigmoid on
 * CPUs that have AVX2, nothing changes elsewhere, no -march=native needed.
 * (GCC's target_clones resolver picked the baseline on a CPU with AVX2 here,
 * so the choice is made explicitly.) Build with -DFBP_NO_DISPATCH to drop it. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FBP_NO_DISPATCH)
#define FBP_HAVE_DISPATCH 1
#define FBP_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif
extern int fbp_avx2;

#define FBP_PAR_MIN ((fbp_idx)32768)
#define FBP_NBLK_MAX 64
#define FBP_RED_MIN ((fbp_idx)4096) /* smallest block of a flat reduction */

/* Set while a training step runs on this OS thread: inside a step the BLAS
 * owns the cores, and our epilogues (a few percent of the work) run on the
 * calling thread, so no OpenMP worker of ours spins while the GEMM's threads
 * need the cores. Thread-local, so concurrent Python threads stay independent. */
extern _Thread_local int fbp_serial;

static inline int fbp_threads_for(fbp_idx work)
{
    if (fbp_serial || work < 2 * FBP_PAR_MIN)
        return 1;
    int nt = fbp_get_num_threads();
    fbp_idx cap = work / FBP_PAR_MIN;
    if (cap < nt)
        nt = (int)cap;
    return nt < 1 ? 1 : nt;
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

#endif /* FBP_INTERNAL_H */
