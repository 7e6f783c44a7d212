/* step.c - an MLP's whole training step in one call.
 *
 * forward:  h[l] = act(h[l-1].W[l] + b[l])            (GEMM + fused epilogue)
 * loss:     fused softmax-xent (or mse) writes dh[L-1] in the loss pass
 * backward: dz = dh[l] * act'(h[l]) with db[l] in the same pass (in place),
 *           dh[l-1] = dz.W[l]^T, dW[l] = h[l-1]^T.dz   (GEMMs)
 * update:   plain SGD folds the update into the dW GEMM through BLAS's beta:
 *           W[l] = (1 - lr wd) W[l] - lr h[l-1]^T.dz, so dW is never written
 *           and W is never read by a separate pass. Clipping and momentum need
 *           the whole gradient first, so they materialize dW and update after.
 * dh[l-1] is computed before W[l] changes, so the update cannot leak into the
 * backward pass.
 */
#ifndef FBP_T
#include <string.h>
#define FBP_SELF "step.c"
#include "fbp_generic.h"

int fbp_mlp_step(const fbp_mlp *m, int64_t N, const void *x, const int64_t *labels,
                 const void *t, const fbp_step_opts *opt, fbp_step_out *out)
{
    if (m->dsize == 4)
        fbp_mlp_step_f32(m, N, x, labels, t, opt, out);
    else
        fbp_mlp_step_f64(m, N, x, labels, t, opt, out);
    return 0;
}

int fbp_mlp_epoch(const fbp_mlp *m, int64_t n, const void *X, const int64_t *labels,
                  const void *t, const int64_t *order, int64_t B, const fbp_step_opts *opt,
                  fbp_step_out *out)
{
    if (m->dsize == 4)
        fbp_mlp_epoch_f32(m, n, X, labels, t, order, B, opt, out);
    else
        fbp_mlp_epoch_f64(m, n, X, labels, t, order, B, opt, out);
    return 0;
}

#else

/* Buffer k (enum fbp_buf) of layer l, e.g. P(W, l). */
#define P(k, l) ((T *)m->buf[FBP_BUF_##k][l])

/* Rows of logits z (N, C) whose first maximal entry is the label. */
static int64_t FN(fbp_count_correct)(fbp_idx N, fbp_idx C, const T *z, const int64_t *labels)
{
    int64_t hits = 0;
    for (fbp_idx r = 0; r < N; r++) {
        const T *zr = z + r * C;
        fbp_idx best = 0;
        for (fbp_idx c = 1; c < C; c++)
            if (zr[c] > zr[best])
                best = c;
        hits += best == labels[r];
    }
    return hits;
}

