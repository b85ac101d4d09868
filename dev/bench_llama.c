// dev/bench_llama.c: speed and memory of the Llama-family CPU backend (llama_cpu.c) at
// SmolLM2-135M's shape (30 layers, C 576, 9 heads, 3 KV heads, FFN 1536, V 49152, tied),
// random weights (speed does not depend on them). `make bench_llama` runs it beside
// dev/llama_reference.py --bench (PyTorch, the same work) and prints the ratios.
//
//   build/rel/dev/bench_llama [-L 30] [-B 4] [-T 256] [--decode-B 16] [--prompt 64] [--new 64]
//                             [--only train|decode]
// prints
//   bench llama_config ...
//   bench llama_train_tok_s X    forward + backward + AdamW on (B, T), every target valid,
//                                dlogp = -1/(B*T)
//   bench llama_prefill_tok_s X  sample()'s prefill alone: decode-B prompts of `prompt` tokens
//   bench llama_decode_tok_s X   sample(): decode-B prompts of `prompt` tokens, `new` new
//                                tokens each, temperature 1 (prefill included, as a user sees it)
//   bench llama_peak_rss_mb X    peak resident memory of the whole process
// Each figure is the best of 2 windows of >= 1 s.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"
#include "rng.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_llama: out of memory\n");
        exit(1);
    }
    return p;
}

typedef struct {
    Model *m;
    const ModelBackend *be;
    int B, T;
    int *tok, *tgt;
    float *lp, *dl;
    SampleRequest req;
    SampleResult res;
} Bench;

static void train_step(Bench *b) {
    AdamWConfig ac = {.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                      .weight_decay = 0.0f, .grad_clip = 1.0f};
    b->be->zero_grad(b->m);
    if (b->be->forward(b->m, b->tok, b->tgt, b->B, b->T, b->lp, NULL) != 0) exit(1);
    b->be->backward(b->m, b->dl, NULL);
    b->be->update(b->m, &ac, ac.lr);
}

static void sample_once(Bench *b) {
    if (b->be->sample(b->m, &b->req, &b->res) != 0) exit(1);
}

// Seconds per call: the best of 2 windows of >= min_s.
static double timed(void (*fn)(Bench *), Bench *b, double min_s) {
    fn(b);  // warm up (and allocate)
    double best = 1e30;
    for (int w = 0; w < 2; w++) {
        int n = 0;
        double t0 = now(), dt;
        do {
            fn(b);
            n++;
            dt = now() - t0;
        } while (dt < min_s);
        if (dt / n < best) best = dt / n;
    }
    return best;
}

int main(int argc, char **argv) {
    int L = 30, B = 4, T = 256, DB = 16, prompt = 64, nnew = 64;
    const char *only = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
            continue;
        }
        int *dst = !strcmp(argv[i], "-L")          ? &L
                   : !strcmp(argv[i], "-B")        ? &B
                   : !strcmp(argv[i], "-T")        ? &T
                   : !strcmp(argv[i], "--decode-B") ? &DB
                   : !strcmp(argv[i], "--prompt")  ? &prompt
                   : !strcmp(argv[i], "--new")     ? &nnew
                                                   : NULL;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "usage: %s [-L 30] [-B 4] [-T 256] [--decode-B 16] [--prompt 64] "
                            "[--new 64] [--only train|decode]\n", argv[0]);
            return 2;
        }
        *dst = atoi(argv[++i]);
    }
    int maxT = T > prompt + nnew ? T : prompt + nnew;
    ModelConfig cfg = {.V = 49152, .maxT = maxT, .L = L, .NH = 9, .C = 576,
                       .arch = ARCH_LLAMA, .n_kv_heads = 3, .ffn = 1536, .rope_dim = 64,
                       .rope_base = 100000.0f, .norm_eps = 1e-5f, .tied = 1};
    const char *why = model_config_check(&cfg);
    if (why || B < 1 || T < 2 || DB < 1 || prompt < 1 || nnew < 1) {
        fprintf(stderr, "bench_llama: bad config: %s\n", why ? why : "sizes must be >= 1");
        return 2;
    }
    printf("bench llama_config V=%d L=%d C=%d NH=%d KV=%d F=%d B=%d T=%d decode_B=%d prompt=%d "
           "new=%d\n", cfg.V, L, cfg.C, cfg.NH, cfg.n_kv_heads, cfg.ffn, B, T, DB, prompt, nnew);
    fflush(stdout);
    Bench b = {.be = &cpu_llama_backend, .B = B, .T = T};
    b.m = b.be->create(&cfg, B > DB ? B : DB, 1);
    if (!b.m) return 1;
    size_t R = (size_t)B * T;
    b.tok = xmalloc(R * sizeof(int)), b.tgt = xmalloc(R * sizeof(int));
    b.lp = xmalloc(R * sizeof(float)), b.dl = xmalloc(R * sizeof(float));
    Rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < R; i++) {
        b.tok[i] = (int)rng_below(&r, (uint32_t)cfg.V);
        b.tgt[i] = (int)rng_below(&r, (uint32_t)cfg.V);
        b.dl[i] = -1.0f / (float)R;
    }
    if (strcmp(only, "decode") != 0) {
        double s = timed(train_step, &b, 1.0);
        printf("bench llama_train_tok_s %.1f\n", (double)R / s);
        fflush(stdout);
    }
    if (strcmp(only, "train") != 0) {
        int *prompts = xmalloc((size_t)DB * prompt * sizeof(int));
        int *plen = xmalloc(DB * sizeof(int));
        int *otok = xmalloc((size_t)DB * nnew * sizeof(int)), *olen = xmalloc(DB * sizeof(int));
        float *olp = xmalloc((size_t)DB * nnew * sizeof(float));
        for (int i = 0; i < DB * prompt; i++) prompts[i] = (int)rng_below(&r, (uint32_t)cfg.V);
        for (int i = 0; i < DB; i++) plen[i] = prompt;
        b.req = (SampleRequest){.n = DB, .prompts = prompts, .prompt_stride = prompt,
                                .prompt_len = plen, .max_new = 1, .temperature = 1.0f,
                                .top_p = 1.0f, .seed = 1};
        b.res = (SampleResult){.tokens = otok, .logp = olp, .len = olen};
        double sp = timed(sample_once, &b, 1.0);  // max_new 1: the prefill (+ one sample)
        printf("bench llama_prefill_tok_s %.1f\n", (double)DB * prompt / sp);
        b.req.max_new = nnew;
        double sd = timed(sample_once, &b, 1.0);
        printf("bench llama_decode_tok_s %.1f\n", (double)DB * nnew / sd);
        free(prompts), free(plen), free(otok), free(olen), free(olp);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        printf("bench llama_peak_rss_mb %.0f\n", (double)ru.ru_maxrss / 1024.0);
    b.be->destroy(b.m);
    free(b.tok), free(b.tgt), free(b.lp), free(b.dl);
    return 0;
}
