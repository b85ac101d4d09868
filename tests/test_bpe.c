// tests/test_bpe.c: the byte-level BPE tokenizer (bpe.c) against Hugging Face `tokenizers`.
//
//   build/rel/tests/test_bpe [SMOLLM2.tok]      (or MEMR2_SMOLLM2_TOK=SMOLLM2.tok)
//
// 1. tests/fixtures/bpe_{smollm,gpt2,llama-bpe,qwen2}.tok: tiny BPEs trained by
//    dev/tokenizer_fixture.py, with bpe_KIND.txt holding HF's ids for a corpus (Unicode, emoji,
//    digits, contractions, whitespace runs, tabs, newlines, special tokens) and the chat template:
//    encode, decode and chat must reproduce them exactly, and the hash must be Python's.
// 2. Corrupt and truncated files are rejected with a message naming the file and the fault;
//    random byte flips never crash (run under ASan by make test_asan).
// 3. Invalid UTF-8, long pieces, bad ids.
// 4. With an argument: the real SmolLM2 tokenizer (make smollm2), a few ids known from HF.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe.h"
#include "check.h"

#define FIX "tests/fixtures/"
static const char *KINDS[] = {"smollm", "gpt2", "llama-bpe", "qwen2"};

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            unsigned char *p = realloc(buf, 2 * cap + 1);
            if (!p) {
                free(buf);
                buf = NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = n;
    return buf;
}

static int spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static size_t unhex(char *s) {  // in place; returns the byte count
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(s + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    s[n] = '\0';
    return n;
}

static int ids_equal(const BpeIds *got, const char *want) {  // want: ids separated by spaces
    size_t i = 0;
    char *end;
    for (const char *p = want; *p;) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (i >= got->n || got->ids[i] != v) return 0;
        i++;
        p = end;
    }
    return i == got->n;
}

// ---- 1. fixtures vs HF ------------------------------------------------------------------------

// hex: the text; want: HF's ids; want_dec: HF's decode of them (the text, or its NFC for qwen2)
static void check_text(const Bpe *t, const char *kind, int line, char *hex, const char *want,
                       char *want_dec) {
    char err[256] = "";
    size_t n = unhex(hex), dn = unhex(want_dec);
    BpeIds ids = {0};
    int rc = bpe_encode(t, hex, n, &ids, err, sizeof err);
    CHECK(rc == 0 && ids_equal(&ids, want), "%s line %d: ids differ from HF (%s) want %s", kind,
          line, err, want);
    char *dec = NULL;
    size_t dec_len = 0;
    rc = bpe_decode(t, ids.ids, ids.n, &dec, &dec_len, err, sizeof err);
    CHECK(rc == 0 && dec_len == dn && memcmp(dec, want_dec, dn) == 0,
          "%s line %d: decode differs "
          "from HF's (%s)",
          kind, line, err);
    free(dec);
    bpe_ids_free(&ids);
}

// fields: chat gen role hex role hex ... = rendered-hex ids
static void check_chat(const Bpe *t, const char *kind, int line, char **f, int nf) {
    BpeMessage msgs[16];
    int n = 0, k = 2;
    while (k + 1 < nf && strcmp(f[k], "=") != 0 && n < 16) {
        unhex(f[k + 1]);
        msgs[n++] = (BpeMessage){f[k], f[k + 1]};
        k += 2;
    }
    if (k + 2 >= nf || strcmp(f[k], "=") != 0) {
        CHECK(0, "%s line %d: malformed chat line", kind, line);
        return;
    }
    char *want_text = f[k + 1], err[256] = "", *text = NULL;
    unhex(want_text);
    int gen = atoi(f[1]);
    int rc = bpe_chat_render(t, msgs, n, gen, &text, err, sizeof err);
    CHECK(rc == 0 && strcmp(text, want_text) == 0,
          "%s line %d: chat text differs from HF's "
          "Jinja rendering (%s)",
          kind, line, err);
    BpeIds ids = {0};
    rc = bpe_chat(t, msgs, n, gen, &ids, err, sizeof err);
    CHECK(rc == 0 && ids_equal(&ids, f[k + 2]), "%s line %d: chat ids differ from HF", kind, line);
    free(text);
    bpe_ids_free(&ids);
}

