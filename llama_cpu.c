// llama_cpu.c: the Llama family (llama.h: RMSNorm, rotary positions, SwiGLU, grouped-query
// attention, tied or untied output, optional q/k/v biases) on the CPU, behind model.h's
// ModelBackend as cpu_llama_backend. Same semantics as model.c's GPT-2 cpu_backend: forward
// gives logp and entropy per position (lm head only on rows with a target), backward takes the
// per-position coefficients and accumulates gradients, update clips and takes an AdamW step.
// KV-cache sampling lives in llama_sample.c.
//
// llm.c style: one flat allocation each for parameters, gradients, AdamW m and v, activations;
// *_forward / *_backward pairs. Matmuls are model.c's sgemm split over the OpenMP threads
// (cpu_ops.h); attention runs in parallel over (batch, head) and, in backward, over (batch,
// key/value head) so the query heads sharing a K/V head never race. Repeated K/V heads are
// never materialised: query head h reads K/V head h / (NH / KV) through a strided view.
//
// Memory: training activations are allocated on the first forward for its B*T (and grown when
// a larger batch comes), and attention keeps only each row's log-sum-exp; backward recomputes
// the probabilities (flash-attention style) so nothing (B, NH, T, T) is ever stored.
//
// Build: part of CORE_SRC in the Makefile; tests in tests/test_llama.c (finite differences,
// dev/llama_reference.py in float64, KV decode vs forward).
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "llama_cpu.h"

void *llama_xcalloc(size_t n, size_t size, const char *what) {
    void *p = (n && size) ? calloc(n, size) : NULL;
    if (!p && n && size)
        fprintf(stderr, "llama: out of memory allocating %s (%zu x %zu bytes)\n", what, n, size);
    return p;
}

static float *carve(float **cur, size_t count) {
    float *p = *cur;
    *cur += count;
    return p;
}

const float *llama_out_weight(const struct Model *m) {
    return m->cfg.tied ? m->p.wte : m->p.lm_head;
}

// =============================================================================================
// Layers (forward / backward pairs)
// =============================================================================================

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, size_t N, int C,
                     float eps) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / (float)C + eps);
        float *o = out + i * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = x[c] * s * w[c];
        if (rstd) rstd[i] = s;
    }
}

// dinp += d/dx, dw += sum_rows dout * xhat. With xhat = x * rstd and dn = dout * w:
//   dx = rstd * (dn - xhat * mean(dn * xhat)).
// partial: (NCHUNK, C) scratch, summed in a fixed order (deterministic).
static void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, size_t N, int C,
                             float *partial) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (int ch = 0; ch < NCHUNK; ch++) {
        float *pw = partial + (size_t)ch * C;
        memset(pw, 0, sizeof(float) * (size_t)C);
        for (size_t i = N * ch / NCHUNK; i < N * (ch + 1) / NCHUNK; i++) {
            const float *d = dout + i * C, *x = inp + i * C;
            float s = rstd[i], mdnx = 0.0f;
#pragma omp simd reduction(+ : mdnx)
            for (int c = 0; c < C; c++) mdnx += d[c] * w[c] * x[c] * s;
            mdnx /= (float)C;
            float *di = dinp + i * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float xh = x[c] * s;
                pw[c] += d[c] * xh;
                di[c] += (d[c] * w[c] - xh * mdnx) * s;
            }
        }
    }
    for (int ch = 0; ch < NCHUNK; ch++) {
        const float *pw = partial + (size_t)ch * C;
        for (int c = 0; c < C; c++) dw[c] += pw[c];
    }
}

// Rotation of each (i, i + h2) channel pair by the angle pos * theta_i (sign +1) or its inverse
// (sign -1, the transpose: RoPE's backward).
static void rope_rotate(float *x, const int *pos, size_t N, int nh, int hs, int rope_dim,
                        const float *cos_t, const float *sin_t, float sign) {
    int h2 = rope_dim / 2;
    if (h2 == 0) return;
#pragma omp parallel for schedule(static) if (N * nh * hs >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *cs = cos_t + (size_t)pos[i] * h2, *sn = sin_t + (size_t)pos[i] * h2;
        for (int h = 0; h < nh; h++) {
            float *a = x + (i * nh + h) * hs, *b = a + h2;
#pragma omp simd
            for (int j = 0; j < h2; j++) {
                float x1 = a[j], x2 = b[j], c = cs[j], s = sign * sn[j];
                a[j] = x1 * c - x2 * s;
                b[j] = x2 * c + x1 * s;
            }
        }
    }
}

