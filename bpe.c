// bpe.c: byte-level BPE tokenizer; the file format and the API are in bpe.h.
//
// Encoding follows Hugging Face `tokenizers` step by step, so the ids are the same:
//   1. added (special) tokens are cut out of the text first, leftmost-longest;
//   2. each stretch between them goes through the pre-tokenizer: a list of regex stages, each
//      splitting every piece of the previous stage into its matches and the gaps between them
//      (HF "Isolated" behaviour; SmolLM2 = individual digits, then GPT-2's regex);
//   3. each piece starts as one symbol per byte and merges the adjacent pair of lowest rank,
//      leftmost first, until no pair has a merge (HF's Word::merge_all, with a binary heap so a
//      long piece costs n log n, not n^2).
// Build: cc -c bpe.c; link with -lpcre2-8.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe.h"

#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1u << 30)
#define MAX_VOCAB (1u << 24)
#define MAX_TOKEN_BYTES (1u << 16)
#define MAX_NAME_BYTES 64u
#define MAX_SYSTEM_BYTES (1u << 16)
#define MAX_STAGES 2

// The split patterns of the Hugging Face tokenizer.json files these names come from.
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"           \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"                \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const struct {
    const char *name;
    int n;
    const char *stages[MAX_STAGES];
} PRE_KINDS[] = {
    {"smollm", 2, {"\\p{N}", RE_GPT2}},  // HF: Sequence[Digits(individual), ByteLevel]
    {"gpt2", 1, {RE_GPT2, NULL}},
    {"llama-bpe", 1, {RE_LLAMA3, NULL}},
    {"qwen2", 1, {RE_QWEN2, NULL}},
};

typedef struct {
    uint32_t left, right, result;
} Merge;

struct Bpe {
    unsigned char *file;  // the whole file; token bytes point into it
    size_t file_len;
    uint64_t hash;
    uint32_t V, n_merges, n_special, flags, bos, eos;
    char pre[MAX_NAME_BYTES + 1], chat[MAX_NAME_BYTES + 1];
    char *system;                   // NUL-terminated, points into its own allocation
    const unsigned char **tok;      // (V) bytes of each id
    uint32_t *tok_len;              // (V)
    Merge *merges;                  // (n_merges) by rank
    uint32_t *special;              // (n_special) ids
    uint64_t *mkey;                 // (mcap) merge table: left << 32 | right, UINT64_MAX empty
    uint32_t *mrank;                // (mcap)
    size_t mcap;
    int32_t *vslot;                 // (vcap) bytes -> id table over non-special tokens, -1 empty
    size_t vcap;
    int32_t byte_id[256];           // the token of each single byte
    pcre2_code *stage[MAX_STAGES];
    int n_stages;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// ---- hash tables ------------------------------------------------------------------------------

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: spreads pair keys over the table
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The rank of the merge (left, right), or -1.
static int64_t merge_rank(const Bpe *t, uint32_t left, uint32_t right) {
    uint64_t key = (uint64_t)left << 32 | right;
    for (size_t i = mix64(key) & (t->mcap - 1);; i = (i + 1) & (t->mcap - 1)) {
        if (t->mkey[i] == key) return t->mrank[i];
        if (t->mkey[i] == UINT64_MAX) return -1;
    }
}

// The non-special token whose bytes are p[0..n), or -1.
static int32_t vocab_find(const Bpe *t, const unsigned char *p, size_t n) {
    for (size_t i = fnv1a64(p, n) & (t->vcap - 1);; i = (i + 1) & (t->vcap - 1)) {
        int32_t id = t->vslot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && memcmp(t->tok[id], p, n) == 0) return id;
    }
}

// ---- loading ----------------------------------------------------------------------------------

typedef struct {
    const unsigned char *p;
    size_t left;
    const char *path;
    char *err;
    size_t errlen;
} Reader;

