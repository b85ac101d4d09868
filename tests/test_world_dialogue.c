// tests/test_world_dialogue.c: the real-dialogue world behind the World interface
// (world_dialogue.c), on a tiny random Llama with SmolLM2's tokenizer fixture
// (tests/fixtures/bpe_smollm.tok) and the hand-written conversation
// tests/fixtures/dialogue/conv.json:
//   - world_open("dialogue"): stop token, vocabulary, bank shape, a manager output whose facts
//     the world copies into the caller's fact store (the DialogueOps scratch is gone after the
//     call), no teacher, no gold grammar;
//   - the program: --eval none / store-turns / the checkpoint, --answerer (another checkpoint;
//     one over another vocabulary is refused), and one LoGo-GRPO step end to end
//     (finite numbers in log.jsonl, final.bin's weights differ from the --init ones).
// Run from the repository root (as make test does); the trainer is $MEMR2_TRAIN or ./train_cpu.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bpe.h"
#include "check.h"
#include "proc.h"
#include "model.h"
#include "world.h"

static const char *FIX_TOK = "tests/fixtures/bpe_smollm.tok";
static const char *FIX_CONV = "tests/fixtures/dialogue/conv.json";
static char tmpdir[256];

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok ? 0 : -1;
}

// tmpdir/NAME.bin (a random 2-layer Llama over the fixture's vocabulary, or over `vocab` tokens
// if > 0, weights from init_seed) and NAME.tok beside it.
static int make_tiny(const char *name, int vocab, uint64_t init_seed, char *ckpt, size_t n) {
    char err[512], tok[512];
    Bpe *t = bpe_load(FIX_TOK, err, sizeof err);
    CHECK(t != NULL, "tokenizer fixture: %s", t ? "" : err);
    if (!t) return -1;
    ModelConfig cfg = {.V = vocab > 0 ? vocab : bpe_vocab_size(t), .maxT = 1536, .L = 2, .NH = 2,
                       .C = 32, .arch = ARCH_LLAMA, .n_kv_heads = 1, .ffn = 48, .rope_dim = 16,
                       .rope_base = 10000.0f, .norm_eps = 1e-5f, .tied = 1,
                       .tokenizer_hash = vocab > 0 ? 0 : bpe_hash(t)};
    bpe_free(t);
    size_t np = config_num_params(&cfg);
    float *p = malloc(sizeof(float) * np);
    if (!p) return -1;
    config_params_init(p, &cfg, init_seed);
    snprintf(ckpt, n, "%s/%s.bin", tmpdir, name);
    snprintf(tok, sizeof tok, "%s/%s.tok", tmpdir, name);
    int rc = checkpoint_save(ckpt, &cfg, p, err, sizeof err);
    CHECK(rc == 0, "save the tiny checkpoint %s: %s", name, rc ? err : "");
    free(p);
    CHECK(copy_file(FIX_TOK, tok) == 0, "copy the tokenizer beside it");
    return rc;
}

static void test_world(const char *ckpt, const Dataset *ds) {
    World w;
    WorldArgs a = {.name = "dialogue", .checkpoint = ckpt, .vocab_data = ds, .rho = -1,
                   .lambda = -1, .answerer_batch = 4, .seed = 1};
    int rc = world_open(&w, &a);
    CHECK(rc == 0, "world_open dialogue");
    if (rc) return;
    const Episode *ep = &ds->episodes[0];
    CHECK(w.vocab_size > 100 && w.stop_token > 0 && w.stop_token < w.vocab_size,
          "vocabulary %d, stop token %d", w.vocab_size, w.stop_token);
    CHECK(w.teacher_extract == NULL && w.session_mistakes == NULL, "no teacher, no gold grammar");
    int cap, slot_len;
    world_bank_shape(&w, ep, &cap, &slot_len);
    CHECK(cap >= 64 && cap % 64 == 0 && slot_len >= 16 && slot_len <= FACT_MAX_TOKENS,
          "bank shape %d x %d", cap, slot_len);
    CHECK(world_num_chunks(&w, ep, 1) >= 1, "session 1 has chunks");
    // a manager output: one INSERT; its tokens must survive in the caller's store
    const char *out = "{\"operations\": [{\"op\": \"INSERT\", \"content\": \"likes hiking\"}]}";
    int gen[256], store[8 * FACT_MAX_TOKENS];
    int n = world_encode(&w, out, gen, 256);
    MemoryOp ops[8];
    Shown shown = {.n = 0};
    int invalid = -1, malformed = -1;
    int k = world_parse_manage(&w, gen, n, NULL, 0, &shown, ops, 8, store, &invalid, &malformed);
    CHECK(k == 1 && ops[0].kind == OP_INSERT && ops[0].fact == store && ops[0].fact_len > 0 &&
              malformed == 0,
          "INSERT parsed into the fact store (%d ops, malformed %d)", k, malformed);
    int back[64];
    int bn = world_encode(&w, "likes hiking", back, 64);
    CHECK(k == 1 && ops[0].fact_len == bn && !memcmp(back, store, sizeof(int) * (size_t)bn),
          "the stored fact is the content's tokens");
    // words seen and the compression penalty of an empty bank
    long seen = world_words_seen(&w, ep, 2);
    MemoryBank bank;
    if (memory_init(&bank, cap, slot_len) == 0) {
        CHECK(seen > 20, "words seen %ld", seen);
        CHECK_CLOSE("penalty of an empty bank", world_compression_penalty(&w, &bank, seen), 0, 0,
                    0);
        memory_free(&bank);
    }
    world_close(&w);
}

