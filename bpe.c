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
// Build: cc -c bpe.c bpe_load.c; link with -lpcre2-8 -lunistring.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uninorm.h>

#include "bpe_internal.h"
#include "bpe_unicode.h"

// The split patterns of the Hugging Face tokenizer.json files these names come from, with \s,
// \p{L}, \p{N} spelled out as the code points HF matches (bpe_unicode.h says why):
//   GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3 (Qwen2: \p{N} instead of \p{N}{1,3}):
//     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//     \s*[\r\n]+|\s+(?!\S)|\s+
#define S_ "[" BPE_UC_SPACE "]"
#define L_ "[" BPE_UC_LETTER "]"
#define N_ "[" BPE_UC_NUMBER "]"
#define NOT_SLN "[^" BPE_UC_SPACE BPE_UC_LETTER BPE_UC_NUMBER "]"
#define NOT_CRLF_LN "[^\\r\\n" BPE_UC_LETTER BPE_UC_NUMBER "]"
#define SPACE_TAIL S_ "+(?![^" BPE_UC_SPACE "])|" S_ "+"  // \s+(?!\S)|\s+
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?" L_ "+| ?" N_ "+| ?" NOT_SLN "+|" SPACE_TAIL
#define RE_LLAMA3_LIKE(num)                                                                    \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|" NOT_CRLF_LN "?" L_ "+|" num "| ?" NOT_SLN "+[\\r\\n]*|" S_ \
    "*[\\r\\n]+|" SPACE_TAIL
#define RE_LLAMA3 RE_LLAMA3_LIKE(N_ "{1,3}")
#define RE_QWEN2 RE_LLAMA3_LIKE(N_)

static const struct {
    const char *name;
    int n;
    const char *stages[MAX_STAGES];
} PRE_KINDS[] = {
    {"smollm", 2, {"[" BPE_UC_DIGIT "]", RE_GPT2}},  // HF: Sequence[Digits, ByteLevel]
    {"gpt2", 1, {RE_GPT2, NULL}},
    {"llama-bpe", 1, {RE_LLAMA3, NULL}},
    {"qwen2", 1, {RE_QWEN2, NULL}},
};

