// tests/fuzz/make_seeds.c: writes the committed seed corpora of the fuzz harnesses
// (tests/fuzz/corpus/<name>/seed_*). Rerun after a format change: make fuzz_seeds
// The seeds are small valid inputs plus one or two bad ones per loader, and for the MANAGE
// parser one output per operation, so the fuzzers start from every path: INSERT, UPDATE,
// DELETE and NOOP (tests/test_fuzz_seeds.c checks that the corpus reaches each).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "world_synth.h"
#include "model.h"
#include "runstate.h"

static int put(const char *name, const char *file, const void *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s", name);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s/%s", name, file);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "make_seeds: cannot write %s\n", path);
    return ok ? 0 : -1;
}

static int put_text(const char *name, const char *file, const char *text) {
    return put(name, file, text, strlen(text));
}

// Copies a file written by a save function into the corpus.
static int put_file(const char *name, const char *file, const char *src) {
    FILE *f = fopen(src, "rb");
    if (!f) return -1;
    static unsigned char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    remove(src);
    return put(name, file, buf, n);
}

// Token ids as harness bytes (fuzz_common.h: one byte per id below 0xF8).
static int put_tokens(const char *name, const char *file, const int *ids, int n) {
    unsigned char b[256];
    for (int i = 0; i < n; i++) b[i] = (unsigned char)ids[i];
    return put(name, file, b, (size_t)n);
}

static const char *EPISODE =
    "[{\"sample_id\": \"s1\", \"conversation\": {\"speaker_a\": \"alice\", \"speaker_b\": \"bob\", "
    "\"session_1_date_time\": \"1 May 2023\", \"session_1\": ["
    "{\"speaker\": \"alice\", \"dia_id\": \"D1:1\", \"text\": \"I live in paris.\"}, "
    "{\"speaker\": \"bob\", \"dia_id\": \"D1:2\", \"text\": \"I have a cat.\", "
    "\"blip_caption\": \"a cat\"}], \"session_2\": [{\"speaker\": \"alice\", \"dia_id\": "
    "\"D2:1\", \"text\": \"I moved to rome.\"}]}, "
    "\"qa\": [{\"question\": \"where does alice live?\", \"answer\": \"rome\", \"evidence\": "
    "[\"D1:1\", \"D2:1\"], \"category\": 2, \"memr2_valid_until\": 2}, {\"question\": \"how "
    "many cats?\", \"answer\": 1, \"evidence\": \"D1:2\"}, {\"question\": \"adversarial?\"}], "
    "\"observation\": {\"session_1_observation\": {\"alice\": [[\"alice lives in paris\", "
    "\"D1:1\"]], \"bob\": [[\"bob has a cat\", \"D1:2\"]]}}, \"memr2_facts\": {\"session_1\": "
    "[{\"fact\": \"alice lives in paris\", \"key\": \"alice|lives\", \"dia_id\": \"D1:1\", "
    "\"ends\": 0}]}}]";

