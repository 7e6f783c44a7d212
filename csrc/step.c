/* step.c - an MLP's whole training step in one call.
 *
 * forward:  h[l] = act(in.W[l] + b[l])           (GEMM + fused epilogue), in the
 *           previous layer's output; in a training step a hidden layer with dropout
 *           also writes hd[l] = h[l] keep / (1 - p), which the next layer reads
 * loss:     fused softmax-xent, mse, sigmoid-bce or exp-poisson writes dh[L-1] in
 *           the loss pass,
 *           rows weighted by the sample weights if given
 * backward: dz = dh[l] (keep / (1 - p)) act'(h[l]) with db[l] in the same pass (in
 *           place), dh[l-1] = dz.W[l]^T, dW[l] = in^T.dz   (GEMMs)
 * update:   clipping (by value, then by global norm, as torch.nn.utils'
 *           clip_grad_value_ and clip_grad_norm_) and one optimizer step
 *           (optim.c, PyTorch's rules). Without clipping a layer updates as
 *           soon as its gradients exist, while they are in cache; plain SGD
 *           folds the update into the dW GEMM through BLAS's beta: W = (1 - lr
 *           wd) W - lr in^T.dz, so dW is never written and W never read by a
 *           pass of its own.
 * dh[l-1] is computed before W[l] changes, so the update cannot leak into the
 * backward pass. Biases take no weight decay.
 */
#ifndef FBP_T
#include <string.h>
#define FBP_SELF "step.c"
#include "fbp_generic.h"

int fbp_mlp_step(const fbp_mlp *m, int64_t N, const void *x, const int64_t *labels,
                 const void *t, const void *w, const fbp_step_opts *opt, fbp_step_out *out)
{
    if (m->dsize == 4)
        fbp_mlp_step_f32(m, N, x, labels, t, w, opt, out);
    else
        fbp_mlp_step_f64(m, N, x, labels, t, w, opt, out);
    return 0;
}

int fbp_mlp_epoch(const fbp_mlp *m, int64_t n, const void *X, const int64_t *labels,
                  const void *t, const void *w, const int64_t *order, int64_t B, int64_t s0,
                  int64_t s1, const fbp_step_opts *opt, fbp_epoch_out *out)
{
    if (m->dsize == 4)
        fbp_mlp_epoch_f32(m, n, X, labels, t, w, order, B, s0, s1, opt, out);
    else
        fbp_mlp_epoch_f64(m, n, X, labels, t, w, order, B, s0, s1, opt, out);
    return 0;
}

#else

/* Buffer k (enum fbp_buf) of layer l, e.g. P(W, l); NULL where the table has none. */
#define P(k, l) (m->buf[FBP_BUF_##k] ? (T *)m->buf[FBP_BUF_##k][l] : (T *)NULL)

/* Whether layer l drops out in this step. */
#define DROPS(l) (train && m->drop && m->drop[l] > 0.0)

/* Rows of logits z (N, C) whose first maximal entry is the label (XENT); for BCE,
 * rows whose every output is on the right side of 0 (z > 0 where t >= 0.5), the
 * measure of MLP.score and of scikit-learn's multi-label accuracy. */
