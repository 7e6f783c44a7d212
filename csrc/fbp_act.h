/* fbp_act.h - scalar activations and their masks, per element type.
 * Included inside a kernel file's generic section (T and FN defined), so the
 * fused epilogues in dense.c and step.c use exactly the same formulas as the
 * standalone kernels in activations.c. A mask is a function of the activation's
 * backward input (fastbp.ops backward_input): the forward OUTPUT y for relu' =
 * (y > 0), sigmoid' = y (1 - y), tanh' = 1 - y^2; the INPUT x for GELU and SiLU,
 * whose derivatives cannot be had from their outputs (they are not monotonic).
 */

/* GELU's constants and erf per T, as PyTorch's CPU kernels (GeluKernel.cpp). */
#define FBP_SQRT1_2 0.70710678118654752440
#define FBP_GELU_BETA 0.39894228040143267794 /* 1 / sqrt(2 pi) */
#define FBP_SQRT_2_PI 0.79788456080286535588 /* sqrt(2 / pi) */
#define FBP_GELU_KAPPA 0.044715

/* GELU and its derivative, computed in double for both element types: in float32
 * 1 + erf(x) and 1 - tanh^2 cancel in the tails (PyTorch's own float32 kernel is
 * off by 2e-4 relative at |x| <= 3); in double, float32 results are correctly
 * rounded but for the last bit. */
#ifndef FBP_GELU_DEFINED
#define FBP_GELU_DEFINED
static inline double fbp_gelu_f64(double x)
{
    return x * 0.5 * (1.0 + erf(x * FBP_SQRT1_2));
}
static inline double fbp_gelu_grad_f64(double x) /* Phi(x) + x phi(x) */
{
    return 0.5 * (1.0 + erf(x * FBP_SQRT1_2)) + x * exp(-0.5 * x * x) * FBP_GELU_BETA;
}
static inline double fbp_gelu_tanh_f64(double x)
{
    return 0.5 * x * (1.0 + tanh(FBP_SQRT_2_PI * (x + FBP_GELU_KAPPA * x * x * x)));
}
static inline double fbp_gelu_tanh_grad_f64(double x) /* PyTorch's order of operations */
{
    double th = tanh(FBP_SQRT_2_PI * (x + FBP_GELU_KAPPA * x * x * x));
    double dinner = FBP_SQRT_2_PI * (1.0 + 3.0 * FBP_GELU_KAPPA * x * x);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dinner;
}
#endif
#ifndef FBP_INLINE
#define FBP_INLINE static inline __attribute__((always_inline))
#endif

/* The cost class of act for fbp_threads_for. */
#ifndef FBP_ACT_COST
#define FBP_ACT_COST
static inline int fbp_act_cost(int act)
{
    _Static_assert(FBP_NACT == 7, "a cost per activation");
    switch (act) {
    case FBP_ACT_NONE:
    case FBP_ACT_RELU:
        return FBP_COST_MEM;
    case FBP_ACT_SIGMOID:
    case FBP_ACT_TANH:
    case FBP_ACT_GELU:
    case FBP_ACT_GELU_TANH:
    case FBP_ACT_SILU:
        return FBP_COST_EXP;
    default:
        FBP_BAD_CODE("activation", act);
    }
}
#endif

FBP_INLINE T FN(fbp_act_apply)(int act, T v)
{
    _Static_assert(FBP_NACT == 7, "a forward per activation");
    switch (act) {
    case FBP_ACT_NONE:
        return v;
    case FBP_ACT_RELU:
        return v < (T)0 ? (T)0 : v; /* NaN stays NaN */
    case FBP_ACT_SIGMOID:
        return SIGMOID(v);
    case FBP_ACT_TANH:
        return TANH(v);
    case FBP_ACT_GELU: /* x Phi(x), exact: PyTorch's default */
        return (T)fbp_gelu_f64((double)v);
    case FBP_ACT_GELU_TANH: /* PyTorch's approximate="tanh" */
        return (T)fbp_gelu_tanh_f64((double)v);
    case FBP_ACT_SILU: /* x sigmoid(x) */
        return v * SIGMOID(v);
    default:
        FBP_BAD_CODE("activation", act);
    }
}

/* act'(y) from the forward output y. Callers form dy * m as a separate
 * statement: written as one expression, GCC 12 turns the ReLU mask into a
 * branch and gives up vectorizing the loop. A product (not a select) so a NaN
 * in dy propagates through a zero mask. */
