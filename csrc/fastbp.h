/* fastbp.h - the whole C API of fastbp's CPU kernels.
 *
 * Layout: row-major, batch-major. Names of dims: N batch rows, I in features
 * (In in prototypes, since <complex.h> takes the name I), O out features,
 * C classes, n a flat element count.
 *
 * The entry points have the shapes of fbp_api.h's backend table (the same as the
 * CUDA kernels'), take the element size dsize (4 float32, 8 float64) and void
 * pointers, and call the kernels that csrc/<concern>.c compiles once per element
 * type (fbp_internal.h). The C trusts its caller (src/fastbp/_core.pyx) to have
 * checked shapes, dtypes, contiguity and label ranges. Kernels never allocate;
 * outputs are caller-owned. Reductions (bias grads, losses, norms) run in a
 * fixed block order, so results are bitwise identical for any thread count.
 */
#ifndef FASTBP_H
#define FASTBP_H

#include <stddef.h>
#include <stdint.h>

#include "fbp_api.h"

typedef ptrdiff_t fbp_idx;

/* ---- the entry points (fbp_api.h's table; dev and stream are ignored) ------------ */

/* The CPU backend: the entries below, in fbp_api.h's table (runtime.c). */
FBP_API extern const fbp_backend fbp_cpu;

FBP_API const char *fbp_last_error(void); /* the CPU entries never fail: "" */

/* losses.c: labels (N,): {min, max, first index outside [0, C) or -1, its value}. */
FBP_API int fbp_check_labels(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                             int64_t out[4]);

/* activations.c: x, y (n,): y = act(x), y may alias x. dy, y, dx (n,):
 * dx = dy * act'(y) from the forward OUTPUT y; dx may alias dy. */
FBP_API int fbp_act_forward(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                            void *y);
FBP_API int fbp_act_backward(int dev, void *stream, int dsize, int64_t n, int act,
                             const void *dy, const void *y, void *dx);

/* dense.c: x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */
FBP_API int fbp_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t In,
                              int64_t O, const void *x, const void *W, const void *b, int act,
                              void *y);
/* dense.c: dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,).
 * dz = dy * act'(y) (dz may alias dy; NULL with act NONE); dx = dz.W^T (skipped
 * if dx is NULL); dW (+)= x^T.dz; db (+)= column sums of dz. */
FBP_API int fbp_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t In,
                               int64_t O, const void *dy, const void *x, const void *W,
                               const void *y, int act, void *dz, void *dx, void *dW, void *db,
                               int accumulate);

/* losses.c: z, dz (N, C); labels (N,) in [0, C), or (labels NULL) t (N, C) rows
 * of class probabilities. dz = (softmax(z) - t) / N, written in the pass that
 * computes the loss; dz may alias z. *loss = the mean loss (NaN if N == 0). */
FBP_API int fbp_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C,
                             const void *z, const int64_t *labels, const void *t, void *dz,
                             double *loss);
/* losses.c: y, t, dy (N, D): *loss = 0.5 sum((y - t)^2) / N, dy = (y - t) / N. */
FBP_API int fbp_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
                    const void *t, void *dy, double *loss);
/* losses.c: z, t, dz (N, C), t in [0, 1]: sigmoid + binary cross-entropy, *loss =
 * sum over outputs, mean over rows; dz = (sigmoid(z) - t) / N (may alias z). */
FBP_API int fbp_bce(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                    const void *t, void *dz, double *loss);
/* losses.c: z, t, dz (N, C), t >= 0, z the log of the predicted mean: the half
 * Poisson deviance as scikit-learn's MLPRegressor(loss="poisson") defines it, *loss
 * = sum over outputs, mean over rows of exp(z) - t z + xlogy(t, t) - t; dz =
 * (exp(z) - t) / N (may alias z). CPU only: not in the backend table (the binding
 * calls it directly). */
