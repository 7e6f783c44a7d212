/* fbp_math.h - exp for x <= 0, written so the compiler can vectorize it.
 *
 * Every exp in our kernels has a non-positive argument: softmax takes
 * exp(z - max z), sigmoid exp(-|x|). glibc's expf is a scalar call, which
 * left the softmax several times slower than one pass over its memory.
 * fbp_expf_nonpos is branch-free C (Cody-Waite reduction, Cephes' degree-6
 * polynomial, 2^n built from exponent bits so subnormal results stay
 * right). Checked exhaustively against double exp over every float in
 * [-110, 0] by tools/check_expf.c: at most 0.999 ulp as the portable baseline
 * compiles it, 1.028 ulp where FMAs contract the polynomial (the AVX2+FMA copies
 * the kernels run on such CPUs); exp(-inf) = 0 and NaN stays NaN.
 * double keeps libm's exp.
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
 * The loop is bound by the latency of its dependency chain (the out-of-order
 * window holds too few iterations), so the chain is kept short: Estrin's form
 * for the polynomial and one FMA for (q + 1) 2^n. 0.48 ns per float in a
 * softmax-style exp-and-sum loop on one Zen 2 core (AVX2), against 0.52 with
 * Horner's form, 0.88 for the first version and 0.51 for glibc's libmvec expf.
 *
 * fbp_expf_nonpos_nonan: x <= 0 or -inf, never NaN (a negative NaN would
 * come out as 0). The softmax uses it after checking each row for NaN once:
 * the NaN mask costs three of about 22 vector operations, 9% of the loop. */
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

static inline double fbp_sigmoid_f64(double v)
{
    double e = exp(-fabs(v));
    double r = 1.0 / (1.0 + e);
    return v < 0.0 ? e * r : r;
}

#endif /* FBP_MATH_H */
