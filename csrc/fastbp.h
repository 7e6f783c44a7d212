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

/* ---- runtime.c: BLAS table and threads -------------------------------------- */

/* The Fortran-ABI GEMMs that scipy.linalg.cython_blas exports (column-major). */
typedef void (*fbp_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             float *alpha, float *a, int *lda, float *b, int *ldb,
                             float *beta, float *c, int *ldc);
typedef void (*fbp_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             double *alpha, double *a, int *lda, double *b, int *ldb,
                             double *beta, double *c, int *ldc);

/* Set once at import by _core.pyx. */
void fbp_set_blas(fbp_sgemm_fn sgemm, fbp_dgemm_fn dgemm);

/* Our OpenMP thread count; n <= 0 means "follow omp_get_max_threads()". */
void fbp_set_num_threads(int n);
int fbp_get_num_threads(void);
int fbp_has_openmp(void);

#define FBP_DECLARE(T, S)                                                           \
    /* Row-major C (M, N) = alpha * op(A) (M, K) . op(B) (K, N) + beta * C.        \
     * ta/tb nonzero transpose A/B; lda/ldb/ldc are row strides (elements). */     \
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
    void fbp_scale_##S(fbp_idx n, T *x, T s);

FBP_DECLARE(float, f32)
FBP_DECLARE(double, f64)

#undef FBP_DECLARE

#endif /* FASTBP_H */
