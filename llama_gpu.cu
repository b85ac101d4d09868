// llama_gpu.cu: the Llama family on a GPU (gpu_llama_backend of model.h), the mirror of the CPU
// reference llama_cpu.c. The equations and the flat parameter layout are llama.h's; every
// backend member has model.h's semantics, the same as the CPU backends, so train.c runs on it
// unchanged through gpu_backend_for().
//
// Build: `make train_gpu` (nvcc). Tests: `make test_kernels_llama` compiles this file with g++
// through dev/cuda_cpu.h and checks the whole backend (tests/test_llama_gpu.cu).
//
// Reading order: the model struct and its buffers, forward (trunk, then the lm head on the rows
// with a target), backward, AdamW, sampling (batched prefill + KV-cache decode), the table.
//
// Choices, and why:
// - Reuse before writing: the matmuls, the causal attention on packed q/k/v, the lm head
//   (gather, logits, scatter), AdamW, the gradient norm and the sampler are kernels.cu's
//   launchers (kernels.h); the layers Llama adds are kernels_llama.cu's (kernels_llama.h).
// - fp32 throughout, cuBLAS in its default math mode (no TF32), so a failing comparison with the
//   CPU means a bug, not rounding.
// - Training keeps, per layer, the normed inputs, q/k/v after RoPE (expanded to NH heads), the
//   attention matrix, the attention output and the SwiGLU inputs; silu(gate) * up is recomputed
//   in backward. Sampling keeps its own KV cache and small decode buffers; its prefill borrows
//   the scratch buffers of forward/backward (never the kept activations), so a sample() between
//   forward and backward changes nothing, as on the CPU.
// - Sampling draws one uniform per row and step from cuRAND (Philox) seeded with req->seed, like
//   kernels.cu: same seed, same samples on one GPU; greedy equals the CPU token for token.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "llama.h"
#include "model.h"
#include "rng.h"
}
#include "kernels_llama.h"

static void lg_cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e != cudaSuccess) {
        fprintf(stderr, "gpu llama backend: %s failed at %s:%d: %s\n", what, file, line,
                cudaGetErrorString(e));
        exit(1);
    }
}
#define LL_CUDA_CHECK(call) lg_cuda_check((call), #call, __FILE__, __LINE__)

// =============================================================================================
// The model
// =============================================================================================

// The backend's state. model.h's Model is opaque; kernels.cu owns the C++ type of that name, so
// this one has its own name and the backend functions convert at the boundary (as_llama).
struct LlamaGpu {
    ModelConfig cfg;
    int maxB, hs, KVC;  // KVC = n_kv_heads * hs
    size_t sizes[LLAMA_NUM_TENSORS];
    size_t nparams;
    cublasHandle_t blas;
    float *params, *grads, *mom, *vel;  // device (nparams) each
    LlamaParams p, g;                   // device pointers into params, grads
    float *rope_cos, *rope_sin;         // (maxT, rope_dim / 2)
    int64_t step;

    // Activations of the last forward (R = B * T rows, at most maxB * maxT).
    float *xs;              // (L + 1, R, C) residual stream: embeddings, then each block's output
    float *hres;            // (L, R, C) after each block's attention
    float *xn1, *rstd1;     // (L, R, C), (L, R) attention RMSNorm
    float *qkvr;            // (L, 3, R, C) roped q, k, v expanded to NH heads (kernels.h layout)
    float *att;             // (L, B, NH, T, T)
    float *atty;            // (L, R, C)
    float *xn2, *rstd2;     // MLP RMSNorm
    float *gate, *up;       // (L, R, F)
    float *head_x, *head_in, *rstdf, *logits, *lse, *hlogp, *hent;  // (N, C) x2, (N), (N, V), (N) x3
    // Scratch of one call (forward, backward or sample; prefill borrows it, see prefill()).
    float *q, *k, *v;       // (R, C), (R, KVC), (R, KVC)
    float *qkv, *dqkv;      // (R, 3C)
    float *tmp, *tmp2;      // (R, C)
    float *act, *dF1, *dF2; // (R, F)
    float *dres, *dbuf, *dbuf2;  // (R, C)
    float *dq, *dk, *dv;    // (R, C), (R, KVC), (R, KVC)
    float *att_scratch, *partial, *dlogits, *hsel, *dhead, *coef_a, *coef_e;
    double *norm_partial, *norm_out;
    int *d_tokens, *d_head_rows, *d_head_targets, *d_sel, *d_bucket;
    int *tokens, *targets, *head_rows;  // host copies of the last forward's inputs (R)
    int B, T, N;                        // B = 0: no forward to differentiate

    // Sampling (allocated on the first sample() call).
    bool have_decode, have_gen;
    float *kcache, *vcache;           // (L, maxB, maxT, KVC)
    float *x, *ln, *sq, *sk, *sv, *sy, *so, *sg, *su, *srstd;  // (maxB, C|KVC|F), (maxB)
    float *scores;                    // (maxB, NH, maxT)
    float *dlog, *probs, *u, *out_logp;  // (maxB, V) x2, (maxB) x2
    int *keep, *in_tok, *out_tok, *ptok; // (maxB, V), (2, maxB), (maxB), (maxB, maxT)
    curandGenerator_t gen;
};
static LlamaGpu *as_llama(Model *m) { return reinterpret_cast<LlamaGpu *>(m); }
static const LlamaGpu *as_llama(const Model *m) { return reinterpret_cast<const LlamaGpu *>(m); }

