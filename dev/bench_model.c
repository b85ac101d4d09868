// dev/bench_model.c: speed of the CPU model (model.c) for `make bench`.
//
//   build/rel/dev/bench_model [-V 512 -T 128 -L 4 -NH 4 -C 128 -B 16]
// prints
//   bench config V=.. T=.. L=.. NH=.. C=.. B=..
//   bench train_tok_s X        forward + backward + AdamW on full (B, T) batches, all targets
//                              valid, dlogp = -1/(B*T) (supervised cross-entropy)
//   bench decode_tok_s X       sample(): B prompts of T/2 tokens, T/2 new tokens each,
//                              temperature 1, top-p 1; generated tokens per second
//   bench sgemm_gflops X       cblas_sgemm 1024x1024x1024: the better of OpenBLAS's own threads
//                              (= the OpenMP thread count) and our split over OpenMP threads
//                              (both printed too): the machine's practical peak
//   bench sgemm_train_gflops X matmul_forward (our split sgemm) on the step's largest shape
//   bench train_sgemm_share X  the training step's matmul FLOPs per second / sgemm_gflops
// Each figure is the best of 3 windows of >= 1 s (the 2 cores are shared with other work).
// The PyTorch side is dev/reference.py --bench, timed the same way; the Makefile prints the
// ratios.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        fprintf(stderr, "bench_model: out of memory\n");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv) {
    int V = 512, T = 128, L = 4, NH = 4, C = 128, B = 16;
    const double min_s = 1.0;
    enum { WINDOWS = 3 };
    const char *only = "";  // --only train|decode: one part, for profiling
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
            continue;
        }
        int *dst = !strcmp(argv[i], "-V")   ? &V
                   : !strcmp(argv[i], "-T")  ? &T
                   : !strcmp(argv[i], "-L")  ? &L
                   : !strcmp(argv[i], "-NH") ? &NH
                   : !strcmp(argv[i], "-C")  ? &C
                   : !strcmp(argv[i], "-B")  ? &B
                                             : NULL;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "usage: %s [-V 512] [-T 128] [-L 4] [-NH 4] [-C 128] [-B 16] "
                            "[--only train|decode]\n", argv[0]);
            return 2;
        }
        *dst = atoi(argv[++i]);
    }
    ModelConfig cfg = {.V = V, .maxT = T, .L = L, .NH = NH, .C = C};
    const char *why = model_config_check(&cfg);
    if (why || B < 1 || T < 2) {
        fprintf(stderr, "bench_model: bad config: %s\n", why ? why : "B >= 1 and T >= 2 needed");
        return 2;
    }
    printf("bench config V=%d T=%d L=%d NH=%d C=%d B=%d\n", V, T, L, NH, C, B);
    fflush(stdout);
    const ModelBackend *be = &cpu_backend;
    Model *m = be->create(&cfg, B, 1);
    if (!m) return 1;
    size_t R = (size_t)B * T;
    int *tok = xmalloc(R * sizeof(int)), *tgt = xmalloc(R * sizeof(int));
    float *lp = xmalloc(R * sizeof(float)), *dl = xmalloc(R * sizeof(float));
    Rng r;
    rng_seed(&r, 2);
    for (size_t i = 0; i < R; i++) {
        tok[i] = (int)rng_below(&r, (uint32_t)V);
        tgt[i] = (int)rng_below(&r, (uint32_t)V);
        dl[i] = -1.0f / (float)R;
    }
    AdamWConfig ac = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                      .weight_decay = 0.1f, .grad_clip = 1.0f};

    // ---- training step. Other processes share these cores, so each figure is the best of
    // WINDOWS windows of >= min_s seconds (after one warm-up call).
    double t0 = 0.0, dt = 0.0, train_tok_s = 0.0;
    for (int w = -1; w < WINDOWS && strcmp(only, "decode"); w++) {
        int steps = 0;
        t0 = now();
        do {
            be->forward(m, tok, tgt, B, T, lp, NULL);
            be->zero_grad(m);
            be->backward(m, dl, NULL);
            be->update(m, &ac, ac.lr);
            steps++;
            dt = now() - t0;
        } while (w >= 0 && dt < min_s);
        if (w >= 0 && (double)R * steps / dt > train_tok_s) train_tok_s = (double)R * steps / dt;
    }
    if (train_tok_s > 0) {
        printf("bench train_tok_s %.1f\n", train_tok_s);
        fflush(stdout);
    }

    // ---- decode
    int Tp = T / 2, nnew = T - T / 2;
    int *prompts = xmalloc(R * sizeof(int)), *plen = xmalloc((size_t)B * sizeof(int));
    int *otok = xmalloc((size_t)B * nnew * sizeof(int)), *olen = xmalloc((size_t)B * sizeof(int));
    float *olp = xmalloc((size_t)B * nnew * sizeof(float));
    for (int b = 0; b < B; b++) {
        plen[b] = Tp;
        for (int t = 0; t < Tp; t++) prompts[(size_t)b * Tp + t] = (int)rng_below(&r, (uint32_t)V);
    }
    SampleRequest req = {.n = B, .prompts = prompts, .prompt_stride = Tp, .prompt_len = plen,
                         .max_new = nnew, .temperature = 1.0f, .top_p = 1.0f, .seed = 3};
    SampleResult res = {.tokens = otok, .logp = olp, .len = olen};
    double decode_tok_s = 0.0;
    for (int w = -1; w < WINDOWS && strcmp(only, "train"); w++) {
        long long gen = 0;
        t0 = now();
        do {
            req.seed++;
            if (be->sample(m, &req, &res) != 0) return 1;
            for (int b = 0; b < B; b++) gen += olen[b];
            dt = now() - t0;
        } while (w >= 0 && dt < min_s);
        if (w >= 0 && (double)gen / dt > decode_tok_s) decode_tok_s = (double)gen / dt;
    }
    if (decode_tok_s > 0) {
        printf("bench decode_tok_s %.1f\n", decode_tok_s);
        fflush(stdout);
    }
    if (*only) return 0;

    // ---- sgemm peak: OpenBLAS's own threads on 1024^3 (model.c pins it to 1 thread; restore)
    int nth = omp_get_max_threads();
    openblas_set_num_threads(nth);
    int n = 1024;
    float *A = xmalloc((size_t)n * n * 4), *Bm = xmalloc((size_t)n * n * 4),
          *Cm = xmalloc((size_t)n * n * 4);
    for (size_t i = 0; i < (size_t)n * n; i++) A[i] = rng_float(&r), Bm[i] = rng_float(&r);
    double peak = 0.0;
    for (int w = -1; w < WINDOWS; w++) {
        int reps = 0;
        t0 = now();
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, Bm, n,
                        0.0f, Cm, n);
            reps++;
            dt = now() - t0;
        } while (w >= 0 && dt < min_s);
        double g = 2.0 * n * n * (double)n * reps / dt / 1e9;
        if (w >= 0 && g > peak) peak = g;
    }
    openblas_set_num_threads(1);
    // The same product through matmul_forward (our split over the OpenMP threads).
    double split = 0.0;
    for (int w = -1; w < WINDOWS; w++) {
        int reps = 0;
        t0 = now();
        do {
            matmul_forward(Cm, A, Bm, NULL, n, n, n);
            reps++;
            dt = now() - t0;
        } while (w >= 0 && dt < min_s);
        double g = 2.0 * n * n * (double)n * reps / dt / 1e9;
        if (w >= 0 && g > split) split = g;
    }
    printf("bench sgemm_openblas_threads_gflops %.1f\n", peak);
    printf("bench sgemm_split_gflops %.1f\n", split);
    if (split > peak) peak = split;
    printf("bench sgemm_gflops %.1f\n", peak);
    // The training step's largest matmul (fc: (B*T, C) x (C, 4C)) through our split sgemm.
    float *X = xmalloc(R * C * 4), *W = xmalloc((size_t)4 * C * C * 4), *O = xmalloc(R * 4 * C * 4);
    for (size_t i = 0; i < R * C; i++) X[i] = rng_float(&r);
    for (size_t i = 0; i < (size_t)4 * C * C; i++) W[i] = rng_float(&r);
    double fc = 0.0;
    for (int w = -1; w < WINDOWS; w++) {
        int reps = 0;
        t0 = now();
        do {
            matmul_forward(O, X, W, NULL, (int)R, C, 4 * C);
            reps++;
            dt = now() - t0;
        } while (w >= 0 && dt < min_s);
        double g = 2.0 * R * C * 4.0 * C * reps / dt / 1e9;
        if (w >= 0 && g > fc) fc = g;
    }
    printf("bench sgemm_train_gflops %.1f\n", fc);
    // Matmul FLOPs of one training step: forward 2*BT*(12 C^2 L + C V); backward twice that.
    double fwd = 2.0 * (double)R * (12.0 * C * C * L + (double)C * V);
    double step_flops = 3.0 * fwd;
    double step_s = (double)R / train_tok_s;
    printf("bench train_matmul_gflops %.1f\n", step_flops / step_s / 1e9);
    printf("bench train_sgemm_share %.3f\n", step_flops / step_s / 1e9 / peak);
    free(A), free(Bm), free(Cm), free(X), free(W), free(O);
    free(tok), free(tgt), free(lp), free(dl), free(prompts), free(plen), free(otok), free(olen),
        free(olp);
    be->destroy(m);
    return 0;
}
