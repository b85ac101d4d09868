// dialogue_bank.c: the bank's size from the data (see dialogue.h). Real LoCoMo conversations
// have up to ~700 turns, and store-turns writes one slot per turn (it overflowed a 512-slot bank
// 1,001 times on the real file), so the capacity follows the largest conversation; a memory is
// up to ~20 words, so a slot holds that many words at the data's own BPE tokens per word.
#include <stdio.h>
#include <string.h>

#include "dialogue.h"

static long count_words(const char *s) {
    long n = 0;
    int in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

int dialogue_bank_size(const Dataset *ds, const Bpe *tok, int max_words, DialogueBankSize *out,
                       char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!ds || ds->n <= 0 || max_words < 1) {
        snprintf(err, errlen, "dialogue_bank_size: %s", max_words < 1 ? "max_words < 1"
                                                                      : "no episodes");
        return -1;
    }
    long words = 0, tokens = 0;
    BpeIds ids = {0};
    for (int e = 0; e < ds->n; e++) {
        const Episode *ep = &ds->episodes[e];
        int turns = 0, gold = 0;
        for (int s = 0; s < ep->n_sessions; s++) {
            const Session *S = &ep->sessions[s];
            turns += S->n_turns;
            if (ep->n_gold) gold += ep->n_gold[s];
            for (int t = 0; t < S->n_turns; t++) {
                ids.n = 0;
                const char *x = S->turns[t].text;
                if (bpe_encode_ordinary(tok, x, strlen(x), &ids, err, errlen)) {
                    bpe_ids_free(&ids);
                    return -1;
                }
                words += count_words(x);
                tokens += (long)ids.n;
            }
        }
        if (turns > out->max_turns) out->max_turns = turns;
        if (gold > out->max_gold) out->max_gold = gold;
    }
    bpe_ids_free(&ids);
    if (words == 0) {
        snprintf(err, errlen, "dialogue_bank_size: the dialogue has no words");
        return -1;
    }
    out->tokens_per_word = (double)tokens / (double)words;
    int most = out->max_turns > out->max_gold ? out->max_turns : out->max_gold;
    out->cap = (most + 63) / 64 * 64;
    if (out->cap < 64) out->cap = 64;
    long len = (long)(max_words * out->tokens_per_word * 1.25 + 0.999999);
    len = (len + 7) / 8 * 8;
    out->slot_len = (int)(len < 16 ? 16 : len > DIALOGUE_FACT_MAX ? DIALOGUE_FACT_MAX : len);
    return 0;
}
