// tests/fuzz/fuzz_manage.c: the MANAGE role's output parser (env_parse_manage, world_synth.c), and
// the bank applying what it parsed (memory_apply in memory.c). Input: token ids
// (fuzz_decode_tokens); the manager was shown slots <m0> <m1> <m2> (bank slots 2, 0, 1) and
// facts from turns <t0> <t1> <t2>. See fuzz_common.h.
#include "world_synth.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_manage_ops(const uint8_t *data, size_t size, int kinds[4]) {
    FuzzWorld w;
    if (fuzz_world_init(&w) != 0) return 0;
    int gen[512];
    int len = fuzz_decode_tokens(data, size, gen, 512);
    Fact facts[3];
    for (int f = 0; f < 3; f++) {
        facts[f] = (Fact){.len = 2, .evidence = DIA_CODE(1, f + 1), .turn = f};
        facts[f].tokens[0] = TOK_FIRST_WORD + f;
        facts[f].tokens[1] = TOK_FIRST_WORD + 3;
    }
    Shown shown = {.slot = {2, 0, 1}, .n = 3};
    MemoryOp ops[16];
    int n_invalid = -1, malformed = -1;
    int n = env_parse_manage(&w.env, gen, len, facts, 3, &shown, ops, 16, &n_invalid, &malformed);
    if (n < 0 || n > 16 || n_invalid < 0 || (malformed != 0 && malformed != 1)) abort();
    MemoryStats stats = {0};
    for (int i = 0; i < n; i++) {
        const MemoryOp *o = &ops[i];
        if (o->kind == OP_UPDATE || o->kind == OP_DELETE) {
            if (o->slot < 0 || o->slot >= w.bank.cap) abort();  // unresolved slot kept
        }
        if (o->fact && (o->fact < gen || o->fact + o->fact_len > gen + len)) abort();
        if (memory_apply(&w.bank, o, 2, &stats) == 0 && kinds && o->kind >= 0 && o->kind < 4)
            kinds[o->kind]++;
    }
    fuzz_world_free(&w);
    return 0;
}

int fuzz_manage(const uint8_t *data, size_t size) { return fuzz_manage_ops(data, size, NULL); }

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_manage(data, size); }
#endif
