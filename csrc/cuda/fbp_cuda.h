/* fbp_cuda.h - the C API of fastbp's CUDA kernels (built only with FASTBP_CUDA=1).
 *
 * Plain C with no CUDA header, so src/fastbp/_cuda.pyx compiles without one.
 * Conventions are csrc/fastbp.h's: row-major, batch-major, N batch rows, I in
 * features, O out features, C classes, n a flat element count. Arrays are
 * device pointers to C-contiguous data of element size dsize (4: float32,
 * 8: float64); labels are int64. The caller (src/fastbp/cuda.py) has checked
 * shapes, dtypes, devices and label ranges.
 *
 * dev is the device the pointers live on (made current for the call and
 * restored after); stream is a cudaStream_t (NULL: the legacy default stream).
 * Work is queued on that stream; a function that returns a host value (loss,
 * norm, label range) synchronizes the stream first. Every function returns 0,
 * or -1 with a message for fbpc_last_error(). Reductions run in a fixed order
 * (no atomics), so results are bitwise reproducible on one device.
 */
#ifndef FBP_CUDA_H
#define FBP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the last failed call on this thread. */
const char *fbpc_last_error(void);

/* Number of CUDA devices; 0 (and return 0) without a driver or a device. */
int fbpc_device_count(int *n);
/* Device of pointer p (*dev = -1 for host memory). */
int fbpc_pointer_device(const void *p, int *dev);
/* nbytes from src to dst, either side host or device (cudaMemcpyDefault), then
 * synchronize the stream. stream NULL: synchronize the whole device first. */
int fbpc_memcpy(int dev, void *stream, void *dst, const void *src, size_t nbytes);

/* Scratch doubles the loss and norm functions below need. */
int64_t fbpc_scratch_doubles(int64_t N, int64_t narrays);

/* labels (N,): out = {min, max, index of the first label outside [0, C) or -1,
 * that label}. One reduction kernel into scratch (4 int64, device), then a sync. */
int fbpc_check_labels(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                      int64_t *scratch, int64_t out[4]);

/* x, y (n,): y = act(x) (may alias). dy, y, dx (n,): dx = dy * act'(y). */
int fbpc_act_forward(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                     void *y);
int fbpc_act_backward(int dev, void *stream, int dsize, int64_t n, int act, const void *dy,
                      const void *y, void *dx);

/* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */
int fbpc_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t I, int64_t O,
                       const void *x, const void *W, const void *b, int act, void *y);
/* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,); as fbp_dense_backward:
 * dz = dy * act'(y) (NULL with act NONE), dx = dz.W^T (skipped if NULL),
 * dW (+)= x^T.dz, db (+)= column sums of dz. */
int fbpc_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t I, int64_t O,
                        const void *dy, const void *x, const void *W, const void *y, int act,
                        void *dz, void *dx, void *dW, void *db, int accumulate);

/* z, dz (N, C); labels (N,) or NULL, then t (N, C) probabilities. dz =
 * (softmax(z) - t) / N (may alias z); *loss = the mean loss. scratch:
 * fbpc_scratch_doubles(N, 1) doubles. Syncs. */
int fbpc_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                      const int64_t *labels, const void *t, void *dz, double *scratch,
                      double *loss);
/* y, t, dy (N, D): *loss = 0.5 sum((y - t)^2) / N, dy = (y - t) / N. Syncs. */
int fbpc_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
             const void *t, void *dy, double *scratch, double *loss);

/* p, g (n,): p -= lr (g + wd p). g (n,) clipped to [-limit, limit]. x (n,) *= s. */
int fbpc_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g, double lr,
             double wd);
int fbpc_clip_value(int dev, void *stream, int dsize, int64_t n, void *g, double limit);
int fbpc_scale(int dev, void *stream, int dsize, int64_t n, void *x, double s);
/* k arrays xs[i] (ns[i],) of element size dsizes[i]: out[i] = sum of (x / div)^2
 * in double (div == 0: no division), or (maxabs) max |x| (NaN if any NaN).
 * scratch: fbpc_scratch_doubles(0, k) doubles. One sync for all k. */
int fbpc_sumsq_many(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                    const void *const *xs, double div, int maxabs, double *scratch,
                    double *out);

/* ---- an MLP's training step on the device (step.cu) -------------------------
 * Mirrors fbp_mlp_step of csrc/step.c; the workspace owns every buffer (device
 * memory, cudaMalloc'd once): for l in [0, L), with widths sizes (L+1,):
 *   W, dW, vW (sizes[l], sizes[l+1]); b, db, vb (sizes[l+1],);
 *   h, dh (cap, sizes[l+1]); staging x (cap, sizes[0]), labels (cap,),
 *   targets (cap, sizes[L]).
 * vW/vb exist after the first step with momentum (zeros then). */
enum fbpc_buf { FBPC_W = 0, FBPC_B, FBPC_DW, FBPC_DB, FBPC_VW, FBPC_VB, FBPC_H, FBPC_DH };

typedef struct fbpc_mlp fbpc_mlp;

typedef struct fbpc_step_opts { /* as fbp_step_opts */
    int mode;                   /* 0 FORWARD, 1 LOSS, 2 GRAD, 3 TRAIN */
    double lr, weight_decay, clip_norm /* <= 0: none */, momentum;
    int count_correct;
} fbpc_step_opts;

typedef struct fbpc_step_out { /* as fbp_step_out */
    double loss, grad_norm;    /* grad_norm -1 unless clipping ran */
    int64_t ncorrect;
} fbpc_step_out;

/* act: hidden activation (0..3); loss: 0 softmax-xent, 1 mse. graph: capture
 * the step in a CUDA graph once the same call (N, options, labels or targets)
 * repeats, and replay it after that. */
int fbpc_mlp_create(fbpc_mlp **out, int dev, int dsize, int L, const int64_t *sizes, int act,
                    int loss, int64_t cap, int graph);
void fbpc_mlp_destroy(fbpc_mlp *m);
/* The device pointer of buffer `which` (enum fbpc_buf) of layer l; NULL for
 * momentum buffers not yet allocated. */
void *fbpc_mlp_buffer(const fbpc_mlp *m, int which, int l);
/* As fbpc_check_labels, with the workspace's own scratch; N <= cap. */
int fbpc_mlp_check_labels(fbpc_mlp *m, void *stream, int64_t N, const int64_t *labels,
                          int64_t out[4]);
/* Allocate the momentum buffers (zeroed on stream) unless they exist; a step
 * with momentum does it by itself. */
int fbpc_mlp_alloc_momentum(fbpc_mlp *m, void *stream);
/* Zero the momentum buffers (if any). */
int fbpc_mlp_reset_momentum(fbpc_mlp *m, void *stream);
/* One step on rows x (N, I): x, labels (N,) or targets t (N, C) may be host or
 * device memory and are first copied into the staging buffers. Labels must be
 * in range (check first with fbpc_check_labels). sync: wait for the step and
 * fill *out; else *out is left alone and fbpc_mlp_read_out gives it later. */
int fbpc_mlp_step(fbpc_mlp *m, void *stream, int64_t N, const void *x, const int64_t *labels,
                  const void *t, const fbpc_step_opts *opt, int sync, fbpc_step_out *out);
/* Sync the stream, then the outputs of the last step. */
int fbpc_mlp_read_out(fbpc_mlp *m, void *stream, fbpc_step_out *out);
/* Counters for tests: steps run eagerly, graphs captured, graph replays. */
void fbpc_mlp_stats(const fbpc_mlp *m, int64_t out[3]);

#ifdef __cplusplus
}
#endif

#endif /* FBP_CUDA_H */
