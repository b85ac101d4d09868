// tests/test_dist.c: what makes a data-parallel run equal one process (docs/scaleout.md), on
// one process (the MPI runs themselves are tests/test_mpi.sh):
//   - a row sampled with its own seed (SampleRequest.row_seeds) gives the same tokens and
//     log-probs in a batch of other rows as alone;
//   - a rollout lane's samples, turns and bank do not depend on which lanes share its batch (so
//     the lanes a rank runs give what they give in one process), and another seed changes them;
//   - reduce_grads of the CPU backends hands over the gradient buffer itself;
//   - the one-process dist layer: rank 0 of 1, dist_pick keeps everything, dist_allgather
//     copies, dist_update is the backend's update.
// Binary: $MEMR2_GEN (default ./gen_episodes) makes the tiny data.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_ds.h>

#include "check.h"
#include "proc.h"
#include "dist.h"
#include "world_synth.h"
#include "model.h"
#include "rollout.h"

enum { N = 5, STRIDE = 8, MAXNEW = 12 };

static int sample(Model *m, const int *prompts, const int *plen, int n, const uint64_t *seeds,
                  int *tok, float *lp, int *len) {
    SampleRequest req = {.n = n, .prompts = prompts, .prompt_stride = STRIDE, .prompt_len = plen,
                         .max_new = MAXNEW, .temperature = 1.0f, .top_p = 0.9f, .seed = 99,
                         .row_seeds = seeds};
    SampleResult res = {.tokens = tok, .logp = lp, .len = len};
    return cpu_backend.sample(m, &req, &res);
}

static void test_row_seeds(void) {
    ModelConfig cfg = {.V = 32, .maxT = 32, .L = 1, .NH = 2, .C = 16};
    Model *m = cpu_backend.create(&cfg, 4, 3);  // maxB 4 < N: the batch is chunked too
    CHECK(m != NULL, "create a tiny model");
    if (!m) return;
    int prompts[N * STRIDE], plen[N];
    uint64_t seeds[N];
    for (int i = 0; i < N; i++) {
        plen[i] = 1 + i % 4;
        seeds[i] = 1000 + 7 * (uint64_t)i;
        for (int t = 0; t < STRIDE; t++) prompts[i * STRIDE + t] = (3 * i + t) % cfg.V;
    }
    int tok[N * MAXNEW], len[N], one_tok[MAXNEW], one_len;
    float lp[N * MAXNEW], one_lp[MAXNEW];
    CHECK(sample(m, prompts, plen, N, seeds, tok, lp, len) == 0, "batched sample");
    int same = 1, differs = 0;
    double dlp = 0;
    for (int i = 0; i < N; i++) {
        CHECK(sample(m, prompts + i * STRIDE, plen + i, 1, seeds + i, one_tok, one_lp, &one_len) == 0,
              "row %d alone", i);
        same &= one_len == len[i] && !memcmp(one_tok, tok + i * MAXNEW, sizeof(int) * (size_t)one_len);
        for (int k = 0; k < one_len && k < len[i]; k++) dlp = fmax(dlp, fabs(one_lp[k] - lp[i * MAXNEW + k]));
        uint64_t other = seeds[i] + 1;
        sample(m, prompts + i * STRIDE, plen + i, 1, &other, one_tok, one_lp, &one_len);
        differs += one_len != len[i] || memcmp(one_tok, tok + i * MAXNEW, sizeof(int) * (size_t)one_len);
    }
    // The tokens are the same; the log-probs differ in the last bits, since OpenBLAS blocks a
    // matmul by its row count (a draw within ~1e-6 of a boundary could flip: docs/scaleout.md).
    printf("row seeds: batch of %d vs each row alone: same tokens %s, logp max diff %.3g\n", N,
           same ? "yes" : "no", dlp);
    CHECK(same, "each row of a batch of %d (maxB 4) samples the tokens it samples alone", N);
    CHECK(dlp <= 1e-5, "... with log-probs within 1e-5 (%.3g)", dlp);
    CHECK(differs > 0, "another row seed changes the samples (%d of %d rows)", differs, N);
    cpu_backend.destroy(m);
}