static void FN(fbp_mlp_step)(const fbp_mlp *m, fbp_idx N, const T *x, const int64_t *labels,
                             const T *t, const fbp_step_opts *opt, fbp_step_out *out)
{
    const int L = m->L;
    const fbp_idx *sz = m->sizes;
    const T lr = (T)opt->lr, wd = (T)opt->weight_decay, mu = (T)opt->momentum;
    out->loss = 0.0;
    out->grad_norm = -1.0;
    out->ncorrect = 0;

    /* forward */
    for (int l = 0; l < L; l++) {
        const T *in = l ? P(H, l - 1) : x;
        FN(fbp_gemm)(0, 0, N, sz[l + 1], sz[l], (T)1, in, sz[l], P(W, l), sz[l + 1], (T)0,
                     P(H, l), sz[l + 1]);
        FN(fbp_bias_act)(N, sz[l + 1], P(B, l), m->act[l], P(H, l));
    }
    if (opt->mode == FBP_MODE_FORWARD)
        return;

    /* loss, with the output gradient written in the same pass */
    const fbp_idx C = sz[L];
    T *top = P(H, L - 1), *dtop = P(DH, L - 1);
    if (m->loss == FBP_LOSS_XENT) {
        if (opt->count_correct && labels)
            out->ncorrect = FN(fbp_count_correct)(N, C, top, labels);
        out->loss = FN(fbp_softmax_xent)(N, C, top, labels, t, dtop);
    } else {
        out->loss = FN(fbp_mse)(N, C, top, t, dtop);
    }
    if (opt->weight_decay != 0.0) {
        double reg = 0.0;
        for (int l = 0; l < L; l++)
            reg += FN(fbp_sumsq)(sz[l] * sz[l + 1], P(W, l));
        out->loss += 0.5 * opt->weight_decay * reg;
    }
    if (opt->mode == FBP_MODE_LOSS)
        return;

    /* backward (and, for plain SGD, the update) */
    const int fused = opt->mode == FBP_MODE_TRAIN && !(opt->clip_norm > 0.0) &&
                      opt->momentum == 0.0;
    for (int l = L - 1; l >= 0; l--) {
        const fbp_idx I = sz[l], O = sz[l + 1];
        T *dz = P(DH, l);
        const T *in = l ? P(H, l - 1) : x;
        FN(fbp_act_backward_bias_grad)(N, O, m->act[l], dz, P(H, l), dz, P(DB, l), 0);
        if (l > 0)
            FN(fbp_gemm)(0, 1, N, I, O, (T)1, dz, O, P(W, l), O, (T)0, P(DH, l - 1), I);
        if (fused) {
            FN(fbp_gemm)(1, 0, I, O, N, -lr, in, I, dz, O, (T)1 - lr * wd, P(W, l), O);
            FN(fbp_axpy)(O, -lr, P(DB, l), P(B, l));
        } else {
            FN(fbp_gemm)(1, 0, I, O, N, (T)1, in, I, dz, O, (T)0, P(DW, l), O);
            if (wd != (T)0)
                FN(fbp_axpy)(I * O, wd, P(W, l), P(DW, l));
        }
    }
    if (opt->mode != FBP_MODE_TRAIN || fused)
        return;

    /* clip by global norm: a non-finite norm leaves the gradients as they are */
    if (opt->clip_norm > 0.0) {
        double ss = 0.0;
        for (int l = 0; l < L; l++)
            ss += FN(fbp_sumsq)(sz[l] * sz[l + 1], P(DW, l)) + FN(fbp_sumsq)(sz[l + 1], P(DB, l));
        double norm = sqrt(ss);
        out->grad_norm = norm;
        if (isfinite(norm) && norm > opt->clip_norm) {
            T s = (T)(opt->clip_norm / norm);
            for (int l = 0; l < L; l++) {
                FN(fbp_scale)(sz[l] * sz[l + 1], P(DW, l), s);
                FN(fbp_scale)(sz[l + 1], P(DB, l), s);
            }
        }
    }
    for (int l = 0; l < L; l++) {
        fbp_idx nW = sz[l] * sz[l + 1], nb = sz[l + 1];
        if (opt->momentum != 0.0) {
            FN(fbp_momentum)(nW, P(W, l), P(DW, l), P(VW, l), lr, mu);
            FN(fbp_momentum)(nb, P(B, l), P(DB, l), P(VB, l), lr, mu);
        } else {
            FN(fbp_sgd)(nW, P(W, l), P(DW, l), lr, (T)0);
            FN(fbp_sgd)(nb, P(B, l), P(DB, l), lr, (T)0);
        }
    }
}

static void FN(fbp_mlp_epoch)(const fbp_mlp *m, fbp_idx n, const T *X, const int64_t *labels,
                       const T *t, const int64_t *order, fbp_idx B, const fbp_step_opts *opt,
                       fbp_step_out *out)
{
    const fbp_idx I = m->sizes[0], C = m->sizes[m->L];
    T *xb = (T *)m->xb, *tb = (T *)m->tb;
    double total = 0.0;
    int64_t hits = 0;
    fbp_step_out o = {0.0, -1.0, 0};
    for (fbp_idx s = 0; s < n; s += B) {
        fbp_idx rows = n - s < B ? n - s : B;
        for (fbp_idx r = 0; r < rows; r++) {
            fbp_idx src = (fbp_idx)order[s + r];
            memcpy(xb + r * I, X + src * I, (size_t)I * sizeof(T));
            if (labels)
                m->lb[r] = labels[src];
            else
                memcpy(tb + r * C, t + src * C, (size_t)C * sizeof(T));
        }
        FN(fbp_mlp_step)(m, rows, xb, labels ? m->lb : NULL, labels ? NULL : tb, opt, &o);
        total += o.loss * (double)rows;
        hits += o.ncorrect;
    }
    out->loss = n > 0 ? total / (double)n : NAN;
    out->grad_norm = o.grad_norm;
    out->ncorrect = hits;
}

#undef P

#endif