void rope_forward(float *x, const int *pos, size_t N, int nh, int hs, int rope_dim,
                  const float *cos_t, const float *sin_t) {
    rope_rotate(x, pos, N, nh, hs, rope_dim, cos_t, sin_t, 1.0f);
}

static void rope_backward(float *dx, const int *pos, size_t N, int nh, int hs, int rope_dim,
                          const float *cos_t, const float *sin_t) {
    rope_rotate(dx, pos, N, nh, hs, rope_dim, cos_t, sin_t, -1.0f);
}

static inline float sigmoidf_fast(float a) { return 1.0f / (1.0f + fast_expf(-a)); }

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel if (n >= PAR_MIN)
    {
        size_t lo, hi;
        thread_range(n, &lo, &hi);
#pragma omp simd
        for (size_t i = lo; i < hi; i++) out[i] = gate[i] * sigmoidf_fast(gate[i]) * up[i];
    }
}

// In place: dh (n) becomes dgate, and hbuf (n, the recomputed forward output, no longer
// needed) becomes dup. With s = sigmoid(a): silu(a) = a s, silu'(a) = s (1 + a (1 - s)).
static void swiglu_backward(float *dh, float *hbuf, const float *gate, const float *up,
                            size_t n) {
#pragma omp parallel if (n >= PAR_MIN)
    {
        size_t lo, hi;
        thread_range(n, &lo, &hi);
#pragma omp simd
        for (size_t i = lo; i < hi; i++) {
            float a = gate[i], s = sigmoidf_fast(a), d = dh[i];
            dh[i] = d * up[i] * s * (1.0f + a * (1.0f - s));
            hbuf[i] = d * a * s;
        }
    }
}

static void add_inplace(float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

// Causal grouped-query attention. q (B, T, C) (NH heads of hs), k, v (B, T, KVd) (KV heads)
// -> out (B, T, C); lse (B, NH, T) keeps each row's log-sum-exp for backward. Per (b, head) and
// block of ATT_QB queries: S = Q K^T / sqrt(hs) over the keys the block can see, the row
// softmax, O = P V, as sgemms on strided views. scratch: (nthreads, ATT_QB * T).
static void attention_forward(float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int KV, int hs,
                              float *scratch, int nthreads) {
    int C = NH * hs, KVd = KV * hs, grp = NH / KV;
    float scale = 1.0f / sqrtf((float)hs);
    size_t work = (size_t)B * NH * T * T * hs;  // multiply-adds, twice
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads) \
    if (work >= MATMUL_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)b * T * C + (size_t)h * hs;
            const float *kg = k + (size_t)b * T * KVd + (size_t)(h / grp) * hs;
            const float *vg = v + (size_t)b * T * KVd + (size_t)(h / grp) * hs;
            float *lr = lse + ((size_t)b * NH + h) * T;
            float *sc = scratch + (size_t)omp_get_thread_num() * ATT_QB * T;
            for (int q0 = 0; q0 < T; q0 += ATT_QB) {
                int nq = T - q0 < ATT_QB ? T - q0 : ATT_QB, nk = q0 + nq;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hs, scale,
                            qh + (size_t)q0 * C, C, kg, KVd, 0.0f, sc, nk);
                for (int i = 0; i < nq; i++)
                    lr[q0 + i] = softmax_causal_row(sc + (size_t)i * nk, q0 + i, nk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, nk, 1.0f, sc, nk,
                            vg, KVd, 0.0f, out + ((size_t)b * T + q0) * C + (size_t)h * hs, C);
            }
        }
}

