// tests/fuzz/fuzz_dialogue_parse.c: the real-dialogue world's JSON parsers (dialogue_parse.c) on
// arbitrary model output, and what follows them in a rollout: the extractor's facts go into the
// manager's prompt (retrieval included), and the manager's ops into the bank (memory_apply).
// Input: a selector byte (bit 0: extractor or manager output; bits 1-2: the chunk, 3 of them do
// not exist), then the output text as raw bytes (NUL bytes included). The tokenizer is the tiny
// BPE fixture (run from the repository root, as `make fuzz` does). See fuzz_common.h.
#include <stdlib.h>
#include <string.h>

#include "dialogue.h"
#include "tests/fuzz/fuzz_common.h"

typedef struct {
    Bpe *tok;
    Dialogue d;
    Turn turns[6];
    Session session;
    Episode ep;
} FuzzDialogue;

static FuzzDialogue *fuzz_dialogue(void) {
    static FuzzDialogue w;
    static int state = 0;  // 0 untried, 1 ready, -1 failed
    if (state) return state > 0 ? &w : NULL;
    static const char *const text[6] = {"I adopted a dog named Pixel", "Nice! I paint on weekends",
                                        "Pixel loves the beach", "My sister lives in Porto",
                                        "I moved to Leeds", "Bye!"};
    char err[256];
    state = -1;
    w.tok = bpe_load("tests/fixtures/bpe_smollm.tok", err, sizeof err);
    if (!w.tok) return NULL;
    DialogueConfig c;
    dialogue_config_default(&c);
    c.chunks_per_session = 2;
    if (dialogue_init(&w.d, w.tok, &c, err, sizeof err)) return NULL;
    for (int t = 0; t < 6; t++)
        w.turns[t] = (Turn){.speaker = (char *)(t % 2 ? "Ana" : "Ben"), .text = (char *)text[t],
                            .dia = DIA_CODE(1, t + 1)};
    w.session = (Session){.turns = w.turns, .n_turns = 6, .date_time = (char *)"1 May, 2023"};
    w.ep = (Episode){.sample_id = (char *)"fuzz", .speaker_a = (char *)"Ben",
                     .speaker_b = (char *)"Ana", .sessions = &w.session, .n_sessions = 1};
    state = 1;
    return &w;
}

int fuzz_dialogue_parse(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    FuzzDialogue *w = fuzz_dialogue();
    if (!w) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int chunk = (data[0] >> 1) % 4 - 1;  // -1 .. 2: only 0 and 1 exist
    MemoryBank bank;
    if (memory_init(&bank, 8, w->d.cfg.fact_max_tokens) != 0) return 0;
    Fact facts[16];
    int inv = -1, mal = -1;
    int nf = dialogue_parse_extract_text(&w->d, &w->ep, 1, chunk, text, len, facts, 16, &inv,
                                         &mal);
    if (nf < 0 || nf > w->d.cfg.max_facts || inv < 0 || (mal != 0 && mal != 1)) abort();
    for (int f = 0; f < nf; f++) {
        if (facts[f].len < 1 || facts[f].len > w->d.cfg.fact_max_tokens) abort();
        if (!dialogue_find_turn(&w->ep, facts[f].evidence)) abort();  // evidence from the chunk
    }
    // a bank with a few memories, so UPDATE / DELETE ids resolve
    for (int f = 0; f < nf && f < 4; f++) {
        MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = facts[f].tokens,
                       .fact_len = facts[f].len, .evidence = facts[f].evidence};
        memory_apply(&bank, &op, 1, NULL);
    }
    Shown shown = {.slot = {0, 1, 2}, .n = 3};
    if (data[0] & 1) {
        BpeIds ids = {0};
        char err[256];
        if (dialogue_manage_prompt(&w->d, &w->ep, &bank, facts, nf, &shown, &ids, err,
                                   sizeof err) == 0 &&
            (shown.n < 0 || shown.n > w->d.cfg.max_shown))
            abort();
        bpe_ids_free(&ids);
        shown = (Shown){.slot = {2, 0, 1}, .n = 3};
        DialogueOps ops;
        int n = dialogue_parse_manage_text(&w->d, text, len, facts, nf, &shown, &ops, &inv, &mal);
        if (n < 0 || n > DIALOGUE_MAX_OPS || n != ops.n || inv < 0 || (mal != 0 && mal != 1))
            abort();
        for (int i = 0; i < n; i++) {
            const MemoryOp *o = &ops.op[i];
            if ((o->kind == OP_UPDATE || o->kind == OP_DELETE) && (o->slot < 0 || o->slot > 2))
                abort();
            if (o->fact && (o->fact != ops.tokens[i] || o->fact_len < 1 ||
                            o->fact_len > w->d.cfg.fact_max_tokens))
                abort();
            memory_apply(&bank, o, 2, NULL);
        }
    }
    char ans[64];
    char *z = malloc(len + 1);  // the answer extractor reads NUL-terminated text
    if (z) {
        memcpy(z, text, len);
        z[len] = '\0';
        if (dialogue_extract_answer(z, ans, sizeof ans) >= sizeof ans) abort();
        free(z);
    }
    memory_free(&bank);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_dialogue_parse(data, size);
}
#endif
