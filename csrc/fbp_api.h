/* fbp_api.h - what the CPU kernels (fastbp.h) and the CUDA kernels (cuda/fbp_cuda.h)
 * share: every code and its name, the step's options, and the table of entry
 * points through which the binding (src/fastbp/_core.pyx) calls either backend.
 *
 * Plain C with no CUDA header. The binding reads the codes and names from here
 * and hands them to Python; nothing else defines them.
 */
#ifndef FBP_API_H
#define FBP_API_H

#include <stddef.h>
#include <stdint.h>

/* Hidden-visibility builds export only what carries FBP_API. */
#if defined(__GNUC__) || defined(__clang__)
#define FBP_API __attribute__((visibility("default")))
#else
#define FBP_API
#endif

/* ---- codes, and the names Python knows them by ---------------------------------- */

/* Every table and switch over a kind of code has a _Static_assert on its count
 * beside it (ggml's rule), so a code added here fails to compile until each one
 * has been visited; every switch's default fails loudly (FBP_BAD_CODE). The
 * Python side (src/fastbp/ops.py) is checked against these names at import. */
#define FBP_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#ifdef __cplusplus /* the CUDA files include this header too */
#define FBP_STATIC_ASSERT static_assert
#else
#define FBP_STATIC_ASSERT _Static_assert
#endif

enum fbp_act { FBP_ACT_NONE = 0, FBP_ACT_RELU = 1, FBP_ACT_SIGMOID = 2, FBP_ACT_TANH = 3,
               FBP_ACT_GELU = 4, FBP_ACT_GELU_TANH = 5, FBP_ACT_SILU = 6, FBP_NACT };
static inline const char *fbp_act_name(int k)
{
    static const char *const names[] = {"identity", "relu", "sigmoid", "tanh", "gelu",
                                        "gelu_tanh", "silu"};
    FBP_STATIC_ASSERT(FBP_COUNT(names) == FBP_NACT, "a name per activation");
    return k >= 0 && k < FBP_NACT ? names[k] : "";
}

/* softmax + cross-entropy (labels or class probabilities), mean squared error
 * (0.5 sum over outputs), sigmoid + binary cross-entropy (sum over outputs), exp +
 * half Poisson deviance (sum over outputs, scikit-learn's poisson loss: log link,
 * the outputs are log-means); each averaged over the rows, or weighted by the
 * rows' sample weights. */
enum fbp_loss { FBP_LOSS_XENT = 0, FBP_LOSS_MSE = 1, FBP_LOSS_BCE = 2, FBP_LOSS_POISSON = 3,
                FBP_NLOSS };
static inline const char *fbp_loss_name(int k)
{
    static const char *const names[] = {"softmax_cross_entropy", "mse",
                                        "binary_cross_entropy", "poisson"};
    FBP_STATIC_ASSERT(FBP_COUNT(names) == FBP_NLOSS, "a name per loss");
    return k >= 0 && k < FBP_NLOSS ? names[k] : "";
}

/* What a step does: FORWARD fills the layer outputs, LOSS adds the loss, GRAD the
 * gradients (weight decay included, for model.gradient), TRAIN computes the loss
 * gradients and then applies UPDATE; UPDATE alone applies clipping and the
 * optimizer to gradients already in dW, db (summed over processes, say).
 * BACKWARD is TRAIN without its update: the training network (dropout on), the
 * loss gradient alone in dW, db (the weight decay is UPDATE's to add, once), and
 * the reg term in the output: a data-parallel rank's share, to be summed over the
 * ranks before UPDATE (src/fastbp/distributed.py). */
enum fbp_mode { FBP_MODE_FORWARD = 0, FBP_MODE_LOSS = 1, FBP_MODE_GRAD = 2,
                FBP_MODE_TRAIN = 3, FBP_MODE_UPDATE = 4, FBP_MODE_BACKWARD = 5 };

/* The optimizers, with PyTorch's update rules: SGD (momentum, dampening, Nesterov,
 * coupled L2), Adam (coupled L2), AdamW (decoupled decay); and with the rules of
 * scikit-learn's MLP solvers (sklearn/neural_network/_stochastic_optimizers.py),
 * for fastbp.sklearn only: SKSGD (v = mu v - lr g; p += v, or with Nesterov
 * p += mu v - lr g), SKADAM (eps added to sqrt(v), not to its bias-corrected
 * value), both with coupled L2; and torch.optim.RMSprop (coupled L2, alpha in
 * beta2, momentum, centered). */