// Lane 0 of a run of three lanes vs lane 0 alone: the same turns and the same bank.
static void test_lane_independence(const Dataset *ds, Env *env) {
    ModelConfig cfg = {.V = vocab_size(env->vocab), .maxT = 256, .L = 1, .NH = 2, .C = 16};
    Model *m = cpu_backend.create(&cfg, 8, 5);
    CHECK(m != NULL, "create a tiny model");
    if (!m) return;
    const Episode *ep = &ds->episodes[0];
    int H = ep->n_sessions < 3 ? ep->n_sessions : 3, sizes[3] = {3, 1, 1};
    uint64_t seeds[3] = {42, 42, 43};
    TurnBuffer tb[3] = {{0}};
    Lane lanes[3][3];
    World w;
    world_synth_wrap(&w, env);
    for (int r = 0; r < 3; r++) {
        Rng rng;
        rng_seed(&rng, seeds[r]);
        for (int i = 0; i < sizes[r]; i++) lane_init(&lanes[r][i], &w, ep, 1, H, 0);
        Actor a = {.kind = ACTOR_MODEL, .be = &cpu_backend, .model = m, .temperature = 1.0f,
                   .top_p = 1, .max_seq = cfg.maxT, .max_new_extract = 24, .max_new_manage = 24,
                   .record = &tb[r]};
        CHECK(rollout_run(&w, lanes[r], sizes[r], &a, &rng, NULL) == 0, "rollout %d runs", r);
    }
    // lane 0's turns in the first run, in order
    TurnBuffer *a = &tb[0], *b = &tb[1];
    int j = 0, same = 1, n0 = 0;
    double dlp = 0;
    for (int i = 0; i < turns_count(a); i++) {
        const PolicyTurn *t = &a->turns[i];
        if (t->lane != 0) continue;
        n0++;
        if (j >= turns_count(b)) { same = 0; break; }
        const PolicyTurn *u = &b->turns[j++];
        int len = t->prompt_len + t->out_len;
        same &= u->lane == 0 && u->session == t->session && u->role == t->role &&
                len == u->prompt_len + u->out_len &&
                !memcmp(a->tokens + t->offset, b->tokens + u->offset, sizeof(int) * (size_t)len);
        for (int k = 0; same && k < len; k++)
            dlp = fmax(dlp, fabs(a->logp_old[t->offset + k] - b->logp_old[u->offset + k]));
    }
    printf("lane 0 with two lanes beside it vs alone: %d turns, same tokens %s, logp max diff %.3g\n",
           n0, same ? "yes" : "no", dlp);
    CHECK(n0 > 0 && same && j == turns_count(b),
          "lane 0 records the same %d turns (tokens) with or without two lanes beside it", n0);
    CHECK(dlp <= 1e-5, "... with log-probs within 1e-5 (%.3g)", dlp);
    size_t bytes = memory_snapshot_bytes(&lanes[0][0].bank);
    unsigned char *x = malloc(bytes), *y = malloc(bytes), *z = malloc(bytes);
    if (x && y && z) {
        memory_snapshot(&lanes[0][0].bank, x);
        memory_snapshot(&lanes[1][0].bank, y);
        memory_snapshot(&lanes[2][0].bank, z);
        CHECK(!memcmp(x, y, bytes), "lane 0 ends with the same bank with or without company");
        int other = turns_count(&tb[2]) != turns_count(b) ||
                    arrlen(tb[2].tokens) != arrlen(b->tokens) ||
                    memcmp(tb[2].tokens, b->tokens, sizeof(int) * (size_t)arrlen(b->tokens));
        CHECK(other, "another seed gives other rollouts");
    }
    free(x), free(y), free(z);
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < sizes[r]; i++) lane_free(&lanes[r][i]);
        turns_free(&tb[r]);
    }
    cpu_backend.destroy(m);
}

// reduce_grads hands the gradient buffer itself (host, on_device 0) to the reduction.
typedef struct {
    size_t n;
    int on_device;
} Seen;
static int double_grads(void *ctx, float *g, size_t n, int on_device) {
    Seen *s = ctx;
    s->n = n, s->on_device = on_device;
    for (size_t i = 0; i < n; i++) g[i] *= 2;
    return 0;
}
static void test_reduce_grads(const char *name, const ModelBackend *be, const ModelConfig *cfg) {
    Model *m = be->create(cfg, 2, 5);
    CHECK(m && be->reduce_grads, "%s: create, reduce_grads present", name);
    if (!m || !be->reduce_grads) return;
    int tok[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, 4, 5, 6, -1};
    float logp[6], dlogp[6];
    be->zero_grad(m);
    be->forward(m, tok, tgt, 1, 6, logp, NULL);
    for (int t = 0; t < 6; t++) dlogp[t] = tgt[t] >= 0 ? -0.2f : 0.0f;
    be->backward(m, dlogp, NULL);
    size_t np = be->num_params(m);
    float *g0 = malloc(sizeof(float) * np), *g1 = malloc(sizeof(float) * np);
    Seen s = {0, -1};
    if (g0 && g1) {
        be->get_grads(m, g0);
        CHECK(be->reduce_grads(m, double_grads, &s) == 0, "%s: reduce_grads runs", name);
        be->get_grads(m, g1);
        int ok = s.n == np && s.on_device == 0;
        double gmax = 0;
        for (size_t i = 0; i < np; i++) ok &= g1[i] == 2 * g0[i], gmax = fmax(gmax, fabs(g0[i]));
        CHECK(ok && gmax > 0, "%s: the reduction got the %zu gradients in place (n %zu, on_device %d)",
              name, np, s.n, s.on_device);
    }
    free(g0), free(g1);
    be->destroy(m);
}

