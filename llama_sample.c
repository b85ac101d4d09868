// llama_sample.c: batched prefill and KV-cache decoding for the Llama-family CPU backend
// (llama_cpu.c). The sampling loop itself (chunks of maxB prompts, temperature, top-p, stop
// tokens, one RNG stream per prompt) is model.c's sample_batched, shared with GPT-2, so both
// architectures sample exactly alike; this file is the inference forward it drives.
//
// KV cache: (L, maxB, KV, maxT, hs) for keys and values, so one K/V head's history is one
// contiguous block: appending is a copy, reading is a stream. Query heads h read K/V head
// h / (NH / KV); repeated heads are never stored. Only each row's last position goes through
// the final norm and the lm head.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "llama_cpu.h"

void llama_free_sampling(struct Model *m) {
    free(m->kv_mem);
    free(m->ikeep);
    free(m->ipos);
    m->kv_mem = NULL;
    m->ikeep = NULL;
    m->ipos = NULL;
}

static int alloc_sampling(struct Model *m) {
    size_t L = m->cfg.L, C = m->cfg.C, V = m->cfg.V, T = m->cfg.maxT, F = m->cfg.ffn;
    size_t KVd = (size_t)m->cfg.n_kv_heads * (C / m->cfg.NH);
    size_t B = m->maxB, R = B * T;
    size_t total = 2 * L * R * KVd + R * (4 * C + 2 * KVd + 2 * F + 1) + B * C + 2 * B * V;
    m->kv_mem = llama_xcalloc(total, sizeof(float), "KV cache");
    m->ikeep = llama_xcalloc(B * V, sizeof(int), "sampling ids");
    m->ipos = llama_xcalloc(2 * R, sizeof(int), "sampling rows");
    if (!m->kv_mem || !m->ikeep || !m->ipos) {
        llama_free_sampling(m);
        return -1;
    }
    float *c = m->kv_mem;
    m->kcache = c, c += L * R * KVd;
    m->vcache = c, c += L * R * KVd;
    m->ix = c, c += R * C;
    m->iln = c, c += R * C;
    m->iq = c, c += R * C;
    m->iatty = c, c += R * C;
    m->ik = c, c += R * KVd;
    m->iv = c, c += R * KVd;
    m->igate = c, c += R * F;
    m->iup = c, c += R * F;
    m->irstd = c, c += R;
    m->ilast = c, c += B * C;
    m->ilogits = c, c += B * V;
    m->iprobs = c, c += B * V;
    if ((size_t)(c - m->kv_mem) != total) {
        fprintf(stderr, "llama: internal error: sampling layout %zu != %zu\n",
                (size_t)(c - m->kv_mem), total);
        llama_free_sampling(m);
        return -1;
    }
    return 0;
}

// Decode attention of nq query heads that share one K/V head, at the newest position (they
// see all P cached keys): q, o (nq, hs) contiguous; kb, vb: (maxT, hs); sc: (nq, P) scratch.
static void attend_group(float *o, const float *q, const float *kb, const float *vb, int nq,
                         int P, int hs, float *sc) {
    float scale = 1.0f / sqrtf((float)hs);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, P, hs, scale, q, hs, kb, hs, 0.0f,
                sc, P);
    for (int i = 0; i < nq; i++) softmax_causal_row(sc + (size_t)i * P, P - 1, P);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, P, 1.0f, sc, P, vb, hs, 0.0f,
                o, hs);
}

// Attention of one packed row's Tq new queries (head h, positions start .. start+Tq-1) over
// the cached keys 0 .. start+Tq-1, in blocks of ATT_QB queries, two sgemms each.
// q: row stride C; kb, vb: (maxT, hs); o: row stride C; sc: (ATT_QB, maxT) scratch.
static void attend_cached(float *o, const float *q, const float *kb, const float *vb, int Tq,
                          int start, int C, int hs, float *sc) {
    float scale = 1.0f / sqrtf((float)hs);
    for (int q0 = 0; q0 < Tq; q0 += ATT_QB) {
        int nq = Tq - q0 < ATT_QB ? Tq - q0 : ATT_QB, P = start + q0 + nq;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, P, hs, scale,
                    q + (size_t)q0 * C, C, kb, hs, 0.0f, sc, P);
        for (int i = 0; i < nq; i++) softmax_causal_row(sc + (size_t)i * P, start + q0 + i, P);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, P, 1.0f, sc, P, vb, hs,
                    0.0f, o + (size_t)q0 * C, C);
    }
}

