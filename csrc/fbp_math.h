/* fbp_math.h - exp for x <= 0, written so the compiler can vectorize it.
 *
 * Every exp in our kernels has a non-positive argument: softmax takes
 * exp(z - max z), sigmoid exp(-|x|). glibc's expf is a scalar call, which
 * left the softmax several times slower than one pass over its memory.
 * fbp_expf_nonpos is branch-free C (Cody-Waite reduction, Cephes' degree-6
 * polynomial, 2^n built from exponent bits in two steps so subnormal results
 * stay right), within 1 ulp of exp for every float x <= 0 (checked
 * exhaustively by tools/check_expf.c); exp(-inf) = 0 and NaN stays NaN.
 * double keeps libm's exp.
 * Deterministic and portable: no fast-math, no target-specific code.
 */
#ifndef FBP_MATH_H
#define FBP_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float fbp_pow2i_f32(int32_t n) /* 2^n for n in [-126, 127] */
{
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Every floating-point operation is unconditional and every select is on
 * integers: with a float compare (x < -104 ? 0 : ...) GCC branched around the
 * arithmetic, and with trapping math on it then refused to vectorize. */
static inline __attribute__((always_inline)) float fbp_expf_nonpos(float x)
{
    uint32_t xb;                              /* x < -1000 and -inf become -1000 */
    memcpy(&xb, &x, sizeof xb);
    uint32_t ax = xb & 0x7FFFFFFFu;           /* |x| bits; NaN is above 0x7F800000 */
    uint32_t big = (uint32_t)0 - (uint32_t)((ax > 0x447A0000u) & (ax <= 0x7F800000u));
    xb = (xb & ~big) | (0xC47A0000u & big);   /* a blend, not a branch GCC can thread */
    memcpy(&x, &xb, sizeof x);
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to nearest */
    float n = t - 12582912.0f;                /* n = round(x / ln 2) */
    float r = x - n * 0.693359375f;           /* Cody-Waite: ln 2 = hi + lo */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;               /* Cephes expf polynomial on [-ln2/2, ln2/2] */
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t tb;                              /* n as an integer, from t's low bits */
    memcpy(&tb, &t, sizeof tb);
    int32_t ni = (int32_t)(tb - 0x4B400000u);
    ni = ni < -152 ? -152 : (ni > 0 ? 0 : ni); /* -152: p 2^n rounds to 0 */
    int32_t n1 = ni / 2, n2 = ni - n1;        /* each in [-76, 0]: two normal factors */
    return p * fbp_pow2i_f32(n1) * fbp_pow2i_f32(n2); /* 0 for x < -104, NaN for NaN */
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