static void test_single_process(void) {
    Dist d;
    int argc = 1;
    char *args[] = {"test_dist", NULL}, **argv = args;
    CHECK(dist_init(&d, &argc, &argv) == 0 && dist_rank(&d) == 0 && dist_size(&d) == 1,
          "one process is rank 0 of 1");
    CHECK(dist_size(NULL) == 1 && dist_rank(NULL) == 0, "a NULL Dist is one process");
    int items[5] = {4, 3, 2, 1, 0};
    CHECK(dist_pick(&d, items, 5) == 5 && items[0] == 4 && items[4] == 0,
          "dist_pick keeps every item, in order");
    const char msg[] = "gather me";
    void *all = NULL;
    size_t counts[1];
    CHECK(dist_allgather(&d, msg, sizeof msg, &all, counts) == 0 && counts[0] == sizeof msg &&
              !memcmp(all, msg, sizeof msg), "dist_allgather of one rank is a copy");
    free(all);
    double x[2] = {1.5, -2};
    dist_sum_double(&d, x, 2);
    CHECK(x[0] == 1.5 && x[1] == -2, "a sum over one rank changes nothing");
    CHECK(dist_all_ok(&d, 1) && !dist_all_ok(&d, 0), "dist_all_ok of one rank is its own");
    // dist_update = the backend's update: two models, the same gradients, the same weights
    ModelConfig cfg = {.V = 16, .maxT = 8, .L = 1, .NH = 1, .C = 8};
    Model *m[2] = {cpu_backend.create(&cfg, 2, 1), cpu_backend.create(&cfg, 2, 1)};
    int tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8}, targets[8] = {2, 3, 4, 5, 6, 7, 8, -1};
    float logp[8], dlogp[8], gn[2];
    AdamWConfig ad = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .grad_clip = 1};
    for (int k = 0; k < 2 && m[0] && m[1]; k++) {
        cpu_backend.zero_grad(m[k]);
        cpu_backend.forward(m[k], tokens, targets, 1, 8, logp, NULL);
        for (int t = 0; t < 8; t++) dlogp[t] = targets[t] >= 0 ? -1.0f / 7 : 0;
        cpu_backend.backward(m[k], dlogp, NULL);
        gn[k] = k ? dist_update(&d, &cpu_backend, m[k], &ad, 1e-2f) : cpu_backend.update(m[k], &ad, 1e-2f);
    }
    size_t np = config_num_params(&cfg);
    float *p0 = malloc(sizeof(float) * np), *p1 = malloc(sizeof(float) * np);
    if (m[0] && m[1] && p0 && p1) {
        cpu_backend.get_params(m[0], p0);
        cpu_backend.get_params(m[1], p1);
        CHECK(gn[0] == gn[1] && gn[0] > 0 && !memcmp(p0, p1, sizeof(float) * np),
              "dist_update on one rank is the backend's update (grad norm %g)", gn[0]);
    }
    free(p0), free(p1);
    for (int k = 0; k < 2; k++)
        if (m[k]) cpu_backend.destroy(m[k]);
    dist_finalize(&d);
}

int main(void) {
    test_row_seeds();
    ModelConfig gpt = {.V = 29, .maxT = 24, .L = 1, .NH = 2, .C = 16};
    ModelConfig ll = {.V = 31, .maxT = 24, .L = 1, .NH = 4, .C = 32, .arch = ARCH_LLAMA,
                      .n_kv_heads = 2, .ffn = 40, .rope_dim = 8, .rope_base = 10000.0f,
                      .norm_eps = 1e-5f, .tied = 1};
    test_reduce_grads("cpu_backend", &cpu_backend, &gpt);
    test_reduce_grads("cpu_llama_backend", &cpu_llama_backend, &ll);
    test_single_process();
    const char *gen = getenv("MEMR2_GEN") && *getenv("MEMR2_GEN") ? getenv("MEMR2_GEN") : "./gen_episodes";
    char dir[] = "/tmp/memr2_test_dist_XXXXXX", data[256], err[1024];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(data, sizeof data, "%s/tiny.json", dir);
    char out[300];
    snprintf(out, sizeof out, "%s/gen.txt", dir);
    CHECK(proc_wait(proc_start((char *[]){(char *)gen, "--seed", "3", "--episodes", "1",
                                          "--sessions", "3", "-o", data, NULL}, out)) == 0,
          "generate tiny data (%s)", gen);
    Dataset ds = {0};
    int loaded = dataset_load(data, &ds, err, sizeof err) == 0;
    CHECK(loaded, "load tiny data: %s", loaded ? "" : err);
    if (loaded && ds.n > 0) {
        Env env;
        env_config_default(&env.cfg);
        env.vocab = vocab_build(&ds, 4096);
        test_lane_independence(&ds, &env);
        vocab_free((Vocab *)env.vocab);
    }
    dataset_free(&ds);
    unlink(data);
    unlink(out);
    rmdir(dir);
    return check_summary("test_dist");
}