static void test_fixture(const char *kind) {
    char tok_path[256], txt_path[256], err[256] = "";
    snprintf(tok_path, sizeof tok_path, FIX "bpe_%s.tok", kind);
    snprintf(txt_path, sizeof txt_path, FIX "bpe_%s.txt", kind);
    Bpe *t = bpe_load(tok_path, err, sizeof err);
    size_t len;
    char *txt = (char *)slurp(txt_path, &len);
    CHECK(t && txt, "%s: cannot load the fixture (%s; %s)", kind, err, txt ? "" : txt_path);
    if (!t || !txt) {
        bpe_free(t);
        free(txt);
        return;
    }
    CHECK(strcmp(bpe_pre_name(t), kind) == 0, "%s: pre-tokenizer is %s", kind, bpe_pre_name(t));
    CHECK(bpe_special_id(t, "<|endoftext|>") == 0 && bpe_special_id(t, "<|im_start|>") == 1 &&
              bpe_special_id(t, "<|im_end|>") == 2 && bpe_special_id(t, "<|im_") == -1,
          "%s: special token ids", kind);
    CHECK(bpe_bos(t) == 1 && bpe_eos(t) == 2, "%s: bos %d eos %d", kind, bpe_bos(t), bpe_eos(t));
    int lines = 0, texts = 0, chats = 0, hashes = 0, ordinary = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        lines++;
        char *f[40];
        int nf = 0;
        for (char *p = ln; nf < 40;) {  // split on TAB, keeping empty fields
            f[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = '\0';
            p = tab + 1;
        }
        if (strncmp(f[0], "hash ", 5) == 0) {
            unsigned long long h = strtoull(f[0] + 5, NULL, 16);
            CHECK(bpe_hash(t) == h, "%s: bpe_hash %016llx, Python's FNV-1a %016llx", kind,
                  (unsigned long long)bpe_hash(t), h);
            hashes++;
        } else if (strcmp(f[0], "text") == 0 && nf == 4) {
            check_text(t, kind, lines, f[1], f[2], f[3]);
            texts++;
        } else if (strcmp(f[0], "ordinary") == 0 && nf == 3) {
            size_t n = unhex(f[1]);
            BpeIds ids = {0};
            int rc = bpe_encode_ordinary(t, f[1], n, &ids, err, sizeof err);
            CHECK(rc == 0 && ids_equal(&ids, f[2]), "%s line %d: ordinary ids differ from HF", kind,
                  lines);
            int special = 0;
            for (size_t i = 0; i < ids.n; i++) special |= ids.ids[i] <= 2;
            CHECK(!special, "%s line %d: ordinary encode made a special id", kind, lines);
            bpe_ids_free(&ids);
            ordinary++;
        } else if (strcmp(f[0], "chat") == 0) {
            check_chat(t, kind, lines, f, nf);
            chats++;
        } else {
            CHECK(0, "%s line %d: unknown fixture line", kind, lines);
        }
    }
    CHECK(hashes == 1 && texts >= 100 && chats >= 8 && ordinary >= 5,
          "%s: fixture has %d hash, "
          "%d text, %d ordinary, %d chat lines",
          kind, hashes, texts, ordinary, chats);
    printf("fixture %-9s vocab %d: %d strings (%d also ordinary) and %d chats compared with HF\n",
           kind, bpe_vocab_size(t), texts, ordinary, chats);
    free(txt);
    bpe_free(t);
}

// ---- 2. corrupt files -------------------------------------------------------------------------

