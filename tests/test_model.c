// tests/test_model.c: the CPU reference transformer (model.c) against finite differences, the
// plain-loop matmul, PyTorch (dev/reference.py, run live through /usr/bin/python3), and itself
// (KV-cache decode vs full forward, checkpoint round trips, AdamW by hand).
//
// Run from the repository root (it calls dev/reference.py):  make build/rel/tests/test_model &&
// build/rel/tests/test_model
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "rng.h"

static const ModelBackend *BE = &cpu_backend;

static float *fmalloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

// Random parameters with a larger spread than params_init, so that distributions are far from
// uniform (the entropy gradient vanishes at uniform) and every tensor matters.
static void random_params(Model *m, uint64_t seed, float std) {
    size_t n = BE->num_params(m);
    float *p = fmalloc(n);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = std * rng_normal(&r);
    BE->set_params(m, p);
    free(p);
}

static double sum_loss(Model *m, const int *tok, const int *tgt, int B, int T, const float *a,
                       const float *e) {
    size_t n = (size_t)B * T;
    float *lp = fmalloc(n), *ent = fmalloc(n);
    int rc = BE->forward(m, tok, tgt, B, T, lp, ent);
    if (rc != 0) {
        fprintf(stderr, "forward failed\n");
        exit(2);
    }
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (a ? (double)a[i] * lp[i] : 0.0) + (e ? (double)e[i] * ent[i] : 0.0);
    free(lp);
    free(ent);
    return s;
}

// ---------------------------------------------------------------------------------------------
static void test_matmul(void) {
    int shapes[][3] = {{37, 19, 23}, {2, 16, 40}, {128, 64, 192}, {1, 8, 5}};
    Rng r;
    rng_seed(&r, 7);
    double worst = 0.0;
    for (int s = 0; s < 4; s++) {
        int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2];
        float *x = fmalloc((size_t)N * IC), *w = fmalloc((size_t)OC * IC), *b = fmalloc(OC);
        float *o1 = fmalloc((size_t)N * OC), *o2 = fmalloc((size_t)N * OC);
        for (int i = 0; i < N * IC; i++) x[i] = rng_normal(&r);
        for (int i = 0; i < OC * IC; i++) w[i] = rng_normal(&r);
        for (int i = 0; i < OC; i++) b[i] = rng_normal(&r);
        for (int bias = 0; bias < 2; bias++) {
            matmul_forward(o1, x, w, bias ? b : NULL, N, IC, OC);
            matmul_reference(o2, x, w, bias ? b : NULL, N, IC, OC);
            double err = 0.0;
            for (int i = 0; i < N * OC; i++)
                err = fmax(err, fabs(o1[i] - o2[i]) / (1.0 + fabs(o2[i])));
            worst = fmax(worst, err);
            CHECK(err < 1e-5, "matmul %dx%dx%d bias %d: rel err %.3g", N, IC, OC, bias, err);
        }
        free(x), free(w), free(b), free(o1), free(o2);
    }
    printf("matmul sgemm vs reference: worst rel err %.3g (tol 1e-5)\n", worst);
}

// ---------------------------------------------------------------------------------------------
// Finite differences on every tensor, for the logp and the entropy coefficients separately.
static void test_finite_differences(void) {
    ModelConfig cfg = {.V = 11, .maxT = 8, .L = 2, .NH = 2, .C = 8};
    int B = 2, T = 7;
    Model *m = BE->create(&cfg, B, 1);
    CHECK(m != NULL, "create tiny model");
    if (!m) return;
    random_params(m, 11, 0.3f);
    size_t n = BE->num_params(m), sizes[NUM_PARAM_TENSORS];
    param_sizes(&cfg, sizes);
    int tok[14], tgt[14];
    float coef[14];
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)rng_below(&r, (uint32_t)cfg.V);
        tgt[i] = (i % 5 == 2) ? -1 : (int)rng_below(&r, (uint32_t)cfg.V);
        coef[i] = (i % 4 == 1) ? 0.0f : 2.0f * rng_float(&r) - 1.0f;  // some zero rows
    }
    float *p0 = fmalloc(n), *p = fmalloc(n), *g = fmalloc(n);
    BE->get_params(m, p0);
    const float eps = 1e-2f;
    for (int kind = 0; kind < 2; kind++) {
        const float *a = kind == 0 ? coef : NULL, *e = kind == 1 ? coef : NULL;
        // Measured: ~4e-4 (logp) and ~4e-3 (entropy, smaller gradients) of the tensor's largest
        // gradient; limited by float rounding of the whole forward (a smaller eps is worse).
        // The PyTorch cross-check below is the sharp test (~1e-7).
        const double tol = kind == 0 ? 2e-3 : 1e-2;
        BE->zero_grad(m);
        sum_loss(m, tok, tgt, B, T, a, e);
        BE->backward(m, a, e);
        BE->get_grads(m, g);
        double worst = 0.0;
        size_t off = 0;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            double gmax = 0.0;
            for (size_t j = 0; j < sizes[t]; j++) gmax = fmax(gmax, fabs(g[off + j]));
            double terr = 0.0;
            for (int k = 0; k < 6; k++) {
                size_t j = off + rng_below(&r, (uint32_t)sizes[t]);
                memcpy(p, p0, n * sizeof(float));
                p[j] = p0[j] + eps;
                BE->set_params(m, p);
                double lp = sum_loss(m, tok, tgt, B, T, a, e);
                p[j] = p0[j] - eps;
                BE->set_params(m, p);
                double lm = sum_loss(m, tok, tgt, B, T, a, e);
                double fd = (lp - lm) / (2.0 * (double)eps);
                // Error relative to the tensor's largest gradient: float rounding of the loss
                // (~1e-6 / 2eps) and the O(eps^2) truncation do not shrink with one entry.
                double err = fabs(fd - g[j]) / fmax(gmax, 1e-3);
                terr = fmax(terr, err);
            }
            worst = fmax(worst, terr);
            CHECK(terr < tol, "finite differences %s (%s): rel err %.3g", PARAM_TENSOR_NAMES[t],
                  kind ? "entropy" : "logp", terr);
            off += sizes[t];
        }
        printf("finite differences (%s coefficients, eps %g, 6 entries x 16 tensors): worst err "
               "%.3g of the tensor's max |grad| (tol %g)\n", kind ? "entropy" : "logp", eps, worst, tol);
        BE->set_params(m, p0);
    }
    // Backward accumulates: two backwards give twice the gradient.
    BE->zero_grad(m);
    sum_loss(m, tok, tgt, B, T, coef, coef);
    BE->backward(m, coef, coef);
    BE->get_grads(m, g);
    BE->backward(m, coef, coef);
    BE->get_grads(m, p);
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc = fmax(acc, fabs(p[i] - 2.0f * g[i]));
    double gm = 0.0;
    for (size_t i = 0; i < n; i++) gm = fmax(gm, fabs(g[i]));
    printf("backward accumulates: max |g2 - 2 g1| = %.3g of max |g| %.3g (tol 1e-6 relative)\n", acc, gm);
    CHECK(acc <= 1e-6 * gm, "backward accumulates: max |g2 - 2 g1| = %.3g", acc);
    // Bad arguments are refused.
    float lp[14];
    CHECK(BE->forward(m, tok, tgt, B + 1, T, lp, NULL) == -1, "B > maxB refused");
    CHECK(BE->forward(m, tok, tgt, B, cfg.maxT + 1, lp, NULL) == -1, "T > maxT refused");
    tok[3] = cfg.V;
    CHECK(BE->forward(m, tok, tgt, B, T, lp, NULL) == -1, "token out of range refused");
    free(p0), free(p), free(g);
    BE->destroy(m);
}