// dq (B, T, C), dk, dv (B, T, KVd) overwritten. One task per (b, K/V head): the grp query
// heads that share a K/V head accumulate into its dK, dV in turn, so tasks never race. Per
// query block, with P = exp(S - lse) recomputed from q, k (keys 0 .. nk-1):
//   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) / sqrt(hs);  dQ = dS K;  dK += dS^T Q;
//   dV += P^T dO
// scratch: (nthreads, 2 * ATT_QB * T).
static void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v, const float *lse,
                               int B, int T, int NH, int KV, int hs, float *scratch,
                               int nthreads) {
    int C = NH * hs, KVd = KV * hs, grp = NH / KV;
    float scale = 1.0f / sqrtf((float)hs);
    size_t work = (size_t)B * NH * T * T * hs;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads) \
    if (work >= MATMUL_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < KV; g++) {
            size_t kvo = (size_t)b * T * KVd + (size_t)g * hs;
            const float *kg = k + kvo, *vg = v + kvo;
            float *dkg = dk + kvo, *dvg = dv + kvo;
            float *sp = scratch + (size_t)omp_get_thread_num() * 2 * ATT_QB * T;
            float *sd = sp + (size_t)ATT_QB * T;
            for (int t = 0; t < T; t++) {
                memset(dkg + (size_t)t * KVd, 0, sizeof(float) * hs);
                memset(dvg + (size_t)t * KVd, 0, sizeof(float) * hs);
            }
            for (int h = g * grp; h < (g + 1) * grp; h++) {
                size_t qo = (size_t)b * T * C + (size_t)h * hs;
                const float *qh = q + qo, *dh = dout + qo;
                const float *lr = lse + ((size_t)b * NH + h) * T;
                for (int q0 = 0; q0 < T; q0 += ATT_QB) {
                    int nq = T - q0 < ATT_QB ? T - q0 : ATT_QB, nk = q0 + nq;
                    const float *qb = qh + (size_t)q0 * C, *db = dh + (size_t)q0 * C;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hs, scale, qb,
                                C, kg, KVd, 0.0f, sp, nk);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hs, 1.0f, db, C,
                                vg, KVd, 0.0f, sd, nk);
                    for (int i = 0; i < nq; i++) {
                        int t = q0 + i;
                        float *pr = sp + (size_t)i * nk, *dr = sd + (size_t)i * nk, dot = 0.0f;
                        float l = lr[t];
#pragma omp simd reduction(+ : dot)
                        for (int t2 = 0; t2 <= t; t2++) {
                            pr[t2] = fast_expf(pr[t2] - l);
                            dot += pr[t2] * dr[t2];
                        }
#pragma omp simd
                        for (int t2 = 0; t2 <= t; t2++) dr[t2] = pr[t2] * (dr[t2] - dot) * scale;
                        for (int t2 = t + 1; t2 < nk; t2++) pr[t2] = dr[t2] = 0.0f;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, nk, 1.0f, sd,
                                nk, kg, KVd, 0.0f, dq + qo + (size_t)q0 * C, C);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nq, 1.0f, sd, nk,
                                qb, C, 1.0f, dkg, KVd);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nq, 1.0f, sp, nk,
                                db, C, 1.0f, dvg, KVd);
                }
            }
        }
}

// Token embedding backward: several positions share a token, so split the channels.
static void embedding_backward(float *dwte, const float *dout, const int *tokens, size_t R,
                               int C) {
#pragma omp parallel if (R * C >= PAR_MIN)
    {
        size_t c0, c1;
        thread_range((size_t)C, &c0, &c1);
        for (size_t i = 0; i < R; i++) {
            const float *d = dout + i * C;
            float *te = dwte + (size_t)tokens[i] * C;
            for (size_t c = c0; c < c1; c++) te[c] += d[c];
        }
    }
}

// =============================================================================================
// The model
// =============================================================================================

static void free_activations(struct Model *m) {
    free(m->act_mem);
    free(m->pos);
    free(m->tokens);
    free(m->targets);
    free(m->head_rows);
    free(m->sel);
    m->act_mem = NULL;
    m->pos = m->tokens = m->targets = m->head_rows = m->sel = NULL;
    m->act_rows = 0;
}

static void llama_destroy(Model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->mom);
    free(m->vel);
    free(m->rope_cos);
    free(m->rope_sin);
    free_activations(m);
    free(m->logits);
    free(m->att_scratch);
    free(m->norm_partial);
    free(m->dlogits);
    free(m->hsel);
    free(m->dhsel);
    llama_free_sampling(m);
    free(m);
}

