/* fbp_cuda.h - the C API of fastbp's CUDA kernels (built only with FASTBP_CUDA=1).
 *
 * Plain C with no CUDA header, so src/fastbp/_cuda.pyx compiles without one.
 * Conventions are csrc/fastbp.h's: row-major, batch-major, N batch rows, I in
 * features, O out features, C classes, n a flat element count. Arrays are
 * device pointers to C-contiguous data; labels are int64.
 *
 * The functional kernels are the entries of fbp_api.h's backend table, with the
 * CPU's shapes: dev is the device the pointers live on (made current for the call
 * and restored after), stream a cudaStream_t (NULL: the legacy default stream).
 * Work is queued on that stream; a function that returns a host value (loss,
 * norm, label range) synchronizes the stream first. Every function returns 0,
 * or -1 with a message for fbpc_last_error(). Reductions run in a fixed order
 * (no atomics), so results are bitwise reproducible on one device.
 */
#ifndef FBP_CUDA_H
#define FBP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "fbp_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- runtime.cu ------------------------------------------------------------------ */

/* This backend's table (fbp_api.h): the fbpc_ functions below. */
const fbp_backend *fbpc_backend(void);
/* The message of the last failed call on this thread. */
const char *fbpc_last_error(void);
/* Number of CUDA devices; 0 (and return 0) without a driver or a device. */
int fbpc_device_count(int *n);
/* Device of pointer p (*dev = -1 for host memory). */
int fbpc_pointer_device(const void *p, int *dev);
/* nbytes from src to dst, either side host or device (cudaMemcpyDefault), then
 * synchronize the stream. stream NULL: synchronize the whole device first. */
int fbpc_memcpy(int dev, void *stream, void *dst, const void *src, size_t nbytes);

/* ---- the table's entries, by concern (shapes as in fbp_api.h) --------------------- */

/* losses.cu */
int fbpc_check_labels(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                      int64_t out[4]);
int fbpc_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                      const int64_t *labels, const void *t, void *dz, double *loss);
int fbpc_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
             const void *t, void *dy, double *loss);
/* activations.cu */
int fbpc_act_forward(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                     void *y);
int fbpc_act_backward(int dev, void *stream, int dsize, int64_t n, int act, const void *dy,
                      const void *y, void *dx);
/* dense.cu */
int fbpc_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                       const void *x, const void *W, const void *b, int act, void *y);
int fbpc_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                        const void *dy, const void *x, const void *W, const void *y, int act,
                        void *dz, void *dx, void *dW, void *db, int accumulate);
/* optim.cu */
int fbpc_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g, double lr,
             double wd);
int fbpc_clip_value(int dev, void *stream, int dsize, int64_t n, void *g, double limit);
int fbpc_scale(int dev, void *stream, int dsize, int64_t n, void *x, double s);
int fbpc_sumsq_many(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                    const void *const *xs, double div, int maxabs, double *out);

/* ---- step.cu: an MLP's training step on the device ----------------------------------
 * Mirrors fbp_mlp_step of csrc/step.c; the workspace owns every buffer (device
 * memory, cudaMalloc'd once) of fbp_api.h's table (enum fbp_buf), plus staging
 * buffers x (cap, sizes[0]), labels (cap,), targets (cap, sizes[L]). The momentum
 * buffers exist after the first step with momentum (zeros then). */
typedef struct fbpc_mlp fbpc_mlp;

/* act (L,): each layer's activation; loss: enum fbp_loss. graph: capture the step
 * in a CUDA graph once the same call (N, options, labels or targets) repeats, and
 * replay it after that. */
int fbpc_mlp_create(fbpc_mlp **out, int dev, int dsize, int L, const int64_t *sizes,
                    const int *act, int loss, int64_t cap, int graph);
void fbpc_mlp_destroy(fbpc_mlp *m);
/* The device pointer of buffer `which` (enum fbp_buf) of layer l; NULL for
 * momentum buffers not yet allocated. */
void *fbpc_mlp_buffer(const fbpc_mlp *m, int which, int l);
/* Allocate the momentum buffers (zeroed on stream) unless they exist; a step
 * with momentum does it by itself. */
int fbpc_mlp_alloc_momentum(fbpc_mlp *m, void *stream);
/* Zero the momentum buffers (if any). */
int fbpc_mlp_reset_momentum(fbpc_mlp *m, void *stream);
/* One step on rows x (N, I): x, labels (N,) or targets t (N, C) may be host or
 * device memory and are first copied into the staging buffers. Labels must be
 * in range (the binding checks them first). sync: wait for the step and fill
 * *out; else *out is left alone and fbpc_mlp_read_out gives it later. */
int fbpc_mlp_step(fbpc_mlp *m, void *stream, int64_t N, const void *x, const int64_t *labels,
                  const void *t, const fbp_step_opts *opt, int sync, fbp_step_out *out);
/* Sync the stream, then the outputs of the last step. */
int fbpc_mlp_read_out(fbpc_mlp *m, void *stream, fbp_step_out *out);
/* Counters for tests: steps run eagerly, graphs captured, graph replays. */
void fbpc_mlp_stats(const fbpc_mlp *m, int64_t out[3]);

#ifdef __cplusplus
}
#endif

#endif /* FBP_CUDA_H */
