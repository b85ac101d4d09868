// tests/test_import.c: the model importers (dev/import_hf.py, dev/import_gguf.py) and ./chat.
//
// dev/import_check.py writes tiny random models the way Hugging Face (safetensors, sharded or
// not; Llama tied / Qwen2 untied with q/k/v biases; F32, F16, BF16) and llama.cpp (GGUF with q/k
// rows permuted; Q8_0, Q4_0, Q4_1, F16, BF16, F32) store them, imports each, and writes float64
// PyTorch log-probs from Hugging Face's equations on the source tensors. Here memr2's C model
// (cpu_backend_for) loads each imported checkpoint and must reproduce them; the checkpoint's
// tokenizer hash must equal bpe_hash() of the tokenizer file beside it; broken inputs must be
// rejected with a message naming the file and what is wrong; ./chat must answer with a matching
// tokenizer and refuse a mismatched one.
//
// Run from the repository root (it calls dev/*.py and ./chat):  make test
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"
#include "check.h"
#include "model.h"

#define MAXN 64

typedef struct {
    int V, L, C, NH, KV, F, tied, bias, rope_dim;
    double rope_base, eps;
    int B, T;
    int tokens[MAXN];
    double logp[MAXN];
} Ref;

static int read_ref(const char *path, Ref *r) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fscanf(f, "cfg %d %d %d %d %d %d %d %d %d %lf %lf %d %d", &r->V, &r->L, &r->C,
                    &r->NH, &r->KV, &r->F, &r->tied, &r->bias, &r->rope_dim, &r->rope_base,
                    &r->eps, &r->B, &r->T) == 13 &&
             r->B > 0 && r->T > 1 && r->B * r->T <= MAXN;
    for (int i = 0; ok && i < r->B * r->T; i++) ok = fscanf(f, "%d", &r->tokens[i]) == 1;
    for (int i = 0; ok && i < r->B * (r->T - 1); i++) ok = fscanf(f, "%lf", &r->logp[i]) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

// One imported model: config, tokenizer hash, and the C forward against the float64 reference.
static void check_model(const char *dir, const char *name) {
    char path[1024], err[512];
    Ref r;
    snprintf(path, sizeof path, "%s/%s.ref", dir, name);
    int ok = read_ref(path, &r) == 0;
    CHECK(ok, "%s: unreadable reference", path);
    if (!ok) return;
    ModelConfig cfg;
    float *params = NULL;
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    CHECK(checkpoint_load(path, &cfg, &params, err, sizeof err) == 0, "%s", err);
    if (!params) return;
    CHECK(cfg.arch == ARCH_LLAMA && cfg.V == r.V && cfg.L == r.L && cfg.C == r.C &&
              cfg.NH == r.NH && cfg.n_kv_heads == r.KV && cfg.ffn == r.F && cfg.tied == r.tied &&
              cfg.qkv_bias == r.bias && cfg.rope_dim == r.rope_dim &&
              cfg.rope_base == (float)r.rope_base && cfg.norm_eps == (float)r.eps,
          "%s: config does not match the source", name);
    snprintf(path, sizeof path, "%s/%s.tok", dir, name);
    Bpe *tok = bpe_load(path, err, sizeof err);
    CHECK(tok != NULL, "%s", err);
    if (tok) {
        CHECK(cfg.tokenizer_hash != 0 && cfg.tokenizer_hash == bpe_hash(tok),
              "%s: checkpoint hash %016llx, tokenizer file %016llx", name,
              (unsigned long long)cfg.tokenizer_hash, (unsigned long long)bpe_hash(tok));
        bpe_free(tok);
    }
    const ModelBackend *be = cpu_backend_for(&cfg);
    Model *m = be->create(&cfg, r.B, 1);
    CHECK(m != NULL, "%s: create failed", name);
    if (m) {
        be->set_params(m, params);
        int B = r.B, T = r.T, targets[MAXN];
        float logp[MAXN];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                targets[b * T + t] = t + 1 < T ? r.tokens[b * T + t + 1] : -1;
        CHECK(be->forward(m, r.tokens, targets, B, T, logp, NULL) == 0, "%s: forward", name);
        // float32 C vs float64 PyTorch on log-probs of order -40 (random tiny models have
        // large logits): the measured error is <= 6e-6; 2e-5 + 1e-6 |logp| is ~10x above it.
        double worst = 0;
        int bad = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t + 1 < T; t++) {
                double g = logp[b * T + t], w = r.logp[b * (T - 1) + t], e = fabs(g - w);
                worst = e > worst ? e : worst;
                bad += !(e <= 2e-5 + 1e-6 * fabs(w));
            }
        CHECK(bad == 0, "%s: %d log-probs off the float64 reference (max abs err %.3g)", name,
              bad, worst);
        printf("  %-9s V=%d L=%d C=%d NH=%d KV=%d F=%d tied=%d bias=%d: C vs float64 PyTorch "
               "max |dlogp| %.2e over %d positions\n",
               name, cfg.V, cfg.L, cfg.C, cfg.NH, cfg.n_kv_heads, cfg.ffn, cfg.tied, cfg.qkv_bias,
               worst, B * (T - 1));
        be->destroy(m);
    }
    free(params);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = calloc(1, 65536);
    if (s) {
        size_t n = fread(s, 1, 65535, f);
        s[n] = '\0';
    }
    fclose(f);
    return s;
}