// ---------------------------------------------------------------------------------------------
// PyTorch cross-check (float64 reference) on a small model, live.
static int read_doubles(FILE *f, double *dst, size_t n) { return fread(dst, sizeof(double), n, f) == n; }

static void test_pytorch(void) {
    // T = 40 > 32 queries per attention block: the blocked causal path is exercised.
    ModelConfig cfg = {.V = 37, .maxT = 48, .L = 2, .NH = 2, .C = 16};
    enum { B = 2, T = 40 };
    Model *m = BE->create(&cfg, B, 5);
    CHECK(m != NULL, "create model");
    if (!m) return;
    random_params(m, 21, 0.15f);
    size_t n = BE->num_params(m), sizes[NUM_PARAM_TENSORS], R = (size_t)B * T;
    param_sizes(&cfg, sizes);
    int tok[B * T], tgt[B * T];
    float a[B * T], e[B * T];
    Rng r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < R; i++) {
        tok[i] = (int)rng_below(&r, (uint32_t)cfg.V);
        tgt[i] = (i % 7 == 3) ? -1 : (int)rng_below(&r, (uint32_t)cfg.V);
        a[i] = (i % 5 == 0) ? 0.0f : 2.0f * rng_float(&r) - 1.0f;
        e[i] = (i % 3 == 0) ? 0.0f : 0.5f * rng_float(&r) - 0.25f;
    }
    a[7] = e[7] = 0.0f;  // one row with both coefficients zero
    // eps 1e-6, not the trainer's 1e-8: the key bias's true gradient is exactly zero (softmax is
    // shift invariant), float gives ~1e-10 noise there, and Adam turns g / (|g| + eps) into an
    // update of ~1% of lr at eps 1e-8, which no float64 reference can reproduce.
    AdamWConfig ac = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-6f,
                      .weight_decay = 0.1f, .grad_clip = 1.0f};
    char dir[] = "/tmp/memr2_test_model_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], err[512], cmd[512];
    float *p0 = fmalloc(n);
    BE->get_params(m, p0);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    CHECK(checkpoint_save(path, &cfg, p0, err, sizeof err) == 0, "save: %s", err);
    snprintf(path, sizeof path, "%s/batch.bin", dir);
    FILE *f = fopen(path, "wb");
    int32_t bt[2] = {B, T};
    float hp[6] = {ac.lr, ac.beta1, ac.beta2, ac.eps, ac.weight_decay, ac.grad_clip};
    CHECK(f && fwrite(bt, 4, 2, f) == 2 && fwrite(tok, 4, R, f) == R && fwrite(tgt, 4, R, f) == R &&
              fwrite(a, 4, R, f) == R && fwrite(e, 4, R, f) == R && fwrite(hp, 4, 6, f) == 6,
          "write batch");
    if (f) fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 dev/reference.py check %s", dir);
    int rc = system(cmd);
    CHECK(rc == 0, "PyTorch reference failed (rc %d): `%s` needs /usr/bin/python3 with torch "
                   "(apt-get install python3-torch) and must run from the repository root", rc, cmd);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    f = rc == 0 ? fopen(path, "rb") : NULL;
    double *ref = calloc(2 * R + 2 * n + 3, sizeof(double));
    int ok = f && ref && read_doubles(f, ref, 2 * R + 2 * n + 3);
    CHECK(ok, "read %s", path);
    if (f) fclose(f);
    if (ok) {
        const double *rlogp = ref, *rent = ref + R, *rgrad = ref + 2 * R, *rnorm = rgrad + n,
                     *rpar = rnorm + 3;
        float lp[B * T], ent[B * T];
        BE->zero_grad(m);
        BE->forward(m, tok, tgt, B, T, lp, ent);
        BE->backward(m, a, e);
        float *g = fmalloc(n), *pc = fmalloc(n);
        BE->get_grads(m, g);
        double el = 0.0, ee = 0.0;
        for (size_t i = 0; i < R; i++) {
            el = fmax(el, fabs(lp[i] - rlogp[i]));
            ee = fmax(ee, fabs(ent[i] - rent[i]));
        }
        printf("pytorch (float64) vs C: logp max abs err %.3g, entropy %.3g (tol 2e-6)\n", el, ee);
        CHECK(el < 2e-6 && ee < 2e-6, "logp err %.3g entropy err %.3g", el, ee);
        // Gradients: max abs error relative to the tensor's max |grad|.
        size_t off = 0;
        double worst = 0.0;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            double gm = 0.0, er = 0.0;
            for (size_t j = off; j < off + sizes[t]; j++) {
                gm = fmax(gm, fabs(rgrad[j]));
                er = fmax(er, fabs(g[j] - rgrad[j]));
            }
            double rel = er / fmax(gm, 1e-30);
            printf("  grad %-9s max|g| %.3g  rel err %.3g\n", PARAM_TENSOR_NAMES[t], gm, rel);
            CHECK(rel < 3e-6, "grad %s rel err %.3g (tol 3e-6)", PARAM_TENSOR_NAMES[t], rel);
            worst = fmax(worst, rel);
            off += sizes[t];
        }
        printf("pytorch grads: worst rel err %.3g of the tensor's max |grad| (tol 3e-6)\n", worst);
        // Three AdamW steps on the same batch (clip active: the first norm is > 1).
        BE->set_params(m, p0);
        BE->set_opt_state(m, NULL, NULL, 0);
        float *zeros = fmalloc(n);
        BE->set_opt_state(m, zeros, zeros, 0);
        double en = 0.0;
        for (int s = 0; s < 3; s++) {
            BE->zero_grad(m);
            BE->forward(m, tok, tgt, B, T, lp, ent);
            BE->backward(m, a, e);
            float norm = BE->update(m, &ac, ac.lr);
            en = fmax(en, fabs(norm - rnorm[s]) / rnorm[s]);
        }
        printf("pytorch grad norms %.4f %.4f %.4f: rel err %.3g (tol 1e-6)\n", rnorm[0], rnorm[1],
               rnorm[2], en);
        CHECK(en < 1e-6, "grad norm rel err %.3g", en);
        CHECK(rnorm[0] > ac.grad_clip, "clipping is exercised (norm %.3g)", rnorm[0]);
        BE->get_params(m, pc);
        // Parameters after 3 steps: error relative to lr (each step moves a parameter by at most
        // ~lr, so this is the error of the update).
        off = 0;
        double wp = 0.0;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            double er = 0.0;
            for (size_t j = off; j < off + sizes[t]; j++) er = fmax(er, fabs(pc[j] - rpar[j]));
            er /= ac.lr;
            wp = fmax(wp, er);
            printf("  params %-9s err %.3g lr\n", PARAM_TENSOR_NAMES[t], er);
            CHECK(er < 1e-3, "params after 3 AdamW steps %s: err %.3g lr", PARAM_TENSOR_NAMES[t], er);
            off += sizes[t];
        }
        printf("pytorch params after 3 AdamW steps: worst abs err %.3g x lr (tol 1e-3)\n", wp);
        free(g), free(pc), free(zeros);
    }
    free(ref);
    free(p0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    BE->destroy(m);
}