enum fbp_opt { FBP_OPT_SGD = 0, FBP_OPT_ADAM = 1, FBP_OPT_ADAMW = 2, FBP_OPT_SKSGD = 3,
               FBP_OPT_SKADAM = 4, FBP_OPT_RMSPROP = 5, FBP_NOPT };
static inline const char *fbp_opt_name(int k)
{
    static const char *const names[] = {"SGD", "Adam", "AdamW", "sklearn_sgd",
                                        "sklearn_adam", "RMSprop"};
    FBP_STATIC_ASSERT(FBP_COUNT(names) == FBP_NOPT, "a name per optimizer");
    return k >= 0 && k < FBP_NOPT ? names[k] : "";
}

/* Matmul precision: float32 products, or bfloat16 operands (rounded to nearest
 * even) with float32 accumulation (csrc/bf16.c; float32 models, CPU only). */
enum fbp_mm { FBP_MM_F32 = 0, FBP_MM_BF16 = 1, FBP_NMM };
static inline const char *fbp_mm_name(int k)
{
    static const char *const names[FBP_NMM] = {"float32", "bfloat16"};
    return k >= 0 && k < FBP_NMM ? names[k] : "";
}

/* An MLP workspace's buffers, per layer l of L (sizes (L+1,) the widths):
 * W, dW, vW, sW (sizes[l], sizes[l+1]); b, db, vb, sb (sizes[l+1],); h, dh, hd, z
 * (cap, sizes[l+1]). vW, vb: SGD's momentum or Adam's first moment; sW, sb:
 * Adam's second moment (NULL when the optimizer has no such state). h[L-1] holds
 * the logits (or regression outputs). hd: a hidden layer's output after dropout
 * (NULL without dropout), the next layer's input in a training step. z: the
 * pre-activation x.W + b of a layer whose activation's derivative needs its input
 * (fbp_act_needs_input), NULL for the others, which take it from h. gW, gb
 * (as W, b): centered RMSprop's gradient average. RMSprop's square average is
 * in sW, sb, its momentum buffer in vW, vb. */
enum fbp_buf { FBP_BUF_W = 0, FBP_BUF_B, FBP_BUF_DW, FBP_BUF_DB, FBP_BUF_VW, FBP_BUF_VB,
               FBP_BUF_SW, FBP_BUF_SB, FBP_BUF_H, FBP_BUF_DH, FBP_BUF_HD, FBP_BUF_Z, FBP_BUF_GW,
               FBP_BUF_GB, FBP_NBUF };
static inline const char *fbp_buf_name(int k)
{
    static const char *const names[] = {"W", "b", "dW", "db", "vW", "vb",
                                        "sW", "sb", "h", "dh", "hd", "z", "gW", "gb"};
    FBP_STATIC_ASSERT(FBP_COUNT(names) == FBP_NBUF, "a name per buffer");
    return k >= 0 && k < FBP_NBUF ? names[k] : "";
}

/* A step's options; scalars in double, applied in the step's element type. */
typedef struct fbp_step_opts {
    int mode;           /* enum fbp_mode */
    int optimizer;      /* enum fbp_opt */
    double lr;
    double weight_decay; /* weights only: coupled L2 (SGD, Adam), decoupled (AdamW) */
    double momentum, dampening; /* SGD */
    int nesterov;       /* SGD */
    double beta1, beta2, eps; /* Adam, AdamW; RMSprop: beta2 is its alpha, and eps */
    int centered;       /* RMSprop */
    int64_t t;          /* the optimizer's step, 1 on its first (bias correction, the
                         * first momentum step) */
    double clip_norm;   /* > 0: rescale the loss gradient to this global norm first */
    double clip_value;  /* > 0: clip each loss gradient element to [-v, v] first */
    uint64_t seed;      /* dropout masks: keyed by (seed, step, layer, row, column) */
    int64_t step;       /* the model's training step, for the dropout key */
    int64_t row0;       /* global index of this batch's first row, for the dropout key */
    double norm;        /* > 0: the loss is normalized by this total weight (a data-
                         * parallel batch's), else by this batch's rows or weights */
    int count_correct;  /* fill ncorrect */
    double alpha;       /* scikit-learn's L2 term: the weights' decay of this step is
                         * weight_decay + alpha / (the loss normalizer: norm, or this
                         * batch's rows or weights' sum), so a partial last batch or a
                         * weighted one gets its own */
    double loss_eps;    /* > 0: the reported loss clips each row's softmax-xent (integer
                         * labels) or each output's binary xent to [-log(1 - eps),
                         * -log(eps)], as scikit-learn's log-loss clips probabilities to
                         * [eps, 1 - eps]; the gradient is not clipped */
} fbp_step_opts;

