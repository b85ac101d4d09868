// tests/test_sampling.c: the CPU sampler's frequencies against the distribution it promises,
// by chi-square (tests/sample_freq.h says how). The kept set alone is not enough: drawing u in
// [0, 1) instead of [0, nucleus mass) keeps the same set but piles the leftover mass on the last
// kept token; this test catches that in every case with top_p < 1. The same cases run on the
// GPU sampler under the CUDA emulation in tests/test_kernels.cu.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"
#include "tests/check.h"
#include "tests/sample_freq.h"

enum { V = 8, MAXT = 64, MAXB = 32, CALLS = 12 };  // 12 calls x 32 rows x 63 tokens = 24192 draws

// top_p is the decimal the case means; the sampler gets (float)top_p like any caller.
static void check_case(const char *name, const double *p, float temperature, double top_p) {
    double pt[V], q[V];
    sf_tempered(p, V, temperature, pt);
    int k = sf_nucleus(pt, V, top_p, q);
    ModelConfig cfg = {.V = V, .maxT = MAXT, .L = 1, .NH = 1, .C = 8};
    Model *m = cpu_backend.create(&cfg, MAXB, 1);
    float *w = calloc(config_num_params(&cfg), sizeof(float));
    CHECK(m && w, "%s: model", name);
    if (m && w) {
        sf_fixed_logits(w, &cfg, p);
        cpu_backend.set_params(m, w);
        SfResult r = sf_sample(&cpu_backend, m, V, MAXB, MAXT, CALLS, temperature, (float)top_p, q);
        double crit = k > 1 ? sf_chi2_crit(k - 1) : 0.0;
        printf("  %-38s nucleus %d, chi2 %7.2f (crit %.1f, df %d), outside %ld, counts", name, k,
               r.chi2, crit, k - 1, r.outside);
        for (int v = 0; v < V; v++) printf(" %ld", r.counts[v]);
        printf(" of %ld\n", r.total);
        CHECK(r.failed_calls == 0 && r.total == (long)CALLS * MAXB * (MAXT - 1), "%s: %ld draws",
              name, r.total);
        CHECK(r.outside == 0, "%s: %ld draws outside the nucleus", name, r.outside);
        CHECK(r.chi2 <= crit, "%s: chi-square %.2f over the 1e-6 critical value %.2f (df %d)",
              name, r.chi2, crit, k - 1);
    }
    free(w);
    if (m) cpu_backend.destroy(m);
}

int main(void) {
    // Each row draws from its own stream seeded by the row index (model.c), so the samples do not
    // depend on the thread count; one thread keeps this test fast on a busy machine.
    omp_set_num_threads(1);
    printf("sampling frequencies (CPU), %d draws per case, false-alarm rate 1e-6 per case\n",
           CALLS * MAXB * (MAXT - 1));
    const double skew[V] = {0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02};
    check_case("full distribution, T=1", skew, 1.0f, 1.0);
    check_case("top_p 0.8, T=1 (5 kept, mass .87)", skew, 1.0f, 0.8);
    check_case("top_p 0.6, T=0.7", skew, 0.7f, 0.6);
    // Exact-mass boundary with a tie at the cut: sorted 0.3 (id 1), 0.3 (id 3), 0.2 (id 0),
    // 0.2 (id 2); the mass reaches 0.8 exactly with id 0, so id 2 (same probability) stays out.
    const double tie[V] = {0.2, 0.3, 0.2, 0.3, 1e-9, 1e-9, 1e-9, 1e-9};
    check_case("boundary tie: top_p 0.8 = 0.3+0.3+0.2", tie, 1.0f, 0.8);
    const double pow2[V] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0078125};
    check_case("boundary: top_p 0.75 = 0.5+0.25", pow2, 1.0f, 0.75);
    return check_summary("test_sampling");
}