// The inference forward behind sample_batched (cpu_ops.h: InferForwardFn): packed rows, row
// r with tokens tokens[qoff[r] .. qoff[r+1]-1] at positions start[r].., cache slot slot[r].
static void infer_forward(void *ctx, const int *tokens, int n, const int *qoff, const int *slot,
                          const int *start) {
    struct Model *m = ctx;
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, KV = cfg->n_kv_heads, V = cfg->V, L = cfg->L, F = cfg->ffn;
    int hs = C / NH, KVd = KV * hs, grp = NH / KV, maxT = cfg->maxT;
    float eps = cfg->norm_eps;
    const LlamaParams *p = &m->p;
    size_t R = (size_t)qoff[n];
    int *ipos = m->ipos, *irow = m->ipos + (size_t)m->maxB * maxT;  // (R) position, row
    size_t att_work = 0;  // attention multiply-adds (x2) of this call, to decide on threads
    for (int r = 0; r < n; r++) {
        for (int i = qoff[r]; i < qoff[r + 1]; i++) {
            irow[i] = r;
            ipos[i] = start[r] + (i - qoff[r]);
        }
        size_t tq = (size_t)(qoff[r + 1] - qoff[r]);
        att_work += tq * ((size_t)start[r] + tq) * (size_t)NH * hs;
    }
#pragma omp parallel for schedule(static) if (R * C >= PAR_MIN)
    for (size_t i = 0; i < R; i++)
        memcpy(m->ix + i * C, p->wte + (size_t)tokens[i] * C, sizeof(float) * C);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C, lq = lc * C, lk = (size_t)l * KVd * C, lf = (size_t)l * F * C;
        float *kc = m->kcache + (size_t)l * m->maxB * maxT * KVd;  // (maxB, KV, maxT, hs)
        float *vc = m->vcache + (size_t)l * m->maxB * maxT * KVd;
        rmsnorm_forward(m->iln, m->irstd, m->ix, p->attn_norm + lc, R, C, eps);
        matmul_forward(m->iq, m->iln, p->wq + lq, cfg->qkv_bias ? p->bq + lc : NULL, (int)R, C,
                       C);
        matmul_forward(m->ik, m->iln, p->wk + lk, cfg->qkv_bias ? p->bk + (size_t)l * KVd : NULL,
                       (int)R, C, KVd);
        matmul_forward(m->iv, m->iln, p->wv + lk, cfg->qkv_bias ? p->bv + (size_t)l * KVd : NULL,
                       (int)R, C, KVd);
        rope_forward(m->iq, ipos, R, NH, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
        rope_forward(m->ik, ipos, R, KV, hs, cfg->rope_dim, m->rope_cos, m->rope_sin);
#pragma omp parallel for schedule(static) if (R * KVd >= PAR_MIN)
        for (size_t i = 0; i < R; i++)
            for (int h = 0; h < KV; h++) {
                size_t at = (((size_t)slot[irow[i]] * KV + h) * maxT + (size_t)ipos[i]) * hs;
                memcpy(kc + at, m->ik + i * KVd + (size_t)h * hs, sizeof(float) * hs);
                memcpy(vc + at, m->iv + i * KVd + (size_t)h * hs, sizeof(float) * hs);
            }
        if (R == (size_t)n && grp <= 2 * ATT_QB) {
            // A decode step: the grp query heads sharing a K/V head are consecutive in the
            // query row, so they form a (grp, hs) matrix and one pair of sgemms reads that
            // head's cached keys and values once for all of them.
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(m->nthreads) \
    if (att_work >= MATMUL_PAR_MIN)
            for (int r = 0; r < n; r++)
                for (int g = 0; g < KV; g++) {
                    size_t kvo = ((size_t)slot[r] * KV + (size_t)g) * maxT * hs;
                    size_t qo = (size_t)r * C + (size_t)g * grp * hs;
                    float *sc = m->att_scratch + (size_t)omp_get_thread_num() * 2 * ATT_QB * maxT;
                    attend_group(m->iatty + qo, m->iq + qo, kc + kvo, vc + kvo, grp, start[r] + 1,
                                 hs, sc);
                }
        } else {
            // Prefill: rows differ in length, dynamic schedule over (row, query head).
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(m->nthreads) \
    if (att_work >= MATMUL_PAR_MIN)
            for (int r = 0; r < n; r++)
                for (int h = 0; h < NH; h++) {
                    size_t kvo = ((size_t)slot[r] * KV + (size_t)(h / grp)) * maxT * hs;
                    float *sc = m->att_scratch + (size_t)omp_get_thread_num() * 2 * ATT_QB * maxT;
                    attend_cached(m->iatty + (size_t)qoff[r] * C + (size_t)h * hs,
                                  m->iq + (size_t)qoff[r] * C + (size_t)h * hs, kc + kvo,
                                  vc + kvo, qoff[r + 1] - qoff[r], start[r], C, hs, sc);
                }
        }
        // iln and iq are free now: they take Wo's and Wdown's outputs.
        matmul_forward(m->iln, m->iatty, p->wo + lq, NULL, (int)R, C, C);
#pragma omp parallel for simd schedule(static) if (R * C >= PAR_MIN)
        for (size_t i = 0; i < R * C; i++) m->ix[i] += m->iln[i];
        rmsnorm_forward(m->iln, m->irstd, m->ix, p->mlp_norm + lc, R, C, eps);
        matmul_forward(m->igate, m->iln, p->w_gate + lf, NULL, (int)R, C, F);
        matmul_forward(m->iup, m->iln, p->w_up + lf, NULL, (int)R, C, F);
        swiglu_forward(m->igate, m->igate, m->iup, R * F);
        matmul_forward(m->iq, m->igate, p->w_down + lf, NULL, (int)R, F, C);
#pragma omp parallel for simd schedule(static) if (R * C >= PAR_MIN)
        for (size_t i = 0; i < R * C; i++) m->ix[i] += m->iq[i];
    }
    for (int r = 0; r < n; r++)
        memcpy(m->iatty + (size_t)r * C, m->ix + ((size_t)qoff[r + 1] - 1) * C, sizeof(float) * C);
    rmsnorm_forward(m->ilast, NULL, m->iatty, p->norm_f, (size_t)n, C, eps);
    matmul_forward(m->ilogits, m->ilast, llama_out_weight(m), NULL, n, C, V);
}

int llama_sample(struct Model *m, const SampleRequest *req, SampleResult *out) {
    if (sample_request_check(req, out, &m->cfg, "llama sample") != 0) return -1;
    if (req->n == 0 || req->max_new == 0) return 0;
    if (!m->kv_mem && alloc_sampling(m) != 0) return -1;
    return sample_batched(req, out, m->cfg.V, m->maxB, m->cfg.maxT, infer_forward, m,
                          m->ilogits, m->iprobs, m->ikeep);
}