static int run(const char *cmd) {
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

// Runs cmd with stdout to tmpdir/out.txt; returns the exit status and the first line holding
// `want` (or "").
static int run_grep(const char *cmd, const char *want, char *line, size_t n) {
    char full[4096], path[512];
    snprintf(path, sizeof path, "%s/out.txt", tmpdir);
    snprintf(full, sizeof full, "%s > %s 2>&1", cmd, path);
    int rc = run(full);
    line[0] = '\0';
    FILE *f = fopen(path, "r");
    char buf[8192];
    while (f && fgets(buf, sizeof buf, f))
        if (strstr(buf, want) && !line[0]) snprintf(line, n, "%s", buf);
    if (f) fclose(f);
    return rc;
}

static double json_number(const char *line, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void test_program(const char *train, const char *ckpt) {
    char cmd[4096], line[8192];
    const char *policies[3] = {"none", "store-turns", ckpt};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "%s --world dialogue --init %s --eval %s -d %s --episodes 1",
                 train, ckpt, policies[i], FIX_CONV);
        int rc = run_grep(cmd, " episodes=1 ", line, sizeof line);
        const char *f1 = strstr(line, "f1=");
        CHECK(rc == 0 && f1 && isfinite(strtod(f1 + 3, NULL)), "--eval %s: rc %d, '%s'",
              i < 2 ? policies[i] : "CKPT", rc, line);
    }
    // --answerer: another checkpoint answers (its load is announced); one over another
    // vocabulary is refused with both sizes named
    char other[512], wrong[512];
    if (make_tiny("answerer", 0, 6, other, sizeof other) == 0 &&
        make_tiny("wrongvocab", 300, 6, wrong, sizeof wrong) == 0) {
        snprintf(cmd, sizeof cmd, "%s --world dialogue --init %s --answerer %s --eval store-turns "
                 "-d %s --episodes 1", train, ckpt, other, FIX_CONV);
        char want[600];
        snprintf(want, sizeof want, "answerer: %s (", other);
        int rc = run_grep(cmd, want, line, sizeof line);
        CHECK(rc == 0 && line[0], "--answerer %s: rc %d, no '%s' line", other, rc, want);
        snprintf(cmd, sizeof cmd, "%s --world dialogue --init %s --answerer %s --eval none -d %s",
                 train, ckpt, wrong, FIX_CONV);
        rc = run_grep(cmd, "is not the backbone tokenizer's", line, sizeof line);
        CHECK(rc == 1 && strstr(line, "300 tokens"), "--answerer over 300 tokens: rc %d, '%s'", rc,
              line);
    }
    // the oracle needs a teacher: a clear error, not a crash
    snprintf(cmd, sizeof cmd, "%s --world dialogue --init %s --eval oracle -d %s", train, ckpt,
             FIX_CONV);
    int rc = run_grep(cmd, "no teacher", line, sizeof line);
    CHECK(rc == 1 && line[0], "--eval oracle in the dialogue world: rc %d", rc);
    // one LoGo-GRPO step from the tiny checkpoint
    char out[512], log[600], fin[600];
    snprintf(out, sizeof out, "%s/run", tmpdir);
    snprintf(cmd, sizeof cmd,
             "%s --world dialogue --init %s --train %s --val %s --test %s --sft-steps 0 "
             "--direct --stage-steps 0,0,1 --G 2 --K 2 --val-episodes 1 --test-episodes 1 "
             "--max-batch 4 -q -o %s", train, ckpt, FIX_CONV, FIX_CONV, FIX_CONV, out);
    snprintf(log, sizeof log, "%s/log.jsonl", out);
    rc = run_grep(cmd, "done in", line, sizeof line);
    CHECK(rc == 0, "one RL step on real dialogue: rc %d", rc);
    FILE *f = fopen(log, "r");
    char buf[16384];
    int rl = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        if (!strstr(buf, "\"phase\":\"rl\"")) continue;
        rl++;
        const char *keys[] = {"loss", "kl", "entropy", "ratio", "grad_norm", "reward_mean"};
        for (int k = 0; k < 6; k++)
            CHECK(isfinite(json_number(buf, keys[k])), "log: %s is %g", keys[k],
                  json_number(buf, keys[k]));
        CHECK(json_number(buf, "turns_global") > 0, "the step recorded turns");
    }
    if (f) fclose(f);
    CHECK(rl == 1, "%d RL lines in %s", rl, log);
    // the weights moved
    snprintf(fin, sizeof fin, "%s/final.bin", out);
    ModelConfig c0, c1;
    float *p0 = NULL, *p1 = NULL;
    char err[512];
    if (checkpoint_load(ckpt, &c0, &p0, err, sizeof err) == 0 &&
        checkpoint_load(fin, &c1, &p1, err, sizeof err) == 0) {
        size_t np = config_num_params(&c0), diff = 0, bad = 0;
        double maxd = 0;
        CHECK(model_config_equal(&c0, &c1), "final.bin has the --init shape");
        for (size_t i = 0; i < np && model_config_equal(&c0, &c1); i++) {
            double d = fabs((double)p0[i] - p1[i]);
            diff += d > 0, maxd = d > maxd ? d : maxd;
            bad += !isfinite(p1[i]);
        }
        CHECK(bad == 0, "%zu parameters of final.bin are not finite", bad);
        printf("one RL step: %zu of %zu weights changed, max change %.3g\n", diff, np, maxd);
        CHECK(diff > np / 2 && maxd > 0, "the step changed the weights (%zu of %zu)", diff, np);
    } else {
        CHECK(0, "load the checkpoints: %s", err);
    }
    free(p0), free(p1);
}