// Activations for R = B*T rows (see struct Model), replacing smaller ones. 0 or -1.
static int ensure_activations(struct Model *m, int B, int T) {
    size_t R = (size_t)B * T;
    if (R <= m->act_rows) return 0;
    free_activations(m);
    size_t L = m->cfg.L, C = m->cfg.C, F = m->cfg.ffn, NH = m->cfg.NH;
    size_t KVd = (size_t)m->cfg.n_kv_heads * (C / NH);
    // att_lse is (L, B, NH, T) = L * NH * R.
    size_t per_layer = R * (6 * C + 2 + 2 * KVd + NH + 2 * F);
    size_t total = L * per_layer + R * C * 3 + R * 2 +               // xL, head_x/in, hrstd, lse
                   R * C * 4 + R * 2 * KVd + R * 2 * F;              // backward scratch
    m->act_mem = llama_xcalloc(total, sizeof(float), "activations");
    m->pos = llama_xcalloc(R, sizeof(int), "positions");
    m->tokens = llama_xcalloc(R, sizeof(int), "tokens");
    m->targets = llama_xcalloc(R, sizeof(int), "targets");
    m->head_rows = llama_xcalloc(R, sizeof(int), "head rows");
    m->sel = llama_xcalloc(R, sizeof(int), "head rows");
    if (!m->act_mem || !m->pos || !m->tokens || !m->targets || !m->head_rows || !m->sel) {
        free_activations(m);
        return -1;
    }
    float *c = m->act_mem;
    m->resid = carve(&c, L * R * C);
    m->an = carve(&c, L * R * C);
    m->arstd = carve(&c, L * R);
    m->q = carve(&c, L * R * C);
    m->k = carve(&c, L * R * KVd);
    m->v = carve(&c, L * R * KVd);
    m->att_lse = carve(&c, L * R * NH);
    m->atty = carve(&c, L * R * C);
    m->res2 = carve(&c, L * R * C);
    m->mn = carve(&c, L * R * C);
    m->mrstd = carve(&c, L * R);
    m->gate = carve(&c, L * R * F);
    m->up = carve(&c, L * R * F);
    m->xL = carve(&c, R * C);
    m->head_x = carve(&c, R * C);
    m->head_in = carve(&c, R * C);
    m->hrstd = carve(&c, R);
    m->lse = carve(&c, R);
    m->dres = carve(&c, R * C);
    m->dbuf = carve(&c, R * C);
    m->dbuf2 = carve(&c, R * C);
    m->dq = carve(&c, R * C);
    m->dk = carve(&c, R * KVd);
    m->dv = carve(&c, R * KVd);
    m->dF = carve(&c, R * F);
    m->hF = carve(&c, R * F);
    if ((size_t)(c - m->act_mem) != total) {
        fprintf(stderr, "llama: internal error: activation layout %zu != %zu\n",
                (size_t)(c - m->act_mem), total);
        free_activations(m);
        return -1;
    }
    m->act_rows = R;
    return 0;
}

// cos / sin of t * theta_i, theta_i = rope_base^(-2i / rope_dim) (llama.h), in double so the
// table is exact to float rounding at every position.
static int make_rope_tables(struct Model *m) {
    int h2 = m->cfg.rope_dim / 2, T = m->cfg.maxT;
    size_t n = (size_t)T * (h2 ? h2 : 1);
    m->rope_cos = llama_xcalloc(n, sizeof(float), "RoPE table");
    m->rope_sin = llama_xcalloc(n, sizeof(float), "RoPE table");
    if (!m->rope_cos || !m->rope_sin) return -1;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < h2; i++) {
            double theta = pow((double)m->cfg.rope_base, -2.0 * i / (double)m->cfg.rope_dim);
            m->rope_cos[(size_t)t * h2 + i] = (float)cos(t * theta);
            m->rope_sin[(size_t)t * h2 + i] = (float)sin(t * theta);
        }
    return 0;
}

