/* step.cu - an MLP's whole training step on the device, as csrc/step.c.
 *
 * forward:  h[l] = act(h[l-1].W[l] + b[l])          (cuBLAS GEMM + epilogue kernel)
 * loss:     fused softmax-xent (or mse) writes dh[L-1]; per-row losses in double,
 *           summed in a fixed order
 * backward: dz = dh[l] * act'(h[l]) with db[l] in the same kernel (in place),
 *           dh[l-1] = dz.W[l]^T, dW[l] = h[l-1]^T.dz
 * update:   plain SGD folds into the dW GEMM (beta = 1 - lr wd, alpha = -lr);
 *           clipping or momentum materialize dW, take the global norm (fixed-order
 *           two-level reduction), and update with the clip factor read on device.
 *
 * Codes, buffers and options are fbp_api.h's, as on the CPU. No step-internal host round trip: the scalars (loss sums, norm, clip factor,
 * hits) live in a small device buffer, copied to pinned memory at the end.
 * Inputs are first copied into staging buffers owned by the workspace, so every
 * pointer of the step is fixed: once the same call (rows, options, labels or
 * targets) comes twice in a row, the step is captured into a CUDA graph and
 * replayed from then on (a few graphs are kept, least recently used evicted).
 */
#include <string.h>

#include <vector>

#include "fbpc_internal.h"

/* Device scalars: sums and results of one step. */
enum { SC_LOSS = 0, SC_REG, SC_NORM, SC_CLIP, SC_HITS, SC_COUNT };
#define NGRAPHS 4

struct StepKey {
    idx N;
    int labels, mode, count_correct;
    double lr, wd, clip, mu;
    bool operator==(const StepKey &o) const
    {
        return N == o.N && labels == o.labels && mode == o.mode &&
               count_correct == o.count_correct && lr == o.lr && wd == o.wd && clip == o.clip &&
               mu == o.mu;
    }
};

struct GraphSlot {
    cudaGraphExec_t exec = nullptr;
    StepKey key{};
    uint64_t used = 0;
};

struct fbpc_mlp {
    int dev, dsize, L, loss, use_graph, graph_failed = 0;
    idx cap;
    std::vector<idx> sz;
    std::vector<int> act;            /* per layer */
    std::vector<void *> buf[FBP_NBUF]; /* enum fbp_buf, per layer */
    void *xb = nullptr, *tb = nullptr;
    int64_t *lb = nullptr;
    double *rows = nullptr, *hits = nullptr, *part = nullptr, *sc = nullptr;
    double *hout = nullptr; /* pinned, SC_COUNT */
    cublasHandle_t blas = nullptr;
    void *blas_ws = nullptr;
    size_t blas_ws_size = 0;
    cudaStream_t cap_stream = nullptr;
    GraphSlot graphs[NGRAPHS];
    StepKey last{};
    int has_last = 0;
    uint64_t clock = 0;
    int64_t stats[3] = {0, 0, 0};
    /* what the last step was, to turn hout into fbp_step_out */
    StepKey out_key{};
};

/* Partials: loss, hits, then one RED_MAXBLK run per W (weight decay), then per
 * dW and db (the global norm). A run's slots past red_blocks(n) are never
 * written and stay 0 from create(), so the final sums read whole runs. */
#define P_LOSS(m) ((m)->part)
#define P_HITS(m) ((m)->part + RED_MAXBLK)
#define P_REG(m, l) ((m)->part + (2 + (idx)(l)) * RED_MAXBLK)
#define P_GRAD(m, k) ((m)->part + (2 + (idx)(m)->L + (idx)(k)) * RED_MAXBLK)

template <class T> static inline T *B(fbpc_mlp *m, int which, int l)
{
    return (T *)m->buf[which][l];
}

