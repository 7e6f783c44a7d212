/* dropout.c - inverted dropout on a hidden layer's output in a training step.
 *
 * hd = h * keep / (1 - p), keep a pure function of (seed, step, layer, row, column)
 * (fbp_rng.h), kept as bytes for the backward pass, which multiplies the gradient
 * by the same factor in the pass that forms the activation mask.
 */
#ifndef FBP_T
#define FBP_SELF "dropout.c"
#include "fbp_generic.h"
#else

#include "fbp_rng.h"

/* Rows [r0, r1) of h, hd, keep (N, O); row r is global row row0 + r of the batch. */
FBP_INLINE int FN(fbp_dropout_rows_body)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *h, T *hd,
                                         uint8_t *keep, uint64_t key, int64_t row0,
                                         uint32_t thresh, T scale)
{
    for (fbp_idx r = r0; r < r1; r++) {
        const uint64_t base = (uint64_t)(row0 + r) * (uint64_t)O;
        const T *restrict hr = h + r * O;
        T *restrict dr = hd + r * O;
        uint8_t *restrict kr = keep + r * O;
        /* k as a 32-bit int: with a byte converted to T, GCC 12 left the loop scalar */
        for (fbp_idx c = 0; c < O; c++) {
            uint32_t k = fbp_drop_bits(key, base + (uint64_t)c) >= thresh;
            kr[c] = (uint8_t)k;
            dr[c] = hr[c] * ((T)(int32_t)k * scale);
        }
    }
    return 0;
}

FBP_DISPATCHED(int, FN(fbp_dropout_rows), FN(fbp_dropout_rows_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx O, const T *h, T *hd, uint8_t *keep,
                uint64_t key, int64_t row0, uint32_t thresh, T scale),
               (r0, r1, O, h, hd, keep, key, row0, thresh, scale))

struct FN(dropout_ctx) {
    fbp_idx O;
    const T *h;
    T *hd;
    uint8_t *keep;
    uint64_t key;
    int64_t row0;
    uint32_t thresh;
    T scale;
};

static void FN(dropout_task)(void *p, fbp_idx r0, fbp_idx r1)
{
    const struct FN(dropout_ctx) *c = p;
    FN(fbp_dropout_rows)(r0, r1, c->O, c->h, c->hd, c->keep, c->key, c->row0, c->thresh,
                         c->scale);
}

/* h, hd, keep (N, O): hd = h * keep / (1 - p) for layer `layer` of a training step. */
void FN(fbp_dropout)(fbp_idx N, fbp_idx O, const T *h, T *hd, uint8_t *keep, double p,
                     uint64_t seed, int64_t step, int layer, int64_t row0)
{
    struct FN(dropout_ctx) c = {O, h, hd, keep, fbp_drop_key(seed, step, layer), row0,
                                fbp_drop_threshold(p), (T)(1.0 / (1.0 - p))};
    fbp_parallel(fbp_threads_for(N * O, FBP_COST_EXP), N, FN(dropout_task), &c);
}

#endif