// Runs cmd (paths from our own mkdtemp, no user data) with stderr to DIR/err.txt; returns the
// exit status and the captured stderr (malloc'd) in *msg.
static int run_capture(const char *dir, const char *cmd, char **msg) {
    char full[4096], errpath[1024];
    snprintf(errpath, sizeof errpath, "%s/err.txt", dir);
    snprintf(full, sizeof full, "%s >/dev/null 2>'%s'", cmd, errpath);
    int rc = system(full);
    *msg = slurp(errpath);
    return rc;
}

// Every broken input of DIR/bad.txt: non-zero exit, message naming the file and the problem.
static void check_broken(const char *dir) {
    char path[1024], line[2048];
    snprintf(path, sizeof path, "%s/bad.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "%s missing", path);
    if (!f) return;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *kind = strtok(line, "\t"), *in = strtok(NULL, "\t"), *name = strtok(NULL, "\t"),
             *want = strtok(NULL, "\t");
        if (!kind || !in || !name || !want) continue;
        char cmd[3072], *msg = NULL;
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 dev/import_%s.py '%s' -o '%s/broken.bin'",
                 strcmp(kind, "gguf") == 0 ? "gguf" : "hf", in, dir);
        int rc = run_capture(dir, cmd, &msg);
        CHECK(rc != 0, "%s: the importer accepted it", in);
        CHECK(msg && strstr(msg, name) && strstr(msg, want),
              "%s: message should name %s and say '%s', got: %s", in, name, want,
              msg ? msg : "(none)");
        free(msg);
        n++;
    }
    fclose(f);
    CHECK(n >= 10, "only %d broken inputs listed", n);
    printf("  %d broken GGUF / safetensors / config inputs rejected with messages\n", n);
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b)) ok = 0;
    return ok ? 0 : -1;
}

// ./chat answers with the checkpoint's own tokenizer and refuses another one.
static void check_chat(const char *dir) {
    char cmd[2048], *msg = NULL, path[1024], path2[1024], err[512];
    snprintf(cmd, sizeof cmd, "./chat '%s/tiny.bin' 'the cat' --max-new 6", dir);
    int rc = run_capture(dir, cmd, &msg);
    CHECK(rc == 0, "./chat on tiny.bin failed: %s", msg ? msg : "");
    CHECK(msg && strstr(msg, "new tokens"), "./chat printed no timing line: %s", msg ? msg : "");
    free(msg);
    // the same weights under another tokenizer hash, with tiny.tok beside them
    ModelConfig cfg;
    float *params = NULL;
    snprintf(path, sizeof path, "%s/tiny.bin", dir);
    CHECK(checkpoint_load(path, &cfg, &params, err, sizeof err) == 0, "%s", err);
    if (!params) return;
    cfg.tokenizer_hash ^= 1;
    snprintf(path, sizeof path, "%s/other.bin", dir);
    CHECK(checkpoint_save(path, &cfg, params, err, sizeof err) == 0, "%s", err);
    free(params);
    snprintf(path, sizeof path, "%s/tiny.tok", dir);
    snprintf(path2, sizeof path2, "%s/other.tok", dir);
    CHECK(copy_file(path, path2) == 0, "copy %s", path);
    snprintf(cmd, sizeof cmd, "./chat '%s/other.bin' 'the cat' --max-new 6", dir);
    rc = run_capture(dir, cmd, &msg);
    CHECK(rc != 0, "./chat accepted a mismatched tokenizer");
    CHECK(msg && strstr(msg, "other.tok") && strstr(msg, "mismatched tokenizer"),
          "./chat's refusal should name the tokenizer file: %s", msg ? msg : "(none)");
    free(msg);
}

int main(void) {
    char dir[] = "/tmp/memr2_import_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 dev/import_check.py '%s' >/dev/null", dir);
    int rc = system(cmd);
    CHECK(rc == 0, "dev/import_check.py failed (rc %d): it needs /usr/bin/python3 with torch and "
                   "the gguf package (make deps) and must run from the repository root", rc);
    if (rc == 0) {
        check_model(dir, "hf_llama");
        check_model(dir, "hf_qwen2");
        check_model(dir, "tiny");
        check_broken(dir);
        check_chat(dir);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return check_summary("test_import");
}
