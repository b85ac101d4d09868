// tests/test_smollm2.c: the real pretrained model. memr2's C model on SmolLM2-135M-Instruct
// (out/smollm2.bin + out/smollm2.tok from `make smollm2`) against PyTorch in float64 on the same
// dequantised weights (dev/smollm2_check.py):
//   * log-probs of chat-formatted conversations (prompt and answer, every position) agree within
//     the tolerance below, measured error printed;
//   * greedy continuations of 3 prompts are token-identical, and read as English (printed; the
//     first must name Paris).
//
//   make smollm2 && make test_smollm2      (CI runs both; ~1 minute on 2 cores)
//   build/rel/tests/test_smollm2 [CHECKPOINT]   from the repository root
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"
#include "check.h"
#include "model.h"

#define MAXTOK 512
#define GREEDY_NEW 40

// Conversations whose every position is scored (the assistant turn is part of the text).
static const BpeMessage SCORED[][2] = {
    {{"user", "What is the capital of France?"},
     {"assistant", "The capital of France is Paris."}},
    {{"user", "My sister Anna moved to Berlin last May. Where does Anna live now?"},
     {"assistant", "Anna lives in Berlin, Germany."}},
    {{"user", "Write a haiku about the sea."},
     {"assistant", "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its "
                   "time."}},
};
#define N_SCORED (int)(sizeof SCORED / sizeof SCORED[0])

static const char *GREEDY[] = {
    "What is the capital of France?",
    "What is the largest ocean on Earth?",
    "Name three colors of the rainbow.",
};
#define N_GREEDY (int)(sizeof GREEDY / sizeof GREEDY[0])

typedef struct {
    int n;
    int ids[MAXTOK];
} Seq;

static int encode_chat(const Bpe *tok, const BpeMessage *msgs, int n, int gen, Seq *s) {
    char err[512];
    BpeIds ids = {0};
    int rc = bpe_chat(tok, msgs, n, gen, &ids, err, sizeof err);
    CHECK(rc == 0, "bpe_chat: %s", err);
    CHECK(ids.n <= MAXTOK, "conversation of %zu tokens", ids.n);
    s->n = rc == 0 && ids.n <= MAXTOK ? (int)ids.n : 0;
    for (int i = 0; i < s->n; i++) s->ids[i] = ids.ids[i];
    bpe_ids_free(&ids);
    return s->n > 0 ? 0 : -1;
}

static void write_seq(FILE *f, const char *head, const Seq *s) {
    fprintf(f, "%s", head);
    for (int i = 0; i < s->n; i++) fprintf(f, " %d", s->ids[i]);
    fprintf(f, "\n");
}

// The C side of one scored conversation against the reference line "logp v v ...".
static double compare_logp(const ModelBackend *be, Model *m, const Seq *s, FILE *ref,
                           double *mean_abs_ref) {
    int T = s->n, targets[MAXTOK];
    float logp[MAXTOK];
    for (int t = 0; t < T; t++) targets[t] = t + 1 < T ? s->ids[t + 1] : -1;
    CHECK(be->forward(m, s->ids, targets, 1, T, logp, NULL) == 0, "forward failed");
    char word[16];
    CHECK(fscanf(ref, "%15s", word) == 1 && strcmp(word, "logp") == 0, "reference out of step");
    double worst = 0, sum = 0;
    for (int t = 0; t + 1 < T; t++) {
        double w;
        CHECK(fscanf(ref, "%lf", &w) == 1, "reference has too few log-probs");
        double e = fabs(logp[t] - w);
        worst = e > worst ? e : worst;
        sum += fabs(w);
    }
    *mean_abs_ref = sum / (T - 1);
    return worst;
}