/* What a step returns besides the parameter updates. */
typedef struct fbp_step_out {
    double loss;      /* the data loss, before the update: mean, or weighted mean */
    double reg;       /* 0.5 wd sum ||W||^2 for coupled decay (SGD, Adam), else 0 */
    double grad_norm; /* the loss gradient's global norm if clip_norm ran, else -1 */
    int64_t ncorrect; /* XENT: rows whose argmax logit is the label; BCE: outputs on the
                       * right side of 0.5 */
} fbp_step_out;

/* ---- the entry points of a backend ----------------------------------------------
 * Every one has the same shape on both backends: dev and stream say where to run
 * (a CUDA device and cudaStream_t; ignored on the CPU), dsize is the element size
 * (4 float32, 8 float64), arrays are C-contiguous and checked by the binding.
 * Each returns 0, or -1 with a message for the table's last_error(). The CPU
 * entries are in csrc/<concern>.c, the CUDA ones in csrc/cuda/<concern>.cu. */
typedef struct fbp_backend {
    const char *(*last_error)(void);
    /* labels (N,): out = {min, max, index of the first label outside [0, C) or -1,
     * that label}; N > 0. */
    int (*check_labels)(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                        int64_t out[4]);
    /* x, y (n,): y = act(x) (y may alias x). dy, y, dx (n,): dx = dy * act'(y), y the
     * forward output (dx may alias dy). */
    int (*act_forward)(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                       void *y);
    int (*act_backward)(int dev, void *stream, int dsize, int64_t n, int act, const void *dy,
                        const void *y, void *dx);
    /* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */
    int (*dense_forward)(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                         const void *x, const void *W, const void *b, int act, void *y);
    /* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,): dz = dy * act'(y) (NULL
     * with act NONE; may alias dy), dx = dz.W^T (skipped if NULL), dW (+)= x^T.dz,
     * db (+)= column sums of dz. */
    int (*dense_backward)(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                          const void *dy, const void *x, const void *W, const void *y, int act,
                          void *dz, void *dx, void *dW, void *db, int accumulate);
    /* z, dz (N, C); labels (N,) in [0, C), or else t (N, C) class probabilities:
     * dz = (softmax(z) - t) / N (may alias z); *loss = the mean loss; N > 0. */
    int (*softmax_xent)(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                        const int64_t *labels, const void *t, void *dz, double *loss);
    /* y, t, dy (N, D): *loss = 0.5 sum (y - t)^2 / N, dy = (y - t) / N; N > 0. */
    int (*mse)(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
               const void *t, void *dy, double *loss);
    /* z, t, dz (N, C): sigmoid + binary cross-entropy, summed over the C outputs,
     * averaged over the rows; dz = (sigmoid(z) - t) / N (may alias z); N > 0. */
    int (*bce)(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
               const void *t, void *dz, double *loss);
    /* p, g (n,): p -= lr (g + wd p). g (n,) clipped to [-limit, limit]. x (n,) *= s. */
    int (*sgd)(int dev, void *stream, int dsize, int64_t n, void *p, const void *g, double lr,
               double wd);
    int (*clip_value)(int dev, void *stream, int dsize, int64_t n, void *g, double limit);
    int (*scale)(int dev, void *stream, int dsize, int64_t n, void *x, double s);
    /* k arrays xs[i] (ns[i],) of element size dsizes[i]: out[i] = sum of (x / div)^2
     * in double (div 0: of x^2), or (maxabs) max |x|, NaN if any is NaN. */
    int (*sumsq_many)(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                      const void *const *xs, double div, int maxabs, double *out);
} fbp_backend;

/* The table's kernel entries that every backend has, for the backends to fill it
 * from one list: X(name) for each field but last_error and bce (CPU only so far;
 * the binding raises NotImplementedError where an entry is NULL). */
#define FBP_BACKEND_ENTRIES(X)                                                          \
    X(check_labels) X(act_forward) X(act_backward) X(dense_forward) X(dense_backward)   \
    X(softmax_xent) X(mse) X(sgd) X(clip_value) X(scale) X(sumsq_many)

#endif /* FBP_API_H */