int main(void) {
    int bad = 0;
    mkdir("tests/fuzz/corpus", 0755);
    // episodes
    bad |= put_text("episodes", "seed_valid.json", EPISODE);
    bad |= put_text("episodes", "seed_category_1e300.json",
                    "[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": "
                    "[]}, \"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"evidence\": "
                    "[\"D1:1\"], \"category\": 1e300}]}]");
    bad |= put_text("episodes", "seed_empty.json", "[]");
    // vocabulary: the specials and three words, as vocab_save writes it
    Dataset ds;
    char err[512];
    const char *tmp = "/tmp/memr2_make_seeds.json";
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(EPISODE, f) < 0 || fclose(f) != 0) return 1;
    if (dataset_load(tmp, &ds, err, sizeof err) != 0) {
        fprintf(stderr, "make_seeds: %s\n", err);
        return 1;
    }
    remove(tmp);
    Vocab *v = vocab_build(&ds, TOK_FIRST_WORD + 3);
    if (!v || vocab_save(v, "/tmp/memr2_make_seeds.vocab", err, sizeof err) != 0) return 1;
    bad |= put_file("vocab", "seed_valid.txt", "/tmp/memr2_make_seeds.vocab");
    bad |= put_text("vocab", "seed_bad_header.txt", "memr2-vocab 1 99999999999\n<pad>\n");
    vocab_free(v);
    dataset_free(&ds);
    // checkpoints: the fuzz_state config (GPT-2), a small Llama, a version-1 header
    ModelConfig g = {.V = 17, .maxT = 10, .L = 2, .NH = 2, .C = 8, .tokenizer_hash = 42};
    ModelConfig l = {.V = 5, .maxT = 4, .L = 1, .NH = 2, .C = 4, .arch = ARCH_LLAMA,
                     .n_kv_heads = 1, .ffn = 4, .rope_dim = 2, .rope_base = 10000.0f,
                     .norm_eps = 1e-5f, .tied = 1};
    size_t ng = config_num_params(&g), nl = config_num_params(&l);
    float *pg = calloc(ng, sizeof(float)), *pl = calloc(nl, sizeof(float));
    float *mv = calloc(2 * ng, sizeof(float));
    if (!pg || !pl || !mv) return 1;
    config_params_init(pg, &g, 1);
    config_params_init(pl, &l, 2);
    const char *ck = "/tmp/memr2_make_seeds.bin";
    if (checkpoint_save(ck, &g, pg, err, sizeof err) != 0) return 1;
    bad |= put_file("checkpoint", "seed_gpt2.bin", ck);
    if (checkpoint_save(ck, &l, pl, err, sizeof err) != 0) return 1;
    bad |= put_file("checkpoint", "seed_llama.bin", ck);
    // training state for the same GPT-2 config, with a trainer blob
    for (size_t i = 0; i < ng; i++) mv[i] = 1e-3f * (float)i, mv[ng + i] = 1e-6f * (float)i;
    char blob[] = "stage=1";
    TrainState st = {.step = 12, .rng = {1, 2, 3, 4}, .mom = mv, .vel = mv + ng, .blob = blob,
                     .blob_bytes = sizeof blob};
    g.tokenizer_hash = 0;
    if (train_state_save(ck, &g, &st, err, sizeof err) != 0) return 1;
    bad |= put_file("state", "seed_state.bin", ck);
    st.blob = NULL, st.blob_bytes = 0, st.step = 0;
    if (train_state_save(ck, &g, &st, err, sizeof err) != 0) return 1;
    bad |= put_file("state", "seed_state_noblob.bin", ck);
    // resume blobs (runstate.c) for nparams = 5, as fuzz_runstate decodes them
    {
        float pr[5] = {1, 2, 3, 4, 5}, pb[5] = {0.5f, 0, 0, 0, -1};
        CurvePoint rw[2] = {{1, 0.25f}, {2, 0.5f}}, vl[1] = {{2, 0.125f}};
        RunState rs = {.phase = RUN_RL, .stage = 1, .stage_step = 2, .done_steps = 18,
                       .global_step = 18, .warm_started = 1, .best_f1 = 0.3, .log_bytes = 4096,
                       .copy = {pr, pb, pb, pr}, .reward_pts = rw, .val_pts = vl, .n_reward = 2,
                       .n_val = 1};
        RunState sft = {.phase = RUN_SFT, .sft_step = 100, .copy = {pr}};
        const RunState *seeds[2] = {&rs, &sft};
        const char *names[2] = {"seed_rl", "seed_sft"};
        for (int k = 0; k < 2; k++) {
            void *b = NULL;
            size_t nb = 0;
            if (runstate_encode(seeds[k], 5, &b, &nb) != 0) return 1;
            FILE *f = fopen(ck, "wb");
            int ok = f && fwrite(b, 1, nb, f) == nb;
            if (f && fclose(f) != 0) ok = 0;
            free(b);
            if (!ok) return 1;
            bad |= put_file("runstate", names[k], ck);
        }
    }
    free(pg), free(pl), free(mv);
    // EXTRACT outputs: chunk selector byte (1 = chunk 0), then ids
    enum { W = TOK_FIRST_WORD };
    int ex1[] = {1, TOK_TURN0, W, W + 1, W + 2, TOK_SEP, TOK_TURN0 + 2, W + 3, TOK_SEP, TOK_EOS};
    int ex2[] = {2, TOK_TURN0 + 1, W + 4, TOK_SEP, TOK_EOS};
    int ex3[] = {1, W, TOK_TURN0 + 9, TOK_SEP, TOK_UPDATE, TOK_SEP};  // malformed, no <eos>
    bad |= put_tokens("extract", "seed_two_facts", ex1, sizeof ex1 / sizeof ex1[0]);
    bad |= put_tokens("extract", "seed_chunk1", ex2, sizeof ex2 / sizeof ex2[0]);
    bad |= put_tokens("extract", "seed_malformed", ex3, sizeof ex3 / sizeof ex3[0]);
    // MANAGE outputs, one per operation, and one with all of them
    int ins[] = {TOK_INSERT, TOK_TURN0 + 1, W + 5, W + 6, TOK_SEP, TOK_EOS};
    int upd[] = {TOK_UPDATE, TOK_SLOT0, TOK_TURN0 + 2, W + 7, W + 8, TOK_SEP, TOK_EOS};
    int del[] = {TOK_DELETE, TOK_SLOT0 + 1, TOK_SEP, TOK_EOS};
    int nop[] = {TOK_NOOP, TOK_SEP, TOK_EOS};
    int all[] = {TOK_INSERT, TOK_TURN0, W, TOK_SEP, TOK_UPDATE, TOK_SLOT0 + 2, TOK_TURN0 + 1,
                 W + 1, TOK_SEP, TOK_DELETE, TOK_SLOT0, TOK_SEP, TOK_NOOP, TOK_SEP,
                 TOK_UPDATE, TOK_SLOT0 + 7, TOK_TURN0, W, TOK_SEP, TOK_EOS};
    bad |= put_tokens("manage", "seed_insert", ins, sizeof ins / sizeof ins[0]);
    bad |= put_tokens("manage", "seed_update", upd, sizeof upd / sizeof upd[0]);
    bad |= put_tokens("manage", "seed_delete", del, sizeof del / sizeof del[0]);
    bad |= put_tokens("manage", "seed_noop", nop, sizeof nop / sizeof nop[0]);
    bad |= put_tokens("manage", "seed_all", all, sizeof all / sizeof all[0]);
    if (bad) return 1;
    printf("make_seeds: wrote tests/fuzz/corpus/{episodes,vocab,checkpoint,state,runstate,extract,manage}\n");
    return 0;
}
