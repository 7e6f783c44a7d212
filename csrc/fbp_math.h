/* fbp_math.h - exp for x <= 0, sigmoid and tanh, written so the compiler can
 * vectorize them.
 *
 * Every exp in our kernels has a non-positive argument: softmax takes
 * exp(z - max z), sigmoid exp(-|x|), tanh exp(-2|x|). glibc's expf and exp
 * are scalar calls, which left the softmax several times slower than one pass
 * over its memory. fbp_expf_nonpos is branch-free C (Cody-Waite reduction,
 * Cephes' degree-6 polynomial, 2^n built from exponent bits so subnormal
 * results stay right). Checked exhaustively against double exp over every
 * float in [-110, 0] by tools/check_expf.c: at most 0.999 ulp as the portable
 * baseline compiles it, 1.028 ulp where FMAs contract the polynomial (the
 * AVX2+FMA copies the kernels run on such CPUs); exp(-inf) = 0 and NaN stays
 * NaN. The float64 functions at the end follow the same rules (see there).
 * Deterministic and portable: no fast-math, no target-specific code.
 */
#ifndef FBP_MATH_H
#define FBP_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Every floating-point operation is unconditional and every select is on
 * integers: with a float compare (x < -104 ? 0 : ...) GCC branched around the
 * arithmetic, and with trapping math on it then refused to vectorize.
 * The loop is bound by the latency of its dependency chain, so the chain is
 * kept short: Estrin's form for the polynomial and one FMA for (q + 1) 2^n
 * (measurements: docs/dev/history.md).
 *
 * fbp_expf_nonpos_nonan: x <= 0 or -inf, never NaN (a negative NaN would
 * come out as 0). The softmax uses it after checking each row for NaN once,
 * which saves the NaN mask in the loop. */
static inline __attribute__((always_inline)) float fbp_expf_nonpos_nonan(float x)
{
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    /* unsigned min on the bits: x < -104 and -inf become -104, +0 and -0 stay */
    xb = xb < 0xC2D00000u ? xb : 0xC2D00000u;
    memcpy(&x, &xb, sizeof x);
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to nearest */
    float n = t - 12582912.0f;                /* n = round(x / ln 2), in [-150, 0] */
    float r = x - n * 0.693359375f;           /* Cody-Waite: ln 2 = hi + lo */
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;                         /* Cephes expf polynomial on [-ln2/2, ln2/2] */
    float a = 1.6666665459e-1f * r + 5.0000001201e-1f;
    float b = 8.3334519073e-3f * r + 4.1665795894e-2f;
    float c = 1.9875691500e-4f * r + 1.3981999507e-3f;
    float p = (c * r2 + b) * r2 + a;
    float q = p * r2 + r;                     /* exp(r) - 1 */
    /* t's low bits hold n; (t_bits + 151) << 23 are the bits of 2^(n + 24),
     * normal for every n >= -150. (q + 1) 2^(n+24) = q s + s is rounded once
     * (an FMA where there is one) and the multiplication by 2^-24 rounds
     * subnormal results once more, from an exact value: they stay right. */
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    uint32_t sb = (tb + 151u) << 23;
    float s;
    memcpy(&s, &sb, sizeof s);
    return (q * s + s) * 5.9604644775390625e-8f; /* 0 for x <= -104 */
}

/* exp(x) for x <= 0, -inf and NaN (kept) */
static inline __attribute__((always_inline)) float fbp_expf_nonpos(float x)
{
    uint32_t xb, rb;
    memcpy(&xb, &x, sizeof xb);
    /* all ones for NaN of either sign (x86's default NaN is negative) */
    uint32_t nan = (uint32_t)0 - (uint32_t)((int32_t)(xb & 0x7FFFFFFFu) > 0x7F800000);
    float res = fbp_expf_nonpos_nonan(x);
    memcpy(&rb, &res, sizeof rb);
    rb |= nan;
    memcpy(&res, &rb, sizeof res);
    return res;
}