static Model *llama_create(const ModelConfig *cfg, int maxB, uint64_t seed) {
    const char *why = llama_config_check(cfg);
    if (why) {
        fprintf(stderr, "llama: bad config: %s\n", why);
        return NULL;
    }
    if (maxB < 1 || maxB > (1 << 20)) {
        fprintf(stderr, "llama: maxB must be in [1, 2^20] (got %d)\n", maxB);
        return NULL;
    }
    // One thread pool: OpenMP's (see model.c's top comment).
    openblas_set_num_threads(1);
    struct Model *m = llama_xcalloc(1, sizeof(struct Model), "model");
    if (!m) return NULL;
    m->cfg = *cfg;
    m->maxB = maxB;
    m->nthreads = omp_get_max_threads();
    m->nparams = llama_param_sizes(cfg, m->sizes);
    size_t C = cfg->C, V = cfg->V;
    m->params = llama_xcalloc(m->nparams, sizeof(float), "parameters");
    m->grads = llama_xcalloc(m->nparams, sizeof(float), "gradients");
    m->mom = llama_xcalloc(m->nparams, sizeof(float), "AdamW m");
    m->vel = llama_xcalloc(m->nparams, sizeof(float), "AdamW v");
    m->att_scratch = llama_xcalloc((size_t)m->nthreads * 2 * ATT_QB * cfg->maxT, sizeof(float),
                                   "attention scratch");
    m->norm_partial = llama_xcalloc(NCHUNK * C, sizeof(float), "norm scratch");
    m->dlogits = llama_xcalloc(HEAD_CHUNK * V, sizeof(float), "lm-head scratch");
    m->hsel = llama_xcalloc(HEAD_CHUNK * C, sizeof(float), "lm-head scratch");
    m->dhsel = llama_xcalloc(HEAD_CHUNK * C, sizeof(float), "lm-head scratch");
    if (!m->params || !m->grads || !m->mom || !m->vel || !m->att_scratch || !m->norm_partial ||
        !m->dlogits || !m->hsel || !m->dhsel || make_rope_tables(m) != 0) {
        llama_destroy(m);
        return NULL;
    }
    llama_params_point(&m->p, m->params, cfg);
    llama_params_point(&m->g, m->grads, cfg);
    llama_params_init(m->params, cfg, seed);
    return m;
}

