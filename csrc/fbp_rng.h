/* fbp_rng.h - the counter-based generator behind dropout masks and epoch orders.
 *
 * A mask element is a pure function of (seed, step, layer, row, column): the key
 * of (seed, step, layer) is mixed once, then every element hashes key + its flat
 * index (row * width + column) with splitmix64's finalizer. No state, no order:
 * the same mask whatever the thread count or however a batch is split over
 * threads or processes (a process passes its rows' global index). The NumPy twin
 * is fastbp.reference.dropout_keep.
 *
 * An epoch's row order is a Fisher-Yates shuffle whose draw at position i is
 * the same hash of (key of (seed, epoch, rank)) + i: a function of those alone,
 * as fit's resume from a checkpoint needs, at a few ns a row (NumPy's seeded
 * permutation was a visible part of a small net's fit: docs/performance.md).
 * The NumPy twin is fastbp.reference.epoch_order.
 */
#ifndef FBP_RNG_H
#define FBP_RNG_H

#include <stdint.h>

#define FBP_GOLDEN 0x9E3779B97F4A7C15ull

static inline __attribute__((always_inline)) uint64_t fbp_mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The stream of one layer in one training step. */
static inline uint64_t fbp_drop_key(uint64_t seed, int64_t step, int layer)
{
    uint64_t k = fbp_mix64(seed + FBP_GOLDEN);
    k = fbp_mix64(k + (uint64_t)step * FBP_GOLDEN);
    return fbp_mix64(k + (uint64_t)layer * FBP_GOLDEN);
}

/* 24 random bits of element `index` of the stream: kept iff >= round(p 2^24). */
static inline __attribute__((always_inline)) uint32_t fbp_drop_bits(uint64_t key, uint64_t index)
{
    return (uint32_t)(fbp_mix64(key + index * FBP_GOLDEN) >> 40);
}

static inline uint32_t fbp_drop_threshold(double p)
{
    double t = p * 16777216.0 + 0.5;
    return t >= 16777216.0 ? 16777216u : (uint32_t)t;
}

/* The row order's key: its own tag, so that it shares no stream with dropout's. */
#define FBP_ORDER_TAG 0xD1B54A32D192ED03ull

static inline uint64_t fbp_order_key(uint64_t seed, int64_t epoch, int64_t rank)
{
    uint64_t k = fbp_mix64(seed + FBP_ORDER_TAG);
    k = fbp_mix64(k + (uint64_t)epoch * FBP_GOLDEN);
    return fbp_mix64(k + (uint64_t)rank * FBP_GOLDEN);
}

/* floor(r m / 2^64) for m < 2^32, from 32-bit halves: exact, and the same
 * arithmetic as the twin's (NumPy has no 128-bit product). */
static inline uint64_t fbp_mulhi_small(uint64_t r, uint64_t m)
{
    return ((r >> 32) * m + (((r & 0xFFFFFFFFull) * m) >> 32)) >> 32;
}

/* out (n,), n < 2^32: a permutation of 0..n-1. From the back, position i swaps
 * with j = floor(r_i (i + 1) / 2^64), r_i = mix64(key + i golden): each of the
 * n! orders within a relative 2^-32 of equally likely. */
static inline void fbp_permutation(int64_t n, uint64_t key, int64_t *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const uint64_t r = fbp_mix64(key + (uint64_t)i * FBP_GOLDEN);
        const int64_t j = (int64_t)fbp_mulhi_small(r, (uint64_t)i + 1);
        const int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

#endif /* FBP_RNG_H */