/* sigmoid(v) = r or e r with e = exp(-|v|) <= 1, r = 1 / (1 + e): neither
 * half overflows and both keep their tail exact. The half is chosen by a
 * blend on v's sign bit (a float select would again become a branch). */
static inline __attribute__((always_inline)) float fbp_sigmoid_f32(float v)
{
    float e = fbp_expf_nonpos(-fabsf(v));
    float r = 1.0f / (1.0f + e);
    uint32_t vb, eb, one = 0x3F800000u;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&eb, &e, sizeof eb);
    uint32_t neg = (uint32_t)0 - (vb >> 31);
    uint32_t nb = (eb & neg) | (one & ~neg);
    float num;
    memcpy(&num, &nb, sizeof num);
    return num * r;
}

/* tanh(v): Cephes' odd polynomial for |v| < 0.625, else (1 - e) / (1 + e) with
 * e = exp(-2|v|) <= 0.287 (no cancellation), the sign put back from v's bits.
 * Both halves are computed and blended on integer bits (see fbp_expf_nonpos).
 * Within 1.51 ulp of tanh for every float (checked by tools/check_tanhf.c). */
static inline __attribute__((always_inline)) float fbp_tanh_f32(float v)
{
    float a = fabsf(v);
    float z = a * a;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = a + a * z * p;
    float e = fbp_expf_nonpos(-2.0f * a);
    float large = (1.0f - e) / (1.0f + e);
    uint32_t ab, sb, lb, vb;
    memcpy(&ab, &a, sizeof ab);
    memcpy(&sb, &small, sizeof sb);
    memcpy(&lb, &large, sizeof lb);
    memcpy(&vb, &v, sizeof vb);
    uint32_t use_small = (uint32_t)0 - (uint32_t)(ab < 0x3F200000u); /* |v| < 0.625 */
    uint32_t rb = ((sb & use_small) | (lb & ~use_small)) | (vb & 0x80000000u);
    float r;
    memcpy(&r, &rb, sizeof r);
    return r;
}

/* log1p(e) for e in [0, 1] (BCE's e = exp(-|z|)) and NaN (kept): 2 atanh(s),
 * s = e / (2 + e) <= 1/3, by atanh's odd series 2 s (1 + s^2/3 + ... + s^12/13);
 * the next term is below 2^-26 of the sum. With the float exp, BCE's terms came
 * within 1.58 ulp over 46,000 logits in [-80, 80] (the float64 pair: 1.76 ulp;
 * tests/test_losses.py checks 2); vectorizes. */
static inline __attribute__((always_inline)) float fbp_log1p_unit_f32(float e)
{
    float s = e / (2.0f + e), z = s * s;
    float p = 1.0f / 13.0f;
    p = p * z + 1.0f / 11.0f;
    p = p * z + 1.0f / 9.0f;
    p = p * z + 1.0f / 7.0f;
    p = p * z + 1.0f / 5.0f;
    p = p * z + 1.0f / 3.0f;
    return 2.0f * s + (2.0f * s) * (z * p);
}