// ---------------------------------------------------------------------------------------------
// AdamW by hand: one step on the gradient of a real backward, with and without clipping.
static void test_adamw(void) {
    ModelConfig cfg = {.V = 13, .maxT = 6, .L = 1, .NH = 2, .C = 8};
    Model *m = BE->create(&cfg, 2, 4);
    if (!m) {
        CHECK(0, "create");
        return;
    }
    size_t n = BE->num_params(m), sizes[NUM_PARAM_TENSORS];
    param_sizes(&cfg, sizes);
    int tok[12], tgt[12];
    float a[12];
    for (int i = 0; i < 12; i++) tok[i] = (i * 5) % 13, tgt[i] = (i * 7 + 1) % 13, a[i] = -1.0f / 12;
    float *p0 = fmalloc(n), *g = fmalloc(n), *p1 = fmalloc(n), *mo = fmalloc(n), *ve = fmalloc(n);
    const int decay[NUM_PARAM_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};
    for (int clip = 0; clip < 2; clip++) {
        BE->set_opt_state(m, mo, mo, 0);  // mo is zeros here
        BE->get_params(m, p0);
        BE->zero_grad(m);
        sum_loss(m, tok, tgt, 2, 6, a, NULL);
        BE->backward(m, a, NULL);
        BE->get_grads(m, g);
        double sq = 0.0;
        for (size_t i = 0; i < n; i++) sq += (double)g[i] * g[i];
        double norm = sqrt(sq);
        AdamWConfig ac = {.lr = 0.05f, .beta1 = 0.8f, .beta2 = 0.9f, .eps = 1e-6f,
                          .weight_decay = 0.5f, .grad_clip = clip ? (float)(norm / 4) : 0.0f};
        float got = BE->update(m, &ac, ac.lr);
        CHECK_CLOSE("returned pre-clip norm", got, norm, 1e-5, 0);
        BE->get_params(m, p1);
        int64_t step;
        float *mz = fmalloc(n), *vz = fmalloc(n);
        BE->get_opt_state(m, mz, vz, &step);
        CHECK(step == 1, "step counter %lld", (long long)step);
        double scale = clip ? (ac.grad_clip / (norm + 1e-6)) : 1.0, worst = 0.0;
        size_t off = 0;
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            for (size_t j = off; j < off + sizes[t]; j++) {
                double gi = g[j] * scale;
                double mh = (1 - ac.beta1) * gi / (1 - ac.beta1);  // bias-corrected: = gi
                double vh = (1 - ac.beta2) * gi * gi / (1 - ac.beta2);
                double want = p0[j] * (decay[t] ? 1 - ac.lr * ac.weight_decay : 1.0) -
                              ac.lr * mh / (sqrt(vh) + ac.eps);
                worst = fmax(worst, fabs(p1[j] - want));
                if (j == off) {
                    CHECK_CLOSE("adam m", mz[j], (1 - ac.beta1) * gi, 1e-5, 1e-12);
                    CHECK_CLOSE("adam v", vz[j], (1 - ac.beta2) * gi * gi, 1e-5, 1e-14);
                }
            }
            off += sizes[t];
        }
        printf("adamw one step (%s): max abs err vs hand computation %.3g (tol 1e-6)\n",
               clip ? "clipped to norm/4" : "no clip", worst);
        CHECK(worst < 1e-6, "adamw step err %.3g", worst);
        free(mz), free(vz);
        BE->set_params(m, p0);
    }
    free(p0), free(g), free(p1), free(mo), free(ve);
    BE->destroy(m);
}

