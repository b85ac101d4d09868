// tests/test_sampling.c: the CPU sampler's frequencies against the distribution it promises
// (model.h, SampleRequest): softmax(z / temperature) restricted to the nucleus of sample_top_p
// and renormalised. The kept set alone is not enough: drawing u in [0, 1) instead of
// [0, nucleus mass) keeps the same set but piles the leftover mass on the last kept token.
//
// The model is made to emit fixed logits at every position: all weights zero except the final
// LayerNorm's bias, e_0, and column 0 of the token embedding, z. The final LayerNorm then
// outputs e_0 whatever its input (gain 0), so the tied output projection gives logits[v] = z[v].
// Every decode step is then an independent draw from the same distribution.
//
// Test: a chi-square goodness-of-fit statistic over the nucleus, against the 1 - 1e-6 quantile
// of chi-square (Wilson-Hilferty); tokens outside the nucleus must never appear. With the fixed
// seeds the outcome is deterministic; for a correct sampler and a fresh seed, each case would
// fail with probability 1e-6 (about 6e-6 for the whole program).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "model.h"
#include "tests/check.h"

enum { V = 8, MAXT = 64, MAXB = 32, CALLS = 12 };  // 12 calls x 32 rows x 63 tokens = 24192 draws

// Quantile of chi-square with df degrees of freedom at 1 - 1e-6 (Wilson-Hilferty; z(1e-6) =
// 4.7534). Accurate to ~1% here, far below the factor a biased sampler moves the statistic.
static double chi2_crit(int df) {
    double z = 4.753424, a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

// The nucleus the sampler promises, in exact arithmetic: most probable first, ties by lower id,
// the smallest prefix with mass >= top_p; q = p renormalised on it (0 elsewhere).
static int nucleus(const double *p, double top_p, double *q) {  // top_p as meant (decimal)
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 1; i < V; i++)  // insertion sort: by p descending, then id ascending
        for (int j = i; j > 0 && p[order[j]] > p[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double mass = 0;
    int k = 0;
    // 1e-6: finer than float32 probabilities resolve, coarser than the 1e-9 tails below
    while (k < V && (k == 0 || mass < top_p - 1e-6)) mass += p[order[k++]];
    if (top_p >= 1.0) k = V, mass = 1.0;
    for (int i = 0; i < V; i++) q[i] = 0;
    double m = 0;
    for (int i = 0; i < k; i++) m += p[order[i]];
    for (int i = 0; i < k; i++) q[order[i]] = p[order[i]] / m;
    return k;
}

static Model *fixed_logits_model(const double *p, float temperature) {
    ModelConfig cfg = {.V = V, .maxT = MAXT, .L = 1, .NH = 1, .C = 8};
    Model *m = cpu_backend.create(&cfg, MAXB, 1);
    if (!m) return NULL;
    size_t sz[NUM_PARAM_TENSORS], n = param_sizes(&cfg, sz);
    float *w = calloc(n, sizeof(float));
    if (!w) return m;
    ParamTensors t;
    param_tensors_point(&t, w, &cfg);
    // logits z = log p (any constant shift cancels in the softmax)
    for (int v = 0; v < V; v++) t.wte[(size_t)v * cfg.C] = (float)log(p[v]);
    t.lnfb[0] = 1.0f;
    cpu_backend.set_params(m, w);
    free(w);
    (void)temperature;
    return m;
}

// Samples CALLS x MAXB x (MAXT - 1) tokens; returns the chi-square statistic over the nucleus
// of q and counts tokens outside it in *outside.
static double sample_chi2(Model *m, float temperature, float top_p, const double *q,
                          long counts[V], long *total, long *outside) {
    int prompts[MAXB], plen[MAXB], max_new = MAXT - 1;
    for (int i = 0; i < MAXB; i++) prompts[i] = 0, plen[i] = 1;
    int *tok = calloc((size_t)MAXB * max_new, sizeof(int)), *len = calloc(MAXB, sizeof(int));
    float *lp = calloc((size_t)MAXB * max_new, sizeof(float));
    memset(counts, 0, V * sizeof(long));
    *total = 0;
    *outside = 0;
    for (int c = 0; tok && len && lp && c < CALLS; c++) {
        SampleRequest req = {.n = MAXB, .prompts = prompts, .prompt_stride = 1, .prompt_len = plen,
                             .max_new = max_new, .temperature = temperature, .top_p = top_p,
                             .seed = 1000 + (uint64_t)c};
        SampleResult res = {.tokens = tok, .logp = lp, .len = len};
        CHECK(cpu_backend.sample(m, &req, &res) == 0, "sample call %d", c);
        for (int i = 0; i < MAXB; i++)
            for (int k = 0; k < len[i]; k++) {
                int t = tok[(size_t)i * max_new + k];
                if (t >= 0 && t < V) counts[t]++;
                (*total)++;
            }
    }
    double chi2 = 0;
    for (int v = 0; v < V; v++) {
        if (q[v] == 0) {
            *outside += counts[v];
            continue;
        }
        double e = q[v] * (double)*total;
        chi2 += (counts[v] - e) * (counts[v] - e) / e;
    }
    free(tok), free(len), free(lp);
    return chi2;
}

// top_p is the decimal the case means (0.8, not the float nearest it): the reference nucleus
// uses it; the sampler gets (float)top_p like any caller.
static void check_case(const char *name, const double *p, float temperature, double top_p) {
    // the distribution at this temperature: p^(1/T) renormalised
    double pt[V], s = 0, q[V];
    for (int v = 0; v < V; v++) s += pt[v] = pow(p[v], 1.0 / temperature);
    for (int v = 0; v < V; v++) pt[v] /= s;
    int k = nucleus(pt, top_p, q);
    Model *m = fixed_logits_model(p, temperature);
    CHECK(m != NULL, "%s: model", name);
    if (!m) return;
    long counts[V], total, outside;
    double chi2 = sample_chi2(m, temperature, (float)top_p, q, counts, &total, &outside);
    double crit = k > 1 ? chi2_crit(k - 1) : 0;
    printf("  %-34s nucleus %d, chi2 %7.2f (crit %.1f, df %d), outside %ld, counts", name, k, chi2,
           crit, k - 1, outside);
    for (int v = 0; v < V; v++) printf(" %ld", counts[v]);
    printf(" of %ld\n", total);
    CHECK(total == (long)CALLS * MAXB * (MAXT - 1), "%s: %ld draws", name, total);
    CHECK(outside == 0, "%s: %ld draws outside the nucleus", name, outside);
    CHECK(chi2 <= crit, "%s: chi-square %.2f over the 1e-6 critical value %.2f (df %d)", name,
          chi2, crit, k - 1);
    cpu_backend.destroy(m);
}

int main(void) {
    // Each row draws from its own stream seeded by the row index (model.c), so the samples do not
    // depend on the thread count; one thread keeps this test fast on a busy machine.
    omp_set_num_threads(1);
    printf("sampling frequencies (CPU), %d draws per case\n", CALLS * MAXB * (MAXT - 1));
    const double skew[V] = {0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02};
    check_case("full distribution, T=1", skew, 1.0f, 1.0);
    check_case("top_p 0.8, T=1 (5 kept, mass .87)", skew, 1.0f, 0.8);
    check_case("top_p 0.6, T=0.7", skew, 0.7f, 0.6);
    // exact-mass boundary with a tie at the cut: sorted 0.3 (id 1), 0.3 (id 3), 0.2 (id 0),
    // 0.2 (id 2): mass reaches 0.8 exactly with id 0, so id 2 (same probability) is left out
    const double tie[V] = {0.2, 0.3, 0.2, 0.3, 1e-9, 1e-9, 1e-9, 1e-9};
    check_case("boundary tie: top_p 0.8 = 0.3+0.3+0.2", tie, 1.0f, 0.8);
    const double pow2[V] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0078125};
    check_case("boundary: top_p 0.75 = 0.5+0.25", pow2, 1.0f, 0.75);
    return check_summary("test_sampling");
}