/* ---- float64 ---------------------------------------------------------------
 *
 * The same rules as above, on 64-bit bits. SSE2, the portable baseline, has no
 * 64-bit integer compare (a 64-bit min or a > on the bits does not vectorize
 * there), so every mask is the top bit of a 64-bit unsigned subtraction whose
 * operands are known not to wrap the wrong way: (a - b) >> 63 is a < b when
 * a and b are both below 2^63 or both at or above it. Unsigned, so GCC cannot
 * fold it back into a compare.
 *
 * Written as plainly as the float ones, the double functions come close to or
 * beyond 1 ulp: exp(r) as 1 + q, q rounded first, reached 0.996 ulp, and a
 * sigmoid e / (1 + e) on that rounded e 2.4 ulp (e's error, then 1 + e's, then
 * the division's). So the exp below returns exp(x) as s (h + l): s a power of two,
 * h + l = exp(r) to about 2^-56, the rounding error of the reduced argument r
 * carried in l. sigmoid and tanh form 1 + e and 1 - e as unevaluated sums from
 * it, divide, and correct the quotient by its residual, computed exactly
 * (fbp_div_dd_f64): only the last addition rounds. The sigmoid takes about
 * 1.6 times as long as the plain one with AVX2 or AVX-512.
 *
 * Where FMAs contract (the AVX2+FMA builds), products that are exact stay
 * exact and rounded ones get more accurate; no error term relies on a product
 * being rounded (the splits in fbp_div_dd_f64 are bit masks, not Veltkamp's
 * c x - (c x - x), which contraction would break). The bounds are checked in
 * three builds (baseline, AVX2+FMA, AVX-512) by tools/check_exp64.c and
 * tools/check_tanh64.c. The error terms need doubles evaluated as doubles
 * (FLT_EVAL_METHOD 0, as on x86-64 and AArch64; x87 would break them). */