static unsigned rd32(const unsigned char *p) {
    return (unsigned)p[0] | (unsigned)p[1] << 8 | (unsigned)p[2] << 16 | (unsigned)p[3] << 24;
}
static void wr32(unsigned char *p, unsigned v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

// Writes buf to path, loads it, and expects a failure whose message names the file and says want.
static void expect_reject(const char *path, const unsigned char *buf, size_t n, const char *want,
                          const char *what) {
    char err[512] = "";
    if (spit(path, buf, n)) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    Bpe *t = bpe_load(path, err, sizeof err);
    CHECK(!t && strstr(err, path) && strstr(err, want), "%s: want an error with '%s', got %s '%s'",
          what, want, t ? "a tokenizer and" : "", err);
    bpe_free(t);
}

// The fixture file and a scratch copy to damage; file-based checks write to path.
typedef struct {
    unsigned char *good, *buf;  // (n), (n + 16)
    size_t n;
    char path[128];
} Damage;

static void test_truncated(Damage *d) {
    char err[512] = "";
    CHECK(!bpe_load("/nonexistent/x.tok", err, sizeof err) && strstr(err, "/nonexistent/x.tok") &&
              strstr(err, "cannot open"),
          "missing file: '%s'", err);
    // Every truncation is refused: every prefix, from memory (bpe_load_mem is bpe_load's parser).
    int trunc_ok = 1;
    for (size_t k = 0; k < d->n; k++) {
        Bpe *t = bpe_load_mem(d->good, k, "mem.tok", err, sizeof err);
        if (t || !strstr(err, "mem.tok") || (k >= 8 && !strstr(err, "truncated"))) {
            if (trunc_ok) fprintf(stderr, "prefix %zu: '%s'\n", k, err);
            trunc_ok = 0;
        }
        bpe_free(t);
    }
    CHECK(trunc_ok, "a truncated file was accepted or its error did not say so");
    Bpe *whole = bpe_load_mem(d->good, d->n, "mem.tok", err, sizeof err);
    CHECK(whole != NULL, "the whole file from memory: %s", err);
    bpe_free(whole);
    expect_reject(d->path, d->good, d->n - 1, "truncated", "one byte short");
    expect_reject(d->path, d->good, 30, "truncated", "cut in the header");
}

static void test_bad_fields(Damage *d) {
    unsigned char *buf = d->buf;
    const char *path = d->path;
    size_t n = d->n;
    memcpy(buf, d->good, n);
    buf[0] = 'X';
    expect_reject(path, buf, n, "bad magic", "magic");
    memcpy(buf, d->good, n);
    wr32(buf + 8, 2);
    expect_reject(path, buf, n, "version 2", "version");
    memcpy(buf, d->good, n);
    wr32(buf + 12, 0x7fffffff);
    expect_reject(path, buf, n, "bad vocabulary size", "vocab size");
    memcpy(buf, d->good, n);
    wr32(buf + 28, 1u << 20);  // bos
    expect_reject(path, buf, n, "bad bos id", "bos");
    memcpy(buf, d->good, n);
    buf[n] = 0;
    expect_reject(path, buf, n + 1, "unexpected bytes", "trailing byte");
    memcpy(buf, d->good, n);
    memcpy(buf + 40, "smolxx", 6);  // the pre-tokenizer name follows its length at 36
    expect_reject(path, buf, n, "unknown pre-tokenizer", "pre-tokenizer name");
    memcpy(buf, d->good, n);
    wr32(buf + 36, 1000);
    expect_reject(path, buf, n, "has length 1000", "pre name length");

    // Walk to the merges: header 36, three strings, then the vocabulary.
    size_t off = 36;
    for (int s = 0; s < 3; s++) off += 4 + rd32(d->good + off);
    unsigned V = rd32(d->good + 12);
    size_t vocab_at = off;
    for (unsigned i = 0; i < V; i++) off += 4 + rd32(d->good + off);
    size_t merges_at = off;
    memcpy(buf, d->good, n);
    wr32(buf + merges_at + 8, rd32(d->good + merges_at + 8) + 1);  // merge 0's result
    expect_reject(path, buf, n, "is not tokens", "merge result");
    memcpy(buf, d->good, n);
    wr32(buf + merges_at, V);
    expect_reject(path, buf, n, "outside", "merge id");
    memcpy(buf, d->good, n);
    memcpy(buf + merges_at + 12, d->good + merges_at, 12);  // merge 1 = merge 0
    expect_reject(path, buf, n, "repeats", "duplicate merge");
    memcpy(buf, d->good, n);
    wr32(buf + n - 4, V + 5);  // the last added token's id
    expect_reject(path, buf, n, "special token", "special id");
    memcpy(buf, d->good, n);
    wr32(buf + vocab_at, 0);  // token 0 empty: the rest then misparses
    expect_reject(path, buf, n, "token 0 is empty", "empty token");
}

// Random flips: refused with a message naming the file, or loaded and usable; never a crash.
static void test_random_flips(Damage *d) {
    char err[512] = "";
    uint64_t s = 88172645463325252ull;
    int loaded = 0, refused = 0, named = 1;
    for (int trial = 0; trial < 300; trial++) {
        memcpy(d->buf, d->good, d->n);
        for (int k = 0; k < 1 + trial % 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            d->buf[(s >> 8) % d->n] ^= (unsigned char)(1u << (s % 8));
        }
        err[0] = '\0';
        Bpe *t = bpe_load_mem(d->buf, d->n, d->path, err, sizeof err);
        if (t) {
            BpeIds ids = {0};
            const char *x = "Hello <|im_start|>w\xc3\xb6rld 123 \xf0\x9f\x98\x80\n";
            char *dec = NULL;
            size_t dl;
            if (bpe_encode(t, x, strlen(x), &ids, err, sizeof err) == 0 &&
                bpe_decode(t, ids.ids, ids.n, &dec, &dl, err, sizeof err) == 0)
                free(dec);
            bpe_ids_free(&ids);
            bpe_free(t);
            loaded++;
        } else {
            refused++;
            if (!strstr(err, d->path)) named = 0;
        }
    }
    CHECK(refused > 0 && named, "random flips: %d refused (all naming the file: %d), %d loaded",
          refused, named, loaded);
    printf("corrupt: random flips refused %d, loaded %d\n", refused, loaded);
}

// A file without a chat template: chat is refused, encode still works.
static void test_no_chat(Damage *d) {
    char err[512] = "";
    size_t chat_at = 36 + 4 + rd32(d->good + 36);  // "chatml" length field
    unsigned chat_len = rd32(d->good + chat_at);
    memcpy(d->buf, d->good, chat_at);
    wr32(d->buf + chat_at, 0);
    memcpy(d->buf + chat_at + 4, d->good + chat_at + 4 + chat_len, d->n - chat_at - 4 - chat_len);
    Bpe *t = spit(d->path, d->buf, d->n - chat_len) ? NULL : bpe_load(d->path, err, sizeof err);
    CHECK(t != NULL, "no-chat tokenizer did not load: %s", err);
    if (!t) return;
    char *text = NULL;
    BpeMessage msg = {"user", "hi"};
    CHECK(bpe_chat_render(t, &msg, 1, 1, &text, err, sizeof err) == -1 && !text &&
              strstr(err, "no chat template"),
          "chat without a template: '%s'", err);
    BpeIds ids = {0};
    CHECK(bpe_encode(t, "hi <|im_end|>", 13, &ids, err, sizeof err) == 0 && ids.n >= 2 &&
              ids.ids[ids.n - 1] == 2,
          "encode without a chat template");
    bpe_ids_free(&ids);
    bpe_free(t);
}

static void test_corrupt(void) {
    Damage d = {0};
    d.good = slurp(FIX "bpe_smollm.tok", &d.n);
    CHECK(d.good && d.n > 100, "cannot read " FIX "bpe_smollm.tok");
    if (!d.good || d.n <= 100 || !(d.buf = malloc(d.n + 16))) {
        free(d.good);
        return;
    }
    snprintf(d.path, sizeof d.path, "/tmp/memr2_test_bpe_%d.tok", (int)getpid());
    test_truncated(&d);
    test_bad_fields(&d);
    test_random_flips(&d);
    test_no_chat(&d);
    remove(d.path);
    free(d.buf);
    free(d.good);
}

// ---- 3. edge cases ----------------------------------------------------------------------------

static int roundtrip(const Bpe *t, const char *x, size_t n, size_t *n_ids) {
    BpeIds ids = {0};
    char err[256], *dec = NULL;
    size_t dl = 0;
    int ok = bpe_encode(t, x, n, &ids, err, sizeof err) == 0 &&
             bpe_decode(t, ids.ids, ids.n, &dec, &dl, err, sizeof err) == 0 && dl == n &&
             memcmp(dec, x, n) == 0;
    *n_ids = ids.n;
    free(dec);
    bpe_ids_free(&ids);
    return ok;
}

static void test_edges(void) {
    char err[256] = "";
    Bpe *t = bpe_load(FIX "bpe_smollm.tok", err, sizeof err);
    CHECK(t != NULL, "load: %s", err);
    if (!t) return;
    size_t k;
    // invalid UTF-8: every byte has a token in the fixture, so it comes back unchanged
    const char bad[] =
        "\xff\xfe"
        "abc\xc3 \xe2\x82 caf\xc3\xa9\x80 \xf0\x9f\x98";
    CHECK(roundtrip(t, bad, sizeof bad - 1, &k) && k >= 10, "invalid UTF-8 round trip (%zu ids)",
          k);
    CHECK(roundtrip(t, "", 0, &k) && k == 0, "empty text gives %zu ids", k);
    CHECK(roundtrip(t, "a\0b", 3, &k) && k == 3, "embedded NUL (%zu ids)", k);
    // long pieces: one letter run, one space run, one digit run (BPE by heap, not n^2)
    size_t n = 200000;
    char *big = malloc(n);
    if (big) {
        // the longest all-lowercase token, repeated: at most one id per repeat
        size_t best = 1, len;
        const char *word = "a";
        for (int id = 0; id < bpe_vocab_size(t); id++) {
            const char *p = bpe_token_bytes(t, id, &len);
            size_t j = 0;
            while (j < len && p[j] >= 'a' && p[j] <= 'z') j++;
            if (j == len && len > best) best = len, word = p;
        }
        for (size_t i = 0; i < n; i++) big[i] = word[i % best];
        CHECK(best >= 4 && roundtrip(t, big, n, &k) && k <= (n + best - 1) / best,
              "200k letters ('%.*s' repeated): %zu ids", (int)best, word, k);
        memset(big, ' ', n);
        CHECK(roundtrip(t, big, n, &k) && k < n / 2, "200k spaces: %zu ids", k);
        memset(big, '7', n);
        CHECK(roundtrip(t, big, n, &k) && k == n, "200k digits, one id each: %zu ids", k);
        for (size_t i = 0; i + 12 <= n; i += 12) memcpy(big + i, "<|im_end|>x ", 12);
        CHECK(roundtrip(t, big, n / 12 * 12, &k) && k >= n / 12 * 2, "special tokens: %zu ids", k);
        free(big);
    }
    int32_t ids[2] = {5, bpe_vocab_size(t)};
    char *dec = NULL;
    size_t dl;
    CHECK(bpe_decode(t, ids, 2, &dec, &dl, err, sizeof err) == -1 && !dec && strstr(err, "outside"),
          "decode of an id out of range: '%s'", err);
    size_t len;
    CHECK(bpe_token_bytes(t, -1, &len) == NULL && bpe_token_bytes(t, 1, &len) && len == 12,
          "token bytes of -1 and <|im_start|>");
    bpe_free(t);
}

// Random bytes (mostly invalid UTF-8) survive encode + decode unchanged with every byte-complete
// fixture; with NFC (qwen2) they must at least not crash.
static void test_random_bytes(void) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        char path[128], err[256] = "", x[96];
        snprintf(path, sizeof path, FIX "bpe_%s.tok", KINDS[k]);
        Bpe *t = bpe_load(path, err, sizeof err);
        if (!t) continue;  // test_fixture reports it
        int bad = 0, nfc = strcmp(KINDS[k], "qwen2") == 0;
        for (int trial = 0; trial < 300; trial++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t n = s % sizeof x;
            for (size_t i = 0; i < n; i++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                // bias towards ASCII, spaces, digits and UTF-8 lead/continuation bytes
                static const char pool[] = " \t\n09aZ'<|>\xc3\xa9\xe2\x80\xf0\x9f";
                x[i] = (s >> 40) % 2 ? pool[(s >> 8) % (sizeof pool - 1)] : (char)(s >> 24);
            }
            size_t n_ids;
            if (nfc) {
                BpeIds ids = {0};
                bad += bpe_encode(t, x, n, &ids, err, sizeof err) != 0;
                bpe_ids_free(&ids);
            } else {
                bad += !roundtrip(t, x, n, &n_ids);
            }
        }
        CHECK(bad == 0, "%s: %d of 300 random byte strings did not round-trip", KINDS[k], bad);
        bpe_free(t);
    }
}

