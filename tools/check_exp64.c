/* Check of fbp_exp_nonpos_f64, fbp_exp_nonpos_nonan_f64 and fbp_sigmoid_f64
 * (csrc/fbp_math.h) against long double expl (64-bit significand on x86-64,
 * within about 2^-62 relative: 0.002 double ulp of slack in the figures).
 * 2^64 inputs cannot all be tried, so it checks, with the count of each:
 *   sweep    2^28 + 1 evenly spaced x in [-750, 0] (sigmoid: 2^27 + 1 in [-750, 40])
 *   random   2^24 uniform x in the same range, and 2^24 random bit patterns
 *            (every exponent: tiny |x|, subnormal x, huge |x|), from a
 *            counter-based generator with a fixed seed
 *   windows  2^16 consecutive doubles on each side of every branch boundary:
 *            the underflow limit ln 2^-1075, the first subnormal result
 *            ln 2^-1022, the clamp at -746, the points where n = round(x / ln 2)
 *            changes, 0; for sigmoid also +-1, +-2^-60 and 53 ln 2, 54 ln 2,
 *            past which it rounds to 1 - 2^-53 and to 1
 *   special  0, -0, +-inf, NaN of both signs, the limits above and their
 *            neighbours: printed, and failing loudly if not as expected.
 * The functions are evaluated in blocks of 4096 by a loop GCC vectorizes, as
 * in the kernels (-O3 below), so the vector code is what is checked. Both exp
 * variants must agree bit for bit off NaN. Ulps are those of the exact value
 * (2^-1074 below 2^-1022). About a minute per build; run one after another:
 *   gcc -O3 -Icsrc tools/check_exp64.c -o /tmp/check_exp64 -lm && /tmp/check_exp64
 *   gcc -O3 -mavx2 -mfma -Icsrc tools/check_exp64.c -o /tmp/check_exp64_fma -lm && /tmp/check_exp64_fma
 *   gcc -O3 -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -Icsrc tools/check_exp64.c \
 *       -o /tmp/check_exp64_512 -lm && /tmp/check_exp64_512
 * Seen on 2026-11-29 (2-core AMD EPYC Zen 4 VM, AVX-512, GCC 12.2):
 *   baseline  exp: 303693825 points, max 0.7251 ulp (x = -84.210469387471676), subnormal
 *             results 0.8076 ulp (x = -708.74299212663777, rounded twice);
 *             sigmoid: 169607169 points, max 0.7158 ulp (v = -459.19482372701168),
 *             subnormal results 0.7898 ulp (v = -708.74770537018776)
 *   AVX2+FMA  exp: max 0.6924 ulp (x = -138.97136440250122), subnormal 0.7935 ulp;
 *             sigmoid: max 0.6953 ulp (v = -434.25315625965595), subnormal 0.7874 ulp
 *   AVX-512   the same figures as AVX2+FMA
 * In all three: specials as expected, the two exp variants equal off NaN.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "fbp_math.h"

#define B 4096

/* splitmix64 of a counter: the k-th random number, independent of order */
static uint64_t rnd(uint64_t k)
{
    uint64_t z = (k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double from_bits(uint64_t b) { double x; memcpy(&x, &b, 8); return x; }
static uint64_t to_bits(double x) { uint64_t b; memcpy(&b, &x, 8); return b; }

/* |got - want| in ulps of want (of its binade, 2^-1074 in the subnormal range) */
static double ulp_err(double got, long double want)
{
    if (isnan(got) != isnan(want)) return INFINITY;
    if (isnan(got)) return 0;
    long double aw = fabsl(want);
    long double ulp = 0x1p-1074L;
    if (aw >= 0x1p-1022L) {
        int e;
        frexpl(aw, &e); /* aw in [2^(e-1), 2^e) */
        ulp = ldexpl(1.0L, e - 53);
    }
    return (double)(fabsl((long double)got - want) / ulp);
}

__attribute__((noinline)) static void eval_exp(const double *x, double *y, double *y2, int n)
{
    for (int i = 0; i < n; i++) y[i] = fbp_exp_nonpos_f64(x[i]);
    for (int i = 0; i < n; i++) y2[i] = fbp_exp_nonpos_nonan_f64(x[i]);
}

__attribute__((noinline)) static void eval_sig(const double *x, double *y, int n)
{
    for (int i = 0; i < n; i++) y[i] = fbp_sigmoid_f64(x[i]);
}

/* the largest error for normal and for subnormal (or zero) results */
typedef struct { const char *name; double max, at, smax, sat; long n, bad; } stat_t;

static void note(stat_t *s, double x, double e, long double want)
{
    if (fabsl(want) >= 0x1p-1022L) {
        if (e > s->max) { s->max = e; s->at = x; }
    } else if (e > s->smax) {
        s->smax = e; s->sat = x;
    }
    if (!(e < 1.0)) s->bad++;
    s->n++;
}

static long nonan_mismatch;

/* the exp check of x[0..n) */
static void run_exp(stat_t *s, const double *x, int n)
{
    static double y[B], y2[B];
    eval_exp(x, y, y2, n);
    for (int i = 0; i < n; i++) {
        long double want = expl((long double)x[i]);
        note(s, x[i], ulp_err(y[i], want), want);
        if (to_bits(y[i]) != to_bits(y2[i])) nonan_mismatch++;
    }
}

static void run_sig(stat_t *s, const double *x, int n)
{
    static double y[B];
    eval_sig(x, y, n);
    for (int i = 0; i < n; i++) {
        long double want = 1.0L / (1.0L + expl(-(long double)x[i]));
        note(s, x[i], ulp_err(y[i], want), want);
    }
}

typedef void (*runner)(stat_t *, const double *, int);

/* n points gen(k), k = 0..n-1, in blocks */
static void sweep(runner run, stat_t *s, long n, double (*gen)(long, const void *), const void *arg)
{
    static double x[B];
    for (long k0 = 0; k0 < n; k0 += B) {
        int m = (int)(n - k0 < B ? n - k0 : B);
        for (int i = 0; i < m; i++) x[i] = gen(k0 + i, arg);
        run(s, x, m);
    }
}

typedef struct { double lo, hi; long n; } range_t;
static double gen_even(long k, const void *a) { const range_t *r = a; return r->lo + (r->hi - r->lo) * ((double)k / (double)r->n); }
static double gen_unif(long k, const void *a) { const range_t *r = a; return r->lo + (r->hi - r->lo) * ((rnd((uint64_t)k) >> 11) * 0x1p-53); }
/* random bits; arg: the sign to force (0: either, 1: negative) */
static double gen_bits(long k, const void *a)
{
    uint64_t b = rnd((uint64_t)k + 0x5EEDull * 0x100000000ull);
    if (*(const int *)a) b |= 0x8000000000000000ull;
    double x = from_bits(b);
    return isnan(x) || isinf(x) ? -1.0 : x;
}
/* 2^16 doubles below and 2^16 above c, stepping on the bits */
static double gen_window(long k, const void *a)
{
    double c = *(const double *)a;
    uint64_t b = to_bits(c);
    long d = k - 65536;
    if (c == 0) return from_bits(0x8000000000000000ull + (uint64_t)k); /* -0 and below */
    return from_bits(b + (uint64_t)(int64_t)d);
}

static void print(const stat_t *s)
{
    printf("  %-22s %10ld points, max %.4f ulp at x = %-22.17g", s->name, s->n, s->max, s->at);
    if (s->smax > 0) printf(" subnormal results %.4f at %.17g", s->smax, s->sat);
    printf("%s\n", s->bad ? "  <-- 1 ulp or more" : "");
}

static void merge(stat_t *all, const stat_t *s)
{
    if (s->max > all->max) { all->max = s->max; all->at = s->at; }
    if (s->smax > all->smax) { all->smax = s->smax; all->sat = s->sat; }
    all->n += s->n;
    all->bad += s->bad;
}

static int special_fail;

static void special_exp(double x, double want)
{
    double xs[1] = {x}, y[1], y2[1];
    eval_exp(xs, y, y2, 1);
    int ok = isnan(want) ? isnan(y[0]) : (to_bits(y[0]) == to_bits(want));
    if (!ok) special_fail++;
    printf("    exp(%-24.17g) = %-24.17g %s\n", x, y[0], ok ? "ok" : "WRONG");
}

static void special_sig(double v, double want)
{
    double vs[1] = {v}, y[1];
    eval_sig(vs, y, 1);
    int ok = isnan(want) ? isnan(y[0]) : (to_bits(y[0]) == to_bits(want));
    if (!ok) special_fail++;
    printf("    sigmoid(%-20.17g) = %-24.17g %s\n", v, y[0], ok ? "ok" : "WRONG");
}

int main(void)
{
    const double lnmin = -745.13321910194111; /* ln 2^-1075: the underflow limit */
    const double lnsub = -708.39641853226408; /* ln 2^-1022: results below are subnormal */
    int neg = 1, any = 0;

    /* ---- exp ---- */
    stat_t e_all = {"exp: all", 0, 0, 0, 0, 0, 0};
    {
        range_t r = {-750.0, 0.0, 1L << 28};
        stat_t s = {"sweep [-750, 0]", 0, 0, 0, 0, 0, 0};
        r.n = 1L << 28;
        sweep(run_exp, &s, r.n + 1, gen_even, &r);
        print(&s); merge(&e_all, &s);
        stat_t u = {"uniform [-750, 0]", 0, 0, 0, 0, 0, 0};
        range_t ru = {-750.0, 0.0, 0};
        sweep(run_exp, &u, 1L << 24, gen_unif, &ru);
        print(&u); merge(&e_all, &u);
        stat_t b = {"random bits, x < 0", 0, 0, 0, 0, 0, 0};
        sweep(run_exp, &b, 1L << 24, gen_bits, &neg);
        print(&b); merge(&e_all, &b);
        stat_t w = {"windows", 0, 0, 0, 0, 0, 0};
        double cs[] = {lnmin, lnsub, -746.0, 0.0, -0.5 * 0.69314718055994531, -1.5 * 0.69314718055994531,
                       -1.0 * 0.69314718055994531, -10.5 * 0.69314718055994531, -700.5 * 0.69314718055994531,
                       -1022.5 * 0.69314718055994531, -1074.5 * 0.69314718055994531, -1.0, -0x1p-20};
        for (unsigned i = 0; i < sizeof cs / sizeof cs[0]; i++) sweep(run_exp, &w, 131072, gen_window, &cs[i]);
        print(&w); merge(&e_all, &w);
    }
    print(&e_all);
    printf("  nonan variant differing from the NaN-keeping one off NaN: %ld\n", nonan_mismatch);
    printf("  special values:\n");
    special_exp(0.0, 1.0);
    special_exp(-0.0, 1.0);
    special_exp(-INFINITY, 0.0);
    special_exp(NAN, NAN);
    special_exp(-NAN, NAN);
    special_exp(-0x1p-1074, 1.0);
    special_exp(-0x1p-54, 1.0);
    special_exp(-0x1p-53, 0x1.fffffffffffffp-1);
    special_exp(-746.0, 0.0);
    special_exp(nextafter(-746.0, 0.0), 0.0);
    special_exp(-1e300, 0.0);
    special_exp(-DBL_MAX, 0.0);
    special_exp(nextafter(lnmin, -INFINITY), 0.0);
    special_exp(lnmin, (double)expl(lnmin));
    special_exp(-745.1, 0x1p-1074);
    special_exp(nextafter(lnsub, 0.0), (double)expl(nextafter(lnsub, 0.0)));
    special_exp(lnsub, (double)expl(lnsub));
    special_exp(-1.0, 0.36787944117144233);

    /* ---- sigmoid ---- */
    stat_t s_all = {"sigmoid: all", 0, 0, 0, 0, 0, 0};
    {
        range_t r = {-750.0, 40.0, 1L << 27};
        stat_t s = {"sweep [-750, 40]", 0, 0, 0, 0, 0, 0};
        sweep(run_sig, &s, r.n + 1, gen_even, &r);
        print(&s); merge(&s_all, &s);
        stat_t u = {"uniform [-750, 40]", 0, 0, 0, 0, 0, 0};
        range_t ru = {-750.0, 40.0, 0};
        sweep(run_sig, &u, 1L << 24, gen_unif, &ru);
        print(&u); merge(&s_all, &u);
        stat_t b = {"random bits", 0, 0, 0, 0, 0, 0};
        sweep(run_sig, &b, 1L << 24, gen_bits, &any);
        print(&b); merge(&s_all, &b);
        stat_t w = {"windows", 0, 0, 0, 0, 0, 0};
        double cs[] = {lnmin, lnsub, -746.0, 0.0, 0.5 * 0.69314718055994531, -0.5 * 0.69314718055994531,
                       1.5 * 0.69314718055994531, -1.5 * 0.69314718055994531, 36.7368005696771, 37.42994775023705,
                       -1.0, 1.0, 0x1p-60, -0x1p-60};
        for (unsigned i = 0; i < sizeof cs / sizeof cs[0]; i++) sweep(run_sig, &w, 131072, gen_window, &cs[i]);
        print(&w); merge(&s_all, &w);
    }
    print(&s_all);
    printf("  special values:\n");
    special_sig(0.0, 0.5);
    special_sig(-0.0, 0.5);
    special_sig(INFINITY, 1.0);
    special_sig(-INFINITY, 0.0);
    special_sig(NAN, NAN);
    special_sig(-NAN, NAN);
    special_sig(40.0, 1.0);
    special_sig(800.0, 1.0);
    special_sig(-800.0, 0.0);
    special_sig(-DBL_MAX, 0.0);
    special_sig(DBL_MAX, 1.0);
    special_sig(-745.1, 0x1p-1074);
    special_sig(0x1p-1074, 0.5);

    int fail = e_all.bad + s_all.bad + special_fail + (nonan_mismatch != 0);
    printf("%s\n", fail ? "FAILED" : "all within 1 ulp, specials as expected");
    return fail ? 1 : 0;
}
