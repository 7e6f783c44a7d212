/* fbp_rng.h - the counter-based generator behind dropout masks.
 *
 * A mask element is a pure function of (seed, step, layer, row, column): the key
 * of (seed, step, layer) is mixed once, then every element hashes key + its flat
 * index (row * width + column) with splitmix64's finalizer. No state, no order:
 * the same mask whatever the thread count or however a batch is split over
 * threads or processes (a process passes its rows' global index). The NumPy twin
 * is fastbp.reference.dropout_keep.
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

#endif /* FBP_RNG_H */