// A Llama run killed after its second RL step's log line (so its state after step 1 is saved)
// and resumed ends with the bytes of a run that was never killed (the synthetic world's
// version is tests/test_resume.c).
static void test_resume_llama(const char *train, const char *ckpt) {
    char flags[2048], line[4096], *argv[128], ref[512], dir[512], log[600], out[600], a[600],
        b[600];
    snprintf(flags, sizeof flags,
             "%s --world dialogue --init %s --train %s --val %s --test %s --sft-steps 0 "
             "--direct --stage-steps 0,0,3 --G 2 --K 2 --p-local 1 --val-episodes 1 "
             "--test-episodes 1 --max-batch 4 --horizons 2,2,2 --test-sessions 2 -q",
             train, ckpt, FIX_CONV, FIX_CONV, FIX_CONV);
    snprintf(ref, sizeof ref, "%s/resume_ref", tmpdir);
    snprintf(dir, sizeof dir, "%s/resume_kill", tmpdir);
    snprintf(out, sizeof out, "%s.txt", ref);
    int rc = proc_run_fmt(out, "%s -o %s", flags, ref);
    CHECK(rc == 0, "three RL steps on real dialogue: rc %d (see %s)", rc, out);
    snprintf(line, sizeof line, "%s -o %s", flags, dir);
    proc_split(line, argv, 128);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    snprintf(out, sizeof out, "%s.killed.txt", dir);
    int killed = proc_kill_at_lines(argv, out, log, 2);
    if (!killed) printf("  note: the run ended before the kill\n");
    snprintf(out, sizeof out, "%s.resume.txt", dir);
    rc = proc_run_fmt(out, "%s --resume %s", train, dir);
    CHECK(rc == 0, "the killed Llama run resumes: rc %d (see %s)", rc, out);
    if (killed)
        CHECK(file_contains(out, "resuming"), "it resumed from a saved state (see %s)", out);
    const char *files[] = {"final.bin", "eval.jsonl"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", ref, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        CHECK(files_same(a, b), "killed%s and resumed: %s has the uninterrupted run's bytes",
              killed ? "" : " (not in time)", files[i]);
    }
}

int main(void) {
    const char *train = getenv("MEMR2_TRAIN");
    if (!train || !*train) train = "./train_cpu";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/memr2_test_world_dialogue_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("OMP_WAIT_POLICY", "passive", 0);
    char ckpt[512], err[512];
    Dataset ds = {0};
    int loaded = dataset_load(FIX_CONV, &ds, err, sizeof err) == 0;
    CHECK(loaded && ds.n == 1, "load %s: %s", FIX_CONV, loaded ? "" : err);
    if (loaded && make_tiny("tiny", 0, 5, ckpt, sizeof ckpt) == 0) {
        test_world(ckpt, &ds);
        test_program(train, ckpt);
        test_resume_llama(train, ckpt);
    }
    dataset_free(&ds);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (!check_counts.failed) run(cmd);
    else fprintf(stderr, "kept %s for inspection\n", tmpdir);
    return check_summary("test_world_dialogue");
}