#define LLAMA_FLOAT_BUFFERS(X)                                                                   \
    X(params) X(grads) X(mom) X(vel) X(rope_cos) X(rope_sin) X(xs) X(hres) X(xn1) X(rstd1)        \
    X(qkvr) X(att) X(atty) X(xn2) X(rstd2) X(gate) X(up) X(head_x) X(head_in) X(rstdf) X(logits)  \
    X(lse) X(hlogp) X(hent) X(q) X(k) X(v) X(qkv) X(dqkv) X(tmp) X(tmp2) X(act) X(dF1) X(dF2)     \
    X(dres) X(dbuf) X(dbuf2) X(dq) X(dk) X(dv) X(att_scratch) X(partial) X(dlogits) X(hsel)       \
    X(dhead) X(coef_a) X(coef_e) X(kcache) X(vcache) X(x) X(ln) X(sq) X(sk) X(sv) X(sy) X(so)     \
    X(sg) X(su) X(srstd) X(scores) X(dlog) X(probs) X(u) X(out_logp)
#define LLAMA_OTHER_BUFFERS(X)                                                                   \
    X(norm_partial) X(norm_out) X(d_tokens) X(d_head_rows) X(d_head_targets) X(d_sel) X(d_bucket) \
    X(keep) X(in_tok) X(out_tok) X(ptok)

template <typename T>
static bool ll_alloc(T **p, size_t count, const char *what) {
    if (cudaMalloc((void **)p, (count ? count : 1) * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "gpu llama backend: out of device memory allocating %s (%zu x %zu bytes)\n",
                what, count, sizeof(T));
        *p = NULL;
        return false;
    }
    return true;
}

static void llg_destroy(Model *mm) {
    LlamaGpu *m = as_llama(mm);
    if (!m) return;
#define LL_FREE(name) cudaFree(m->name);
    LLAMA_FLOAT_BUFFERS(LL_FREE)
    LLAMA_OTHER_BUFFERS(LL_FREE)
#undef LL_FREE
    if (m->blas) cublasDestroy(m->blas);
    if (m->have_gen) curandDestroyGenerator(m->gen);
    free(m->tokens);
    free(m->targets);
    free(m->head_rows);
    free(m);
}

// Device buffers of forward and backward for maxB sequences of maxT positions.
static bool alloc_train(LlamaGpu *m) {
    const ModelConfig *c = &m->cfg;
    size_t L = c->L, C = c->C, NH = c->NH, V = c->V, T = c->maxT, F = c->ffn, KVC = m->KVC;
    size_t R = (size_t)m->maxB * T, half = c->rope_dim / 2, np = m->nparams;
    size_t partial = std::max(rmsnorm_partial_floats((int)R, (int)C),
                              colsum_partial_floats((int)R, (int)C));
    return ll_alloc(&m->params, np, "parameters") && ll_alloc(&m->grads, np, "gradients") &&
           ll_alloc(&m->mom, np, "AdamW m") && ll_alloc(&m->vel, np, "AdamW v") &&
           ll_alloc(&m->rope_cos, T * half, "RoPE cos") &&
           ll_alloc(&m->rope_sin, T * half, "RoPE sin") &&
           ll_alloc(&m->xs, (L + 1) * R * C, "residual stream") &&
           ll_alloc(&m->hres, L * R * C, "residual after attention") &&
           ll_alloc(&m->xn1, L * R * C, "attention norm") && ll_alloc(&m->rstd1, L * R, "rstd") &&
           ll_alloc(&m->qkvr, L * 3 * R * C, "qkvr") && ll_alloc(&m->att, L * R * NH * T, "att") &&
           ll_alloc(&m->atty, L * R * C, "atty") && ll_alloc(&m->xn2, L * R * C, "MLP norm") &&
           ll_alloc(&m->rstd2, L * R, "rstd") && ll_alloc(&m->gate, L * R * F, "gate") &&
           ll_alloc(&m->up, L * R * F, "up") && ll_alloc(&m->head_x, R * C, "head_x") &&
           ll_alloc(&m->head_in, R * C, "head_in") && ll_alloc(&m->rstdf, R, "rstd") &&
           ll_alloc(&m->logits, R * V, "logits") && ll_alloc(&m->lse, R, "lse") &&
           ll_alloc(&m->hlogp, R, "logp") && ll_alloc(&m->hent, R, "entropy") &&
           ll_alloc(&m->q, R * C, "q") && ll_alloc(&m->k, R * KVC, "k") &&
           ll_alloc(&m->v, R * KVC, "v") && ll_alloc(&m->qkv, R * 3 * C, "qkv") &&
           ll_alloc(&m->dqkv, R * 3 * C, "dqkv") && ll_alloc(&m->tmp, R * C, "tmp") &&
           ll_alloc(&m->tmp2, R * C, "tmp") && ll_alloc(&m->act, R * F, "act") &&
           ll_alloc(&m->dF1, R * F, "dgate") && ll_alloc(&m->dF2, R * F, "dup") &&
           ll_alloc(&m->dres, R * C, "dres") && ll_alloc(&m->dbuf, R * C, "dbuf") &&
           ll_alloc(&m->dbuf2, R * C, "dbuf") && ll_alloc(&m->dq, R * C, "dq") &&
           ll_alloc(&m->dk, R * KVC, "dk") && ll_alloc(&m->dv, R * KVC, "dv") &&
           ll_alloc(&m->att_scratch,
                    attention_scratch_floats(m->maxB, (int)T, (int)C, (int)NH), "attention scratch") &&
           ll_alloc(&m->partial, partial, "partials") && ll_alloc(&m->dlogits, R * V, "dlogits") &&
           ll_alloc(&m->hsel, R * C, "hsel") && ll_alloc(&m->dhead, R * C, "dhead") &&
           ll_alloc(&m->coef_a, R, "coefficients") && ll_alloc(&m->coef_e, R, "coefficients") &&
           ll_alloc(&m->norm_partial, NORM_BLOCKS, "norm partials") &&
           ll_alloc(&m->norm_out, 1, "norm") && ll_alloc(&m->d_tokens, R, "tokens") &&
           ll_alloc(&m->d_head_rows, R, "head rows") &&
           ll_alloc(&m->d_head_targets, R, "head targets") && ll_alloc(&m->d_sel, R, "sel") &&
           ll_alloc(&m->d_bucket, 3 * R + 1, "token buckets");
}