static const ModelConfig *llama_config(const Model *m) { return &m->cfg; }
static size_t llama_num_params(const Model *m) { return m->nparams; }
static void llama_get_params(const Model *m, float *dst) {
    memcpy(dst, m->params, m->nparams * sizeof(float));
}
static void llama_set_params(Model *m, const float *src) {
    memcpy(m->params, src, m->nparams * sizeof(float));
}
static void llama_get_grads(const Model *m, float *dst) {
    memcpy(dst, m->grads, m->nparams * sizeof(float));
}
static int llama_reduce_grads(Model *m, GradReduceFn fn, void *ctx) {
    return fn(ctx, m->grads, m->nparams, 0);
}
static void llama_get_opt_state(const Model *m, float *mom, float *vel, int64_t *step) {
    if (mom) memcpy(mom, m->mom, m->nparams * sizeof(float));
    if (vel) memcpy(vel, m->vel, m->nparams * sizeof(float));
    if (step) *step = m->step;
}
static void llama_set_opt_state(Model *m, const float *mom, const float *vel, int64_t step) {
    if (mom) memcpy(m->mom, mom, m->nparams * sizeof(float));
    if (vel) memcpy(m->vel, vel, m->nparams * sizeof(float));
    m->step = step;
}
static void llama_zero_grad(Model *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

// One block on the R = B*T rows of m->resid[l] (llama.h's equations); writes the next block's
// input (or xL after the last block) and keeps what backward needs.
static void block_forward(struct Model *m, int l, int B, int T) {
    const ModelConfig *cfg = &m->cfg;
    const LlamaParams *p = &m->p;
    int C = cfg->C, NH = cfg->NH, KV = cfg->n_kv_heads, F = cfg->ffn, hs = C / NH, KVd = KV * hs;
    size_t R = (size_t)B * T, RC = R * C, RK = R * KVd, RF = R * F;
    float *x = m->resid + l * RC, *an = m->an + l * RC, *q = m->q + l * RC;
    float *k = m->k + l * RK, *v = m->v + l * RK, *atty = m->atty + l * RC;
    float *res2 = m->res2 + l * RC, *mn = m->mn + l * RC;
    float *gate = m->gate + l * RF, *up = m->up + l * RF;
    float *out = l + 1 < cfg->L ? m->resid + (l + 1) * RC : m->xL;
    size_t lc = (size_t)l * C, lq = lc * C, lk = (size_t)l * KVd * C, lf = (size_t)l * F * C;
    int bias = cfg->qkv_bias;
    rmsnorm_forward(an, m->arstd + l * R, x, p->attn_norm + lc, R, C, cfg->norm_eps);
    matmul_forward(q, an, p->wq + lq, bias ? p->bq + lc : NULL, (int)R, C, C);
    matmul_forward(k, an, p->wk + lk, bias ? p->bk + (size_t)l * KVd : NULL, (int)R, C, KVd);
    matmul_forward(v, an, p->wv + lk, bias ? p->bv + (size_t)l * KVd : NULL, (int)R, C, KVd);
    rope_forward(q, m->pos, R, NH, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
    rope_forward(k, m->pos, R, KV, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
    attention_forward(atty, m->att_lse + l * R * NH, q, k, v, B, T, NH, KV, hs, m->att_scratch,
                      m->nthreads);
    matmul_forward(m->dbuf, atty, p->wo + lq, NULL, (int)R, C, C);
#pragma omp parallel for simd schedule(static) if (RC >= PAR_MIN)
    for (size_t i = 0; i < RC; i++) res2[i] = x[i] + m->dbuf[i];
    rmsnorm_forward(mn, m->mrstd + l * R, res2, p->mlp_norm + lc, R, C, cfg->norm_eps);
    matmul_forward(gate, mn, p->w_gate + lf, NULL, (int)R, C, F);
    matmul_forward(up, mn, p->w_up + lf, NULL, (int)R, C, F);
    swiglu_forward(m->hF, gate, up, RF);
    matmul_forward(m->dbuf, m->hF, p->w_down + lf, NULL, (int)R, F, C);
#pragma omp parallel for simd schedule(static) if (RC >= PAR_MIN)
    for (size_t i = 0; i < RC; i++) out[i] = res2[i] + m->dbuf[i];
}

// Final RMSNorm and lm head on the rows with a target only (gathered into (N, C)); logp and
// entropy per position (0 where there is no target).
static void head_forward(struct Model *m, const int *targets, size_t R, float *logp,
                         float *entropy) {
    int C = m->cfg.C, V = m->cfg.V, N = 0;
    for (size_t i = 0; i < R; i++)
        if (targets[i] >= 0) m->head_rows[N++] = (int)i;
    m->N = N;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int i = 0; i < N; i++)
        memcpy(m->head_x + (size_t)i * C, m->xL + (size_t)m->head_rows[i] * C, sizeof(float) * C);
    rmsnorm_forward(m->head_in, m->hrstd, m->head_x, m->p.norm_f, (size_t)N, C, m->cfg.norm_eps);
    if (N > 0) matmul_forward(m->logits, m->head_in, llama_out_weight(m), NULL, N, C, V);
    memset(logp, 0, R * sizeof(float));
    if (entropy) memset(entropy, 0, R * sizeof(float));
#pragma omp parallel for schedule(static) if ((size_t)N * V >= PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *z = m->logits + (size_t)i * V;
        int row = m->head_rows[i];
        float lse = row_lse(z, V);
        m->lse[i] = lse;
        logp[row] = z[targets[row]] - lse;
        if (entropy) entropy[row] = row_entropy(z, V, lse);
    }
}

static int llama_forward(Model *m, const int *tokens, const int *targets, int B, int T,
                         float *logp, float *entropy) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, V = cfg->V;
    m->B = 0;
    if (B < 1 || B > m->maxB || T < 1 || T > cfg->maxT || !tokens || !targets || !logp) {
        fprintf(stderr, "llama forward: bad arguments B=%d (maxB %d) T=%d (maxT %d)\n", B,
                m->maxB, T, cfg->maxT);
        return -1;
    }
    size_t R = (size_t)B * T, N = 0;
    for (size_t i = 0; i < R; i++) {
        if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
            fprintf(stderr, "llama forward: token %d / target %d at %zu outside [0, %d)\n",
                    tokens[i], targets[i], i, V);
            return -1;
        }
        N += targets[i] >= 0;
    }
    if (ensure_activations(m, B, T) != 0) return -1;
    if (N > m->logit_rows) {  // logits (N, V): grown like the activations
        free(m->logits);
        m->logit_rows = 0;
        m->logits = llama_xcalloc(N * V, sizeof(float), "logits");
        if (!m->logits) return -1;
        m->logit_rows = N;
    }
    memcpy(m->tokens, tokens, R * sizeof(int));
    memcpy(m->targets, targets, R * sizeof(int));
    for (size_t i = 0; i < R; i++) m->pos[i] = (int)(i % (size_t)T);
#pragma omp parallel for schedule(static) if (R * C >= PAR_MIN)
    for (size_t i = 0; i < R; i++)
        memcpy(m->resid + i * C, m->p.wte + (size_t)tokens[i] * C, sizeof(float) * C);
    for (int l = 0; l < cfg->L; l++) block_forward(m, l, B, T);
    head_forward(m, targets, R, logp, entropy);
    m->B = B;
    m->T = T;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// The lm head and final RMSNorm: fills m->dres (R, C) with the gradient at the last block's
