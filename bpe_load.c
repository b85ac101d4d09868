// bpe_load.c: reads and checks memr2's tokenizer file (format in bpe.h) and builds the lookup
// tables bpe.c encodes with: merges by pair, tokens by bytes, the token of each byte.
// Every read is bounds-checked; a truncated or corrupt file is refused with a message that names
// the file and the fault, never a crash.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"

#define MAX_FILE_BYTES (1u << 30)
#define MAX_VOCAB (1u << 24)
#define MAX_TOKEN_BYTES (1u << 16)
#define MAX_SYSTEM_BYTES (1u << 16)

void bpe_set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// ---- hash tables ------------------------------------------------------------------------------

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
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
        bpe_set_err(r->err, r->errlen, "%s: truncated (file ends inside %s)", r->path, what);
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
        bpe_set_err(r->err, r->errlen, "%s: %s has length %u (at most %u)", r->path, what, *len,
                    max);
        return -1;
    }
    if (r->left < *len) {
        bpe_set_err(r->err, r->errlen, "%s: truncated (file ends inside %s)", r->path, what);
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
        bpe_set_err(r->err, r->errlen, "%s: %s contains a NUL byte", r->path, what);
        return -1;
    }
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        bpe_set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        bpe_set_err(err, errlen, "%s: cannot determine its size", path);
    } else if ((unsigned long)n > MAX_FILE_BYTES) {
        bpe_set_err(err, errlen, "%s: %ld bytes is too large for a tokenizer", path, n);
    } else if (!(buf = malloc(n ? (size_t)n : 1))) {
        bpe_set_err(err, errlen, "%s: out of memory for %ld bytes", path, n);
    } else if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        bpe_set_err(err, errlen, "%s: read error", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

static int parse_header(Bpe *t, Reader *r) {
    if (r->left < 8 || memcmp(r->p, BPE_MAGIC, 8) != 0) {
        bpe_set_err(r->err, r->errlen, "%s: not a memr2 tokenizer (bad magic)", r->path);
        return -1;
    }
    r->p += 8;
    r->left -= 8;
    uint32_t version;
    if (rd_u32(r, &version, "the header")) return -1;
    if (version != BPE_VERSION) {
        bpe_set_err(r->err, r->errlen, "%s: version %u, this build reads version %u", r->path,
                    version, BPE_VERSION);
        return -1;
    }
    if (rd_u32(r, &t->V, "the header") || rd_u32(r, &t->n_merges, "the header") ||
        rd_u32(r, &t->n_special, "the header") || rd_u32(r, &t->flags, "the header") ||
        rd_u32(r, &t->bos, "the header") || rd_u32(r, &t->eos, "the header"))
        return -1;
    const char *bad = NULL;
    if (t->V < 256 || t->V > MAX_VOCAB)
        bad = "vocabulary size";
    else if (t->n_merges > MAX_VOCAB)
        bad = "merge count";
    else if (t->n_special > t->V)
        bad = "special token count";
    else if (t->flags & ~(BPE_FLAG_IGNORE_MERGES | BPE_FLAG_NFC))
        bad = "flags";
    else if (t->bos != BPE_NONE && t->bos >= t->V)
        bad = "bos id";
    else if (t->eos != BPE_NONE && t->eos >= t->V)
        bad = "eos id";
    if (bad) {
        bpe_set_err(r->err, r->errlen,
                    "%s: bad %s in the header (vocab %u, merges %u, special %u, "
                    "flags %u, bos %u, eos %u)",
                    r->path, bad, t->V, t->n_merges, t->n_special, t->flags, t->bos, t->eos);
        return -1;
    }
    if (rd_name(r, t->pre, "the pre-tokenizer name") || rd_name(r, t->chat, "the chat kind"))
        return -1;
    if (t->chat[0] && strcmp(t->chat, "chatml") != 0) {
        bpe_set_err(r->err, r->errlen, "%s: unknown chat template kind '%s'", r->path, t->chat);
        return -1;
    }
    const unsigned char *sys;
    uint32_t sys_len;
    if (rd_blob(r, &sys, &sys_len, MAX_SYSTEM_BYTES, "the default system message")) return -1;
    if (!(t->system = malloc(sys_len + 1))) {
        bpe_set_err(r->err, r->errlen, "%s: out of memory", r->path);
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
        bpe_set_err(r->err, r->errlen, "%s: out of memory for %u tokens", r->path, t->V);
        return -1;
    }
    for (uint32_t i = 0; i < t->V; i++) {
        if (rd_blob(r, &t->tok[i], &t->tok_len[i], MAX_TOKEN_BYTES, "the vocabulary")) return -1;
        if (t->tok_len[i] == 0) {
            bpe_set_err(r->err, r->errlen, "%s: token %u is empty", r->path, i);
            return -1;
        }
    }
    return 0;
}

static int parse_merges(Bpe *t, Reader *r) {
    if (r->left / 12 < t->n_merges) {
        bpe_set_err(r->err, r->errlen, "%s: truncated (%u merges need %zu bytes, %zu left)",
                    r->path, t->n_merges, (size_t)t->n_merges * 12, r->left);
        return -1;
    }
    t->mcap = pow2_at_least(2 * (size_t)t->n_merges + 1);
    t->merges = malloc((t->n_merges ? t->n_merges : 1) * sizeof *t->merges);
    t->mkey = malloc(t->mcap * sizeof *t->mkey);
    t->mrank = malloc(t->mcap * sizeof *t->mrank);
    if (!t->merges || !t->mkey || !t->mrank) {
        bpe_set_err(r->err, r->errlen, "%s: out of memory for %u merges", r->path, t->n_merges);
        return -1;
    }
    memset(t->mkey, 0xff, t->mcap * sizeof *t->mkey);
    for (uint32_t k = 0; k < t->n_merges; k++) {
        Merge *m = &t->merges[k];
        if (rd_u32(r, &m->left, "the merges") || rd_u32(r, &m->right, "the merges") ||
            rd_u32(r, &m->result, "the merges"))
            return -1;
        if (m->left >= t->V || m->right >= t->V || m->result >= t->V) {
            bpe_set_err(r->err, r->errlen, "%s: merge %u has an id outside [0, %u)", r->path, k,
                        t->V);
            return -1;
        }
        uint32_t la = t->tok_len[m->left], lb = t->tok_len[m->right];
        if (t->tok_len[m->result] != la + lb || memcmp(t->tok[m->result], t->tok[m->left], la) ||
            memcmp(t->tok[m->result] + la, t->tok[m->right], lb)) {
            bpe_set_err(r->err, r->errlen, "%s: merge %u: token %u is not tokens %u + %u", r->path,
                        k, m->result, m->left, m->right);
            return -1;
        }
        uint64_t key = (uint64_t)m->left << 32 | m->right;
        size_t i = mix64(key) & (t->mcap - 1);
        while (t->mkey[i] != UINT64_MAX && t->mkey[i] != key) i = (i + 1) & (t->mcap - 1);
        if (t->mkey[i] == key) {
            bpe_set_err(r->err, r->errlen, "%s: merge %u repeats the pair of merge %u", r->path, k,
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
    t->plain = malloc(t->n_special ? t->n_special : 1);
    if (!t->special || !t->plain) {
        bpe_set_err(r->err, r->errlen, "%s: out of memory", r->path);
        return -1;
    }
    for (uint32_t k = 0; k < t->n_special; k++) {
        if (rd_u32(r, &t->special[k], "the special tokens")) return -1;
        t->plain[k] = (unsigned char)(t->special[k] >> 31);
        t->special[k] &= ~BPE_ADDED_PLAIN;
        if (t->special[k] >= t->V) {
            bpe_set_err(r->err, r->errlen, "%s: special token %u has id %u outside [0, %u)",
                        r->path, k, t->special[k], t->V);
            return -1;
        }
        t->special_first[t->tok[t->special[k]][0]] = 1;
    }
    if (r->left) {
        bpe_set_err(r->err, r->errlen, "%s: %zu unexpected bytes after the special tokens", r->path,
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
        bpe_set_err(err, errlen, "%s: out of memory", path);
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
        bpe_set_err(err, errlen,
                    "%s: only %d of the 256 bytes have a token (not a byte-level "
                    "vocabulary)",
                    path, known);
        return -1;
    }
    return 0;
}

// Takes ownership of file (malloc'd, len bytes); path names it in messages.
static Bpe *load_owned(unsigned char *file, size_t len, const char *path, char *err,
                       size_t errlen) {
    Bpe *t = calloc(1, sizeof *t);
    if (!t) {
        free(file);
        bpe_set_err(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    t->file = file;
    t->file_len = len;
    t->hash = fnv1a64(t->file, t->file_len);
    Reader r = {t->file, t->file_len, path, err, errlen};
    if (parse_header(t, &r) || parse_vocab(t, &r) || parse_merges(t, &r) || parse_special(t, &r) ||
        build_vocab_index(t, path, err, errlen) || bpe_pre_compile(t, path, err, errlen))
        goto fail;
    return t;
fail:
    bpe_free(t);
    return NULL;
}

Bpe *bpe_load(const char *path, char *err, size_t errlen) {
    size_t len;
    unsigned char *file = read_file(path, &len, err, errlen);
    return file ? load_owned(file, len, path, err, errlen) : NULL;
}

Bpe *bpe_load_mem(const void *data, size_t len, const char *name, char *err, size_t errlen) {
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) {
        bpe_set_err(err, errlen, "%s: out of memory for %zu bytes", name, len);
        return NULL;
    }
    if (len) memcpy(copy, data, len);
    return load_owned(copy, len, name, err, errlen);
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
    free(t->plain);
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
