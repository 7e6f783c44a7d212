/* activations.cu - relu / sigmoid / tanh forward, and backward masks from y;
 * the formulas of csrc/fbp_act.h (fbpc_internal.h's act_apply, act_mask). */
#include "fbpc_internal.h"

/* x, y (n,): y = act(x). */
template <class T> __global__ void act_fwd_kernel(idx n, int act, const T *x, T *y)
{
    GRID_STRIDE(i, n) y[i] = act_apply(act, x[i]);
}

/* dy, y, dx (n,): dx = dy * act'(y). */
template <class T> __global__ void act_bwd_kernel(idx n, int act, const T *dy, const T *y, T *dx)
{
    GRID_STRIDE(i, n)
    {
        T m = act_mask(act, y[i]);
        dx[i] = dy[i] * m;
    }
}

template <class T> static int act_forward(cudaStream_t s, idx n, int act, const T *x, T *y)
{
    TRY(act_ok(act));
    if (n > 0)
        act_fwd_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, act, x, y);
    LAUNCH_TRY();
    return 0;
}

template <class T>
static int act_backward(cudaStream_t s, idx n, int act, const T *dy, const T *y, T *dx)
{
    TRY(act_ok(act));
    if (n > 0)
        act_bwd_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, act, dy, y, dx);
    LAUNCH_TRY();
    return 0;
}

extern "C" int fbpc_act_forward(int dev, void *stream, int dsize, int64_t n, int act,
                                const void *x, void *y)
{
    DEVICE_GUARD(dev);
#define CALL(T) act_forward<T>((cudaStream_t)stream, n, act, (const T *)x, (T *)y)
    return DISPATCH(dsize, CALL);
#undef CALL
}

extern "C" int fbpc_act_backward(int dev, void *stream, int dsize, int64_t n, int act,
                                 const void *dy, const void *y, void *dx)
{
    DEVICE_GUARD(dev);
#define CALL(T) act_backward<T>((cudaStream_t)stream, n, act, (const T *)dy, (const T *)y, (T *)dx)
    return DISPATCH(dsize, CALL);
#undef CALL
}