// output and accumulates the head's weight gradients. Rows whose coefficients are both zero
// contribute nothing and are left out; the rest go through in chunks of HEAD_CHUNK rows so
// dlogits never needs (N, V). Returns the number of rows that carried a gradient.
static int head_backward(struct Model *m, const float *dlogp, const float *dentropy) {
    int C = m->cfg.C, V = m->cfg.V, N = m->N;
    size_t RC = (size_t)m->B * m->T * C;
    int M = 0;
    for (int i = 0; i < N; i++) {
        int row = m->head_rows[i];
        if ((dlogp && dlogp[row] != 0.0f) || (dentropy && dentropy[row] != 0.0f)) m->sel[M++] = i;
    }
    if (M == 0) return 0;
    float *dW = m->cfg.tied ? m->g.wte : m->g.lm_head;
    float *dhead = m->dbuf;  // (N, C) gradient at the final RMSNorm's output
    memset(dhead, 0, sizeof(float) * (size_t)N * C);
    for (int s0 = 0; s0 < M; s0 += HEAD_CHUNK) {
        int ns = M - s0 < HEAD_CHUNK ? M - s0 : HEAD_CHUNK;
        // With p = softmax(z), y the target: d logp_y / dz_j = [j == y] - p_j;
        // dH / dz_j = -p_j (log p_j + H).
#pragma omp parallel for schedule(static) if ((size_t)ns * V >= PAR_MIN)
        for (int s = 0; s < ns; s++) {
            int i = m->sel[s0 + s], row = m->head_rows[i];
            const float *z = m->logits + (size_t)i * V;
            float *dz = m->dlogits + (size_t)s * V;
            float a = dlogp ? dlogp[row] : 0.0f, e = dentropy ? dentropy[row] : 0.0f;
            float lse = m->lse[i];
            float H = e != 0.0f ? row_entropy(z, V, lse) : 0.0f;
#pragma omp simd
            for (int j = 0; j < V; j++) {
                float pj = fast_expf(z[j] - lse);
                dz[j] = -a * pj - e * pj * (z[j] - lse + H);
            }
            dz[m->targets[row]] += a;
            memcpy(m->hsel + (size_t)s * C, m->head_in + (size_t)i * C, sizeof(float) * C);
        }
        matmul_backward(m->dhsel, dW, NULL, m->dlogits, m->hsel, llama_out_weight(m), ns, C, V);
        for (int s = 0; s < ns; s++)
            memcpy(dhead + (size_t)m->sel[s0 + s] * C, m->dhsel + (size_t)s * C,
                   sizeof(float) * C);
    }
    // Final RMSNorm on the N head rows, then scatter into the residual gradient.
    memset(m->dbuf2, 0, sizeof(float) * (size_t)N * C);
    rmsnorm_backward(m->dbuf2, m->g.norm_f, dhead, m->head_x, m->p.norm_f, m->hrstd, (size_t)N,
                     C, m->norm_partial);
    memset(m->dres, 0, sizeof(float) * RC);
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int i = 0; i < N; i++)
        memcpy(m->dres + (size_t)m->head_rows[i] * C, m->dbuf2 + (size_t)i * C,
               sizeof(float) * C);
    return M;
}