static int64_t FN(fbp_count_correct)(int loss, fbp_idx N, fbp_idx C, const T *z,
                                     const int64_t *labels, const T *t)
{
    int64_t hits = 0;
    if (loss == FBP_LOSS_BCE) {
        for (fbp_idx r = 0; r < N; r++) {
            int right = 1;
            for (fbp_idx c = 0; c < C; c++)
                right &= (z[r * C + c] > (T)0) == (t[r * C + c] >= (T)0.5);
            hits += right;
        }
        return hits;
    }
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

/* Clipping and the optimizer over every parameter, from the loss gradient in dW, db;
 * wd: the weights' decay. */
static void FN(fbp_update)(const fbp_mlp *m, const fbp_step_opts *opt, double wd,
                           fbp_step_out *out)
{
    const int L = m->L;
    const fbp_idx *sz = m->sizes;
    if (opt->clip_value > 0.0)
        for (int l = 0; l < L; l++) {
            FN(fbp_clip_value)(sz[l] * sz[l + 1], P(DW, l), (T)opt->clip_value);
            FN(fbp_clip_value)(sz[l + 1], P(DB, l), (T)opt->clip_value);
        }
    /* clip by global norm; a non-finite norm leaves the gradients as they are */
    if (opt->clip_norm > 0.0) {
        double ss = 0.0;
        for (int l = 0; l < L; l++)
            ss += FN(fbp_sumsq)(sz[l] * sz[l + 1], P(DW, l)) + FN(fbp_sumsq)(sz[l + 1], P(DB, l));
        double norm = sqrt(ss), coef = opt->clip_norm / (norm + 1e-6);
        out->grad_norm = norm;
        if (isfinite(norm) && coef < 1.0)
            for (int l = 0; l < L; l++) {
                FN(fbp_scale)(sz[l] * sz[l + 1], P(DW, l), (T)coef);
                FN(fbp_scale)(sz[l + 1], P(DB, l), (T)coef);
            }
    }
    for (int l = 0; l < L; l++) {
        FN(fbp_optimizer_step)(sz[l] * sz[l + 1], P(W, l), P(DW, l), P(VW, l), P(SW, l), P(GW, l), opt,
                               wd);
        FN(fbp_optimizer_step)(sz[l + 1], P(B, l), P(DB, l), P(VB, l), P(SB, l), P(GB, l), opt, 0.0);
    }
}

/* One product of the step: C = alpha op(A) op(B) + beta C. bf 0: float32, through
 * fbp_gemm on A, B; else bfloat16 matmul precision (float32 models only), through
 * bf16.c on the operands' bf16 copies A16, B16 (bf 2: the provider's bf16 GEMM,
 * 1: emulated). */
static void FN(step_gemm)(int bf, int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, T alpha,
                          const T *A, const void *A16, fbp_idx lda, const T *B, const void *B16,
                          fbp_idx ldb, T beta, T *C, fbp_idx ldc)
{
    if (bf)
        fbp_gemm_bf16(bf == 2, ta, tb, M, N, K, (float)alpha, A16, lda, B16, ldb, (float)beta,
                      (float *)C, ldc);
    else
        FN(fbp_gemm)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Buffer x's bf16 copy (bf16.c) of n elements, when the step runs in bf16. */
#define BF16_COPY(n, x, x16) \
    do { if (bf) fbp_bf16_copy(bf == 2, (n), (const float *)(x), (x16)); } while (0)

static void FN(fbp_mlp_step)(const fbp_mlp *m, fbp_idx N, const T *x, const int64_t *labels,
                             const T *t, const T *w, const fbp_step_opts *opt, fbp_step_out *out)
{
    const int L = m->L;
    const fbp_idx *sz = m->sizes;
    const int mode = opt->mode;
    /* train: the training network (dropout); update: the optimizer runs here */
    const int train = mode == FBP_MODE_TRAIN || mode == FBP_MODE_BACKWARD;
    const int update = mode == FBP_MODE_TRAIN;
    out->loss = 0.0;
    out->reg = 0.0;
    out->grad_norm = -1.0;
    out->ncorrect = 0;
    /* scikit-learn's L2 term is alpha over the batch's loss normalizer (UPDATE has
     * no batch: norm or nothing); a batch that weighs nothing adds no decay, as
     * it adds no loss */
    double wd = opt->weight_decay;
    if (opt->alpha != 0.0 && mode != FBP_MODE_FORWARD) {
        double W = opt->norm;
        if (!(W > 0.0) && mode != FBP_MODE_UPDATE) {
            W = 0.0;
            for (fbp_idx r = 0; r < N; r++)
                W += w ? (double)w[r] : 1.0;
        }
        if (W > 0.0)
            wd += opt->alpha / W;
    }
    if (mode == FBP_MODE_UPDATE) {
        FN(fbp_update)(m, opt, wd, out);
        return;
    }
    /* bfloat16 matmul precision: this step's bf16 copies of the weights, made
     * before any of them changes (2: the provider's bf16 GEMM, 1: emulated) */
    const int bf = sizeof(T) == sizeof(float) && m->mm == FBP_MM_BF16
                       ? 1 + fbp_bf16_native() : 0;
    for (int l = 0; bf && l < L; l++)
        BF16_COPY(sz[l] * sz[l + 1], P(W, l), m->w16[l]);

    /* forward */
    for (int l = 0; l < L; l++) {
        const T *in = l == 0 ? x : DROPS(l - 1) ? P(HD, l - 1) : P(H, l - 1);
        T *z = P(Z, l); /* kept for the backward pass, where the activation needs it */
        BF16_COPY(N * sz[l], in, m->a16[l]);
        FN(step_gemm)(bf, 0, 0, N, sz[l + 1], sz[l], (T)1, in, bf ? m->a16[l] : NULL, sz[l],
                      P(W, l), bf ? m->w16[l] : NULL, sz[l + 1], (T)0, z ? z : P(H, l), sz[l + 1]);
        if (z)
            FN(fbp_bias_act_keep)(N, sz[l + 1], P(B, l), m->act[l], z, P(H, l));
        else
            FN(fbp_bias_act)(N, sz[l + 1], P(B, l), m->act[l], P(H, l));
        if (DROPS(l))
            FN(fbp_dropout)(N, sz[l + 1], P(H, l), P(HD, l), m->keep[l], m->drop[l], opt->seed,
                            opt->step, l, opt->row0);
    }
    if (mode == FBP_MODE_FORWARD)
        return;

    /* loss, with the output gradient written in the same pass */
    const fbp_idx C = sz[L];
    T *top = P(H, L - 1), *dtop = P(DH, L - 1);
    if (opt->count_correct && (labels || m->loss == FBP_LOSS_BCE))
        out->ncorrect = FN(fbp_count_correct)(m->loss, N, C, top, labels, t);
    _Static_assert(FBP_NLOSS == 4, "fbp_mlp_step: a case per loss");
    switch (m->loss) {
    case FBP_LOSS_XENT:
        out->loss = FN(fbp_softmax_xent)(N, C, top, labels, t, w, opt->norm, opt->loss_eps, dtop);
        break;
    case FBP_LOSS_MSE:
        out->loss = FN(fbp_mse)(N, C, top, t, w, opt->norm, dtop);
        break;
    case FBP_LOSS_POISSON:
        out->loss = FN(fbp_poisson)(N, C, top, t, w, opt->norm, dtop);
        break;
    case FBP_LOSS_BCE:
        out->loss = FN(fbp_bce)(N, C, top, t, w, opt->norm, opt->loss_eps, dtop);
        break;
    default:
        FBP_BAD_CODE("loss", m->loss);
    }
    /* decoupled decay (AdamW) is no term of the loss */
    const int coupled = wd != 0.0 && opt->optimizer != FBP_OPT_ADAMW;
    if (coupled) {
        double ss = 0.0;
        for (int l = 0; l < L; l++)
            ss += FN(fbp_sumsq)(sz[l] * sz[l + 1], P(W, l));
        out->reg = 0.5 * wd * ss;
    }
    if (mode == FBP_MODE_LOSS)
        return;

    /* backward, and without clipping each layer's update as soon as its gradient
     * is made (still in cache): plain SGD inside the dW GEMM, the others in one
     * pass over the layer's parameters and state */
    const int clips = opt->clip_norm > 0.0 || opt->clip_value > 0.0;
    const int plain = (opt->optimizer == FBP_OPT_SGD || opt->optimizer == FBP_OPT_SKSGD) &&
                      opt->momentum == 0.0;
    const int fused = update && !clips && plain;
    const int layerwise = update && !clips && !fused;
    const T lr = (T)opt->lr;
    for (int l = L - 1; l >= 0; l--) {
        const fbp_idx I = sz[l], O = sz[l + 1];
        T *dz = P(DH, l);
        const T *in = l == 0 ? x : DROPS(l - 1) ? P(HD, l - 1) : P(H, l - 1);
        const uint8_t *keep = DROPS(l) ? m->keep[l] : NULL;
        T scale = keep ? (T)(1.0 / (1.0 - m->drop[l])) : (T)0;
        /* the activation's backward input: its output, or the kept pre-activation */
        const T *bin = P(Z, l) ? P(Z, l) : P(H, l);
        FN(fbp_act_backward_bias_grad)(N, O, m->act[l], dz, bin, keep, scale, dz, P(DB, l), 0);
        /* bf16: the layer's input copy a16[l] is the forward's; dz's is made here */
        const void *a16 = bf ? m->a16[l] : NULL, *g16 = bf ? m->g16 : NULL;
        BF16_COPY(N * O, dz, m->g16);
        if (l > 0)
            FN(step_gemm)(bf, 0, 1, N, I, O, (T)1, dz, g16, O, P(W, l), bf ? m->w16[l] : NULL, O,
                          (T)0, P(DH, l - 1), I);
        if (fused) {
            FN(step_gemm)(bf, 1, 0, I, O, N, -lr, in, a16, I, dz, g16, O, (T)1 - lr * (T)wd,
                          P(W, l), O);
            FN(fbp_axpy)(O, -lr, P(DB, l), P(B, l));
        } else {
            FN(step_gemm)(bf, 1, 0, I, O, N, (T)1, in, a16, I, dz, g16, O, (T)0, P(DW, l), O);
            if (mode == FBP_MODE_GRAD && wd != 0.0) /* the gradient of loss + reg */
                FN(fbp_axpy)(I * O, (T)wd, P(W, l), P(DW, l));
            if (layerwise) {
                FN(fbp_optimizer_step)(I * O, P(W, l), P(DW, l), P(VW, l), P(SW, l), P(GW, l), opt, wd);
                FN(fbp_optimizer_step)(O, P(B, l), P(DB, l), P(VB, l), P(SB, l), P(GB, l), opt, 0.0);
            }
        }
    }
    if (update && clips)
        FN(fbp_update)(m, opt, wd, out);
}

/* A batch's rows of X gathered into xb, rows[r] the source of row r; tasks are
 * rows. */
struct FN(gather_ctx) {
    fbp_idx I;
    const T *X;
    const int64_t *rows;
    T *xb;
};

static void FN(gather_task)(void *p, fbp_idx r0, fbp_idx r1)
{
    const struct FN(gather_ctx) *c = p;
    for (fbp_idx r = r0; r < r1; r++)
        memcpy(c->xb + r * c->I, c->X + (fbp_idx)c->rows[r] * c->I, (size_t)c->I * sizeof(T));
}

/* Batches [s0, s1) of the epoch: batch s has rows order[s B ...] (the last one
 * partial), gathered into xb/lb/tb/wb (xb's rows in parallel when the gather's
 * measured time pays for it: at 100 rows of 784 floats from a dataset past L2 it
 * is a tenth of the step); optimizer and model steps advance by one per batch;
 * the loss and weight sums go on from out's. */
static void FN(fbp_mlp_epoch)(const fbp_mlp *m, fbp_idx n, const T *X, const int64_t *labels,
                              const T *t, const T *w, const int64_t *order, fbp_idx B,
                              fbp_idx s0, fbp_idx s1, const fbp_step_opts *opt,
                              fbp_epoch_out *out)
{
    const fbp_idx I = m->sizes[0], C = m->sizes[m->L];
    T *xb = (T *)m->xb, *tb = (T *)m->tb, *wb = (T *)m->wb;
    double total = out->loss_sum, weight = out->weight_sum; /* running sums (fastbp.h) */
    int64_t hits = 0;
    fbp_step_out o = {0.0, 0.0, -1.0, 0};
    fbp_step_opts so = *opt;
    for (fbp_idx s = s0; s < s1; s++) {
        fbp_idx first = s * B, rows = n - first < B ? n - first : B;
        double bw = 0.0;
        struct FN(gather_ctx) g = {I, X, order + first, xb};
        const double bytes = (double)(rows * I) * (double)sizeof(T), gns = fbp_gather_ns();
        const int nt = fbp_threads_for_ns(gns > 0 ? gns * bytes : (double)(rows * I) *
                                          FBP_COST_GATHER * fbp_pass_ns(), (int)rows);
        const long t0 = nt == 1 ? fbp_now_ns() : 0;
        fbp_parallel(nt, rows, FN(gather_task), &g);
        if (nt == 1)
            fbp_note_gather(bytes, fbp_now_ns() - t0);
        for (fbp_idx r = 0; r < rows; r++) {
            fbp_idx src = (fbp_idx)order[first + r];
            if (labels)
                m->lb[r] = labels[src];
            else
                memcpy(tb + r * C, t + src * C, (size_t)C * sizeof(T));
            if (w)
                wb[r] = w[src];
            bw += w ? (double)w[src] : 1.0;
        }
        so.t = opt->t + (s - s0);
        so.step = opt->step + (s - s0);
        FN(fbp_mlp_step)(m, rows, xb, labels ? m->lb : NULL, labels ? NULL : tb, w ? wb : NULL,
                         &so, &o);
        total += (o.loss + o.reg) * bw;
        weight += bw;
        if (out->batches) {
            out->batches[2 * (s - s0)] = o.loss;
            out->batches[2 * (s - s0) + 1] = o.reg;
        }
        hits += o.ncorrect;
    }
    out->loss_sum = total;
    out->weight_sum = weight;
    out->grad_norm = o.grad_norm;
    out->ncorrect = hits;
}

#undef P
#undef DROPS
#undef BF16_COPY

#endif