int bpe_pre_compile(Bpe *t, const char *path, char *err, size_t errlen) {
    int k = -1;
    for (size_t i = 0; i < sizeof PRE_KINDS / sizeof PRE_KINDS[0]; i++)
        if (strcmp(PRE_KINDS[i].name, t->pre) == 0) k = (int)i;
    if (k < 0) {
        bpe_set_err(err, errlen,
                    "%s: unknown pre-tokenizer '%s' (memr2 knows smollm, gpt2, "
                    "llama-bpe, qwen2)",
                    path, t->pre);
        return -1;
    }
    t->n_stages = PRE_KINDS[k].n;
    for (int s = 0; s < t->n_stages; s++) {
        int code;
        PCRE2_SIZE off;
        // UCP: \s, \p{L} etc. are Unicode-aware like HF's regexes; MATCH_INVALID_UTF: invalid
        // UTF-8 in the input is skipped by the matcher instead of being an error.
        t->stage[s] =
            pcre2_compile((PCRE2_SPTR)PRE_KINDS[k].stages[s], PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
        if (!t->stage[s]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            bpe_set_err(err, errlen, "%s: PCRE2 rejects the %s pattern at %zu: %s", path, t->pre,
                        (size_t)off, (const char *)msg);
            return -1;
        }
        pcre2_jit_compile(t->stage[s], PCRE2_JIT_COMPLETE);  // optional: falls back if no JIT
    }
    return 0;
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
    HeapItem *heap;              // (3n) every merge adds at most two candidate pairs
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
    HeapItem *heap =
        cap < SIZE_MAX / (3 * sizeof *heap) ? realloc(e->heap, 3 * cap * sizeof *heap) : NULL;
    if (heap) e->heap = heap;
    if (!sym || !prev || !next || !heap) {
        bpe_set_err(e->err, e->errlen, "bpe_encode: out of memory for a piece of %zu bytes", n);
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
        bpe_set_err(e->err, e->errlen, "bpe_encode: a piece of %zu bytes is too long", n);
        return -1;
    }
    int32_t whole = t->flags & BPE_FLAG_IGNORE_MERGES ? vocab_find(t, p, n) : -1;
    if (whole >= 0) {  // Llama-3: a piece that is a token is that token, whatever the merges say
        if (bpe_ids_push(e->out, whole) == 0) return 0;
        bpe_set_err(e->err, e->errlen, "bpe_encode: out of memory");
        return -1;
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
            bpe_set_err(e->err, e->errlen, "bpe_encode: out of memory");
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
            bpe_set_err(e->err, e->errlen, "bpe_encode: PCRE2 match failed: %s", (const char *)msg);
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

// Qwen2.5's tokenizer.json normalises each stretch between special tokens to NFC before
// pre-tokenizing (libunistring's u8_normalize). Text that is not valid UTF-8 cannot be normalised
// and is pre-tokenized as it is (HF only ever sees valid UTF-8).
static int pre_split_nfc(Enc *e, const unsigned char *text, size_t n) {
    size_t nl = 0;
    uint8_t *nf = u8_normalize(UNINORM_NFC, text, n, NULL, &nl);
    if (!nf) {
        if (errno == EILSEQ) return pre_split(e, 0, text, n);
        bpe_set_err(e->err, e->errlen, "bpe_encode: NFC normalisation failed: %s", strerror(errno));
        return -1;
    }
    int rc = pre_split(e, 0, nf, nl);
    free(nf);
    return rc;
}

// The leftmost-longest special token in text[from..n): its start and id, or start = n.
// ordinary: only added tokens that are not special.
static size_t find_special(const Bpe *t, const unsigned char *text, size_t n, size_t from,
                           int ordinary, uint32_t *id) {
    for (size_t i = from; i < n; i++) {
        if (!t->special_first[text[i]]) continue;
        size_t best = 0;
        for (uint32_t k = 0; k < t->n_special; k++) {
            uint32_t s = t->special[k], len = t->tok_len[s];
            if (ordinary && !t->plain[k]) continue;
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

static int encode(const Bpe *t, const char *text, size_t len, int ordinary, BpeIds *out, char *err,
                  size_t errlen) {
    Enc e = {.t = t, .out = out, .err = err, .errlen = errlen};
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) {
        bpe_set_err(err, errlen, "bpe_encode: out of memory");
        return -1;
    }
    const unsigned char *p = (const unsigned char *)text;
    int rc = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        uint32_t id = 0;
        size_t s = find_special(t, p, len, pos, ordinary, &id);
        if (s > pos)
            rc = t->flags & BPE_FLAG_NFC ? pre_split_nfc(&e, p + pos, s - pos)
                                         : pre_split(&e, 0, p + pos, s - pos);
        if (rc == 0 && s < len) {
            if (bpe_ids_push(out, (int32_t)id)) {
                bpe_set_err(err, errlen, "bpe_encode: out of memory");
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

int bpe_encode(const Bpe *t, const char *text, size_t len, BpeIds *out, char *err, size_t errlen) {
    return encode(t, text, len, 0, out, err, errlen);
}

int bpe_encode_ordinary(const Bpe *t, const char *text, size_t len, BpeIds *out, char *err,
                        size_t errlen) {
    return encode(t, text, len, 1, out, err, errlen);
}

// ---- decoding ---------------------------------------------------------------------------------

int bpe_decode(const Bpe *t, const int32_t *ids, size_t n, char **out, size_t *out_len, char *err,
               size_t errlen) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->V) {
            bpe_set_err(err, errlen, "bpe_decode: id %d at %zu outside [0, %u)", ids[i], i, t->V);
            return -1;
        }
        total += t->tok_len[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) {
        bpe_set_err(err, errlen, "bpe_decode: out of memory for %zu bytes", total);
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
        bpe_set_err(err, errlen, "bpe_chat: this tokenizer has no chat template memr2 can render");
        return -1;
    }
    Str s = {0};
    str_add(&s, "");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            free(s.p);
            bpe_set_err(err, errlen, "bpe_chat: message %d has no role or content", i);
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
        bpe_set_err(err, errlen, "bpe_chat: out of memory");
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
