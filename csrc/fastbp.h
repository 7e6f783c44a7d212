/* fastbp.h - the whole C API of fastbp's CPU kernels.
 *
 * Layout: row-major, batch-major. Names of dims: N batch rows, I in features
 * (In in prototypes, since <complex.h> takes the name I),
 * O out features, C classes, n a flat element count. Every kernel exists for
 * float (suffix _f32) and double (suffix _f64); T below stands for either.
 *
 * The C trusts its caller (src/fastbp/_core.pyx) to have checked shapes, dtypes,
 * contiguity and label ranges. Kernels never allocate; outputs are caller-owned.
 * Reductions (bias grads, losses, norms) run in a fixed block order, so results
 * are bitwise identical for any thread count.
 */
#ifndef FASTBP_H
#define FASTBP_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fbp_idx;

enum fbp_act { FBP_ACT_NONE = 0, FBP_ACT_RELU = 1, FBP_ACT_SIGMOID = 2, FBP_ACT_TANH = 3 };

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
void fbp_set_blas(fbp_sgemm_fn sgemm, fbp_dgemm_fn dgemm, fbp_blas_get_threads_fn get_threads,
                  fbp_blas_set_threads_fn set_threads);

/* Threads of fastbp's pool, which runs the kernels and the GEMMs. n <= 0 restores
 * the default (OMP_NUM_THREADS, else the CPUs this process may run on). */
void fbp_set_num_threads(int n);
int fbp_get_num_threads(void);
int fbp_cpu_count(void);
/* Workers started so far; *create_error: errno of the last failed start, or 0. */
int fbp_pool_workers(int *create_error);
/* How long an idle worker yields before it sleeps (microseconds). */
void fbp_set_wait_us(double us);
double fbp_get_wait_us(void);

/* Detect the CPU (once) and use the widest dispatched copies up to max_level
 * (0 baseline, 1 AVX2+FMA, 2 AVX-512); returns the level in use. */
int fbp_init_cpu(int max_level);

/* src, dst (nbytes,): memcpy split over the pool. Unused by the kernels: it is the
 * floor that bench/ holds memory-bound kernels against (called through ctypes). */
void fbp_copy(size_t nbytes, const void *src, void *dst);

/* losses.c: labels (N,). Index of the first label outside [0, C), or -1. */
fbp_idx fbp_first_bad_label(fbp_idx N, const int64_t *labels, int64_t C);

/* ---- step.c: an MLP's whole training step ------------------------------------ */

enum fbp_loss { FBP_LOSS_XENT = 0, FBP_LOSS_MSE = 1 };
enum fbp_mode { FBP_STEP_FORWARD = 0, FBP_STEP_LOSS = 1, FBP_STEP_GRAD = 2, FBP_STEP_TRAIN = 3 };

/* An MLP of L dense layers and its workspace, all buffers caller-owned (the
 * model allocates them once). Elements are the step function's T.
 * sizes (L+1,): widths, sizes[0] = I, sizes[L] = outputs. For l in [0, L):
 *   W[l], dW[l], vW[l] (sizes[l], sizes[l+1]);  b[l], db[l], vb[l] (sizes[l+1],)
 *   h[l], dh[l] (cap, sizes[l+1]): layer outputs and their gradients;
 *   h[L-1] holds the logits (or regression outputs).
 * vW/vb are NULL without momentum. */
typedef struct fbp_mlp {
    int L;
    const fbp_idx *sizes;
    int act;  /* hidden activation; the output layer is affine */
    int loss; /* enum fbp_loss */
    fbp_idx cap; /* rows the h/dh buffers hold */
    void **W, **b, **dW, **db, **vW, **vb, **h, **dh;
    /* gather buffers of fbp_mlp_epoch: xb (cap, I), lb (cap,), tb (cap, sizes[L]) */
    void *xb, *tb;
    int64_t *lb;
} fbp_mlp;

/* Step options; scalars in double, applied in the step's T. */
typedef struct fbp_step_opts {
    int mode;          /* enum fbp_mode */
    double lr, weight_decay, clip_norm /* <= 0: none */, momentum;
    int count_correct; /* fill ncorrect (labels only) */
} fbp_step_opts;

/* Outputs of a step besides the parameter updates. */
typedef struct fbp_step_out {
    double loss;      /* mean loss + 0.5 wd sum ||W||^2, before the update */
    double grad_norm; /* global gradient norm if clipping ran, else -1 */
    int64_t ncorrect; /* rows whose argmax logit equals the label */
} fbp_step_out;

