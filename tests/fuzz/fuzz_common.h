// tests/fuzz/fuzz_common.h: what the fuzz harnesses share.
//
// Each harness (tests/fuzz/fuzz_*.c) defines one `int fuzz_<name>(const uint8_t *, size_t)` and,
// when FUZZ_LIBFUZZER is defined (the clang build of `make fuzz`), the libFuzzer entry point. `make fuzz` builds them
// with clang -fsanitize=fuzzer,address,undefined,float-cast-overflow and runs each from its
// committed corpus (tests/fuzz/corpus/<name>/); tests/test_fuzz_seeds.c links the same harnesses
// (built by gcc like every test) and replays every corpus file in `make test`, so a crash
// input once committed stays a regression test even where clang is missing.
//
// The loaders read files, so a harness writes its input to one scratch file per process
// (fuzz_scratch_path) and hands the loader that path.
#ifndef MEMR2_FUZZ_COMMON_H
#define MEMR2_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Writes data to this process's scratch file for `name` and returns its path (static storage,
// one per name), or NULL if the file cannot be written (the harness then skips the input).
static inline const char *fuzz_write_scratch(const char *name, const uint8_t *data, size_t size) {
    static char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/memr2_fuzz_%s_%ld", dir && *dir ? dir : "/tmp", name,
             (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    int ok = size == 0 || fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0) ok = 0;
    return ok ? path : NULL;
}

static inline void fuzz_remove_scratch(const char *path) {
    if (path) unlink(path);
}

// Role outputs are token ids. One byte is one id (0..247: the 60 special tokens and the first
// words), and the byte 0xF8..0xFF starts a raw little-endian int32 id in the next 4 bytes, so
// negative and huge ids are reachable too. Returns the number of ids written (at most max).
static inline int fuzz_decode_tokens(const uint8_t *data, size_t size, int *out, int max) {
    int n = 0;
    size_t i = 0;
    while (i < size && n < max) {
        if (data[i] < 0xF8) {
            out[n++] = data[i++];
        } else if (i + 5 <= size) {
            uint32_t u = (uint32_t)data[i + 1] | (uint32_t)data[i + 2] << 8 |
                         (uint32_t)data[i + 3] << 16 | (uint32_t)data[i + 4] << 24;
            int32_t v;
            memcpy(&v, &u, sizeof v);
            out[n++] = v;
            i += 5;
        } else {
            break;
        }
    }
    return n;
}

// The role parsers' world: one session of 6 turns (D1:1 .. D1:6, two chunks of the default
// 4 turns), a vocabulary of its words, and a bank of 8 slots holding 3 facts (slots 0, 1, 2).
// Built on the stack of each call: no state survives between inputs.
#include "world_synth.h"
#include "memory.h"

typedef struct {
    Turn turns[6];
    Session session;
    Episode ep;
    Dataset ds;
    Vocab *vocab;
    Env env;
    MemoryBank bank;
} FuzzWorld;

static inline int fuzz_world_init(FuzzWorld *w) {
    static const char *const text[6] = {"alice lives in paris", "bob has a cat",
                                        "alice now lives in rome", "bob no longer has a cat",
                                        "carol works at a bank", "dan plays chess"};
    memset(w, 0, sizeof *w);
    for (int t = 0; t < 6; t++)
        w->turns[t] = (Turn){.speaker = (char *)(t % 2 ? "b" : "a"), .text = (char *)text[t],
                             .dia = DIA_CODE(1, t + 1)};
    w->session = (Session){.turns = w->turns, .n_turns = 6};
    w->ep = (Episode){.sample_id = (char *)"fuzz", .speaker_a = (char *)"a",
                      .speaker_b = (char *)"b", .sessions = &w->session, .n_sessions = 1};
    w->ds = (Dataset){.episodes = &w->ep, .n = 1};
    w->vocab = vocab_build(&w->ds, 0);
    if (!w->vocab) return -1;
    w->env.vocab = w->vocab;
    env_config_default(&w->env.cfg);
    if (memory_init(&w->bank, 8, w->env.cfg.slot_len) != 0) {
        vocab_free(w->vocab);
        return -1;
    }
    for (int t = 0; t < 3; t++) {
        int ids[24];
        int n = vocab_encode(w->vocab, text[t], ids, 24);
        MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = ids, .fact_len = n,
                       .evidence = DIA_CODE(1, t + 1)};
        if (memory_apply(&w->bank, &op, 1, NULL) != 0) abort();  // the fixture itself is wrong
    }
    return 0;
}

static inline void fuzz_world_free(FuzzWorld *w) {
    memory_free(&w->bank);
    vocab_free(w->vocab);
}

int fuzz_episodes(const uint8_t *data, size_t size);
int fuzz_bpe(const uint8_t *data, size_t size);
int fuzz_vocab(const uint8_t *data, size_t size);
int fuzz_checkpoint(const uint8_t *data, size_t size);
int fuzz_state(const uint8_t *data, size_t size);
int fuzz_runstate(const uint8_t *data, size_t size);
int fuzz_extract(const uint8_t *data, size_t size);
// kinds (may be NULL): per OpKind, how many parsed ops memory_apply accepted (the seed test
// checks that the committed corpus reaches UPDATE and DELETE).
int fuzz_manage_ops(const uint8_t *data, size_t size, int kinds[4]);
int fuzz_manage(const uint8_t *data, size_t size);
int fuzz_dialogue_parse(const uint8_t *data, size_t size);

#endif
