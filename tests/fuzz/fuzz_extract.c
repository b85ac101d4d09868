// tests/fuzz/fuzz_extract.c: the EXTRACT role's output parser (env_parse_extract in world_synth.c).
// Input: a chunk selector byte, then token ids (fuzz_decode_tokens). The facts it keeps go on to
// the MANAGE prompt builder, as in a rollout. See fuzz_common.h.
#include "world_synth.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_extract(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    FuzzWorld w;
    if (fuzz_world_init(&w) != 0) return 0;
    int gen[512];
    int len = fuzz_decode_tokens(data + 1, size - 1, gen, 512);
    int chunk = data[0] % 4 - 1;  // -1 .. 2: chunk 2 and -1 do not exist
    Fact facts[8];
    int malformed = -1;
    int n = env_parse_extract(&w.env, &w.ep, 1, chunk, gen, len, facts, 8, &malformed);
    if (n < 0 || n > w.env.cfg.max_facts || (malformed != 0 && malformed != 1)) abort();
    for (int f = 0; f < n; f++) {
        if (facts[f].len < 1 || facts[f].len > w.env.cfg.slot_len) abort();
        if (facts[f].turn < 0 || facts[f].turn >= w.env.cfg.chunk_turns) abort();
        for (int i = 0; i < facts[f].len; i++)
            if (facts[f].tokens[i] < TOK_FIRST_WORD) abort();  // a special token in a fact
    }
    Shown shown;
    int prompt[256];
    int pn = env_manage_prompt(&w.env, &w.bank, facts, n, &shown, prompt, 256);
    if (pn < 0 || pn > 256 || shown.n < 0 || shown.n > MAX_SHOWN_SLOTS) abort();
    fuzz_world_free(&w);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_extract(data, size); }
#endif
