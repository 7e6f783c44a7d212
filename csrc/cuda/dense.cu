/* dense.cu - the dense layer around its cuBLAS GEMMs, as csrc/dense.c: the fused
 * bias + activation epilogue, the fused mask + bias gradient, forward and backward. */
#include "fbpc_internal.h"

/* y (N, O) in place, b (O,) or NULL: y = act(y + b). Block: rows r = blockIdx.x
 * + k gridDim.x, threads over the row's columns. */
template <class T> __global__ void bias_act_kernel(idx N, idx O, const T *b, int act, T *y)
{
    for (idx r = blockIdx.x; r < N; r += gridDim.x) {
        T *yr = y + r * O;
        for (idx j = threadIdx.x; j < O; j += blockDim.x)
            yr[j] = act_apply(act, b ? yr[j] + b[j] : yr[j]);
    }
}

template <class T> int k_bias_act(cudaStream_t s, idx N, idx O, const T *b, int act, T *y)
{
    TRY(act_ok(act));
    if (N <= 0 || O <= 0 || (!b && act == FBP_ACT_NONE))
        return 0;
    unsigned nt = O >= 256 ? 256 : (unsigned)((O + 31) / 32 * 32);
    unsigned nb = (unsigned)(N > 65535 ? 65535 : N);
    bias_act_kernel<T><<<nb, nt, 0, s>>>(N, O, b, act, y);
    LAUNCH_TRY();
    return 0;
}

/* Column sums: block (32, BG_ROWS) owns 32 columns; row lane ty sums rows ty,
 * ty + BG_ROWS, ... in order, and the lanes are added in lane order. */
#define BG_ROWS 16

/* dy, y, dz (N, O), db (O,): dz = dy * act'(y), db (+)= column sums of dz.
 * dz may alias dy (each element is read, then written, by one thread) or be
 * NULL with act NONE. */
template <class T>
__global__ void bias_grad_kernel(idx N, idx O, int act, const T *dy, const T *y, T *dz, T *db,
                                 int accumulate)
{
    __shared__ T sh[BG_ROWS][33];
    idx c = (idx)blockIdx.x * 32 + threadIdx.x;
    T acc = (T)0;
    if (c < O) {
        for (idx r = threadIdx.y; r < N; r += BG_ROWS) {
            idx i = r * O + c;
            T v = dy[i];
            if (act != FBP_ACT_NONE) {
                T m = act_mask(act, y[i]);
                v = v * m;
            }
            if (dz)
                dz[i] = v;
            acc += v;
        }
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < O) {
        T sum = sh[0][threadIdx.x];
        for (int k = 1; k < BG_ROWS; k++)
            sum += sh[k][threadIdx.x];
        db[c] = accumulate ? db[c] + sum : sum;
    }
}

template <class T>
int k_act_backward_bias_grad(cudaStream_t s, idx N, idx O, int act, const T *dy, const T *y,
                             T *dz, T *db, int accumulate)
{
    TRY(act_ok(act));
    if (O <= 0)
        return 0;
    if (act == FBP_ACT_NONE && dz == dy)
        dz = nullptr; /* nothing to write */
    dim3 block(32, BG_ROWS);
    bias_grad_kernel<T><<<(unsigned)((O + 31) / 32), block, 0, s>>>(N, O, act, dy, y, dz, db,
                                                                   accumulate);
    LAUNCH_TRY();
    return 0;
}

template <class T>
static int dense_forward(cudaStream_t s, idx N, idx I, idx O, const T *x, const T *W,
                         const T *b, int act, T *y)
{
    cublasHandle_t h;
    TRY(fbpc_blas(s, &h));
    TRY(gemm<T>(h, s, 0, 0, N, O, I, (T)1, x, I, W, O, (T)0, y, O));
    return k_bias_act<T>(s, N, O, b, act, y);
}

extern "C" int fbpc_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t I,
                                  int64_t O, const void *x, const void *W, const void *b, int act,
                                  void *y)
{
    DEVICE_GUARD(dev);
#define CALL(T) dense_forward<T>((cudaStream_t)stream, N, I, O, (const T *)x, (const T *)W, \
                                 (const T *)b, act, (T *)y)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* As fbp_dense_backward (csrc/dense.c). */
template <class T>
static int dense_backward(cudaStream_t s, idx N, idx I, idx O, const T *dy, const T *x,
                          const T *W, const T *y, int act, T *dz, T *dx, T *dW, T *db, int acc)
{
    cublasHandle_t h;
    TRY(fbpc_blas(s, &h));
    const T *g = dy;
    if (act == FBP_ACT_NONE) {
        TRY(k_act_backward_bias_grad<T>(s, N, O, act, dy, y, nullptr, db, acc));
    } else {
        TRY(k_act_backward_bias_grad<T>(s, N, O, act, dy, y, dz, db, acc));
        g = dz;
    }
    if (dx)
        TRY(gemm<T>(h, s, 0, 1, N, I, O, (T)1, g, O, W, O, (T)0, dx, I));
    return gemm<T>(h, s, 1, 0, I, O, N, (T)1, x, I, g, O, acc ? (T)1 : (T)0, dW, O);
}

extern "C" int fbpc_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t I,
                                   int64_t O, const void *dy, const void *x, const void *W,
                                   const void *y, int act, void *dz, void *dx, void *dW, void *db,
                                   int accumulate)
{
    DEVICE_GUARD(dev);
#define CALL(T) dense_backward<T>((cudaStream_t)stream, N, I, O, (const T *)dy, (const T *)x, \
                                  (const T *)W, (const T *)y, act, (T *)dz, (T *)dx, (T *)dW,  \
                                  (T *)db, accumulate)
    return DISPATCH(dsize, CALL);
#undef CALL
}

template int k_bias_act<float>(cudaStream_t, idx, idx, const float *, int, float *);
template int k_bias_act<double>(cudaStream_t, idx, idx, const double *, int, double *);
template int k_act_backward_bias_grad<float>(cudaStream_t, idx, idx, int, const float *,
                                             const float *, float *, float *, int);
template int k_act_backward_bias_grad<double>(cudaStream_t, idx, idx, int, const double *,
                                              const double *, double *, double *, int);