// Long whitespace and newline runs through every pre-tokenizer (their regexes backtrack over
// whitespace: this must stay linear and within PCRE2's JIT stack).
static void test_long_runs(void) {
    size_t n = 200000;
    char *x = malloc(n);
    if (!x) return;
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        char path[128], err[256] = "";
        snprintf(path, sizeof path, FIX "bpe_%s.tok", KINDS[k]);
        Bpe *t = bpe_load(path, err, sizeof err);
        if (!t) continue;  // test_fixture reports it
        size_t ids_sp, ids_mix;
        memset(x, ' ', n);
        x[n - 1] = 'x';
        int ok_sp = roundtrip(t, x, n, &ids_sp);
        for (size_t i = 0; i < n; i++) x[i] = " \r\n\t"[(i * 7 + i / 3) % 4];
        int ok_mix = roundtrip(t, x, n, &ids_mix);
        CHECK(ok_sp && ok_mix && ids_sp <= n / 4 + 2 && ids_mix > 0,
              "%s: 200k spaces then x (%zu ids), 200k mixed whitespace (%zu ids)", KINDS[k], ids_sp,
              ids_mix);
        bpe_free(t);
    }
    free(x);
}

// ---- 4. the real SmolLM2 vocabulary -----------------------------------------------------------

static void test_smollm2(const char *path) {
    char err[512] = "";
    Bpe *t = bpe_load(path, err, sizeof err);
    CHECK(t != NULL, "%s", err);
    if (!t) return;
    CHECK(bpe_vocab_size(t) == 49152 && strcmp(bpe_pre_name(t), "smollm") == 0 &&
              bpe_special_id(t, "<|im_start|>") == 1 && bpe_eos(t) == 2,
          "SmolLM2: vocab %d pre %s", bpe_vocab_size(t), bpe_pre_name(t));
    // ids from Hugging Face tokenizers (dev/tokenizer_check.py builds the same tokenizer)
    static const struct {
        const char *text;
        const char *ids;
    } cases[] = {
        {"Hello world 12345!", "19556 905 216 33 34 35 36 37 17"},
        {"I'm sure it's 3.14 \xc3\xbc \xf0\x9f\x98\x80\n\n  x",
         "57 5248 2090 357 506 216 35 30 33 36 5549 137 40303 218 8866 1792"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        BpeIds ids = {0};
        int rc = bpe_encode(t, cases[i].text, strlen(cases[i].text), &ids, err, sizeof err);
        CHECK(rc == 0 && ids_equal(&ids, cases[i].ids), "SmolLM2 case %zu", i);
        bpe_ids_free(&ids);
    }
    BpeMessage msg = {"user", "What is the capital of France?"};
    BpeIds ids = {0};
    int rc = bpe_chat(t, &msg, 1, 1, &ids, err, sizeof err);
    CHECK(rc == 0 && ids_equal(&ids,
                               "1 9690 198 2683 359 253 5356 5646 11173 3365 3511 308 34519 "
                               "28 7018 411 407 19712 8182 2 198 1 4093 198 1780 314 260 3575 282 "
                               "4649 47 2 198 1 520 9531 198"),
          "SmolLM2 chat prompt (default system line included)");
    bpe_ids_free(&ids);
    printf("SmolLM2 %s: hash %016llx\n", path, (unsigned long long)bpe_hash(t));
    bpe_free(t);
}

int main(int argc, char **argv) {
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) test_fixture(KINDS[i]);
    test_corrupt();
    test_edges();
    test_random_bytes();
    test_long_runs();
    const char *real = argc > 1 ? argv[1] : getenv("MEMR2_SMOLLM2_TOK");
    if (real && *real) test_smollm2(real);
    return check_summary("test_bpe");
}