FBP_API int fbp_poisson(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                        const void *t, void *dz, double *loss);

/* optim.c: p, g (n,): p -= lr (g + wd p). g (n,) clipped in place to
 * [-limit, limit], NaN stays NaN. x (n,) *= s. */
FBP_API int fbp_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g,
                    double lr, double wd);
FBP_API int fbp_clip_value(int dev, void *stream, int dsize, int64_t n, void *g, double limit);
FBP_API int fbp_scale(int dev, void *stream, int dsize, int64_t n, void *x, double s);
/* optim.c: k arrays xs[i] (ns[i],): out[i] = sum (x / div)^2 in double, fixed block
 * order (div 0: of x^2), or (maxabs) max |x|, NaN if any element is NaN. */
FBP_API int fbp_sumsq_many(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                           const void *const *xs, double div, int maxabs, double *out);

/* ---- runtime.c: BLAS table and CPU dispatch; threads.c: the thread pool ------ */

/* The Fortran-ABI GEMMs of the BLAS fastbp calls (column-major, 32-bit ints). */
typedef void (*fbp_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             float *alpha, float *a, int *lda, float *b, int *ldb,
                             float *beta, float *c, int *ldc);
typedef void (*fbp_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             double *alpha, double *a, int *lda, double *b, int *ldb,
                             double *beta, double *c, int *ldc);
/* The BLAS's own thread count: fastbp keeps it at 1 and splits each GEMM over
 * its own pool (threads.c), so the BLAS never runs a thread pool of its own. */
typedef int (*fbp_blas_get_threads_fn)(void);
typedef void (*fbp_blas_set_threads_fn)(int n);

/* Set once at import (src/fastbp/_blas.py finds the library, _core.pyx passes it). */
FBP_API void fbp_set_blas(fbp_sgemm_fn sgemm, fbp_dgemm_fn dgemm,
                          fbp_blas_get_threads_fn get_threads,
                          fbp_blas_set_threads_fn set_threads);

/* Threads of fastbp's pool, which runs the kernels and the GEMMs. n <= 0 restores
 * the default (OMP_NUM_THREADS, else the CPUs this process may run on). */
FBP_API void fbp_set_num_threads(int n);
FBP_API int fbp_get_num_threads(void);
/* The calling thread's own count, over the process-wide one, for the calls this
 * thread makes (n <= 0: none; fastbp.local_threads); 0 when it has none. */
FBP_API void fbp_set_local_threads(int n);
FBP_API int fbp_get_local_threads(void);
FBP_API int fbp_cpu_count(void);
/* Workers started so far; *create_error: errno of the last failed start, or 0. */
FBP_API int fbp_pool_workers(int *create_error);
/* What the pool has measured: out = {a sleeping worker's wake-up latency (us),
 * a spinning worker's hand-off latency (us), one element of a memory pass (ns),
 * parallel jobs run, jobs kept serial by the backoff, backoff left (ms), parallel
 * jobs that found every worker asleep}. */
FBP_API void fbp_pool_stats(double out[7]);
/* Tests only: on != 0 splits every loop and product that has parts over the
 * thread count, whatever it costs; returns the previous setting. */
FBP_API int fbp_set_force_parallel(int on);
/* How long an idle worker spins before it sleeps (microseconds). */
FBP_API void fbp_set_wait_us(double us);
FBP_API double fbp_get_wait_us(void);
/* Tests only: the spinning worker's hand-off latency the pool decides with
 * (microseconds), as a spell of load would have left it. */
FBP_API void fbp_set_handoff_us(double us);

/* Detect the CPU (once) and use the widest dispatched copies up to max_level
 * (0 baseline, 1 AVX2+FMA, 2 AVX-512); returns the level in use. */
FBP_API int fbp_init_cpu(int max_level);

/* src, dst (nbytes,): memcpy split over the pool. Unused by the kernels: it is the
 * floor that bench/ holds memory-bound kernels against (called through ctypes). */
