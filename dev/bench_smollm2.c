// dev/bench_smollm2.c: speed and peak memory of the CPU Llama backend on the real 135M model
// (SmolLM2-135M-Instruct, out/smollm2.bin), for `make bench` (make bench_smollm2).
//
//   build/rel/dev/bench_smollm2 [--ckpt out/smollm2.bin] [--only prefill|decode|train]
// prints (each figure the best of a few timed calls after one warm-up call)
//   bench smollm2_prefill_tok_s X   forward of B=4 prompts of T=128 tokens, log-prob of the last
//                                   position only (what the sampler's prefill does)
//   bench smollm2_decode_tok_s X    sample(): B=16 prompts of 32 tokens, 32 new tokens each,
//                                   temperature 1; generated tokens / wall time of the call
//   bench smollm2_train_tok_s X     forward + backward + AdamW on (B=4, T=64), every target
//   bench smollm2_PART_maxrss_mb X  peak resident memory of the process (getrusage), once per
//                                   run: run one part per process (--only) to get each part's
// dev/bench_smollm2.py is the PyTorch side on the same dequantised weights.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"
#include "rng.h"

enum { PRE_B = 4, PRE_T = 128, DEC_B = 16, DEC_P = 32, DEC_N = 32, TR_B = 4, TR_T = 64 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_smollm2: out of memory\n");
        exit(1);
    }
    return p;
}

static void random_tokens(int *t, size_t n, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) t[i] = (int)rng_below(&r, (uint32_t)V);
}

static double maxrss_mb(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : -1.0;
}

static double bench_prefill(const ModelBackend *be, Model *m, int V) {
    int *tok = xmalloc(sizeof(int) * PRE_B * PRE_T), *tgt = xmalloc(sizeof(int) * PRE_B * PRE_T);
    float *logp = xmalloc(sizeof(float) * PRE_B * PRE_T);
    random_tokens(tok, PRE_B * PRE_T, V, 1);
    for (int i = 0; i < PRE_B * PRE_T; i++) tgt[i] = (i % PRE_T == PRE_T - 1) ? tok[i] : -1;
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = now();
        if (be->forward(m, tok, tgt, PRE_B, PRE_T, logp, NULL)) exit(1);
        double dt = now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    free(tok);
    free(tgt);
    free(logp);
    return PRE_B * PRE_T / best;
}

static double bench_decode(const ModelBackend *be, Model *m, int V) {
    int *prompts = xmalloc(sizeof(int) * DEC_B * DEC_P), plen[DEC_B], len[DEC_B];
    int *out = xmalloc(sizeof(int) * DEC_B * DEC_N);
    float *lp = xmalloc(sizeof(float) * DEC_B * DEC_N);
    random_tokens(prompts, DEC_B * DEC_P, V, 2);
    for (int b = 0; b < DEC_B; b++) plen[b] = DEC_P;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        SampleRequest req = {.n = DEC_B, .prompts = prompts, .prompt_stride = DEC_P,
                             .prompt_len = plen, .max_new = DEC_N, .temperature = 1.0f,
                             .top_p = 1.0f, .seed = (uint64_t)rep + 1};
        SampleResult res = {.tokens = out, .logp = lp, .len = len};
        double t0 = now();
        if (be->sample(m, &req, &res)) exit(1);
        double dt = now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    free(prompts);
    free(out);
    free(lp);
    return DEC_B * DEC_N / best;
}

static double bench_train(const ModelBackend *be, Model *m, int V) {
    int n = TR_B * TR_T;
    int *tok = xmalloc(sizeof(int) * (size_t)n), *tgt = xmalloc(sizeof(int) * (size_t)n);
    float *logp = xmalloc(sizeof(float) * (size_t)n), *dlogp = xmalloc(sizeof(float) * (size_t)n);
    random_tokens(tok, (size_t)n, V, 3);
    random_tokens(tgt, (size_t)n, V, 4);
    for (int i = 0; i < n; i++) dlogp[i] = -1.0f / (float)n;
    AdamWConfig opt = {.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                       .weight_decay = 0.1f, .grad_clip = 1.0f};
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        if (be->forward(m, tok, tgt, TR_B, TR_T, logp, NULL)) exit(1);
        be->zero_grad(m);
        be->backward(m, dlogp, NULL);
        be->update(m, &opt, opt.lr);
        double dt = now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    free(tok);
    free(tgt);
    free(logp);
    free(dlogp);
    return n / best;
}

int main(int argc, char **argv) {
    const char *ckpt = "out/smollm2.bin", *only = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) {
            ckpt = argv[++i];
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--ckpt FILE] [--only prefill|decode|train]\n", argv[0]);
            return 2;
        }
    }
    char err[512];
    ModelConfig cfg;
    float *params = NULL;
    if (checkpoint_load(ckpt, &cfg, &params, err, sizeof err)) {
        fprintf(stderr, "bench_smollm2: %s (run `make smollm2` first)\n", err);
        return 1;
    }
    // The weights do not depend on maxT (no position table): size the model for the bench only.
    cfg.maxT = PRE_T;
    const ModelBackend *be = cpu_backend_for(&cfg);
    Model *m = be->create(&cfg, DEC_B, 1);
    if (!m) return 1;
    be->set_params(m, params);
    free(params);
    int all = !*only;
    printf("bench smollm2 config V=%d L=%d C=%d NH=%d KV=%d F=%d params=%zu\n", cfg.V, cfg.L,
           cfg.C, cfg.NH, cfg.n_kv_heads, cfg.ffn, be->num_params(m));
    if (all || !strcmp(only, "prefill"))
        printf("bench smollm2_prefill_tok_s %.1f\n", bench_prefill(be, m, cfg.V));
    if (all || !strcmp(only, "decode"))
        printf("bench smollm2_decode_tok_s %.1f\n", bench_decode(be, m, cfg.V));
    if (all || !strcmp(only, "train"))
        printf("bench smollm2_train_tok_s %.1f\n", bench_train(be, m, cfg.V));
    printf("bench smollm2_%s_maxrss_mb %.0f\n", all ? "all" : only, maxrss_mb());
    be->destroy(m);
    return 0;
}
