/* fbp_act.h - scalar activations and their masks, per element type.
 * Included inside a kernel file's generic section (T and FN defined), so the
 * fused epilogues in dense.c and step.c use exactly the same formulas as the
 * standalone kernels in activations.c. Masks are functions of the forward
 * OUTPUT y: relu' = (y > 0), sigmoid' = y (1 - y), tanh' = 1 - y^2.
 */
static inline T FN(fbp_act_apply)(int act, T v)
{
    switch (act) {
    case FBP_ACT_RELU:
        return v < (T)0 ? (T)0 : v; /* NaN stays NaN */
    case FBP_ACT_SIGMOID:
        return (T)1 / ((T)1 + EXP(-v));
    case FBP_ACT_TANH:
        return TANH(v);
    default:
        return v;
    }
}

/* dy * act'(y), written as a product so a NaN in dy propagates. */
static inline T FN(fbp_act_grad)(int act, T dy, T y)
{
    switch (act) {
    case FBP_ACT_RELU:
        return dy * (T)(y > (T)0);
    case FBP_ACT_SIGMOID:
        return dy * (y * ((T)1 - y));
    case FBP_ACT_TANH:
        return dy * ((T)1 - y * y);
    default:
        return dy;
    }
}
