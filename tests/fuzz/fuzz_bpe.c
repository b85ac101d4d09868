// tests/fuzz/fuzz_bpe.c: the BPE tokenizer file loader (bpe_load_mem in bpe_load.c, the same
// parser bpe_load uses after reading the file). A tokenizer that loads encodes a text with
// special tokens and Unicode, decodes the ids back (which must give the same bytes), encodes
// invalid UTF-8, and renders its chat template. Seeds: copies of the tokenizer fixtures in
// tests/fixtures/. See fuzz_common.h.
#include "bpe.h"
#include "tests/fuzz/fuzz_common.h"

// 1 if each byte of s on its own encodes to one token of exactly that byte.
static int all_bytes_known(const Bpe *t, const char *s, size_t n) {
    char err[256];
    for (size_t i = 0; i < n; i++) {
        BpeIds one = {0};
        size_t len = 0;
        int ok = bpe_encode_ordinary(t, s + i, 1, &one, err, sizeof err) == 0 && one.n == 1;
        const char *b = ok ? bpe_token_bytes(t, one.ids[0], &len) : NULL;
        ok = b && len == 1 && b[0] == s[i];
        bpe_ids_free(&one);
        if (!ok) return 0;
    }
    return 1;
}

int fuzz_bpe(const uint8_t *data, size_t size) {
    char err[512];
    Bpe *t = bpe_load_mem(data, size, "fuzz.tok", err, sizeof err);
    if (!t) {
        if (!strstr(err, "fuzz.tok")) {
            fprintf(stderr, "bpe_load_mem error does not name the file: %s\n", err);
            abort();
        }
        return 0;
    }
    // valid UTF-8 already in NFC, so even a tokenizer that normalises must give it back
    static const char text[] = "Hello <|im_start|>user\n caf\xc3\xa9 12345  \t\n"
                               "\xe4\xb8\xad\xe6\x96\x87 don't<|im_end|><|endoftext|>";
    static const char junk[] = "\xff\xfe\xc3 \xe4\xb8 a\x80";  // invalid UTF-8: must not crash
    BpeIds ids = {0};
    if (bpe_encode(t, text, sizeof text - 1, &ids, err, sizeof err) == 0) {
        char *out = NULL;
        size_t out_len = 0;
        if (bpe_decode(t, ids.ids, ids.n, &out, &out_len, err, sizeof err) == 0) {
            // Special tokens decode to their text, so the round trip is byte-exact when every
            // byte of the text has a token (a vocabulary may lack some: they are dropped, as HF
            // does; bpe_load.c).
            if (all_bytes_known(t, text, sizeof text - 1) &&
                (out_len != sizeof text - 1 || memcmp(out, text, out_len) != 0)) {
                fprintf(stderr, "bpe round trip changed the text (%zu -> %zu bytes)\n",
                        sizeof text - 1, out_len);
                abort();
            }
            free(out);
        }
    }
    bpe_ids_free(&ids);
    (void)bpe_encode_ordinary(t, junk, sizeof junk - 1, &ids, err, sizeof err);
    bpe_ids_free(&ids);
    BpeMessage msgs[2] = {{"user", "hi <|im_end|>"}, {"assistant", "ok"}};
    BpeIds chat = {0};
    (void)bpe_chat(t, msgs, 2, 1, &chat, err, sizeof err);
    bpe_ids_free(&chat);
    bpe_free(t);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_bpe(data, size); }
#endif