static Model *llg_create(const ModelConfig *cfg, int maxB, uint64_t seed) {
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "gpu llama backend: no CUDA device (%s); ./train_cpu runs the same on the CPU\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return NULL;
    }
    const char *why = llama_config_check(cfg);
    if (why) {
        fprintf(stderr, "gpu llama backend: bad config: %s\n", why);
        return NULL;
    }
    if (maxB < 1 || (size_t)maxB * cfg->maxT > (size_t)1 << 24) {
        fprintf(stderr, "gpu llama backend: maxB must be >= 1 and maxB * maxT <= 2^24 (got %d)\n",
                maxB);
        return NULL;
    }
    LlamaGpu *m = (LlamaGpu *)calloc(1, sizeof(LlamaGpu));
    if (!m) {
        fprintf(stderr, "gpu llama backend: out of memory\n");
        return NULL;
    }
    m->cfg = *cfg;
    m->maxB = maxB;
    m->hs = cfg->C / cfg->NH;
    m->KVC = cfg->n_kv_heads * m->hs;
    m->nparams = llama_param_sizes(cfg, m->sizes);
    Model *mm = reinterpret_cast<Model *>(m);
    if (cublasCreate(&m->blas) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "gpu llama backend: cublasCreate failed\n");
        m->blas = NULL;
        llg_destroy(mm);
        return NULL;
    }
    size_t R = (size_t)maxB * cfg->maxT, half = cfg->rope_dim / 2;
    m->tokens = (int *)calloc(R, sizeof(int));
    m->targets = (int *)calloc(R, sizeof(int));
    m->head_rows = (int *)calloc(R, sizeof(int));
    std::vector<float> host;
    bool host_ok = m->tokens && m->targets && m->head_rows;
    if (!alloc_train(m) || !host_ok) {
        if (!host_ok) fprintf(stderr, "gpu llama backend: out of host memory\n");
        llg_destroy(mm);
        return NULL;
    }
    llama_params_point(&m->p, m->params, cfg);
    llama_params_point(&m->g, m->grads, cfg);
    host.resize(std::max(m->nparams, 2 * cfg->maxT * half));
    llama_params_init(host.data(), cfg, seed);
    LL_CUDA_CHECK(cudaMemcpy(m->params, host.data(), m->nparams * sizeof(float), cudaMemcpyHostToDevice));
    if (half > 0) {
        rope_table_host(host.data(), host.data() + cfg->maxT * half, cfg->maxT, cfg->rope_dim,
                        cfg->rope_base);
        LL_CUDA_CHECK(cudaMemcpy(m->rope_cos, host.data(), cfg->maxT * half * sizeof(float),
                                 cudaMemcpyHostToDevice));
        LL_CUDA_CHECK(cudaMemcpy(m->rope_sin, host.data() + cfg->maxT * half,
                                 cfg->maxT * half * sizeof(float), cudaMemcpyHostToDevice));
    }
    LL_CUDA_CHECK(cudaMemset(m->grads, 0, m->nparams * sizeof(float)));
    LL_CUDA_CHECK(cudaMemset(m->mom, 0, m->nparams * sizeof(float)));
    LL_CUDA_CHECK(cudaMemset(m->vel, 0, m->nparams * sizeof(float)));
    return mm;
}