static inline __attribute__((always_inline)) uint64_t fbp_bits_f64(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline __attribute__((always_inline)) double fbp_from_bits_f64(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* all ones for NaN of either sign, else 0: |x| bits above inf's */
static inline __attribute__((always_inline)) uint64_t fbp_nan_mask_f64(double x)
{
    uint64_t ab = fbp_bits_f64(x) & 0x7FFFFFFFFFFFFFFFull;
    return (uint64_t)0 - ((0x7FF0000000000000ull - ab) >> 63);
}

/* exp(x) = s (h + l) 2^-64 for x <= 0 or -inf (x > 0 is taken as -x, a NaN as
 * x <= -746): s = 2^(n+64) with n = round(x / ln 2) in [-1076, 0], so s is
 * normal for every n; h + l = exp(r), r = x - n ln 2 in [-ln2/2, ln2/2], with
 * |l| <= ulp(h) / 2 and a relative error of about 2^-56. */
typedef struct { double s, h, l; } fbp_exp_parts_f64;

static inline __attribute__((always_inline)) fbp_exp_parts_f64 fbp_exp_split_f64(double x)
{
    /* -746 for x < -746 and -inf (exp(-746) < 2^-1075 rounds to 0); the sign
     * bit is forced first so that +0 (bits 0) compares like -0 */
    const uint64_t lim = 0xC087500000000000ull; /* -746.0 */
    uint64_t xb = fbp_bits_f64(x) | 0x8000000000000000ull;
    uint64_t clamp = ((xb - lim) >> 63) - 1;    /* all ones where xb >= lim */
    xb ^= (xb ^ lim) & clamp;
    x = fbp_from_bits_f64(xb);
    double t = x * 1.4426950408889634 + 6755399441055744.0; /* 1.5 * 2^52: round to nearest */
    double n = t - 6755399441055744.0;
    /* Cody-Waite: ln 2 = hi + lo, hi with 32 bits so n hi and x - n hi are
     * exact; er is the rounding error of r = x - n ln 2, kept for l */
    double rh = x - n * 6.93147180369123816490e-01;
    double nlo = n * 1.90821492927058770002e-10;
    double r = rh - nlo;
    double er = (rh - r) - nlo;
    /* exp(r) = 1 + r + r^2 p(r): p minimax (relative error 2^-62.7 of exp)
     * on [-0.3466, 0.3466], degree 10, in Estrin's form */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p01 = 0.1666666666666667 * r + 0.5;
    double p23 = 0.008333333333326167 * r + 0.041666666666666616;
    double p45 = 0.0001984126987472095 * r + 0.001388888888891796;
    double p67 = 2.7557255514045516e-06 * r + 2.480158724574119e-05;
    double p89 = 2.510517370388885e-08 * r + 2.7557349620969714e-07;
    double p03 = p23 * r2 + p01;
    double p47 = p67 * r2 + p45;
    double p8a = 2.0889373366478855e-09 * r2 + p89;
    double p = (p8a * r8 + p47 * r4) + p03;
    /* 1 + r rounds once, its error (1 - h0) + r is exact; everything small
     * is summed in l0, then (h, l) is renormalized */
    double h0 = 1.0 + r;
    double l0 = ((1.0 - h0) + r) + (p * r2 + er);
    fbp_exp_parts_f64 e;
    e.h = h0 + l0;
    e.l = (h0 - e.h) + l0;
    /* t's low bits hold n; (t_bits + 1087) << 52 are the bits of 2^(n + 64) */
    e.s = fbp_from_bits_f64((fbp_bits_f64(t) + 1087u) << 52);
    return e;
}

/* exp(x) for x <= 0 or -inf, never NaN (a NaN comes out as 0).
 * At most 0.73 ulp for normal results (0.70 where FMAs contract); results
 * below 2^-1022 are rounded twice (to 53 bits, then by the final 2^-64 into
 * the subnormal range): 0.81 ulp; 0 below -745.13. Checked by
 * tools/check_exp64.c. */
static inline __attribute__((always_inline)) double fbp_exp_nonpos_nonan_f64(double x)
{
    fbp_exp_parts_f64 e = fbp_exp_split_f64(x);
    return (e.h * e.s) * 0x1p-64;
}

/* exp(x) for x <= 0, -inf and NaN (kept); bounds as above */
static inline __attribute__((always_inline)) double fbp_exp_nonpos_f64(double x)
{
    double r = fbp_exp_nonpos_nonan_f64(x);
    return fbp_from_bits_f64(fbp_bits_f64(r) | fbp_nan_mask_f64(x));
}

/* x with its low 27 significand bits cleared: 26 significant bits, so the
 * product of two such halves, or of one and a 27-bit rest, is exact */
static inline __attribute__((always_inline)) double fbp_hi26_f64(double x)
{
    return fbp_from_bits_f64(fbp_bits_f64(x) & 0xFFFFFFFFF8000000ull);
}

/* (nh + nl) / (dh + dl), |nl| and |dl| small against nh and dh, given
 * y = nh / dh rounded and inv = 1 / dh to a few bits: y plus the correction
 * (nh - y dh + nl - y dl) / dh, with the residual nh - y dh exact (split
 * products, so no FMA is needed). One rounding is left, the last addition. */
static inline __attribute__((always_inline)) double fbp_div_dd_f64(double nh, double nl, double dh,
                                                                   double dl, double y, double inv)
{
    double yh = fbp_hi26_f64(y), yl = y - yh;
    double dhh = fbp_hi26_f64(dh), dhl = dh - dhh;
    double rho = (((nh - yh * dhh) - yh * dhl) - yl * dhh) - yl * dhl;
    return y + ((rho + nl) - y * dl) * inv;
}

/* sigmoid(v) = 1 / (1 + e) or e / (1 + e), e = exp(-|v|) <= 1: no overflow,
 * and each tail is as exact as e (sigmoid(-800) = 0, sigmoid(40) = 1). The
 * numerator is chosen by a blend on v's sign bit. For v < 0 the quotient is
 * formed in exp's 2^64-scaled range and scaled back at the end, so results
 * below 2^-1022 round twice like the exp's. NaN kept. At most 0.72 ulp for
 * normal results (0.70 where FMAs contract), 0.79 for subnormal ones; checked
 * by tools/check_exp64.c. */
static inline __attribute__((always_inline)) double fbp_sigmoid_f64(double v)
{
    fbp_exp_parts_f64 e = fbp_exp_split_f64(-fabs(v));
    double sc = e.s * 0x1p-64;                /* 2^n; 0 or inexact only where e < 2^-1022 */
    double eh = sc * e.h, el = sc * e.l;
    double dh = 1.0 + eh;                     /* 1 + e = dh + dl */
    double dl = ((1.0 - dh) + eh) + el;
    uint64_t neg = (uint64_t)0 - (fbp_bits_f64(v) >> 63);
    /* numerator times 2^64: e 2^64 = s (h + l) for v < 0, else 2^64 */
    double nh = fbp_from_bits_f64((fbp_bits_f64(e.s * e.h) & neg) | (0x43F0000000000000ull & ~neg));
    double nl = fbp_from_bits_f64(fbp_bits_f64(e.s * e.l) & neg);
    double y = nh / dh;
    /* 1 / (1 + e) is the result for v >= 0, 1 minus it for v < 0 */
    double y0 = y * 0x1p-64;
    double inv = fbp_from_bits_f64((fbp_bits_f64(1.0 - y0) & neg) | (fbp_bits_f64(y0) & ~neg));
    double r = fbp_div_dd_f64(nh, nl, dh, dl, y, inv) * 0x1p-64;
    return fbp_from_bits_f64(fbp_bits_f64(r) | fbp_nan_mask_f64(v));
}

/* tanh(v): for |v| < 0.25 the odd polynomial |v| + |v|^3 p(v^2), p minimax of
 * degree 7 (relative error 2^-63 of tanh); else (1 - e) / (1 + e) with
 * e = exp(-2|v|) = s (h + l): 1 - e and 1 + e are formed as unevaluated sums
 * and divided by fbp_div_dd_f64, so the cancellation in 1 - e costs only e's
 * own 2^-56 and the division rounds once. Both halves are computed and
 * blended on the bits, the sign put back from v's; tanh(+-inf) = +-1, -0 and
 * NaN kept. At most 0.66 ulp (0.68 where FMAs contract); checked by
 * tools/check_tanh64.c. */
static inline __attribute__((always_inline)) double fbp_tanh_f64(double v)
{
    double a = fabs(v);
    double z = a * a, z2 = z * z, z4 = z2 * z2;
    double p01 = 0.1333333333333302 * z - 0.3333333333333333;
    double p23 = 0.021869488400369362 * z - 0.05396825396719524;
    double p45 = 0.003591834144361012 * z - 0.008863226966563895;
    double p67 = 0.0005336808528126119 * z - 0.001450223591994099;
    double p = (p67 * z2 + p45) * z4 + (p23 * z2 + p01);
    double small = a + (a * z) * p;

    fbp_exp_parts_f64 e = fbp_exp_split_f64(-2.0 * a);
    double sc = e.s * 0x1p-64;
    double eh = sc * e.h, el = sc * e.l;
    double nh = 1.0 - eh;                     /* 1 - e = nh + nl */
    double nl = ((1.0 - nh) - eh) - el;
    double dh = 1.0 + eh;                     /* 1 + e = dh + dl */
    double dl = ((1.0 - dh) + eh) + el;
    double y = nh / dh;
    double large = fbp_div_dd_f64(nh, nl, dh, dl, y, (1.0 + y) * 0.5); /* 1/(1+e) = (1+tanh)/2 */

    uint64_t ab = fbp_bits_f64(a);
    uint64_t use_small = (uint64_t)0 - ((ab - 0x3FD0000000000000ull) >> 63); /* |v| < 0.25 */
    uint64_t rb = (fbp_bits_f64(small) & use_small) | (fbp_bits_f64(large) & ~use_small);
    rb |= fbp_bits_f64(v) & 0x8000000000000000ull;
    return fbp_from_bits_f64(rb | fbp_nan_mask_f64(v));
}

/* log1p(e) for e in [0, 1] and NaN, as fbp_log1p_unit_f32 with the series to
 * s^33/33 (the next term below 2^-56 of the sum). */
static inline __attribute__((always_inline)) double fbp_log1p_unit_f64(double e)
{
    double s = e / (2.0 + e), z = s * s;
    double p = 1.0 / 33.0;
    for (int k = 31; k >= 3; k -= 2) /* unrolled by the compiler: constant bounds */
        p = p * z + 1.0 / (double)k;
    return 2.0 * s + (2.0 * s) * (z * p);
}

#endif /* FBP_MATH_H */