int main(int argc, char **argv) {
    const char *ckpt = argc > 1 ? argv[1] : "out/smollm2.bin";
    char tokpath[1024], err[512];
    snprintf(tokpath, sizeof tokpath, "%.*s.tok",
             (int)(strlen(ckpt) > 4 && strcmp(ckpt + strlen(ckpt) - 4, ".bin") == 0
                       ? strlen(ckpt) - 4
                       : strlen(ckpt)),
             ckpt);
    ModelConfig cfg;
    float *params = NULL;
    int loaded = checkpoint_load(ckpt, &cfg, &params, err, sizeof err) == 0;
    CHECK(loaded, "%s (run `make smollm2` first)", err);
    Bpe *tok = loaded ? bpe_load(tokpath, err, sizeof err) : NULL;
    CHECK(!loaded || tok, "%s", err);
    if (!tok) {
        free(params);
        return check_summary("test_smollm2");
    }
    CHECK(cfg.tokenizer_hash == bpe_hash(tok), "tokenizer hash mismatch");
    CHECK(cfg.arch == ARCH_LLAMA && cfg.L == 30 && cfg.C == 576 && cfg.NH == 9 &&
              cfg.n_kv_heads == 3 && cfg.ffn == 1536 && cfg.V == 49152 && cfg.tied == 1,
          "not SmolLM2-135M's shape");
    int im_end = bpe_special_id(tok, "<|im_end|>");
    CHECK(im_end >= 0, "no <|im_end|> in %s", tokpath);

    // Requests for the PyTorch side, in a folder of our own.
    char dir[] = "/tmp/memr2_smollm2_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    char req[1100], res[1100], cmd[4096];
    snprintf(req, sizeof req, "%s/requests.txt", dir);
    snprintf(res, sizeof res, "%s/results.txt", dir);
    Seq scored[N_SCORED], prompts[N_GREEDY];
    FILE *f = fopen(req, "w");
    CHECK(f != NULL, "cannot write %s", req);
    int ok = f != NULL;
    for (int i = 0; ok && i < N_SCORED; i++) {
        ok = encode_chat(tok, SCORED[i], 2, 0, &scored[i]) == 0;
        if (ok) write_seq(f, "logp", &scored[i]);
    }
    for (int i = 0; ok && i < N_GREEDY; i++) {
        BpeMessage msg = {"user", GREEDY[i]};
        ok = encode_chat(tok, &msg, 1, 1, &prompts[i]) == 0;
        char head[64];
        snprintf(head, sizeof head, "greedy %d %d", GREEDY_NEW, im_end);
        if (ok) write_seq(f, head, &prompts[i]);
    }
    if (f) fclose(f);
    if (ok) {
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 dev/smollm2_check.py '%s' '%s' '%s'", ckpt,
                 req, res);
        int rc = system(cmd);
        CHECK(rc == 0, "`%s` failed (rc %d)", cmd, rc);
        ok = rc == 0;
    }
    FILE *ref = ok ? fopen(res, "r") : NULL;
    const ModelBackend *be = cpu_backend_for(&cfg);
    Model *m = ref ? be->create(&cfg, 1, 1) : NULL;
    if (ref) CHECK(m != NULL, "create failed");
    if (m) {
        be->set_params(m, params);
        // Log-probs. float32 through 30 layers vs float64: the measured worst error is printed
        // (4.2e-5 nats on 2026-12-02, 2.2e-4 on 2026-12-04 on Zen 3 / AVX2 with no change to the
        // forward pass: sgemm blocking); the tolerance 5e-4 stays far below what a wrong weight,
        // a RoPE or tokenizer slip gives (errors of whole nats).
        for (int i = 0; i < N_SCORED; i++) {
            double mean_ref, worst = compare_logp(be, m, &scored[i], ref, &mean_ref);
            CHECK(worst <= 5e-4, "conversation %d: max |logp C - logp PyTorch| %.3g > 5e-4", i,
                  worst);
            printf("  logp conversation %d: %d tokens, mean -logp %.3f, max |C - PyTorch "
                   "float64| %.2e\n",
                   i, scored[i].n, mean_ref, worst);
        }
        // Greedy continuations.
        for (int i = 0; i < N_GREEDY; i++) {
            int plen = prompts[i].n, out[GREEDY_NEW], len = 0;
            float lp[GREEDY_NEW];
            SampleRequest sr = {.n = 1, .prompts = prompts[i].ids, .prompt_stride = plen,
                                .prompt_len = &plen, .max_new = GREEDY_NEW, .temperature = 0,
                                .top_p = 1, .stop = &im_end, .n_stop = 1, .seed = 1};
            SampleResult so = {.tokens = out, .logp = lp, .len = &len};
            CHECK(be->sample(m, &sr, &so) == 0, "sample failed");
            char word[16];
            CHECK(fscanf(ref, "%15s", word) == 1 && strcmp(word, "greedy") == 0,
                  "reference out of step");
            int want[GREEDY_NEW + 1], nw = 0;
            double margin = 0;
            while (fscanf(ref, "%15s", word) == 1 && strcmp(word, "margin") != 0 &&
                   nw < GREEDY_NEW)
                want[nw++] = atoi(word);
            CHECK(fscanf(ref, "%lf", &margin) == 1, "reference has no margin");
            int same = nw == len;
            for (int t = 0; same && t < len; t++) same = out[t] == want[t];
            CHECK(same, "greedy %d: C gave %d tokens, PyTorch %d, not identical", i, len, nw);
            int32_t ids[GREEDY_NEW];
            int shown = len > 0 && out[len - 1] == im_end ? len - 1 : len;
            for (int t = 0; t < shown; t++) ids[t] = out[t];
            char *text = NULL;
            size_t tl;
            CHECK(bpe_decode(tok, ids, (size_t)shown, &text, &tl, err, sizeof err) == 0, "%s",
                  err);
            printf("  greedy %d (%s; %d tokens, smallest top-2 logit gap %.3g): %s -> %s\n", i,
                   same ? "token-identical to PyTorch" : "DIFFERENT", len, margin, GREEDY[i],
                   text ? text : "");
            // the answers this checkpoint gives (and PyTorch with it): sensible English
            static const char *const expect[N_GREEDY] = {"Paris", "Pacific", "red"};
            CHECK(text && strstr(text, expect[i]), "greedy %d: the answer lacks '%s'", i,
                  expect[i]);
            free(text);
        }
        be->destroy(m);
    }
    if (ref) fclose(ref);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    bpe_free(tok);
    free(params);
    return check_summary("test_smollm2");
}