static int rd_u32(Reader *r, uint32_t *v, const char *what) {
    if (r->left < 4) {
        set_err(r->err, r->errlen, "%s: truncated (file ends inside %s)", r->path, what);
        return -1;
    }
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
         (uint32_t)r->p[3] << 24;
    r->p += 4;
    r->left -= 4;
    return 0;
}

// A length-prefixed byte string of at most max bytes; *out points into the file.
static int rd_blob(Reader *r, const unsigned char **out, uint32_t *len, uint32_t max,
                   const char *what) {
    if (rd_u32(r, len, what)) return -1;
    if (*len > max) {
        set_err(r->err, r->errlen, "%s: %s has length %u (at most %u)", r->path, what, *len, max);
        return -1;
    }
    if (r->left < *len) {
        set_err(r->err, r->errlen, "%s: truncated (file ends inside %s)", r->path, what);
        return -1;
    }
    *out = r->p;
    r->p += *len;
    r->left -= *len;
    return 0;
}

static int rd_name(Reader *r, char *dst, const char *what) {
    const unsigned char *p;
    uint32_t n;
    if (rd_blob(r, &p, &n, MAX_NAME_BYTES, what)) return -1;
    memcpy(dst, p, n);
    dst[n] = '\0';
    if (strlen(dst) != n) {
        set_err(r->err, r->errlen, "%s: %s contains a NUL byte", r->path, what);
        return -1;
    }
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        set_err(err, errlen, "%s: cannot determine its size", path);
    } else if ((unsigned long)n > MAX_FILE_BYTES) {
        set_err(err, errlen, "%s: %ld bytes is too large for a tokenizer", path, n);
    } else if (!(buf = malloc(n ? (size_t)n : 1))) {
        set_err(err, errlen, "%s: out of memory for %ld bytes", path, n);
    } else if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        set_err(err, errlen, "%s: read error", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

static int parse_header(Bpe *t, Reader *r) {
    if (r->left < 8 || memcmp(r->p, BPE_MAGIC, 8) != 0) {
        set_err(r->err, r->errlen, "%s: not a memr2 tokenizer (bad magic)", r->path);
        return -1;
    }
    r->p += 8;
    r->left -= 8;
    uint32_t version;
    if (rd_u32(r, &version, "the header")) return -1;
    if (version != BPE_VERSION) {
        set_err(r->err, r->errlen, "%s: version %u, this build reads version %u", r->path,
                version, BPE_VERSION);
        return -1;
    }
    if (rd_u32(r, &t->V, "the header") || rd_u32(r, &t->n_merges, "the header") ||
        rd_u32(r, &t->n_special, "the header") || rd_u32(r, &t->flags, "the header") ||
        rd_u32(r, &t->bos, "the header") || rd_u32(r, &t->eos, "the header"))
        return -1;
    const char *bad = NULL;
    if (t->V < 256 || t->V > MAX_VOCAB) bad = "vocabulary size";
    else if (t->n_merges > MAX_VOCAB) bad = "merge count";
    else if (t->n_special > t->V) bad = "special token count";
    else if (t->flags & ~(BPE_FLAG_IGNORE_MERGES | BPE_FLAG_NFC)) bad = "flags";
    else if (t->bos != BPE_NONE && t->bos >= t->V) bad = "bos id";
    else if (t->eos != BPE_NONE && t->eos >= t->V) bad = "eos id";
    if (bad) {
        set_err(r->err, r->errlen, "%s: bad %s in the header (vocab %u, merges %u, special %u, "
                "flags %u, bos %u, eos %u)", r->path, bad, t->V, t->n_merges, t->n_special,
                t->flags, t->bos, t->eos);
        return -1;
    }
    if (rd_name(r, t->pre, "the pre-tokenizer name") || rd_name(r, t->chat, "the chat kind"))
        return -1;
    if (t->chat[0] && strcmp(t->chat, "chatml") != 0) {
        set_err(r->err, r->errlen, "%s: unknown chat template kind '%s'", r->path, t->chat);
        return -1;
    }
    const unsigned char *sys;
    uint32_t sys_len;
    if (rd_blob(r, &sys, &sys_len, MAX_SYSTEM_BYTES, "the default system message")) return -1;
    if (!(t->system = malloc(sys_len + 1))) {
        set_err(r->err, r->errlen, "%s: out of memory", r->path);
        return -1;
    }
    memcpy(t->system, sys, sys_len);
    t->system[sys_len] = '\0';
    return 0;
}

static int parse_vocab(Bpe *t, Reader *r) {
    t->tok = malloc(t->V * sizeof *t->tok);
    t->tok_len = malloc(t->V * sizeof *t->tok_len);
    if (!t->tok || !t->tok_len) {
        set_err(r->err, r->errlen, "%s: out of memory for %u tokens", r->path, t->V);
        return -1;
    }
    for (uint32_t i = 0; i < t->V; i++) {
        if (rd_blob(r, &t->tok[i], &t->tok_len[i], MAX_TOKEN_BYTES, "the vocabulary")) return -1;
        if (t->tok_len[i] == 0) {
            set_err(r->err, r->errlen, "%s: token %u is empty", r->path, i);
            return -1;
        }
    }
    return 0;
}

static int parse_merges(Bpe *t, Reader *r) {
    if (r->left / 12 < t->n_merges) {
        set_err(r->err, r->errlen, "%s: truncated (%u merges need %zu bytes, %zu left)", r->path,
                t->n_merges, (size_t)t->n_merges * 12, r->left);
        return -1;
    }
    t->mcap = pow2_at_least(2 * (size_t)t->n_merges + 1);
    t->merges = malloc((t->n_merges ? t->n_merges : 1) * sizeof *t->merges);
    t->mkey = malloc(t->mcap * sizeof *t->mkey);
    t->mrank = malloc(t->mcap * sizeof *t->mrank);
    if (!t->merges || !t->mkey || !t->mrank) {
        set_err(r->err, r->errlen, "%s: out of memory for %u merges", r->path, t->n_merges);
        return -1;
    }
    memset(t->mkey, 0xff, t->mcap * sizeof *t->mkey);
    for (uint32_t k = 0; k < t->n_merges; k++) {
        Merge *m = &t->merges[k];
        if (rd_u32(r, &m->left, "the merges") || rd_u32(r, &m->right, "the merges") ||
            rd_u32(r, &m->result, "the merges"))
            return -1;
        if (m->left >= t->V || m->right >= t->V || m->result >= t->V) {
            set_err(r->err, r->errlen, "%s: merge %u has an id outside [0, %u)", r->path, k, t->V);
            return -1;
        }
        uint32_t la = t->tok_len[m->left], lb = t->tok_len[m->right];
        if (t->tok_len[m->result] != la + lb || memcmp(t->tok[m->result], t->tok[m->left], la) ||
            memcmp(t->tok[m->result] + la, t->tok[m->right], lb)) {
            set_err(r->err, r->errlen, "%s: merge %u: token %u is not tokens %u + %u", r->path, k,
                    m->result, m->left, m->right);
            return -1;
        }
        uint64_t key = (uint64_t)m->left << 32 | m->right;
        size_t i = mix64(key) & (t->mcap - 1);
        while (t->mkey[i] != UINT64_MAX && t->mkey[i] != key) i = (i + 1) & (t->mcap - 1);
        if (t->mkey[i] == key) {
            set_err(r->err, r->errlen, "%s: merge %u repeats the pair of merge %u", r->path, k,
                    t->mrank[i]);
            return -1;
        }
        t->mkey[i] = key;
        t->mrank[i] = k;
    }
    return 0;
}

static int parse_special(Bpe *t, Reader *r) {
    t->special = malloc((t->n_special ? t->n_special : 1) * sizeof *t->special);
    if (!t->special) {
        set_err(r->err, r->errlen, "%s: out of memory", r->path);
        return -1;
    }
    for (uint32_t k = 0; k < t->n_special; k++) {
        if (rd_u32(r, &t->special[k], "the special tokens")) return -1;
        if (t->special[k] >= t->V) {
            set_err(r->err, r->errlen, "%s: special token %u has id %u outside [0, %u)", r->path,
                    k, t->special[k], t->V);
            return -1;
        }
    }
    if (r->left) {
        set_err(r->err, r->errlen, "%s: %zu unexpected bytes after the special tokens", r->path,
                r->left);
        return -1;
    }
    return 0;
}

// bytes -> id over the ordinary tokens (the first id wins a tie), and the single-byte tokens.
static int build_vocab_index(Bpe *t, const char *path, char *err, size_t errlen) {
    unsigned char *is_special = calloc(t->V, 1);
    t->vcap = pow2_at_least(2 * (size_t)t->V);
    t->vslot = malloc(t->vcap * sizeof *t->vslot);
    if (!is_special || !t->vslot) {
        free(is_special);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (uint32_t k = 0; k < t->n_special; k++) is_special[t->special[k]] = 1;
    memset(t->vslot, 0xff, t->vcap * sizeof *t->vslot);
    for (uint32_t id = 0; id < t->V; id++) {
        if (is_special[id] || vocab_find(t, t->tok[id], t->tok_len[id]) >= 0) continue;
        size_t i = fnv1a64(t->tok[id], t->tok_len[id]) & (t->vcap - 1);
        while (t->vslot[i] >= 0) i = (i + 1) & (t->vcap - 1);
        t->vslot[i] = (int32_t)id;
    }
    free(is_special);
    // SmolLM2's vocabulary lacks 21 bytes (0x04, 0xf1, ...); HF then drops them (no unk token)
    int known = 0;
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        known += (t->byte_id[b] = vocab_find(t, &c, 1)) >= 0;
    }
    if (known < 128) {
        set_err(err, errlen, "%s: only %d of the 256 bytes have a token (not a byte-level "
                "vocabulary)", path, known);
        return -1;
    }
    return 0;
}

static int compile_pre(Bpe *t, const char *path, char *err, size_t errlen) {
    int k = -1;
    for (size_t i = 0; i < sizeof PRE_KINDS / sizeof PRE_KINDS[0]; i++)
        if (strcmp(PRE_KINDS[i].name, t->pre) == 0) k = (int)i;
    if (k < 0) {
        set_err(err, errlen, "%s: unknown pre-tokenizer '%s' (memr2 knows smollm, gpt2, "
                "llama-bpe, qwen2)", path, t->pre);
        return -1;
    }
    t->n_stages = PRE_KINDS[k].n;
    for (int s = 0; s < t->n_stages; s++) {
        int code;
        PCRE2_SIZE off;
        // UCP: \s, \p{L} etc. are Unicode-aware like HF's regexes; MATCH_INVALID_UTF: invalid
        // UTF-8 in the input is skipped by the matcher instead of being an error.
        t->stage[s] = pcre2_compile((PCRE2_SPTR)PRE_KINDS[k].stages[s], PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off,
                                    NULL);
        if (!t->stage[s]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            set_err(err, errlen, "%s: PCRE2 rejects the %s pattern at %zu: %s", path, t->pre,
                    (size_t)off, (const char *)msg);
            return -1;
        }
        pcre2_jit_compile(t->stage[s], PCRE2_JIT_COMPLETE);  // optional: falls back if no JIT
    }
    return 0;
}

Bpe *bpe_load(const char *path, char *err, size_t errlen) {
    Bpe *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    if (!(t->file = read_file(path, &t->file_len, err, errlen))) goto fail;
    t->hash = fnv1a64(t->file, t->file_len);
    Reader r = {t->file, t->file_len, path, err, errlen};
    if (parse_header(t, &r) || parse_vocab(t, &r) || parse_merges(t, &r) ||
        parse_special(t, &r) || build_vocab_index(t, path, err, errlen) ||
        compile_pre(t, path, err, errlen))
        goto fail;
    return t;
fail:
    bpe_free(t);
    return NULL;
}

void bpe_free(Bpe *t) {
    if (!t) return;
    for (int s = 0; s < MAX_STAGES; s++) pcre2_code_free(t->stage[s]);
    free(t->file);
    free(t->system);
    free(t->tok);
    free(t->tok_len);
    free(t->merges);
    free(t->special);
    free(t->mkey);
    free(t->mrank);
    free(t->vslot);
    free(t);
}

int bpe_vocab_size(const Bpe *t) { return (int)t->V; }
uint64_t bpe_hash(const Bpe *t) { return t->hash; }
const char *bpe_pre_name(const Bpe *t) { return t->pre; }
int bpe_bos(const Bpe *t) { return t->bos == BPE_NONE ? -1 : (int)t->bos; }
int bpe_eos(const Bpe *t) { return t->eos == BPE_NONE ? -1 : (int)t->eos; }

int bpe_special_id(const Bpe *t, const char *text) {
    size_t n = strlen(text);
    for (uint32_t k = 0; k < t->n_special; k++) {
        uint32_t id = t->special[k];
        if (t->tok_len[id] == n && memcmp(t->tok[id], text, n) == 0) return (int)id;
    }
    return -1;
}

const char *bpe_token_bytes(const Bpe *t, int id, size_t *len) {
    if (id < 0 || (uint32_t)id >= t->V) return NULL;
    *len = t->tok_len[id];
    return (const char *)t->tok[id];
}

// ---- encoding -------------------------------------------------------------------------------

static int bpe_ids_push(BpeIds *o, int32_t id) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        int32_t *p = realloc(o->ids, cap * sizeof *p);
        if (!p) return -1;
        o->ids = p;
        o->cap = cap;
    }
    o->ids[o->n++] = id;
    return 0;
}