static const ModelConfig *llg_config(const Model *m) { return &as_llama(m)->cfg; }
static size_t llg_num_params(const Model *m) { return as_llama(m)->nparams; }
static void llg_get_params(const Model *mm, float *dst) {
    const LlamaGpu *m = as_llama(mm);
    LL_CUDA_CHECK(cudaMemcpy(dst, m->params, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
}
static void llg_set_params(Model *mm, const float *src) {
    LlamaGpu *m = as_llama(mm);
    LL_CUDA_CHECK(cudaMemcpy(m->params, src, m->nparams * sizeof(float), cudaMemcpyHostToDevice));
}
static void llg_get_grads(const Model *mm, float *dst) {
    const LlamaGpu *m = as_llama(mm);
    LL_CUDA_CHECK(cudaMemcpy(dst, m->grads, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
}
static int llg_reduce_grads(Model *mm, GradReduceFn fn, void *ctx) {
    LlamaGpu *m = as_llama(mm);
    LL_CUDA_CHECK(cudaDeviceSynchronize());  // the backward's kernels have written the buffer
    return fn(ctx, m->grads, m->nparams, 1);
}
static void llg_get_opt_state(const Model *mm, float *mom, float *vel, int64_t *step) {
    const LlamaGpu *m = as_llama(mm);
    size_t bytes = m->nparams * sizeof(float);
    if (mom) LL_CUDA_CHECK(cudaMemcpy(mom, m->mom, bytes, cudaMemcpyDeviceToHost));
    if (vel) LL_CUDA_CHECK(cudaMemcpy(vel, m->vel, bytes, cudaMemcpyDeviceToHost));
    if (step) *step = m->step;
}
static void llg_set_opt_state(Model *mm, const float *mom, const float *vel, int64_t step) {
    LlamaGpu *m = as_llama(mm);
    size_t bytes = m->nparams * sizeof(float);
    if (mom) LL_CUDA_CHECK(cudaMemcpy(m->mom, mom, bytes, cudaMemcpyHostToDevice));
    if (vel) LL_CUDA_CHECK(cudaMemcpy(m->vel, vel, bytes, cudaMemcpyHostToDevice));
    m->step = step;
}
static void llg_zero_grad(Model *mm) {
    LlamaGpu *m = as_llama(mm);
    LL_CUDA_CHECK(cudaMemset(m->grads, 0, m->nparams * sizeof(float)));
}
// The output projection: wte when tied, else lm_head.
static float *w_out(const LlamaParams *p, const ModelConfig *cfg) {
    return cfg->tied ? p->wte : p->lm_head;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

// Buffers one pass of the blocks writes. Training points them at the kept activations of layer
// l; prefill points every layer at the same scratch (it keeps nothing but the KV cache).
struct BlockBufs {
    float *xn1, *rstd1, *qkvr, *att, *atty, *h, *xn2, *rstd2, *gate, *up;
};

// One Llama block on R = B * T rows: out = h + W_down(silu(W_gate n2) * W_up n2), h = in +
// W_o attention(rope(W_q n1 + b_q), rope(W_k n1 + b_k), W_v n1 + b_v), n = rmsnorm (llama.h).
// Uses the scratch q, k, v, qkv, tmp, act. If kc is not NULL, the roped keys and values go into
// that layer's KV cache (slot b, position t).
static void block_forward(LlamaGpu *m, int l, const float *in, float *out, const BlockBufs &a,
                          int B, int T, float *kc, float *vc) {
    const ModelConfig *c = &m->cfg;
    const LlamaParams *p = &m->p;
    int C = c->C, F = c->ffn, NH = c->NH, KV = c->n_kv_heads, hs = m->hs, KVC = m->KVC;
    int R = B * T;
    size_t lc = (size_t)l * C, lkv = (size_t)l * KVC;
    rmsnorm_forward_gpu(a.xn1, a.rstd1, in, p->attn_norm + lc, R, C, c->norm_eps);
    matmul_forward_gpu(m->blas, m->q, a.xn1, p->wq + lc * C, c->qkv_bias ? p->bq + lc : NULL, R, C, C);
    matmul_forward_gpu(m->blas, m->k, a.xn1, p->wk + lkv * C, c->qkv_bias ? p->bk + lkv : NULL, R,
                       C, KVC);
    matmul_forward_gpu(m->blas, m->v, a.xn1, p->wv + lkv * C, c->qkv_bias ? p->bv + lkv : NULL, R,
                       C, KVC);
    rope_forward_gpu(m->q, NULL, R, T, NH, hs, c->rope_dim, m->rope_cos, m->rope_sin);
    rope_forward_gpu(m->k, NULL, R, T, KV, hs, c->rope_dim, m->rope_cos, m->rope_sin);
    if (kc) kv_store_gpu(kc, vc, m->k, m->v, NULL, R, T, KVC, c->maxT);
    gqa_pack_gpu(m->qkv, m->q, m->k, m->v, R, NH, KV, hs);
    attention_forward_gpu(m->blas, a.atty, a.qkvr, a.att, m->qkv, m->tmp, B, T, C, NH);
    matmul_forward_gpu(m->blas, m->tmp, a.atty, p->wo + lc * C, NULL, R, C, C);
    residual_forward_gpu(a.h, in, m->tmp, (size_t)R * C);
    rmsnorm_forward_gpu(a.xn2, a.rstd2, a.h, p->mlp_norm + lc, R, C, c->norm_eps);
    matmul_forward_gpu(m->blas, a.gate, a.xn2, p->w_gate + (size_t)l * F * C, NULL, R, C, F);
    matmul_forward_gpu(m->blas, a.up, a.xn2, p->w_up + (size_t)l * F * C, NULL, R, C, F);
    swiglu_forward_gpu(m->act, a.gate, a.up, (size_t)R * F);
    matmul_forward_gpu(m->blas, m->tmp, m->act, p->w_down + (size_t)l * C * F, NULL, R, F, C);
    residual_forward_gpu(out, a.h, m->tmp, (size_t)R * C);
}

// Layer l's kept activations for a (B, T) batch.
static BlockBufs train_bufs(LlamaGpu *m, int l, int B, int T) {
    size_t R = (size_t)B * T, C = m->cfg.C, F = m->cfg.ffn, NH = m->cfg.NH;
    size_t RC = R * C;
    return BlockBufs{m->xn1 + l * RC,  m->rstd1 + l * R,       m->qkvr + l * 3 * RC,
                     m->att + l * R * NH * T, m->atty + l * RC, m->hres + l * RC,
                     m->xn2 + l * RC,  m->rstd2 + l * R,       m->gate + l * R * F,
                     m->up + l * R * F};
}

static int llg_forward(Model *mm, const int *tokens, const int *targets, int B, int T,
                       float *logp, float *entropy) {
    LlamaGpu *m = as_llama(mm);
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, V = cfg->V, L = cfg->L;
    m->B = 0;
    if (B < 1 || B > m->maxB || T < 1 || T > cfg->maxT || !tokens || !targets || !logp) {
        fprintf(stderr, "gpu llama forward: bad arguments B=%d (maxB %d) T=%d (maxT %d)\n", B,
                m->maxB, T, cfg->maxT);
        return -1;
    }
    size_t R = (size_t)B * T, RC = R * C;
    for (size_t i = 0; i < R; i++)
        if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
            fprintf(stderr, "gpu llama forward: token %d / target %d at %zu outside [0, %d)\n",
                    tokens[i], targets[i], i, V);
            return -1;
        }
    memcpy(m->tokens, tokens, R * sizeof(int));
    memcpy(m->targets, targets, R * sizeof(int));
    LL_CUDA_CHECK(cudaMemcpy(m->d_tokens, tokens, R * sizeof(int), cudaMemcpyHostToDevice));
    embed_forward_gpu(m->xs, m->d_tokens, m->p.wte, (int)R, C);
    for (int l = 0; l < L; l++)
        block_forward(m, l, m->xs + l * RC, m->xs + (l + 1) * RC, train_bufs(m, l, B, T), B, T,
                      NULL, NULL);

    // The lm head only on rows with a target, gathered into a compact (N, C) matrix.
    int N = 0;
    std::vector<int> head_targets;
    for (size_t i = 0; i < R; i++)
        if (targets[i] >= 0) {
            m->head_rows[N++] = (int)i;
            head_targets.push_back(targets[i]);
        }
    m->N = N;
    memset(logp, 0, R * sizeof(float));
    if (entropy) memset(entropy, 0, R * sizeof(float));
    if (N > 0) {
        LL_CUDA_CHECK(cudaMemcpy(m->d_head_rows, m->head_rows, N * sizeof(int), cudaMemcpyHostToDevice));
        LL_CUDA_CHECK(cudaMemcpy(m->d_head_targets, head_targets.data(), N * sizeof(int),
                                 cudaMemcpyHostToDevice));
        gather_rows_gpu(m->head_x, m->xs + L * RC, m->d_head_rows, N, C);
        rmsnorm_forward_gpu(m->head_in, m->rstdf, m->head_x, m->p.norm_f, N, C, cfg->norm_eps);
        matmul_forward_gpu(m->blas, m->logits, m->head_in, w_out(&m->p, cfg), NULL, N, C, V);
        logits_forward_gpu(m->lse, m->hlogp, entropy ? m->hent : NULL, m->logits,
                           m->d_head_targets, N, V);
        std::vector<float> hl(N), he(entropy ? N : 0);
        LL_CUDA_CHECK(cudaMemcpy(hl.data(), m->hlogp, N * sizeof(float), cudaMemcpyDeviceToHost));
        if (entropy)
            LL_CUDA_CHECK(cudaMemcpy(he.data(), m->hent, N * sizeof(float), cudaMemcpyDeviceToHost));
        for (int i = 0; i < N; i++) {
            logp[m->head_rows[i]] = hl[i];
            if (entropy) entropy[m->head_rows[i]] = he[i];
        }
    }
    m->B = B;
    m->T = T;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// d(in) of block l into dres, given d(out) in dres; gradients accumulate (+=).
static void block_backward(LlamaGpu *m, int l, const float *in, int B, int T) {
    const ModelConfig *c = &m->cfg;
    const LlamaParams *p = &m->p, *g = &m->g;
    int C = c->C, F = c->ffn, NH = c->NH, KV = c->n_kv_heads, hs = m->hs, KVC = m->KVC;
    int R = B * T;
    size_t RC = (size_t)R * C, lc = (size_t)l * C, lkv = (size_t)l * KVC, lf = (size_t)l * F * C;
    BlockBufs a = train_bufs(m, l, B, T);
    // out = h + W_down(silu(gate) * up)
    swiglu_forward_gpu(m->act, a.gate, a.up, (size_t)R * F);
    matmul_backward_gpu(m->blas, m->dF1, g->w_down + lf, NULL, m->dres, m->act, p->w_down + lf, R,
                        F, C, m->partial);
    swiglu_backward_gpu(m->dF1, m->dF2, m->dF1, a.gate, a.up, (size_t)R * F);
    matmul_backward_gpu(m->blas, m->dbuf, g->w_gate + lf, NULL, m->dF1, a.xn2, p->w_gate + lf, R,
                        C, F, m->partial);
    matmul_backward_gpu(m->blas, m->dbuf2, g->w_up + lf, NULL, m->dF2, a.xn2, p->w_up + lf, R, C,
                        F, m->partial);
    residual_forward_gpu(m->dbuf, m->dbuf, m->dbuf2, RC);
    rmsnorm_backward_gpu(m->dres, g->mlp_norm + lc, m->dbuf, a.h, p->mlp_norm + lc, a.rstd2, R, C,
                         m->partial);
    // h = in + W_o attention(...)
    matmul_backward_gpu(m->blas, m->dbuf, g->wo + lc * C, NULL, m->dres, a.atty, p->wo + lc * C, R,
                        C, C, m->partial);
    attention_backward_gpu(m->blas, m->dqkv, m->dbuf, a.qkvr, a.att, B, T, C, NH, m->att_scratch);
    gqa_unpack_backward_gpu(m->dq, m->dk, m->dv, m->dqkv, R, NH, KV, hs);
    rope_backward_gpu(m->dq, NULL, R, T, NH, hs, c->rope_dim, m->rope_cos, m->rope_sin);
    rope_backward_gpu(m->dk, NULL, R, T, KV, hs, c->rope_dim, m->rope_cos, m->rope_sin);
    bool bias = c->qkv_bias != 0;
    matmul_backward_gpu(m->blas, m->dbuf, g->wq + lc * C, bias ? g->bq + lc : NULL, m->dq, a.xn1,
                        p->wq + lc * C, R, C, C, m->partial);
    matmul_backward_gpu(m->blas, m->dbuf2, g->wk + lkv * C, bias ? g->bk + lkv : NULL, m->dk,
                        a.xn1, p->wk + lkv * C, R, C, KVC, m->partial);
    residual_forward_gpu(m->dbuf, m->dbuf, m->dbuf2, RC);
    matmul_backward_gpu(m->blas, m->dbuf2, g->wv + lkv * C, bias ? g->bv + lkv : NULL, m->dv,
                        a.xn1, p->wv + lkv * C, R, C, KVC, m->partial);
    residual_forward_gpu(m->dbuf, m->dbuf, m->dbuf2, RC);
    rmsnorm_backward_gpu(m->dres, g->attn_norm + lc, m->dbuf, in, p->attn_norm + lc, a.rstd1, R, C,
                         m->partial);
}

static void llg_backward(Model *mm, const float *dlogp, const float *dentropy) {
    LlamaGpu *m = as_llama(mm);
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, V = cfg->V, L = cfg->L, B = m->B, T = m->T, N = m->N;
    if (B == 0) {
        fprintf(stderr, "gpu llama backward: no forward to differentiate (ignored)\n");
        return;
    }
    size_t R = (size_t)B * T, RC = R * C;
    // Rows whose coefficients are both zero contribute nothing: leave them out of the lm head.
    std::vector<int> sel;
    std::vector<float> ca, ce;
    for (int i = 0; i < N; i++) {
        int row = m->head_rows[i];
        float a = dlogp ? dlogp[row] : 0.0f, e = dentropy ? dentropy[row] : 0.0f;
        if (a != 0.0f || e != 0.0f) {
            sel.push_back(i);
            ca.push_back(a);
            ce.push_back(e);
        }
    }
    int M = (int)sel.size();
    if (M == 0) return;
    LL_CUDA_CHECK(cudaMemcpy(m->d_sel, sel.data(), M * sizeof(int), cudaMemcpyHostToDevice));
    LL_CUDA_CHECK(cudaMemcpy(m->coef_a, ca.data(), M * sizeof(float), cudaMemcpyHostToDevice));
    LL_CUDA_CHECK(cudaMemcpy(m->coef_e, ce.data(), M * sizeof(float), cudaMemcpyHostToDevice));
    logits_backward_gpu(m->dlogits, m->logits, m->lse, m->d_head_targets, m->d_sel, m->coef_a,
                        m->coef_e, M, V);
    gather_rows_gpu(m->hsel, m->head_in, m->d_sel, M, C);
    matmul_backward_gpu(m->blas, m->dbuf, w_out(&m->g, cfg), NULL, m->dlogits, m->hsel,
                        w_out(&m->p, cfg), M, C, V, m->partial);
    LL_CUDA_CHECK(cudaMemset(m->dhead, 0, sizeof(float) * (size_t)N * C));
    scatter_rows_gpu(m->dhead, m->dbuf, m->d_sel, M, C);
    LL_CUDA_CHECK(cudaMemset(m->dbuf, 0, sizeof(float) * (size_t)N * C));
    rmsnorm_backward_gpu(m->dbuf, m->g.norm_f, m->dhead, m->head_x, m->p.norm_f, m->rstdf, N, C,
                         m->partial);
    LL_CUDA_CHECK(cudaMemset(m->dres, 0, sizeof(float) * RC));
    scatter_rows_gpu(m->dres, m->dbuf, m->d_head_rows, N, C);
    for (int l = L - 1; l >= 0; l--) block_backward(m, l, m->xs + l * RC, B, T);
    embed_backward_gpu(m->g.wte, m->dres, m->tokens, (int)R, C, m->d_bucket);
}

// ---------------------------------------------------------------------------------------------
// AdamW with global-norm clipping (kernels.cu's formulas; decay on llama.h's matrices)
// ---------------------------------------------------------------------------------------------

static float llg_update(Model *mm, const AdamWConfig *ac, float lr) {
    LlamaGpu *m = as_llama(mm);
    sumsq_gpu(m->norm_out, m->grads, m->nparams, m->norm_partial);
    double sq = 0.0;
    LL_CUDA_CHECK(cudaMemcpy(&sq, m->norm_out, sizeof(double), cudaMemcpyDeviceToHost));
    double norm = sqrt(sq);
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
    float gscale = 1.0f;
    if (ac->grad_clip > 0.0f) {
        double coef = ac->grad_clip / (norm + 1e-6);
        if (coef < 1.0) gscale = (float)coef;
    }
    m->step++;
    double bc1 = 1.0 - pow(ac->beta1, (double)m->step), bc2 = 1.0 - pow(ac->beta2, (double)m->step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    size_t off = 0;
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        float decay = LLAMA_TENSOR_DECAY[t] ? 1.0f - lr * ac->weight_decay : 1.0f;
        adamw_gpu(m->params + off, m->grads + off, m->mom + off, m->vel + off, m->sizes[t],
                  ac->beta1, ac->beta2, ac->eps, decay, step_size, bc2_sqrt, gscale);
        off += m->sizes[t];
    }
    return (float)norm;
}

// ---------------------------------------------------------------------------------------------
// Sampling. Prefill: the prompts, padded to the longest, go through the blocks in one batch
// (causal attention never lets a real position see the padding), writing the roped keys and
// values into the KV cache. Decode: one position per row per step, each row at its own position
// (rows stop at different times; a finished row repeats a harmless step until the batch ends).
// ---------------------------------------------------------------------------------------------

static bool alloc_decode(LlamaGpu *m) {
    size_t L = m->cfg.L, C = m->cfg.C, V = m->cfg.V, NH = m->cfg.NH, T = m->cfg.maxT;
    size_t F = m->cfg.ffn, KVC = m->KVC, B = m->maxB;
    bool ok = ll_alloc(&m->kcache, L * B * T * KVC, "K cache") &&
              ll_alloc(&m->vcache, L * B * T * KVC, "V cache") && ll_alloc(&m->x, B * C, "decode x") &&
              ll_alloc(&m->ln, B * C, "decode norm") && ll_alloc(&m->sq, B * C, "decode q") &&
              ll_alloc(&m->sk, B * KVC, "decode k") && ll_alloc(&m->sv, B * KVC, "decode v") &&
              ll_alloc(&m->sy, B * C, "decode y") && ll_alloc(&m->so, B * C, "decode out") &&
              ll_alloc(&m->sg, B * F, "decode gate") && ll_alloc(&m->su, B * F, "decode up") &&
              ll_alloc(&m->srstd, B, "decode rstd") && ll_alloc(&m->scores, B * NH * T, "scores") &&
              ll_alloc(&m->dlog, B * V, "decode logits") && ll_alloc(&m->probs, B * V, "probs") &&
              ll_alloc(&m->keep, B * V, "nucleus") && ll_alloc(&m->u, B, "uniforms") &&
              ll_alloc(&m->out_logp, B, "sampled logp") &&
              ll_alloc(&m->in_tok, 2 * B, "input tokens and positions") &&
              ll_alloc(&m->out_tok, B, "sampled tokens") && ll_alloc(&m->ptok, B * T, "prompts");
    if (!ok) return false;
    if (curandCreateGenerator(&m->gen, CURAND_RNG_PSEUDO_PHILOX4_32_10) != CURAND_STATUS_SUCCESS) {
        fprintf(stderr, "gpu llama backend: curandCreateGenerator failed\n");
        return false;
    }
    m->have_gen = true;
    m->have_decode = true;
    return true;
}

// One decode step for n rows: tokens and positions in m->in_tok (2, maxB); KV cache updated; the
// residual stream ends in m->x (n, C).
static void decode_step(LlamaGpu *m, int n) {
    const ModelConfig *c = &m->cfg;
    const LlamaParams *p = &m->p;
    int C = c->C, F = c->ffn, NH = c->NH, KV = c->n_kv_heads, hs = m->hs, KVC = m->KVC;
    int maxT = c->maxT;
    const int *tok = m->in_tok, *pos = m->in_tok + m->maxB;
    embed_forward_gpu(m->x, tok, p->wte, n, C);
    for (int l = 0; l < c->L; l++) {
        size_t lc = (size_t)l * C, lkv = (size_t)l * KVC, lf = (size_t)l * F * C;
        float *kc = m->kcache + (size_t)l * m->maxB * maxT * KVC;
        float *vc = m->vcache + (size_t)l * m->maxB * maxT * KVC;
        rmsnorm_forward_gpu(m->ln, m->srstd, m->x, p->attn_norm + lc, n, C, c->norm_eps);
        matmul_forward_gpu(m->blas, m->sq, m->ln, p->wq + lc * C, c->qkv_bias ? p->bq + lc : NULL,
                           n, C, C);
        matmul_forward_gpu(m->blas, m->sk, m->ln, p->wk + lkv * C,
                           c->qkv_bias ? p->bk + lkv : NULL, n, C, KVC);
        matmul_forward_gpu(m->blas, m->sv, m->ln, p->wv + lkv * C,
                           c->qkv_bias ? p->bv + lkv : NULL, n, C, KVC);
        rope_forward_gpu(m->sq, pos, n, 1, NH, hs, c->rope_dim, m->rope_cos, m->rope_sin);
        rope_forward_gpu(m->sk, pos, n, 1, KV, hs, c->rope_dim, m->rope_cos, m->rope_sin);
        kv_store_gpu(kc, vc, m->sk, m->sv, pos, n, 1, KVC, maxT);
        gqa_decode_attention_gpu(m->sy, kc, vc, m->scores, m->sq, pos, n, maxT, NH, KV, hs);
        matmul_forward_gpu(m->blas, m->so, m->sy, p->wo + lc * C, NULL, n, C, C);
        residual_forward_gpu(m->x, m->x, m->so, (size_t)n * C);
        rmsnorm_forward_gpu(m->ln, m->srstd, m->x, p->mlp_norm + lc, n, C, c->norm_eps);
        matmul_forward_gpu(m->blas, m->sg, m->ln, p->w_gate + lf, NULL, n, C, F);
        matmul_forward_gpu(m->blas, m->su, m->ln, p->w_up + lf, NULL, n, C, F);
        swiglu_forward_gpu(m->sg, m->sg, m->su, (size_t)n * F);
        matmul_forward_gpu(m->blas, m->so, m->sg, p->w_down + lf, NULL, n, F, C);
        residual_forward_gpu(m->x, m->x, m->so, (size_t)n * C);
    }
}

// Prefill nb prompts (host (nb, Tp), padded): KV cache positions 0..Tp-1 of slots 0..nb-1, and
// m->x (nb, C) = the last block's output at each row's last prompt position. The blocks write
// into forward/backward's scratch buffers only (never the kept activations of the last forward).
static void prefill(LlamaGpu *m, const int *toks, const int *plen, int nb, int Tp) {
    const ModelConfig *c = &m->cfg;
    int C = c->C, maxT = c->maxT, R = nb * Tp;
    size_t KVC = m->KVC;
    float *x = m->hsel;  // (R, C) residual stream, in place through the blocks
    const BlockBufs a{m->dbuf, m->coef_a, m->dqkv, m->att_scratch, m->dbuf2,
                      m->dhead, m->dbuf, m->coef_e, m->dF1, m->dF2};
    LL_CUDA_CHECK(cudaMemcpy(m->ptok, toks, (size_t)R * sizeof(int), cudaMemcpyHostToDevice));
    embed_forward_gpu(x, m->ptok, m->p.wte, R, C);
    for (int l = 0; l < c->L; l++)
        block_forward(m, l, x, x, a, nb, Tp, m->kcache + (size_t)l * m->maxB * maxT * KVC,
                      m->vcache + (size_t)l * m->maxB * maxT * KVC);
    std::vector<int> last(nb);
    for (int r = 0; r < nb; r++) last[r] = r * Tp + plen[r] - 1;
    LL_CUDA_CHECK(cudaMemcpy(m->ptok, last.data(), nb * sizeof(int), cudaMemcpyHostToDevice));
    gather_rows_gpu(m->x, x, m->ptok, nb, C);
}

static int llg_sample(Model *mm, const SampleRequest *req, SampleResult *out) {
    LlamaGpu *m = as_llama(mm);
    const ModelConfig *cfg = &m->cfg;
    int V = cfg->V, C = cfg->C;
    if (sample_request_check(req, out, cfg, "gpu llama sample") != 0) return -1;
    if (req->n == 0 || req->max_new == 0) return 0;
    if (!m->have_decode && !alloc_decode(m)) return -1;
    // Seed and rewind: the same seed gives the same samples whatever ran before.
    if (curandSetPseudoRandomGeneratorSeed(m->gen, req->seed) != CURAND_STATUS_SUCCESS ||
        curandSetGeneratorOffset(m->gen, 0) != CURAND_STATUS_SUCCESS) {
        fprintf(stderr, "gpu llama sample: seeding cuRAND failed\n");
        return -1;
    }
    bool greedy = req->temperature <= 0.0f;
    int maxB = m->maxB;
    std::vector<int> toks((size_t)maxB * cfg->maxT), in(2 * (size_t)maxB), got(maxB);
    std::vector<float> lp(maxB);
    std::vector<char> done(maxB);
    // req->row_seeds: each row's uniforms come from its own stream (drawn here, one per row and
    // step, like the CPU sampler), so a row's samples do not depend on the rows beside it.
    std::vector<Rng> row_rng(maxB);
    std::vector<float> host_u(maxB);
    for (int c0 = 0; c0 < req->n; c0 += maxB) {
        int nb = std::min(req->n - c0, maxB), Tp = 0;
        const int *plen = req->prompt_len + c0;
        for (int r = 0; r < nb; r++) Tp = std::max(Tp, plen[r]);
        for (int r = 0; r < nb; r++) {
            const int *src = req->prompts + (size_t)(c0 + r) * req->prompt_stride;
            for (int t = 0; t < Tp; t++) toks[(size_t)r * Tp + t] = t < plen[r] ? src[t] : 0;
            done[r] = 0;
            if (req->row_seeds) rng_seed(&row_rng[r], req->row_seeds[c0 + r]);
        }
        prefill(m, toks.data(), plen, nb, Tp);
        int left = nb;
        for (int k = 0; k < req->max_new && left > 0; k++) {
            // m->x holds every row's state after its last token: sample new token k.
            if (k > 0) decode_step(m, nb);
            rmsnorm_forward_gpu(m->ln, m->srstd, m->x, m->p.norm_f, nb, C, cfg->norm_eps);
            matmul_forward_gpu(m->blas, m->dlog, m->ln, w_out(&m->p, cfg), NULL, nb, C, V);
            if (!greedy && req->row_seeds) {
                for (int r = 0; r < nb; r++) host_u[r] = rng_float(&row_rng[r]);
                LL_CUDA_CHECK(cudaMemcpy(m->u, host_u.data(), nb * sizeof(float), cudaMemcpyHostToDevice));
            } else if (!greedy && curandGenerateUniform(m->gen, m->u, nb) != CURAND_STATUS_SUCCESS) {
                fprintf(stderr, "gpu llama sample: curandGenerateUniform failed\n");
                return -1;
            }
            sample_rows_gpu(m->out_tok, m->out_logp, m->dlog, greedy ? NULL : m->u, nb, V,
                            req->temperature, req->top_p, m->probs, m->keep);
            LL_CUDA_CHECK(cudaMemcpy(got.data(), m->out_tok, nb * sizeof(int), cudaMemcpyDeviceToHost));
            LL_CUDA_CHECK(cudaMemcpy(lp.data(), m->out_logp, nb * sizeof(float), cudaMemcpyDeviceToHost));
            for (int r = 0; r < nb; r++) {
                int gi = c0 + r;
                in[r] = 0;
                in[maxB + r] = plen[r];  // finished rows: a harmless position in their own slot
                if (done[r]) continue;
                out->tokens[(size_t)gi * req->max_new + k] = got[r];
                out->logp[(size_t)gi * req->max_new + k] = lp[r];
                out->len[gi] = k + 1;
                bool stop = k + 1 == req->max_new;
                for (int s = 0; s < req->n_stop; s++) stop |= got[r] == req->stop[s];
                if (stop) {
                    done[r] = 1;
                    left--;
                    continue;
                }
                in[r] = got[r];
                in[maxB + r] = plen[r] + k;  // the new token's position (< maxT)
            }
            if (left > 0 && k + 1 < req->max_new)
                LL_CUDA_CHECK(cudaMemcpy(m->in_tok, in.data(), 2 * (size_t)maxB * sizeof(int),
                                         cudaMemcpyHostToDevice));
        }
    }
    return 0;
}

extern "C" const ModelBackend gpu_llama_backend = {
    "gpu-llama",         llg_create,     llg_destroy,   llg_config,   llg_num_params,
    llg_get_params,      llg_set_params, llg_get_grads, llg_get_opt_state,
    llg_set_opt_state,   llg_forward,    llg_zero_grad, llg_backward, llg_update,
    llg_sample,          llg_reduce_grads,
};

extern "C" const ModelBackend *gpu_backend_for(const ModelConfig *cfg) {
    return cfg && cfg->arch == ARCH_LLAMA ? &gpu_llama_backend : &gpu_backend;
}