FBP_API void fbp_copy(size_t nbytes, const void *src, void *dst);
/* The floor of a training step through the BLAS in use (the benchmarks): the
 * step's products for layer widths[0..L] at batch N into the given buffers
 * (shapes in runtime.c), each one whole BLAS call on `threads` BLAS threads,
 * then n_state elements copied; the mean of reps steps, in ns. */
FBP_API double fbp_step_floor_f32(int L, const fbp_idx *widths, fbp_idx N, float *const *h,
                                  float *const *dz, float *const *dh, float *const *W,
                                  float *const *dW, const float *src, float *dst,
                                  fbp_idx n_state, int threads, int reps);
FBP_API double fbp_step_floor_f64(int L, const fbp_idx *widths, fbp_idx N, double *const *h,
                                  double *const *dz, double *const *dh, double *const *W,
                                  double *const *dW, const double *src, double *dst,
                                  fbp_idx n_state, int threads, int reps);

/* ---- step.c: an MLP's whole training step --------------------------------------- */

/* An MLP of L dense layers and its workspace, all buffers caller-owned (the
 * model allocates them once): buf[k][l] is buffer k (enum fbp_buf) of layer l,
 * of the shapes fbp_api.h gives; buf[k] is NULL for a buffer the model does not
 * have (optimizer state it does not keep, hd without dropout). Elements have size
 * dsize. */
typedef struct fbp_mlp {
    int dsize;
    int L;
    const fbp_idx *sizes; /* (L+1,): widths, sizes[0] = I, sizes[L] = outputs */
    const int *act;       /* (L,): each layer's activation; the last is usually NONE */
    int loss;             /* enum fbp_loss */
    fbp_idx cap;          /* rows the h/dh buffers hold */
    void **buf[FBP_NBUF];
    const double *drop;   /* (L,) dropout rates in [0, 1), or NULL: none */
    uint8_t **keep;       /* (L,): (cap, sizes[l+1]) masks where drop[l] > 0 */
    /* gather buffers of fbp_mlp_epoch: xb (cap, I), lb (cap,), tb (cap, sizes[L]),
     * wb (cap,) sample weights */
    void *xb, *tb, *wb;
    int64_t *lb;
    /* matmul precision (enum fbp_mm; 0 float32). FBP_MM_BF16 (float32 models):
     * w16[l] (sizes[l], sizes[l+1]) and a16[l] (cap, sizes[l]) hold the bf16
     * copies of the weights (made once per step) and of each layer's input,
     * g16 (cap, max sizes[l+1]) that of a layer's output gradient; each has room
     * for float32 elements (bf16.c's two paths). */
    int mm;
    void **w16, **a16;
    void *g16;
} fbp_mlp;

/* What an epoch (or a run of its batches) returns. loss_sum and weight_sum are
 * running sums: on entry those of the epoch's earlier batches (0 for its first
 * run), to which each batch adds in turn, so that the epoch's sums are the same
 * however it is split into runs. */
typedef struct fbp_epoch_out {
    /* in: the sums so far (0 at an epoch's start), so that an epoch run in
     * several calls adds its batches in the same order as one call would */
    double loss_sum;   /* + sum over batches of (loss + reg) times the batch's weight */
    double weight_sum; /* + sum of the batches' weights (rows, or sample weights) */
    double grad_norm;  /* the last batch's, as fbp_step_out */
    int64_t ncorrect;
    double *batches;   /* set by the caller: (s1 - s0, 2) receiving each batch's
                        * (loss, reg), or NULL */
} fbp_epoch_out;

/* x (N, I) with 0 < N <= m->cap; labels (N,) in [0, C) for XENT, else targets
 * t (N, sizes[L]); w (N,) sample weights or NULL. FORWARD fills h; LOSS adds the
 * loss; GRAD fills dW, db (weight decay included); TRAIN also clips and updates
 * the params; UPDATE only clips and updates from dW, db. One call does it all:
 * GEMMs through the BLAS, everything else here. */