void bpe_ids_free(BpeIds *ids) {
    free(ids->ids);
    ids->ids = NULL;
    ids->n = ids->cap = 0;
}

typedef struct {
    uint32_t rank, pos;
    int32_t id;  // the merge's result when it was queued
} HeapItem;

// Scratch of one encode call, grown to the longest piece seen.
typedef struct {
    const Bpe *t;
    BpeIds *out;
    int32_t *sym, *prev, *next;  // (n) symbol id (-1: merged away), linked list over symbols
    HeapItem *heap;               // (3n) every merge adds at most two candidate pairs
    size_t cap, heap_n;
    pcre2_match_data *md;
    char *err;
    size_t errlen;
} Enc;

static int heap_less(const HeapItem *a, const HeapItem *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(Enc *e, uint32_t pos) {
    uint32_t q = (uint32_t)e->next[pos];
    int64_t rank = merge_rank(e->t, (uint32_t)e->sym[pos], (uint32_t)e->sym[q]);
    if (rank < 0) return;
    HeapItem it = {(uint32_t)rank, pos, (int32_t)e->t->merges[rank].result};
    size_t i = e->heap_n++;
    while (i > 0 && heap_less(&it, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = it;
}

static HeapItem heap_pop(Enc *e) {
    HeapItem top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!heap_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static int enc_reserve(Enc *e, size_t n) {
    if (n <= e->cap) return 0;
    size_t cap = n < 2 * e->cap ? 2 * e->cap : n;
    int32_t *sym = realloc(e->sym, cap * sizeof *sym);
    if (sym) e->sym = sym;
    int32_t *prev = realloc(e->prev, cap * sizeof *prev);
    if (prev) e->prev = prev;
    int32_t *next = realloc(e->next, cap * sizeof *next);
    if (next) e->next = next;
    HeapItem *heap = cap < SIZE_MAX / (3 * sizeof *heap) ? realloc(e->heap, 3 * cap * sizeof *heap)
                                                         : NULL;
    if (heap) e->heap = heap;
    if (!sym || !prev || !next || !heap) {
        set_err(e->err, e->errlen, "bpe_encode: out of memory for a piece of %zu bytes", n);
        return -1;
    }
    e->cap = cap;
    return 0;
}

// BPE on the bytes of one pre-tokenized piece; appends its ids.
static int bpe_piece(Enc *e, const unsigned char *p, size_t n) {
    const Bpe *t = e->t;
    if (n == 0) return 0;
    if (n > INT32_MAX) {
        set_err(e->err, e->errlen, "bpe_encode: a piece of %zu bytes is too long", n);
        return -1;
    }
    if (t->flags & BPE_FLAG_IGNORE_MERGES) {
        int32_t id = vocab_find(t, p, n);
        if (id >= 0) return bpe_ids_push(e->out, id) ? (set_err(e->err, e->errlen,
                                                                "bpe_encode: out of memory"), -1)
                                                     : 0;
    }
    if (enc_reserve(e, n)) return -1;
    e->heap_n = 0;
    size_t m = 0;  // bytes without a token are skipped, as HF does without an unk token
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[p[i]] >= 0) e->sym[m++] = t->byte_id[p[i]];
    if (m == 0) return 0;
    for (size_t i = 0; i < m; i++) {
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < m; i++) heap_push(e, (uint32_t)i);
    while (e->heap_n) {
        HeapItem top = heap_pop(e);
        uint32_t a = top.pos;
        if (e->sym[a] < 0 || e->next[a] < 0) continue;  // merged away, or now last
        uint32_t b = (uint32_t)e->next[a];
        // stale entry: the pair at a changed since it was queued (HF checks the result id only)
        int64_t rank = merge_rank(t, (uint32_t)e->sym[a], (uint32_t)e->sym[b]);
        if (rank < 0 || (int32_t)t->merges[rank].result != top.id) continue;
        e->sym[a] = top.id;
        e->sym[b] = -1;
        e->next[a] = e->next[b];
        if (e->next[b] >= 0) e->prev[e->next[b]] = (int32_t)a;
        if (e->prev[a] >= 0) heap_push(e, (uint32_t)e->prev[a]);
        if (e->next[a] >= 0) heap_push(e, a);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) {
        if (bpe_ids_push(e->out, e->sym[i])) {
            set_err(e->err, e->errlen, "bpe_encode: out of memory");
            return -1;
        }
    }
    return 0;
}

// Pre-tokenizer stage s on text[0..n): every match and every gap between matches becomes a piece
// for stage s+1; after the last stage, pieces go to BPE.
static int pre_split(Enc *e, int s, const unsigned char *text, size_t n) {
    if (s == e->t->n_stages) return bpe_piece(e, text, n);
    size_t pos = 0;
    while (pos < n) {
        int rc = pcre2_match(e->t->stage[s], text, n, pos, 0, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            set_err(e->err, e->errlen, "bpe_encode: PCRE2 match failed: %s", (const char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {  // no pattern matches empty, but never loop forever if one did
            me = ms + 1;
            while (me < n && (text[me] & 0xC0) == 0x80) me++;
        }
        if (ms > pos && pre_split(e, s + 1, text + pos, ms - pos)) return -1;
        if (pre_split(e, s + 1, text + ms, me - ms)) return -1;
        pos = me;
    }
    return pos < n ? pre_split(e, s + 1, text + pos, n - pos) : 0;
}

// The leftmost-longest special token in text[from..n): its start and id, or start = n.
static size_t find_special(const Bpe *t, const unsigned char *text, size_t n, size_t from,
                           uint32_t *id) {
    for (size_t i = from; i < n; i++) {
        size_t best = 0;
        for (uint32_t k = 0; k < t->n_special; k++) {
            uint32_t s = t->special[k], len = t->tok_len[s];
            if (len > best && len <= n - i && t->tok[s][0] == text[i] &&
                memcmp(t->tok[s], text + i, len) == 0) {
                best = len;
                *id = s;
            }
        }
        if (best) return i;
    }
    return n;
}

int bpe_encode(const Bpe *t, const char *text, size_t len, BpeIds *out, char *err,
               size_t errlen) {
    Enc e = {.t = t, .out = out, .err = err, .errlen = errlen};
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) {
        set_err(err, errlen, "bpe_encode: out of memory");
        return -1;
    }
    const unsigned char *p = (const unsigned char *)text;
    int rc = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        uint32_t id = 0;
        size_t s = find_special(t, p, len, pos, &id);
        if (s > pos) rc = pre_split(&e, 0, p + pos, s - pos);
        if (rc == 0 && s < len) {
            if (bpe_ids_push(out, (int32_t)id)) {
                set_err(err, errlen, "bpe_encode: out of memory");
                rc = -1;
            }
            s += t->tok_len[id];
        }
        pos = s;
    }
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    return rc;
}

// ---- decoding ---------------------------------------------------------------------------------

int bpe_decode(const Bpe *t, const int32_t *ids, size_t n, char **out, size_t *out_len, char *err,
               size_t errlen) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->V) {
            set_err(err, errlen, "bpe_decode: id %d at %zu outside [0, %u)", ids[i], i, t->V);
            return -1;
        }
        total += t->tok_len[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) {
        set_err(err, errlen, "bpe_decode: out of memory for %zu bytes", total);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(buf + k, t->tok[ids[i]], t->tok_len[ids[i]]);
        k += t->tok_len[ids[i]];
    }
    buf[k] = '\0';
    *out = buf;
    *out_len = k;
    return 0;
}

// ---- chat template ----------------------------------------------------------------------------

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} Str;

static void str_add(Str *s, const char *a) {
    size_t k = strlen(a);
    if (s->oom) return;
    if (s->n + k + 1 > s->cap) {
        size_t cap = 2 * (s->n + k + 1);
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, a, k + 1);
    s->n += k;
}

// SmolLM2-Instruct's Jinja template (GGUF tokenizer.chat_template), spelled out:
//   {% if loop.first and messages[0]['role'] != 'system' %}<|im_start|>system\nDEFAULT<|im_end|>\n
//   {% endif %}<|im_start|>ROLE\nCONTENT<|im_end|>\n ... {% if add_generation_prompt %}
//   <|im_start|>assistant\n
int bpe_chat_render(const Bpe *t, const BpeMessage *msgs, int n, int add_generation_prompt,
                    char **out, char *err, size_t errlen) {
    if (strcmp(t->chat, "chatml") != 0) {
        set_err(err, errlen, "bpe_chat: this tokenizer has no chat template memr2 can render");
        return -1;
    }
    Str s = {0};
    str_add(&s, "");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            free(s.p);
            set_err(err, errlen, "bpe_chat: message %d has no role or content", i);
            return -1;
        }
        if (i == 0 && strcmp(msgs[0].role, "system") != 0 && t->system[0]) {
            str_add(&s, "<|im_start|>system\n");
            str_add(&s, t->system);
            str_add(&s, "<|im_end|>\n");
        }
        str_add(&s, "<|im_start|>");
        str_add(&s, msgs[i].role);
        str_add(&s, "\n");
        str_add(&s, msgs[i].content);
        str_add(&s, "<|im_end|>\n");
    }
    if (add_generation_prompt) str_add(&s, "<|im_start|>assistant\n");
    if (s.oom) {
        free(s.p);
        set_err(err, errlen, "bpe_chat: out of memory");
        return -1;
    }
    *out = s.p;
    return 0;
}

int bpe_chat(const Bpe *t, const BpeMessage *msgs, int n, int add_generation_prompt, BpeIds *out,
             char *err, size_t errlen) {
    char *text;
    if (bpe_chat_render(t, msgs, n, add_generation_prompt, &text, err, errlen)) return -1;
    int rc = bpe_encode(t, text, strlen(text), out, err, errlen);
    free(text);
    return rc;
}