FBP_INLINE T FN(fbp_act_mask)(int act, T y)
{
    _Static_assert(FBP_NACT == 7, "a mask per activation");
    switch (act) {
    case FBP_ACT_NONE:
        return (T)1;
    case FBP_ACT_RELU:
        return (T)(y > (T)0);
    case FBP_ACT_SIGMOID:
        return y * ((T)1 - y);
    case FBP_ACT_TANH:
        return (T)1 - y * y;
    case FBP_ACT_GELU: /* y is the input x */
        return (T)fbp_gelu_grad_f64((double)y);
    case FBP_ACT_GELU_TANH: /* y is the input x */
        return (T)fbp_gelu_tanh_grad_f64((double)y);
    case FBP_ACT_SILU: { /* y is the input x: s (1 + x (1 - s)), PyTorch's form */
        T s = SIGMOID(y);
        return s * ((T)1 + y * ((T)1 - s));
    }
    default:
        FBP_BAD_CODE("activation", act);
    }
}

/* The per-row loops of the fused epilogues. Always inlined and called with a
 * constant act (see FBP_ACT_DISPATCH), so each activation gets its own
 * branch-free, vectorizable loop instead of a switch per element. */
FBP_INLINE void FN(fbp_bias_act_row)(fbp_idx O, const T *b, int act, T *yr)
{
    if (b)
        for (fbp_idx j = 0; j < O; j++)
            yr[j] = FN(fbp_act_apply)(act, yr[j] + b[j]);
    else
        for (fbp_idx j = 0; j < O; j++)
            yr[j] = FN(fbp_act_apply)(act, yr[j]);
}

/* dzr = dyr * act'(yr); acc += dzr. restrict: the rows never overlap, and
 * without it the compiler's runtime alias check sent the loop to its scalar
 * fallback. The in-place case (the training step's) is its own function. */
FBP_INLINE void FN(fbp_mask_acc_row)(fbp_idx w, int act, const T *restrict dyr,
                                     const T *restrict yr, T *restrict dzr, T *restrict acc)
{
    for (fbp_idx j = 0; j < w; j++) {
        T m = FN(fbp_act_mask)(act, yr[j]);
        T v = dyr[j] * m;
        dzr[j] = v;
        acc[j] += v;
    }
}

/* dzr = dzr * act'(yr); acc += dzr. */
FBP_INLINE void FN(fbp_mask_acc_row_inplace)(fbp_idx w, int act, const T *restrict yr,
                                             T *restrict dzr, T *restrict acc)
{
    for (fbp_idx j = 0; j < w; j++) {
        T m = FN(fbp_act_mask)(act, yr[j]);
        T v = dzr[j] * m;
        dzr[j] = v;
        acc[j] += v;
    }
}

/* The same with the dropout factor first, as the forward pass applied it:
 * dzr = (dyr * (keep * scale)) * act'(yr); acc += dzr. dzr may be dyr. */
FBP_INLINE void FN(fbp_mask_acc_row_drop)(fbp_idx w, int act, const T *dyr,
                                          const T *restrict yr, const uint8_t *restrict kr,
                                          T scale, T *dzr, T *restrict acc)
{
    for (fbp_idx j = 0; j < w; j++) {
        T m = FN(fbp_act_mask)(act, yr[j]);
        T d = dyr[j] * ((T)kr[j] * scale);
        T v = d * m;
        dzr[j] = v;
        acc[j] += v;
    }
}

#ifndef FBP_ACT_DISPATCH
/* Call CALL(a) with a replaced by the constant for act. */
_Static_assert(FBP_NACT == 7, "FBP_ACT_DISPATCH: a case per activation");
#define FBP_ACT_DISPATCH(act, CALL)                                                   \
    switch (act) {                                                                    \
    case FBP_ACT_NONE: CALL(FBP_ACT_NONE); break;                                     \
    case FBP_ACT_RELU: CALL(FBP_ACT_RELU); break;                                     \
    case FBP_ACT_SIGMOID: CALL(FBP_ACT_SIGMOID); break;                               \
    case FBP_ACT_TANH: CALL(FBP_ACT_TANH); break;                                     \
    case FBP_ACT_GELU: CALL(FBP_ACT_GELU); break;                                     \
    case FBP_ACT_GELU_TANH: CALL(FBP_ACT_GELU_TANH); break;                           \
    case FBP_ACT_SILU: CALL(FBP_ACT_SILU); break;                                     \
    default: FBP_BAD_CODE("activation", act);                                         \
    }
#endif