// ---------------------------------------------------------------------------------------------
// Sampling: KV-cache decode vs full forward, seeds, stop tokens, batch vs one by one, top-p.

typedef struct {
    int n, max_new;
    int *tokens, *len;
    float *logp;
} Samples;

static Samples run_sample(Model *m, const int *prompts, int stride, const int *plen, int n,
                          int max_new, float temp, float top_p, const int *stop, int n_stop,
                          uint64_t seed) {
    Samples s = {.n = n, .max_new = max_new};
    s.tokens = calloc((size_t)n * max_new, sizeof(int));
    s.len = calloc((size_t)n, sizeof(int));
    s.logp = fmalloc((size_t)n * max_new);
    SampleRequest req = {.n = n, .prompts = prompts, .prompt_stride = stride, .prompt_len = plen,
                         .max_new = max_new, .temperature = temp, .top_p = top_p, .stop = stop,
                         .n_stop = n_stop, .seed = seed};
    SampleResult res = {.tokens = s.tokens, .logp = s.logp, .len = s.len};
    int rc = BE->sample(m, &req, &res);
    CHECK(rc == 0, "sample rc %d", rc);
    return s;
}

static void free_samples(Samples *s) { free(s->tokens), free(s->len), free(s->logp); }

// Re-scores every sample with the full forward; returns the max |logp difference|.
static double rescore(Model *m, const int *prompts, int stride, const int *plen, const Samples *s,
                      int maxB, int maxT) {
    double worst = 0.0;
    int *tok = calloc((size_t)maxT, sizeof(int)), *tgt = calloc((size_t)maxT, sizeof(int));
    float *lp = fmalloc((size_t)maxT);
    (void)maxB;
    for (int i = 0; i < s->n; i++) {
        int pl = plen[i], T = pl + s->len[i];
        if (T > maxT) T = maxT;  // the last generated token is never fed back
        for (int t = 0; t < T; t++) {
            tok[t] = t < pl ? prompts[(size_t)i * stride + t] : s->tokens[(size_t)i * s->max_new + t - pl];
            tgt[t] = -1;
        }
        for (int k = 0; k < s->len[i]; k++) tgt[pl - 1 + k] = s->tokens[(size_t)i * s->max_new + k];
        // tokens after the last target are unused by the targets (causal), so T = pl+len-1 is
        // enough; keep T as built, the extra position has no target.
        int Tf = pl + s->len[i] - 1;
        if (Tf < 1) Tf = 1;
        CHECK(BE->forward(m, tok, tgt, 1, Tf, lp, NULL) == 0, "rescore forward");
        for (int k = 0; k < s->len[i]; k++)
            worst = fmax(worst, fabs(lp[pl - 1 + k] - s->logp[(size_t)i * s->max_new + k]));
    }
    free(tok), free(tgt), free(lp);
    return worst;
}