/* Queue the step for rows already in the staging buffers on stream s. */
template <class T>
static int run_step(fbpc_mlp *m, cudaStream_t s, const StepKey &k)
{
    const int L = m->L;
    const idx N = k.N, *sz = m->sz.data();
    const T lr = (T)k.lr, wd = (T)k.wd, mu = (T)k.mu;
    const T *x = (const T *)m->xb;
    BLAS_TRY(cublasSetStream(m->blas, s));
    BLAS_TRY(cublasSetWorkspace(m->blas, m->blas_ws, m->blas_ws_size));
    CUDA_TRY(cudaMemsetAsync(m->sc, 0, SC_COUNT * sizeof(double), s));

    /* forward */
    for (int l = 0; l < L; l++) {
        const T *in = l ? B<T>(m, FBP_BUF_H, l - 1) : x;
        TRY(gemm<T>(m->blas, s, 0, 0, N, sz[l + 1], sz[l], (T)1, in, sz[l], B<T>(m, FBP_BUF_W, l),
                    sz[l + 1], (T)0, B<T>(m, FBP_BUF_H, l), sz[l + 1]));
        TRY(k_bias_act<T>(s, N, sz[l + 1], B<T>(m, FBP_BUF_B, l), m->act[l],
                          B<T>(m, FBP_BUF_H, l)));
    }
    if (k.mode != FBP_MODE_FORWARD) {
        /* loss, with the output gradient written in the same pass */
        const idx C = sz[L];
        T *top = B<T>(m, FBP_BUF_H, L - 1), *dtop = B<T>(m, FBP_BUF_DH, L - 1);
        if (m->loss == FBP_LOSS_XENT) {
            double *hits = k.count_correct && k.labels ? m->hits : nullptr;
            TRY(k_softmax_xent<T>(s, N, C, top, k.labels ? m->lb : nullptr,
                                  k.labels ? nullptr : (const T *)m->tb, dtop, m->rows, hits));
            TRY(k_sum_partials(s, N, m->rows, P_LOSS(m)));
            TRY(k_reduce_final(s, red_blocks(N), P_LOSS(m), m->sc + SC_LOSS, 0));
            if (hits) {
                TRY(k_sum_partials(s, N, hits, P_HITS(m)));
                TRY(k_reduce_final(s, red_blocks(N), P_HITS(m), m->sc + SC_HITS, 0));
            }
        } else {
            TRY(k_mse_partials<T>(s, N * C, top, (const T *)m->tb, (T)1 / (T)N, dtop, P_LOSS(m)));
            TRY(k_reduce_final(s, red_blocks(N * C), P_LOSS(m), m->sc + SC_LOSS, 0));
        }
        if (k.wd != 0.0) { /* sum ||W||^2 over the layers, all partials in one final sum */
            for (int l = 0; l < L; l++)
                TRY(k_sumsq_partials<T>(s, sz[l] * sz[l + 1], B<T>(m, FBP_BUF_W, l), (T)0,
                                        P_REG(m, l)));
            TRY(k_reduce_final(s, (idx)L * RED_MAXBLK, P_REG(m, 0), m->sc + SC_REG, 0));
        }
    }
    if (k.mode >= FBP_MODE_GRAD) {
        /* backward (and, for plain SGD, the update) */
        const int fused = k.mode == FBP_MODE_TRAIN && !(k.clip > 0.0) && k.mu == 0.0;
        for (int l = L - 1; l >= 0; l--) {
            const idx I = sz[l], O = sz[l + 1];
            T *dz = B<T>(m, FBP_BUF_DH, l);
            const T *in = l ? B<T>(m, FBP_BUF_H, l - 1) : x;
            TRY(k_act_backward_bias_grad<T>(s, N, O, m->act[l], dz, B<T>(m, FBP_BUF_H, l), dz,
                                            B<T>(m, FBP_BUF_DB, l), 0));
            if (l > 0)
                TRY(gemm<T>(m->blas, s, 0, 1, N, I, O, (T)1, dz, O, B<T>(m, FBP_BUF_W, l), O, (T)0,
                            B<T>(m, FBP_BUF_DH, l - 1), I));
            if (fused) {
                TRY(gemm<T>(m->blas, s, 1, 0, I, O, N, -lr, in, I, dz, O, (T)1 - lr * wd,
                            B<T>(m, FBP_BUF_W, l), O));
                TRY(k_axpy<T>(s, O, -lr, B<T>(m, FBP_BUF_DB, l), B<T>(m, FBP_BUF_B, l)));
            } else {
                TRY(gemm<T>(m->blas, s, 1, 0, I, O, N, (T)1, in, I, dz, O, (T)0,
                            B<T>(m, FBP_BUF_DW, l), O));
                if (wd != (T)0 && k.mode == FBP_MODE_GRAD) /* the gradient of loss + reg */
                    TRY(k_axpy<T>(s, I * O, wd, B<T>(m, FBP_BUF_W, l), B<T>(m, FBP_BUF_DW, l)));
            }
        }
        if (k.mode == FBP_MODE_TRAIN && !fused) {
            /* clip by global norm: the factor stays on the device */
            const double *clip = nullptr;
            if (k.clip > 0.0) {
                for (int l = 0; l < L; l++) {
                    TRY(k_sumsq_partials<T>(s, sz[l] * sz[l + 1], B<T>(m, FBP_BUF_DW, l), (T)0,
                                            P_GRAD(m, 2 * l)));
                    TRY(k_sumsq_partials<T>(s, sz[l + 1], B<T>(m, FBP_BUF_DB, l), (T)0,
                                            P_GRAD(m, 2 * l + 1)));
                }
                TRY(k_reduce_final(s, 2 * (idx)L * RED_MAXBLK, P_GRAD(m, 0), m->sc + SC_NORM, 0));
                TRY(k_clip_factor<T>(s, m->sc + SC_NORM, k.clip));
                clip = m->sc + SC_CLIP;
            }
            const int mom = k.mu != 0.0;
            for (int l = 0; l < L; l++) {
                TRY(k_update<T>(s, sz[l] * sz[l + 1], B<T>(m, FBP_BUF_W, l), B<T>(m, FBP_BUF_DW, l),
                                mom ? B<T>(m, FBP_BUF_VW, l) : nullptr, lr, mu, wd, clip));
                TRY(k_update<T>(s, sz[l + 1], B<T>(m, FBP_BUF_B, l), B<T>(m, FBP_BUF_DB, l),
                                mom ? B<T>(m, FBP_BUF_VB, l) : nullptr, lr, mu, (T)0, clip));
            }
        }
    }
    CUDA_TRY(cudaMemcpyAsync(m->hout, m->sc, SC_COUNT * sizeof(double), cudaMemcpyDeviceToHost, s));
    return 0;
}

