// tests/fuzz/fuzz_vocab.c: the vocabulary file loader (vocab_load in vocab.c); a vocabulary that
// loads is hashed and used to encode and decode a sentence. See fuzz_common.h.
#include "world_synth.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_vocab(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_scratch("vocab", data, size);
    if (!path) return 0;
    char err[512];
    Vocab *v = vocab_load(path, err, sizeof err);
    if (v) {
        int ids[32];
        char text[512];
        (void)vocab_hash(v);
        int n = vocab_encode(v, "Where does alice live now? <eos> zz", ids, 32);
        vocab_decode(v, ids, n, text, sizeof text);
        vocab_free(v);
    } else if (!strstr(err, path)) {
        fprintf(stderr, "vocab_load error does not name the file: %s\n", err);
        abort();
    }
    fuzz_remove_scratch(path);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_vocab(data, size); }
#endif