static void test_sampling(void) {
    ModelConfig cfg = {.V = 29, .maxT = 48, .L = 2, .NH = 2, .C = 16};
    int maxB = 4;
    Model *m = BE->create(&cfg, maxB, 8);
    if (!m) {
        CHECK(0, "create");
        return;
    }
    random_params(m, 31, 0.25f);
    // Prompt 30 + 14 new: prefill and re-scoring forward span two attention blocks of 32.
    enum { N = 6, STRIDE = 30, MAXNEW = 14 };
    int plen[N] = {3, 9, 5, 1, 30, 7};
    int prompts[N * STRIDE];
    Rng r;
    rng_seed(&r, 17);
    for (int i = 0; i < N * STRIDE; i++) prompts[i] = (int)rng_below(&r, (uint32_t)cfg.V);

    // Sampled at temperature 1, top-p 1: the logp are the model's own, so the forward agrees.
    Samples s1 = run_sample(m, prompts, STRIDE, plen, N, MAXNEW, 1.0f, 1.0f, NULL, 0, 42);
    double e1 = rescore(m, prompts, STRIDE, plen, &s1, maxB, cfg.maxT);
    printf("sampled (n=%d > maxB=%d, prompts 1..30): KV decode vs forward max |dlogp| %.3g "
           "(tol 1e-5)\n", N, maxB, e1);
    CHECK(e1 <= 1e-5, "sampled rescoring err %.3g", e1);
    int full = 1;
    for (int i = 0; i < N; i++) full &= s1.len[i] == MAXNEW;
    CHECK(full, "no stop tokens: every row has max_new tokens");
    Samples s2 = run_sample(m, prompts, STRIDE, plen, N, MAXNEW, 1.0f, 1.0f, NULL, 0, 42);
    Samples s3 = run_sample(m, prompts, STRIDE, plen, N, MAXNEW, 1.0f, 1.0f, NULL, 0, 43);
    CHECK(!memcmp(s1.tokens, s2.tokens, sizeof(int) * N * MAXNEW) &&
              !memcmp(s1.logp, s2.logp, sizeof(float) * N * MAXNEW),
          "same seed gives the same samples");
    CHECK(memcmp(s1.tokens, s3.tokens, sizeof(int) * N * MAXNEW) != 0,
          "a different seed gives different samples");

    // Greedy.
    Samples g = run_sample(m, prompts, STRIDE, plen, N, MAXNEW, 0.0f, 1.0f, NULL, 0, 1);
    double eg = rescore(m, prompts, STRIDE, plen, &g, maxB, cfg.maxT);
    printf("greedy: KV decode vs forward max |dlogp| %.3g (tol 1e-5)\n", eg);
    CHECK(eg <= 1e-5, "greedy rescoring err %.3g", eg);
    // Greedy picks the argmax: its logp is >= that of every other token at the same spot.
    {
        int ok = 1;
        int tok[48], tgt[48];
        float lp[48];
        int pl = plen[1];
        for (int t = 0; t < pl; t++) tok[t] = prompts[STRIDE + t], tgt[t] = -1;
        for (int v = 0; v < cfg.V; v++) {
            tgt[pl - 1] = v;
            BE->forward(m, tok, tgt, 1, pl, lp, NULL);
            if (lp[pl - 1] > g.logp[MAXNEW] + 1e-6f) ok = 0;
        }
        CHECK(ok, "greedy token is the argmax");
    }
    // Batch of mixed prompt lengths == the same prompts one by one (greedy: no seed coupling).
    {
        double worst = 0.0;
        int same = 1;
        for (int i = 0; i < N; i++) {
            Samples one = run_sample(m, prompts + i * STRIDE, STRIDE, plen + i, 1, MAXNEW, 0.0f,
                                     1.0f, NULL, 0, 1);
            same &= !memcmp(one.tokens, g.tokens + i * MAXNEW, sizeof(int) * MAXNEW);
            for (int k = 0; k < MAXNEW; k++)
                worst = fmax(worst, fabs(one.logp[k] - g.logp[i * MAXNEW + k]));
            free_samples(&one);
        }
        printf("batched vs one-by-one greedy: tokens %s, max |dlogp| %.3g (tol 1e-5)\n",
               same ? "identical" : "DIFFER", worst);
        CHECK(same && worst <= 1e-5, "batch vs one by one");
    }
    // Stop tokens: rows end at the first stop token, which is emitted.
    {
        int stop[2] = {g.tokens[3], s1.tokens[MAXNEW + 2]};
        Samples st = run_sample(m, prompts, STRIDE, plen, N, MAXNEW, 1.0f, 1.0f, stop, 2, 42);
        int ok = 1, ended = 0;
        for (int i = 0; i < N; i++) {
            int L = st.len[i];
            for (int k = 0; k < L - 1; k++) {
                int t = st.tokens[i * MAXNEW + k];
                if (t == stop[0] || t == stop[1]) ok = 0;
            }
            if (L < MAXNEW) {
                int t = st.tokens[i * MAXNEW + L - 1];
                ok &= t == stop[0] || t == stop[1];
                ok &= st.tokens[i * MAXNEW + L] == -1;
                ended++;
            }
            // Until the stop, the samples equal the unstopped run with the same seed.
            ok &= !memcmp(st.tokens + i * MAXNEW, s1.tokens + i * MAXNEW, sizeof(int) * L);
        }
        CHECK(ok && ended > 0, "stop tokens end rows (%d rows ended early)", ended);
        free_samples(&st);
    }
    // Temperature and top-p: every sampled token lies in the nucleus of the tempered
    // distribution, and its logp is the renormalised log-probability.
    {
        float temp = 0.7f, top_p = 0.6f;
        Samples sp = run_sample(m, prompts, STRIDE, plen, N, 6, temp, top_p, NULL, 0, 5);
        Samples sg = run_sample(m, prompts, STRIDE, plen, N, 6, 1.0f, 1.0f, NULL, 0, 5);
        // Recover the logits at each step from the forward (log-probs at temperature 1 are
        // logits up to a constant), then rebuild the nucleus.
        double worst = 0.0;
        int inside = 1;
        int tok[48], tgt[48];
        float lp[48], z[29], pr[29];
        int keep[29];
        for (int i = 0; i < N; i++) {
            int pl = plen[i];
            for (int t = 0; t < pl; t++) tok[t] = prompts[i * STRIDE + t];
            for (int k = 0; k < sp.len[i]; k++) {
                int T = pl + k;
                for (int v = 0; v < cfg.V; v++) {
                    for (int t = 0; t < T; t++) tgt[t] = -1;
                    tgt[T - 1] = v;
                    BE->forward(m, tok, tgt, 1, T, lp, NULL);
                    z[v] = lp[T - 1] / temp;
                }
                float mx = z[0], s = 0.0f;
                for (int v = 1; v < cfg.V; v++) mx = fmaxf(mx, z[v]);
                for (int v = 0; v < cfg.V; v++) s += expf(z[v] - mx);
                for (int v = 0; v < cfg.V; v++) pr[v] = expf(z[v] - mx) / s;
                int nk = sample_top_p(pr, cfg.V, top_p, keep);
                double mass = 0.0;
                int tk = sp.tokens[i * 6 + k], in = 0;
                for (int j = 0; j < nk; j++) mass += pr[keep[j]], in |= keep[j] == tk;
                inside &= in;
                worst = fmax(worst, fabs(sp.logp[i * 6 + k] - (log(pr[tk]) - log(mass))));
                tok[T] = tk;
            }
        }
        printf("temperature %.1f top-p %.1f: tokens inside the nucleus: %s; logp max abs err "
               "%.3g (tol 2e-5)\n", temp, top_p, inside ? "yes" : "NO", worst);
        CHECK(inside, "sampled tokens inside the nucleus");
        CHECK(worst < 2e-5, "tempered top-p logp err %.3g", worst);
        free_samples(&sp), free_samples(&sg);
    }
    // Bad requests are refused.
    {
        int bad_len[1] = {cfg.maxT};
        SampleRequest req = {.n = 1, .prompts = prompts, .prompt_stride = cfg.maxT,
                             .prompt_len = bad_len, .max_new = 1, .temperature = 1, .top_p = 1};
        int tk[1], ln[1];
        float lpp[1];
        SampleResult res = {.tokens = tk, .logp = lpp, .len = ln};
        CHECK(BE->sample(m, &req, &res) == -1, "prompt_len + max_new > maxT refused");
    }
    free_samples(&s1), free_samples(&s2), free_samples(&s3), free_samples(&g);
    BE->destroy(m);
}