// One block backward: m->dres holds d(block output) on entry and d(block input) on exit;
// weight gradients accumulate.
static void block_backward(struct Model *m, int l) {
    const ModelConfig *cfg = &m->cfg;
    const LlamaParams *p = &m->p, *g = &m->g;
    int C = cfg->C, NH = cfg->NH, KV = cfg->n_kv_heads, F = cfg->ffn, hs = C / NH, KVd = KV * hs;
    int B = m->B, T = m->T, bias = cfg->qkv_bias;
    size_t R = (size_t)B * T, RC = R * C, RK = R * KVd, RF = R * F;
    const float *x = m->resid + l * RC, *an = m->an + l * RC, *q = m->q + l * RC;
    const float *k = m->k + l * RK, *v = m->v + l * RK, *atty = m->atty + l * RC;
    const float *res2 = m->res2 + l * RC, *mn = m->mn + l * RC;
    const float *gate = m->gate + l * RF, *up = m->up + l * RF;
    size_t lc = (size_t)l * C, lq = lc * C, lk = (size_t)l * KVd * C, lf = (size_t)l * F * C;
    // out = res2 + Wdown (silu(Wgate mn) * (Wup mn)), mn = rmsnorm(res2): dres is d out.
    swiglu_forward(m->hF, gate, up, RF);  // recomputed rather than stored
    matmul_backward(m->dF, g->w_down + lf, NULL, m->dres, m->hF, p->w_down + lf, (int)R, F, C);
    swiglu_backward(m->dF, m->hF, gate, up, RF);  // dF = d gate, hF = d up
    matmul_backward(m->dbuf, g->w_gate + lf, NULL, m->dF, mn, p->w_gate + lf, (int)R, C, F);
    matmul_backward(m->dbuf2, g->w_up + lf, NULL, m->hF, mn, p->w_up + lf, (int)R, C, F);
    add_inplace(m->dbuf, m->dbuf2, RC);
    rmsnorm_backward(m->dres, g->mlp_norm + lc, m->dbuf, res2, p->mlp_norm + lc,
                     m->mrstd + l * R, R, C, m->norm_partial);
    // res2 = x + Wo attention(rope(Wq an + bq), rope(Wk an + bk), Wv an + bv): dres is d res2.
    matmul_backward(m->dbuf, g->wo + lq, NULL, m->dres, atty, p->wo + lq, (int)R, C, C);
    attention_backward(m->dq, m->dk, m->dv, m->dbuf, q, k, v, m->att_lse + l * R * NH, B, T, NH,
                       KV, hs, m->att_scratch, m->nthreads);
    rope_backward(m->dq, m->pos, R, NH, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
    rope_backward(m->dk, m->pos, R, KV, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
    matmul_backward(m->dbuf, g->wq + lq, bias ? g->bq + lc : NULL, m->dq, an, p->wq + lq, (int)R,
                    C, C);
    matmul_backward(m->dbuf2, g->wk + lk, bias ? g->bk + (size_t)l * KVd : NULL, m->dk, an,
                    p->wk + lk, (int)R, C, KVd);
    add_inplace(m->dbuf, m->dbuf2, RC);
    matmul_backward(m->dbuf2, g->wv + lk, bias ? g->bv + (size_t)l * KVd : NULL, m->dv, an,
                    p->wv + lk, (int)R, C, KVd);
    add_inplace(m->dbuf, m->dbuf2, RC);
    rmsnorm_backward(m->dres, g->attn_norm + lc, m->dbuf, x, p->attn_norm + lc, m->arstd + l * R,
                     R, C, m->norm_partial);
}

static void llama_backward(Model *m, const float *dlogp, const float *dentropy) {
    if (m->B == 0) {
        fprintf(stderr, "llama backward: no forward to differentiate (ignored)\n");
        return;
    }
    if (head_backward(m, dlogp, dentropy) == 0) return;
    for (int l = m->cfg.L - 1; l >= 0; l--) block_backward(m, l);
    embedding_backward(m->g.wte, m->dres, m->tokens, (size_t)m->B * m->T, m->cfg.C);
}

// ---------------------------------------------------------------------------------------------
// AdamW: model.c's loop with llama.h's decay mask (matrices decayed, gains and biases not).
// ---------------------------------------------------------------------------------------------

static float llama_update(Model *m, const AdamWConfig *ac, float lr) {
    return adamw_update(m->params, m->grads, m->mom, m->vel, m->sizes, LLAMA_TENSOR_DECAY,
                        LLAMA_NUM_TENSORS, &m->step, ac, lr);
}

const ModelBackend cpu_llama_backend = {
    .name = "cpu-llama",
    .create = llama_create,
    .destroy = llama_destroy,
    .config = llama_config,
    .num_params = llama_num_params,
    .get_params = llama_get_params,
    .set_params = llama_set_params,
    .get_grads = llama_get_grads,
    .get_opt_state = llama_get_opt_state,
    .set_opt_state = llama_set_opt_state,
    .forward = llama_forward,
    .zero_grad = llama_zero_grad,
    .backward = llama_backward,
    .update = llama_update,
    .sample = llama_sample,
    .reduce_grads = llama_reduce_grads,
};

const ModelBackend *cpu_backend_for(const ModelConfig *cfg) {
    return cfg && cfg->arch == ARCH_LLAMA ? &cpu_llama_backend : &cpu_backend;
}
