// bpe_internal.h: what bpe_load.c (the .tok file, tables) and bpe.c (encode, decode, chat)
// share; not part of the API (that is bpe.h).
#ifndef MEMR2_BPE_INTERNAL_H
#define MEMR2_BPE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <string.h>

#include "bpe.h"

#define MAX_NAME_BYTES 64u
#define MAX_STAGES 2

typedef struct {
    uint32_t left, right, result;
} Merge;

struct Bpe {
    unsigned char *file;  // the whole file; token bytes point into it
    size_t file_len;
    uint64_t hash;
    uint32_t V, n_merges, n_special, flags, bos, eos;
    char pre[MAX_NAME_BYTES + 1], chat[MAX_NAME_BYTES + 1];
    char *system;                      // NUL-terminated, points into its own allocation
    const unsigned char **tok;         // (V) bytes of each id
    uint32_t *tok_len;                 // (V)
    Merge *merges;                     // (n_merges) by rank
    uint32_t *special;                 // (n_special) ids of the added tokens
    unsigned char special_first[256];  // 1 for a byte some added token starts with
    unsigned char *plain;              // (n_special) 1: added but not special (still matched by
                           // bpe_encode_ordinary, as HF does with encode_special_tokens)
    uint64_t *mkey;   // (mcap) merge table: left << 32 | right, UINT64_MAX empty
    uint32_t *mrank;  // (mcap)
    size_t mcap;
    int32_t *vslot;  // (vcap) bytes -> id table over non-special tokens, -1 empty
    size_t vcap;
    int32_t byte_id[256];  // the token of each single byte
    pcre2_code *stage[MAX_STAGES];
    int n_stages;
};

void bpe_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Compiles the regex stages of t->pre (bpe.c); -1 with a message for an unknown name.
int bpe_pre_compile(Bpe *t, const char *path, char *err, size_t errlen);

static inline uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// splitmix64's finaliser: spreads the (left, right) pair keys over the table
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The rank of the merge (left, right), or -1.
static inline int64_t merge_rank(const Bpe *t, uint32_t left, uint32_t right) {
    uint64_t key = (uint64_t)left << 32 | right;
    for (size_t i = mix64(key) & (t->mcap - 1);; i = (i + 1) & (t->mcap - 1)) {
        if (t->mkey[i] == key) return t->mrank[i];
        if (t->mkey[i] == UINT64_MAX) return -1;
    }
}

// The non-special token whose bytes are p[0..n), or -1.
static inline int32_t vocab_find(const Bpe *t, const unsigned char *p, size_t n) {
    for (size_t i = fnv1a64(p, n) & (t->vcap - 1);; i = (i + 1) & (t->vcap - 1)) {
        int32_t id = t->vslot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && memcmp(t->tok[id], p, n) == 0) return id;
    }
}

#endif