static void test_top_p(void) {
    // ids:             0     1     2     3     4
    float probs[5] = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
    int keep[5];
    int k = sample_top_p(probs, 5, 0.25f, keep);
    CHECK(k == 1 && keep[0] == 1, "top-p 0.25 keeps {1} (tie 1 vs 3 broken by lower id): k=%d", k);
    k = sample_top_p(probs, 5, 0.55f, keep);
    CHECK(k == 2 && keep[0] == 1 && keep[1] == 3, "top-p 0.55 keeps {1, 3}: k=%d", k);
    k = sample_top_p(probs, 5, 0.7f, keep);
    CHECK(k == 3 && keep[2] == 4, "top-p 0.7 keeps {1, 3, 4}: k=%d", k);
    k = sample_top_p(probs, 5, 0.9f, keep);
    CHECK(k == 4 && keep[3] == 0, "top-p 0.9 keeps {1, 3, 4, 0}: k=%d", k);
    k = sample_top_p(probs, 5, 1.0f, keep);
    CHECK(k == 5, "top-p 1 keeps all: k=%d", k);
    float flat[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    k = sample_top_p(flat, 4, 0.5f, keep);
    CHECK(k == 2 && keep[0] == 0 && keep[1] == 1, "uniform: lowest ids first");
}

// ---------------------------------------------------------------------------------------------
static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 16);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void test_checkpoints(void) {
    ModelConfig cfg = {.V = 17, .maxT = 10, .L = 2, .NH = 2, .C = 8};
    size_t sz[NUM_PARAM_TENSORS], n = param_sizes(&cfg, sz);
    float *p = fmalloc(n);
    params_init(p, &cfg, 123);
    char dir[] = "/tmp/memr2_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], spath[256], bad[256], err[512];
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(spath, sizeof spath, "%s/state.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    CHECK(checkpoint_save(path, &cfg, p, err, sizeof err) == 0, "save: %s", err);
    ModelConfig c2;
    float *q = NULL;
    CHECK(checkpoint_load(path, &c2, &q, err, sizeof err) == 0, "load: %s", err);
    CHECK(q && model_config_equal(&c2, &cfg) && !memcmp(p, q, n * sizeof(float)),
          "checkpoint round trip is bit-exact");
    free(q);
    CHECK(access(path, F_OK) == 0, "file in place");
    snprintf(bad, sizeof bad, "%s/model.bin.tmp", dir);
    CHECK(access(bad, F_OK) != 0, "no .tmp left behind");
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);

    size_t len;
    unsigned char *img = read_all(path, &len);
    CHECK(img && len == 1024 + n * sizeof(float), "file size %zu", len);
    if (img) {
        struct {
            const char *what;
            int field;  // header int to change, or -1 truncate, -2 trailing byte
            int32_t value;
        } cases[] = {{"bad magic", 0, 1234}, {"bad version", 1, 99}, {"bad config", 5, 3},
                     {"absurd config", 2, 1 << 24}, {"truncated", -1, 0}, {"trailing", -2, 0}};
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            unsigned char *b = malloc(len + 1);
            memcpy(b, img, len);
            size_t blen = len;
            if (cases[c].field >= 0) memcpy(b + 4 * cases[c].field, &cases[c].value, 4);
            else if (cases[c].field == -1) blen = len - 7;
            else b[len] = 0, blen = len + 1;
            write_bytes(bad, b, blen);
            free(b);
            err[0] = 0;
            q = NULL;
            int rc = checkpoint_load(bad, &c2, &q, err, sizeof err);
            CHECK(rc == -1 && q == NULL && strstr(err, bad) != NULL,
                  "%s checkpoint rejected with a message naming the file", cases[c].what);
            printf("  %-14s -> %s\n", cases[c].what, err);
        }
        write_bytes(bad, img, 100);
        CHECK(checkpoint_load(bad, &c2, &q, err, sizeof err) == -1, "header truncated: %s", err);
        // Non-finite weights are rejected at load, naming the tensor and the index: one NaN in
        // qkvw (tensor 4) at index 5, one +inf as the very last float (lnfb[C-1]).
        size_t at = sz[0] + sz[1] + sz[2] + sz[3] + 5;
        float nanf_ = NAN, inff_ = INFINITY;
        memcpy(img + 1024 + 4 * at, &nanf_, 4);
        write_bytes(bad, img, len);
        q = NULL;
        CHECK(checkpoint_load(bad, &c2, &q, err, sizeof err) == -1 && q == NULL &&
                  strstr(err, bad) && strstr(err, "non-finite") && strstr(err, "tensor qkvw") &&
                  strstr(err, "index 5 "),
              "NaN checkpoint rejected naming tensor and index: %s", err);
        printf("  %-14s -> %s\n", "NaN weight", err);
        memcpy(img + 1024 + 4 * at, p + at, 4);
        memcpy(img + len - 4, &inff_, 4);
        write_bytes(bad, img, len);
        char want[64];
        snprintf(want, sizeof want, "tensor lnfb, index %d ", cfg.C - 1);
        CHECK(checkpoint_load(bad, &c2, &q, err, sizeof err) == -1 && strstr(err, want),
              "inf in the last weight rejected: %s", err);
        free(img);
    }
    // Version 2 carries the Llama fields and the tokenizer hash; version 1 files still load.
    ModelConfig lc = {.V = 23, .maxT = 16, .L = 2, .NH = 4, .C = 16, .arch = ARCH_LLAMA,
                      .n_kv_heads = 2, .ffn = 24, .rope_dim = 4, .rope_base = 10000.0f,
                      .norm_eps = 1e-5f, .tied = 0, .qkv_bias = 1,
                      .tokenizer_hash = 0x0123456789abcdefULL};
    size_t ln = config_num_params(&lc);
    CHECK(ln == 23 * 16 * 2 + 2 * (16 + 16 * 16 + 2 * 8 * 16 + 16 + 2 * 8 + 16 * 16 + 16 +
                                   3 * 24 * 16) + 16,
          "Llama parameter count %zu", ln);
    float *lp = fmalloc(ln);
    config_params_init(lp, &lc, 9);
    CHECK(checkpoint_save(path, &lc, lp, err, sizeof err) == 0, "llama save: %s", err);
    CHECK(checkpoint_load(path, &c2, &q, err, sizeof err) == 0 && model_config_equal(&c2, &lc) &&
              !memcmp(q, lp, ln * sizeof(float)),
          "Llama checkpoint round trip keeps every field and the tokenizer hash: %s", err);
    free(q), free(lp);
    {
        int32_t h1[256] = {CHECKPOINT_MAGIC, 1, cfg.V, cfg.maxT, cfg.L, cfg.NH, cfg.C};
        FILE *f = fopen(bad, "wb");
        CHECK(f && fwrite(h1, 4, 256, f) == 256 && fwrite(p, 4, n, f) == n && fclose(f) == 0,
              "write a version-1 file");
        CHECK(checkpoint_load(bad, &c2, &q, err, sizeof err) == 0 && model_config_equal(&c2, &cfg) &&
                  !memcmp(q, p, n * sizeof(float)),
              "version-1 (GPT-2) checkpoint still loads: %s", err);
        free(q);
    }
    ModelConfig mixed = cfg;
    mixed.ffn = 5;
    CHECK(model_config_check(&mixed) != NULL, "GPT-2 config with Llama fields rejected");
    CHECK(cpu_backend.create(&lc, 1, 0) == NULL, "GPT-2 backend refuses a Llama config");

    snprintf(bad, sizeof bad, "%s/missing.bin", dir);
    CHECK(checkpoint_load(bad, &c2, &q, err, sizeof err) == -1 && strstr(err, bad),
          "missing file: %s", err);

    // Training state.
    TrainState st = {.step = 77, .rng = {1, 2, 3, 0xffffffffffffffffULL}, .blob_bytes = 13};
    st.mom = fmalloc(n), st.vel = fmalloc(n);
    char blob[13] = "curriculum=2";
    st.blob = blob;
    for (size_t i = 0; i < n; i++) st.mom[i] = (float)i * 1e-3f, st.vel[i] = 1.0f / (1.0f + i);
    CHECK(train_state_save(spath, &cfg, &st, err, sizeof err) == 0, "state save: %s", err);
    TrainState ld;
    CHECK(train_state_load(spath, &cfg, &ld, err, sizeof err) == 0, "state load: %s", err);
    CHECK(ld.step == 77 && !memcmp(ld.rng, st.rng, sizeof st.rng) && ld.blob_bytes == 13 &&
              !memcmp(ld.blob, blob, 13) && !memcmp(ld.mom, st.mom, n * 4) &&
              !memcmp(ld.vel, st.vel, n * 4),
          "state round trip is bit-exact");
    free(ld.mom), free(ld.vel), free(ld.blob);
    // The same blob given as pieces (the trainer's way: no copy of its parameter arrays) is
    // saved back to back and loads as one blob, byte for byte the file of the whole blob.
    {
        unsigned char *whole = NULL;
        size_t whole_len = 0;
        whole = read_all(spath, &whole_len);
        const void *piece[3] = {blob, blob + 5, blob + 13};
        size_t piece_bytes[3] = {5, 8, 0};
        TrainState sp = st;
        sp.blob = NULL, sp.blob_bytes = 0;
        sp.blob_piece = piece, sp.blob_piece_bytes = piece_bytes, sp.n_blob_pieces = 3;
        CHECK(train_state_save(spath, &cfg, &sp, err, sizeof err) == 0, "pieces save: %s", err);
        size_t plen = 0;
        unsigned char *pimg = read_all(spath, &plen);
        CHECK(whole && pimg && plen == whole_len && !memcmp(pimg, whole, plen),
              "a blob in pieces writes the same file as the whole blob (%zu vs %zu bytes)", plen,
              whole_len);
        CHECK(train_state_load(spath, &cfg, &ld, err, sizeof err) == 0 && ld.blob_bytes == 13 &&
                  !memcmp(ld.blob, blob, 13),
              "pieces load as one blob: %s", err);
        free(ld.mom), free(ld.vel), free(ld.blob);
        sp.n_blob_pieces = 17;
        CHECK(train_state_save(spath, &cfg, &sp, err, sizeof err) == -1 && strstr(err, "pieces"),
              "too many pieces refused: %s", err);
        free(whole), free(pimg);
        CHECK(train_state_save(spath, &cfg, &st, err, sizeof err) == 0, "state re-save: %s", err);
    }
    ModelConfig other = cfg;
    other.C = 16;
    CHECK(train_state_load(spath, &other, &ld, err, sizeof err) == -1 && strstr(err, spath),
          "state with another config rejected: %s", err);
    CHECK(train_state_load(path, &cfg, &ld, err, sizeof err) == -1 && strstr(err, path),
          "model file as state rejected: %s", err);
    img = read_all(spath, &len);
    if (img) {
        write_bytes(bad, img, len - 1);
        CHECK(train_state_load(bad, &cfg, &ld, err, sizeof err) == -1, "truncated state: %s", err);
        int32_t huge = 0x7fffffff;
        memcpy(img + 4 * 8, &huge, 4);  // blob size high word: absurd
        write_bytes(bad, img, len);
        CHECK(train_state_load(bad, &cfg, &ld, err, sizeof err) == -1, "absurd blob size: %s", err);
        memcpy(img + 4 * 8, &(int32_t){0}, 4);
        write_bytes(bad, img, len);
        CHECK(train_state_load(bad, &cfg, &ld, err, sizeof err) == 0, "restored state loads: %s",
              err);
        free(ld.mom), free(ld.vel), free(ld.blob);
        // header 1024 bytes, step 8, rng 32, then m (n floats), v (n floats)
        size_t m0 = 1024 + 8 + 32, v0 = m0 + 4 * n;
        struct {
            size_t off;
            float x;
            int64_t step;
            const char *want;
        } sc[] = {{m0 + 4 * 3, NAN, 0, "AdamW m: tensor wte, index 3 "},
                  {v0 + 4 * (sz[0] + 2), -INFINITY, 0, "AdamW v: tensor wpe, index 2 "},
                  {v0 + 4 * 7, -1.0f, 0, "negative AdamW v"},
                  {0, 0, -5, "negative step"}};
        for (size_t c = 0; c < sizeof sc / sizeof sc[0]; c++) {
            unsigned char *b = malloc(len);
            if (!b) break;
            memcpy(b, img, len);
            if (sc[c].off) memcpy(b + sc[c].off, &sc[c].x, 4);
            else memcpy(b + 1024, &sc[c].step, 8);
            write_bytes(bad, b, len);
            free(b);
            err[0] = 0;
            CHECK(train_state_load(bad, &cfg, &ld, err, sizeof err) == -1 && ld.mom == NULL &&
                      strstr(err, bad) && strstr(err, sc[c].want),
                  "bad state (%s) rejected: %s", sc[c].want, err);
        }
        free(img);
    }
    free(st.mom), free(st.vel), free(p);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

