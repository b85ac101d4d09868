// tests/sample_freq.h: sampling frequencies against the distribution a sampler promises
// (model.h, SampleRequest): softmax(z / temperature) restricted to the nucleus of sample_top_p
// and renormalised. Shared by tests/test_sampling.c (cpu_backend) and tests/test_kernels.cu
// (gpu_backend under the CUDA emulation), so C and C++ alike.
//
// The model is made to emit fixed logits at every position: all weights zero except the final
// LayerNorm's bias, e_0, and column 0 of the token embedding, z = log p. The final LayerNorm
// then outputs e_0 whatever its input (gain 0), so the tied output projection gives
// logits[v] = z[v], and every decode step is an independent draw from the same distribution.
//
// The check: a chi-square goodness-of-fit statistic over the nucleus against the 1 - 1e-6
// quantile of chi-square, and no draw outside the nucleus. Seeds are fixed, so the outcome is
// deterministic; for a correct sampler and a fresh seed a case fails with probability 1e-6.
#ifndef MEMR2_TESTS_SAMPLE_FREQ_H
#define MEMR2_TESTS_SAMPLE_FREQ_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define SF_MAXV 16

// Quantile of chi-square with df degrees of freedom at 1 - 1e-6 (Wilson-Hilferty, z(1e-6) =
// 4.7534): within ~1% here, far below the factor a biased sampler moves the statistic.
static inline double sf_chi2_crit(int df) {
    double z = 4.753424, a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

// The promised nucleus in exact arithmetic, top_p as the decimal it means (0.8, not the float
// nearest it): most probable first, ties by lower id, the smallest prefix with mass >= top_p
// (to 1e-6: finer than float32 probabilities resolve). q = p renormalised on it, 0 elsewhere.
// Returns its size.
static inline int sf_nucleus(const double *p, int V, double top_p, double *q) {
    int order[SF_MAXV];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 1; i < V; i++)  // insertion sort: p descending, then id ascending
        for (int j = i; j > 0 && p[order[j]] > p[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double mass = 0.0, m = 0.0;
    int k = 0;
    while (k < V && (k == 0 || mass < top_p - 1e-6)) mass += p[order[k++]];
    if (top_p >= 1.0) k = V;
    for (int i = 0; i < V; i++) q[i] = 0.0;
    for (int i = 0; i < k; i++) m += p[order[i]];
    for (int i = 0; i < k; i++) q[order[i]] = p[order[i]] / m;
    return k;
}

// p^(1/temperature) renormalised: the distribution before the nucleus cut.
static inline void sf_tempered(const double *p, int V, float temperature, double *pt) {
    double s = 0.0;
    for (int v = 0; v < V; v++) s += pt[v] = pow(p[v], 1.0 / temperature);
    for (int v = 0; v < V; v++) pt[v] /= s;
}

// Parameters (config_num_params floats, caller-owned) that make a GPT-2 emit logits log p.
static inline void sf_fixed_logits(float *w, const ModelConfig *cfg, const double *p) {
    size_t sz[NUM_PARAM_TENSORS], n = param_sizes(cfg, sz);
    memset(w, 0, n * sizeof(float));
    ParamTensors t;
    param_tensors_point(&t, w, cfg);
    for (int v = 0; v < cfg->V; v++) t.wte[(size_t)v * cfg->C] = (float)log(p[v]);
    t.lnfb[0] = 1.0f;
}

typedef struct {
    long counts[SF_MAXV];
    long total, outside;  // draws, and draws outside the nucleus
    double chi2;
    int failed_calls;     // sample() returning non-zero
} SfResult;

// calls x maxB rows x (maxT - 1) draws from prompts of one token; chi-square against q.
static inline SfResult sf_sample(const ModelBackend *be, Model *m, int V, int maxB, int maxT,
                                 int calls, float temperature, float top_p, const double *q) {
    SfResult r;
    memset(&r, 0, sizeof r);
    int max_new = maxT - 1;
    int *prompts = (int *)calloc((size_t)maxB, sizeof(int));
    int *plen = (int *)calloc((size_t)maxB, sizeof(int));
    int *tok = (int *)calloc((size_t)maxB * max_new, sizeof(int));
    int *len = (int *)calloc((size_t)maxB, sizeof(int));
    float *lp = (float *)calloc((size_t)maxB * max_new, sizeof(float));
    if (!prompts || !plen || !tok || !len || !lp) r.failed_calls = calls;
    for (int c = 0; !r.failed_calls && c < calls; c++) {
        for (int i = 0; i < maxB; i++) plen[i] = 1;
        SampleRequest req;
        memset(&req, 0, sizeof req);
        req.n = maxB, req.prompts = prompts, req.prompt_stride = 1, req.prompt_len = plen;
        req.max_new = max_new, req.temperature = temperature, req.top_p = top_p;
        req.seed = 1000 + (uint64_t)c;
        SampleResult res = {tok, lp, len};
        if (be->sample(m, &req, &res) != 0) {
            r.failed_calls++;
            break;
        }
        for (int i = 0; i < maxB; i++)
            for (int k = 0; k < len[i]; k++) {
                int t = tok[(size_t)i * max_new + k];
                if (t >= 0 && t < V) r.counts[t]++;
                r.total++;
            }
    }
    for (int v = 0; v < V; v++) {
        if (q[v] == 0.0) {
            r.outside += r.counts[v];
            continue;
        }
        double e = q[v] * (double)r.total;
        r.chi2 += (r.counts[v] - e) * (r.counts[v] - e) / e;
    }
    free(prompts), free(plen), free(tok), free(len), free(lp);
    return r;
}

#endif
