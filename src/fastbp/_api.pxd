# csrc/fbp_api.h for Cython: the codes, the step's options and the backend table
# that both extensions (_core: CPU, _cuda: CUDA) use. Nothing here defines a value.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "fbp_api.h" nogil:
    enum:
        FBP_ACT_NONE
        FBP_ACT_RELU
        FBP_ACT_SIGMOID
        FBP_ACT_TANH
        FBP_NACT
        FBP_LOSS_XENT
        FBP_LOSS_MSE
        FBP_LOSS_BCE
        FBP_LOSS_POISSON
        FBP_NLOSS
        FBP_MODE_FORWARD
        FBP_MODE_LOSS
        FBP_MODE_GRAD
        FBP_MODE_TRAIN
        FBP_MODE_UPDATE
        FBP_MODE_BACKWARD
        FBP_OPT_SGD
        FBP_OPT_ADAM
        FBP_OPT_ADAMW
        FBP_OPT_SKSGD
        FBP_OPT_SKADAM
        FBP_NOPT
        FBP_BUF_W
        FBP_BUF_B
        FBP_BUF_DW
        FBP_BUF_DB
        FBP_BUF_VW
        FBP_BUF_VB
        FBP_BUF_SW
        FBP_BUF_SB
        FBP_BUF_H
        FBP_BUF_DH
        FBP_BUF_HD
        FBP_NBUF
        FBP_MM_F32
        FBP_MM_BF16
        FBP_NMM
    const char *fbp_act_name(int k)
    const char *fbp_loss_name(int k)
    const char *fbp_opt_name(int k)
    const char *fbp_buf_name(int k)
    const char *fbp_mm_name(int k)

    ctypedef struct fbp_step_opts:
        int mode
        int optimizer
        double lr, weight_decay, momentum, dampening
        int nesterov
        double beta1, beta2, eps
        int centered
        int64_t t
        double clip_norm, clip_value
        uint64_t seed
        int64_t step, row0
        double norm
        int count_correct
        double alpha, loss_eps
    ctypedef struct fbp_step_out:
        double loss, reg, grad_norm
        int64_t ncorrect

    ctypedef struct fbp_backend:
        const char *(*last_error)() nogil
        int (*check_labels)(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                            int64_t *out) nogil
        int (*act_forward)(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                           void *y) nogil
        int (*act_backward)(int dev, void *stream, int dsize, int64_t n, int act,
                            const void *dy, const void *y, void *dx) nogil
        int (*dense_forward)(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                             const void *x, const void *W, const void *b, int act, void *y) nogil
        int (*dense_backward)(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                              const void *dy, const void *x, const void *W, const void *y,
                              int act, void *dz, void *dx, void *dW, void *db, int accumulate) nogil
        int (*softmax_xent)(int dev, void *stream, int dsize, int64_t N, int64_t C,
                            const void *z, const int64_t *labels, const void *t, void *dz,
                            double *loss) nogil
        int (*mse)(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
                   const void *t, void *dy, double *loss) nogil
        int (*bce)(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                   const void *t, void *dz, double *loss) nogil
        int (*sgd)(int dev, void *stream, int dsize, int64_t n, void *p, const void *g,
                   double lr, double wd) nogil
        int (*clip_value)(int dev, void *stream, int dsize, int64_t n, void *g, double limit) nogil
        int (*scale)(int dev, void *stream, int dsize, int64_t n, void *x, double s) nogil
        int (*sumsq_many)(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                          const void *const *xs, double div, int maxabs, double *out) nogil