FBP_API int fbp_mlp_step(const fbp_mlp *m, int64_t N, const void *x, const int64_t *labels,
                         const void *t, const void *w, const fbp_step_opts *opt,
                         fbp_step_out *out);
/* Batches [s0, s1) of an epoch of TRAIN steps: X (n, I), labels (n,) or t (n, C),
 * w (n,) or NULL, order (n,) a permutation of [0, n); batch s holds rows
 * order[s B : (s+1) B] (the last one partial), gathered into m->xb/lb/tb/wb and
 * stepped; opt->t and opt->step advance by one per batch. */
FBP_API int fbp_mlp_epoch(const fbp_mlp *m, int64_t n, const void *X, const int64_t *labels,
                          const void *t, const void *w, const int64_t *order, int64_t B,
                          int64_t s0, int64_t s1, const fbp_step_opts *opt, fbp_epoch_out *out);

/* ---- bf16.c: bfloat16 matmul precision ----------------------------------------------- */

/* A row-major bfloat16 GEMM with float32 accumulation, as oneDNN's
 * dnnl_gemm_bf16bf16f32: C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C, A and
 * B the bf16 bits (uint16), transa/transb 'N' or 'T'; returns 0 on success. */
typedef int (*fbp_gemm_bf16_fn)(char transa, char transb, int64_t M, int64_t N, int64_t K,
                                float alpha, const uint16_t *A, int64_t lda,
                                const uint16_t *B, int64_t ldb, float beta, float *C,
                                int64_t ldc);
/* The provider's bf16 GEMM (src/fastbp/_bf16.py), or NULL: the emulated path
 * (operands rounded to bf16 values held in float32, then the float32 BLAS). */
FBP_API void fbp_set_gemm_bf16(fbp_gemm_bf16_fn fn);
FBP_API int fbp_bf16_native(void);
/* The first nonzero status the provider returned since the last clear (the
 * binding raises it after a call); clear != 0 resets it. */
FBP_API int fbp_bf16_status(int clear);
/* x (n,) float32 -> y (n,): x rounded to bfloat16 (nearest, ties to even), as
 * bf16 bits (native) or as bf16 values in float32; split over the pool. */
FBP_API void fbp_bf16_copy(int native, fbp_idx n, const float *x, void *y);
/* Row-major C (M, N) = alpha op(A) op(B) + beta C with A, B bf16 buffers (native:
 * bits; else float32 values) and float32 C, cut into blocks as fbp_gemm. */
FBP_API void fbp_gemm_bf16(int native, int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K,
                           float alpha, const void *A, fbp_idx lda, const void *B, fbp_idx ldb,
                           float beta, float *C, fbp_idx ldc);
/* dense_forward / dense_backward (float32) with bf16 products; x16 (N, I), W16
 * (I, O), g16 (N, O): the caller's bf16 buffers (room for float32 elements). */
FBP_API int fbp_dense_forward_bf16(int64_t N, int64_t In, int64_t O, const float *x,
                                   const float *W, const float *b, int act, float *y,
                                   void *x16, void *W16);
FBP_API int fbp_dense_backward_bf16(int64_t N, int64_t In, int64_t O, const float *dy,
                                    const float *x, const float *W, const float *y, int act,
                                    float *dz, float *dx, float *dW, float *db, int accumulate,
                                    void *x16, void *W16, void *g16);
/* fbp_step_floor's products in bf16 through the provider (bf16 operands h16, dz16,
 * W16; float32 h, dh, dW); -1 without a provider. */
FBP_API double fbp_step_floor_bf16(int L, const fbp_idx *widths, fbp_idx N, void *const *h16,
                                   void *const *dz16, float *const *h, float *const *dh,
                                   void *const *W16, float *const *dW, int reps);

#endif /* FASTBP_H */