static void test_init(void) {
    ModelConfig cfg = {.V = 50, .maxT = 20, .L = 3, .NH = 4, .C = 32};
    size_t sz[NUM_PARAM_TENSORS], n = param_sizes(&cfg, sz);
    float *a = fmalloc(n), *b = fmalloc(n);
    params_init(a, &cfg, 5);
    params_init(b, &cfg, 5);
    CHECK(!memcmp(a, b, n * 4), "params_init deterministic");
    params_init(b, &cfg, 6);
    CHECK(memcmp(a, b, n * 4) != 0, "params_init depends on the seed");
    double s2 = 0.0;
    for (size_t i = 0; i < sz[0]; i++) s2 += (double)a[i] * a[i];
    double sd = sqrt(s2 / sz[0]);
    CHECK_CLOSE("wte std", sd, 0.02, 0.05, 0);
    ParamTensors p;
    param_tensors_point(&p, a, &cfg);
    CHECK(p.ln1w[5] == 1.0f && p.lnfw[0] == 1.0f && p.qkvb[7] == 0.0f && p.lnfb[3] == 0.0f,
          "LayerNorm gains 1, biases 0");
    CHECK(p.lnfb + cfg.C == a + n, "layout covers the flat array");
    CHECK(model_config_check(&cfg) == NULL, "config ok");
    ModelConfig badc = cfg;
    badc.NH = 5;
    CHECK(model_config_check(&badc) != NULL, "C %% NH != 0 rejected");
    CHECK(cpu_backend.create(&badc, 1, 0) == NULL, "create refuses a bad config");
    free(a), free(b);
}

int main(void) {
    test_init();
    test_matmul();
    test_top_p();
    test_finite_differences();
    test_adamw();
    test_sampling();
    test_checkpoints();
    test_pytorch();
    return check_summary("test_model");
}