#define FBP_DECLARE(T, S)                                                           \
    /* Row-major C (M, N) = alpha * op(A) (M, K) . op(B) (K, N) + beta * C.        \
     * ta/tb nonzero transpose A/B; lda/ldb/ldc are row strides (elements).        \
     * Split into independent single-threaded BLAS calls over the pool. */         \
    void fbp_gemm_##S(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, T alpha,    \
                      const T *A, fbp_idx lda, const T *B, fbp_idx ldb, T beta,    \
                      T *C, fbp_idx ldc);                                           \
                                                                                    \
    /* activations.c. x, y, dy, dx are (n,); y may alias x, dx may alias dy.       \
     * Backward masks read the forward OUTPUT y. */                                \
    void fbp_act_forward_##S(fbp_idx n, int act, const T *x, T *y);                \
    void fbp_act_backward_##S(fbp_idx n, int act, const T *dy, const T *y, T *dx); \
                                                                                    \
    /* dense.c. y (N, O) in place: y = act(y + b); b (O,) or NULL. */              \
    void fbp_bias_act_##S(fbp_idx N, fbp_idx O, const T *b, int act, T *y);        \
    /* dy, y, dz (N, O); db (O,). dz = dy * act'(y) and db (+)= column sums of     \
     * dz, in one pass. dz may alias dy; with act NONE, dz may be NULL. */         \
    void fbp_act_backward_bias_grad_##S(fbp_idx N, fbp_idx O, int act,             \
                                        const T *dy, const T *y, T *dz, T *db,     \
                                        int accumulate);                            \
    /* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */          \
    void fbp_dense_forward_##S(fbp_idx N, fbp_idx In, fbp_idx O, const T *x,        \
                               const T *W, const T *b, int act, T *y);             \
    /* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,).                      \
     * dz = dy * act'(y); dx = dz.W^T (skipped if dx is NULL);                     \
     * dW (+)= x^T.dz; db (+)= column sums of dz. dz may alias dy. */              \
    void fbp_dense_backward_##S(fbp_idx N, fbp_idx In, fbp_idx O, const T *dy,      \
                                const T *x, const T *W, const T *y, int act,       \
                                T *dz, T *dx, T *dW, T *db, int accumulate);       \
                                                                                    \
    /* losses.c. z, dz (N, C); labels (N,) in [0, C); returns the mean loss.       \
     * dz = (softmax(z) - onehot) / N, written in the pass that computes the       \
     * loss; dz may alias z. */                                                    \
    double fbp_softmax_xent_labels_##S(fbp_idx N, fbp_idx C, const T *z,           \
                                       const int64_t *labels, T *dz);              \
    /* z, t, dz (N, C), t rows are class probabilities. dz may alias z. */         \
    double fbp_softmax_xent_probs_##S(fbp_idx N, fbp_idx C, const T *z,            \
                                      const T *t, T *dz);                          \
    /* y, t, dy (N, D): loss 0.5 * sum((y - t)^2) / N, dy = (y - t) / N. */        \
    double fbp_mse_##S(fbp_idx N, fbp_idx D, const T *y, const T *t, T *dy);       \
                                                                                    \
    /* optim.c. p, g (n,): p -= lr * (g + wd * p). */                              \
    void fbp_sgd_##S(fbp_idx n, T *p, const T *g, T lr, T wd);                     \
    /* g (n,) clipped in place to [-limit, limit]; NaN stays NaN. */               \
    void fbp_clip_value_##S(fbp_idx n, T *g, T limit);                             \
    /* x (n,): sum of squares in double, fixed block order. */                     \
    double fbp_sumsq_##S(fbp_idx n, const T *x);                                   \
    /* x (n,): max |x| (NaN if any NaN). */                                        \
    double fbp_maxabs_##S(fbp_idx n, const T *x);                                  \
    /* x (n,) *= s. */                                                             \
    void fbp_scale_##S(fbp_idx n, T *x, T s);                                      \
                                                                                    \
    /* step.c. x (N, I) with N <= m->cap; labels (N,) in [0, C) for XENT, else     \
     * targets t (N, sizes[L]). FORWARD fills h; LOSS adds the loss; GRAD fills    \
     * dW, db (weight decay included); TRAIN also clips and updates the params.    \
     * One call does it all: GEMMs through the BLAS table, everything else here. */ \
    void fbp_mlp_step_##S(const fbp_mlp *m, fbp_idx N, const T *x,                 \
                          const int64_t *labels, const T *t,                       \
                          const fbp_step_opts *opt, fbp_step_out *out);      \
    /* step.c. One epoch of TRAIN steps: X (n, I), labels (n,) or t (n, C),       \
     * order (n,) a permutation of [0, n); batches of B <= cap rows in that       \
     * order (the last one partial) are gathered into m->xb/lb/tb and stepped.    \
     * out->loss is the row-weighted mean of the batch losses. */                  \
    void fbp_mlp_epoch_##S(const fbp_mlp *m, fbp_idx n, const T *X,                \
                           const int64_t *labels, const T *t, const int64_t *order, \
                           fbp_idx B, const fbp_step_opts *opt, fbp_step_out *out);

FBP_DECLARE(float, f32)
FBP_DECLARE(double, f64)

#undef FBP_DECLARE

#endif /* FASTBP_H */