static int run_any(fbpc_mlp *m, cudaStream_t s, const StepKey &k)
{
    return m->dsize == 4 ? run_step<float>(m, s, k) : run_step<double>(m, s, k);
}

/* Capture the step for key k into a free (or the least recently used) slot. */
static GraphSlot *capture(fbpc_mlp *m, const StepKey &k)
{
    cudaGraph_t g = nullptr;
    if (cudaStreamBeginCapture(m->cap_stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    int rc = run_any(m, m->cap_stream, k);
    cudaError_t e = cudaStreamEndCapture(m->cap_stream, &g);
    cudaGraphExec_t exec = nullptr;
    if (rc == 0 && e == cudaSuccess && g)
        e = cudaGraphInstantiate(&exec, g, 0);
    if (g)
        cudaGraphDestroy(g);
    if (rc != 0 || e != cudaSuccess || !exec) {
        cudaGetLastError(); /* capture errors are not sticky: run eagerly instead */
        return nullptr;
    }
    GraphSlot *slot = &m->graphs[0];
    for (GraphSlot &sl : m->graphs)
        if (sl.used < slot->used)
            slot = &sl;
    if (slot->exec)
        cudaGraphExecDestroy(slot->exec);
    slot->exec = exec;
    slot->key = k;
    m->stats[1]++;
    return slot;
}

static void free_all(fbpc_mlp *m)
{
    for (GraphSlot &sl : m->graphs)
        if (sl.exec)
            cudaGraphExecDestroy(sl.exec);
    for (auto &v : m->buf)
        for (void *p : v)
            cudaFree(p);
    void *bufs[] = {m->xb, m->tb, m->lb, m->rows, m->hits, m->part, m->sc, m->blas_ws};
    for (void *p : bufs)
        cudaFree(p);
    if (m->hout)
        cudaFreeHost(m->hout);
    if (m->blas)
        cublasDestroy(m->blas);
    if (m->cap_stream)
        cudaStreamDestroy(m->cap_stream);
}

/* A zeroed device buffer; the memset is queued on stream s. */
static int alloc(void **p, size_t nbytes, cudaStream_t s)
{
    CUDA_TRY(cudaMalloc(p, nbytes ? nbytes : 1));
    CUDA_TRY(cudaMemsetAsync(*p, 0, nbytes ? nbytes : 1, s));
    return 0;
}

static int create(fbpc_mlp *m)
{
    const int L = m->L;
    const size_t e = (size_t)m->dsize;
    for (int l = 0; l < L; l++) {
        const size_t I = (size_t)m->sz[l], O = (size_t)m->sz[l + 1], cap = (size_t)m->cap;
        size_t n[FBP_NBUF] = {0}; /* momentum: fbpc_mlp_alloc_momentum; Adam, dropout: CPU only */
        n[FBP_BUF_W] = n[FBP_BUF_DW] = I * O;
        n[FBP_BUF_B] = n[FBP_BUF_DB] = O;
        n[FBP_BUF_H] = n[FBP_BUF_DH] = cap * O;
        for (int g = 0; g < FBP_NBUF; g++) {
            void *p = nullptr;
            if (n[g])
                TRY(alloc(&p, n[g] * e, 0));
            m->buf[g][l] = p;
        }
    }
    const size_t cap = (size_t)m->cap;
    TRY(alloc(&m->xb, cap * (size_t)m->sz[0] * e, 0));
    TRY(alloc(&m->tb, cap * (size_t)m->sz[L] * e, 0));
    TRY(alloc((void **)&m->lb, cap * sizeof(int64_t), 0));
    TRY(alloc((void **)&m->rows, cap * sizeof(double), 0));
    TRY(alloc((void **)&m->hits, cap * sizeof(double), 0));
    TRY(alloc((void **)&m->part, (size_t)(2 + 3 * L) * RED_MAXBLK * sizeof(double), 0));
    TRY(alloc((void **)&m->sc, SC_COUNT * sizeof(double), 0));
    CUDA_TRY(cudaMallocHost((void **)&m->hout, SC_COUNT * sizeof(double)));
    memset(m->hout, 0, SC_COUNT * sizeof(double));
    TRY(fbpc_blas_create(&m->blas));
    m->blas_ws_size = (size_t)32 << 20; /* cuBLAS's recommendation for Hopper */
    TRY(alloc(&m->blas_ws, m->blas_ws_size, 0));
    CUDA_TRY(cudaStreamCreateWithFlags(&m->cap_stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaDeviceSynchronize()); /* the memsets are done before any stream uses them */
    return 0;
}

extern "C" int fbpc_mlp_create(fbpc_mlp **out, int dev, int dsize, int L, const int64_t *sizes,
                               const int *act, int loss, int64_t cap, int graph)
{
    *out = nullptr;
    if (L < 1 || cap < 1 || (dsize != 4 && dsize != 8))
        return fbpc_fail("fbpc_mlp_create: bad arguments");
    /* the step implements these losses (the others are refused by name in Python) */
    static_assert(FBP_NLOSS == 4, "fbpc_mlp_create: decide for each loss");
    if (loss != FBP_LOSS_XENT && loss != FBP_LOSS_MSE)
        return fbpc_fail("fbpc_mlp_create: loss code %d is not implemented on the GPU", loss);
    for (int l = 0; l < L; l++)
        TRY(act_ok(act[l]));
    DEVICE_GUARD(dev);
    fbpc_mlp *m = new fbpc_mlp();
    m->dev = dev;
    m->dsize = dsize;
    m->L = L;
    m->act.assign(act, act + L);
    m->loss = loss;
    m->cap = cap;
    m->use_graph = graph;
    m->sz.assign(sizes, sizes + L + 1);
    for (auto &v : m->buf)
        v.assign(L, nullptr);
    if (create(m) != 0) {
        free_all(m);
        delete m;
        return -1;
    }
    *out = m;
    return 0;
}

extern "C" void fbpc_mlp_destroy(fbpc_mlp *m)
{
    if (!m)
        return;
    DeviceGuard guard(m->dev);
    cudaDeviceSynchronize(); /* work queued on any stream may still use the buffers */
    free_all(m);
    delete m;
}

extern "C" void *fbpc_mlp_buffer(const fbpc_mlp *m, int which, int l)
{
    if (which < 0 || which >= FBP_NBUF || l < 0 || l >= m->L)
        return nullptr;
    return m->buf[which][l];
}

extern "C" int fbpc_mlp_alloc_momentum(fbpc_mlp *m, void *stream)
{
    DEVICE_GUARD(m->dev);
    for (int l = 0; l < m->L && !m->buf[FBP_BUF_VW][l]; l++) {
        TRY(alloc(&m->buf[FBP_BUF_VW][l], (size_t)(m->sz[l] * m->sz[l + 1]) * m->dsize,
                  (cudaStream_t)stream));
        TRY(alloc(&m->buf[FBP_BUF_VB][l], (size_t)m->sz[l + 1] * m->dsize, (cudaStream_t)stream));
    }
    return 0;
}

extern "C" int fbpc_mlp_reset_momentum(fbpc_mlp *m, void *stream)
{
    DEVICE_GUARD(m->dev);
    cudaStream_t s = (cudaStream_t)stream;
    for (int l = 0; l < m->L; l++) {
        if (m->buf[FBP_BUF_VW][l])
            CUDA_TRY(cudaMemsetAsync(m->buf[FBP_BUF_VW][l], 0,
                                     (size_t)(m->sz[l] * m->sz[l + 1]) * m->dsize, s));
        if (m->buf[FBP_BUF_VB][l])
            CUDA_TRY(cudaMemsetAsync(m->buf[FBP_BUF_VB][l], 0, (size_t)m->sz[l + 1] * m->dsize, s));
    }
    return 0;
}

static void fill_out(const fbpc_mlp *m, fbp_step_out *out)
{
    const StepKey &k = m->out_key;
    const double *h = m->hout;
    out->loss = 0.0;
    out->reg = 0.0;
    out->grad_norm = -1.0;
    out->ncorrect = 0;
    if (k.mode == FBP_MODE_FORWARD)
        return;
    out->loss = m->loss == FBP_LOSS_XENT ? h[SC_LOSS] / (double)k.N : 0.5 * h[SC_LOSS] / (double)k.N;
    out->reg = k.wd != 0.0 ? 0.5 * k.wd * h[SC_REG] : 0.0;
    if (k.mode == FBP_MODE_TRAIN && k.clip > 0.0)
        out->grad_norm = h[SC_NORM];
    if (m->loss == FBP_LOSS_XENT && k.labels && k.count_correct)
        out->ncorrect = (int64_t)h[SC_HITS];
}

extern "C" int fbpc_mlp_step(fbpc_mlp *m, void *stream, int64_t N, const void *x,
                             const int64_t *labels, const void *t, const fbp_step_opts *opt,
                             int sync, fbp_step_out *out)
{
    if (N < 1 || N > m->cap)
        return fbpc_fail("mlp_step: %lld rows for a capacity of %lld", (long long)N,
                         (long long)m->cap);
    DEVICE_GUARD(m->dev);
    cudaStream_t s = (cudaStream_t)stream;
    StepKey k{};
    k.N = N;
    k.labels = labels != nullptr;
    k.mode = opt->mode;
    k.count_correct = opt->count_correct != 0;
    k.lr = opt->lr;
    k.wd = opt->weight_decay;
    k.clip = opt->clip_norm;
    k.mu = opt->momentum;
    const size_t e = (size_t)m->dsize, C = (size_t)m->sz[m->L];
    if (k.mu != 0.0)
        TRY(fbpc_mlp_alloc_momentum(m, stream));
    /* stage the inputs (host or device memory) */
    CUDA_TRY(cudaMemcpyAsync(m->xb, x, (size_t)N * (size_t)m->sz[0] * e, cudaMemcpyDefault, s));
    if (k.mode != FBP_MODE_FORWARD) {
        if (labels)
            CUDA_TRY(cudaMemcpyAsync(m->lb, labels, (size_t)N * sizeof(int64_t), cudaMemcpyDefault, s));
        else if (t)
            CUDA_TRY(cudaMemcpyAsync(m->tb, t, (size_t)N * C * e, cudaMemcpyDefault, s));
        else
            return fbpc_fail("mlp_step: labels or targets are required");
    }

    GraphSlot *slot = nullptr;
    if (m->use_graph && !m->graph_failed) {
        for (GraphSlot &sl : m->graphs)
            if (sl.exec && sl.key == k)
                slot = &sl;
        if (!slot && m->has_last && m->last == k) {
            slot = capture(m, k);
            if (!slot)
                m->graph_failed = 1;
        }
    }
    if (slot) {
        slot->used = ++m->clock;
        CUDA_TRY(cudaGraphLaunch(slot->exec, s));
        m->stats[2]++;
    } else {
        TRY(run_any(m, s, k));
        m->stats[0]++;
    }
    m->last = k;
    m->has_last = 1;
    m->out_key = k;
    if (sync) {
        CUDA_TRY(cudaStreamSynchronize(s));
        fill_out(m, out);
    }
    return 0;
}

extern "C" int fbpc_mlp_read_out(fbpc_mlp *m, void *stream, fbp_step_out *out)
{
    DEVICE_GUARD(m->dev);
    CUDA_TRY(cudaStreamSynchronize((cudaStream_t)stream));
    fill_out(m, out);
    return 0;
}

extern "C" void fbpc_mlp_stats(const fbpc_mlp *m, int64_t out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = m->stats[i];
}
