// credit.c: counting a turn's true mistakes against the oracle (contract in credit.h).
// The oracle is the world's teacher with no flaws and noise 0, asked the very same question the
// policy was asked, and both outputs go through the same parsers, so only meaning is compared.
#include "credit.h"

#include <string.h>

#define MAX_ITEMS 64    // facts or ops compared per output (outputs are at most 64 tokens)
#define ORACLE_MAX 256  // room for the oracle's output tokens

static int same_tokens(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int) * (size_t)na) == 0);
}

// The edit distance of two multisets given how many items were matched: each unmatched item on
// the longer side is one substitution, insertion or deletion.
static int edit_count(int na, int nb, int matched) {
    int ua = na - matched, ub = nb - matched;
    return ua > ub ? ua : ub;
}

static int same_fact(const Fact *a, const Fact *b) {
    return a->evidence == b->evidence && same_tokens(a->tokens, a->len, b->tokens, b->len);
}

int credit_extract_mistakes(const World *env, const Episode *ep, int session, int chunk,
                            const int *gen, int len) {
    if (!ep->gold) return -1;
    int oracle[ORACLE_MAX];
    int on = world_teacher_extract(env, ep, session, chunk, NULL, 0.0f, NULL, oracle, ORACLE_MAX);
    if (on < 0) return -1;  // no teacher
    Fact want[MAX_ITEMS], got[MAX_ITEMS];  // ~17 KB each on the stack: fine for a leaf call
    int bad = 0, ignored = 0;
    int nw = world_parse_extract(env, ep, session, chunk, oracle, on, want, MAX_ITEMS, &ignored);
    int ng = world_parse_extract(env, ep, session, chunk, gen, len, got, MAX_ITEMS, &bad);
    unsigned char used[MAX_ITEMS] = {0};
    int matched = 0;
    // greedy matching is exact: equality is an equivalence relation
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < ng; j++)
            if (!used[j] && same_fact(&want[i], &got[j])) {
                used[j] = 1;
                matched++;
                break;
            }
    int m = edit_count(nw, ng, matched);
    return m + (bad ? 1 : 0);
}

static int same_op(const MemoryOp *a, const MemoryOp *b) {
    if (a->kind != b->kind) return 0;
    if ((a->kind == OP_UPDATE || a->kind == OP_DELETE) && a->slot != b->slot) return 0;
    if (a->kind == OP_INSERT || a->kind == OP_UPDATE)
        return same_tokens(a->fact, a->fact_len, b->fact, b->fact_len);
    return 1;
}

int credit_manage_mistakes(const World *env, const Episode *ep, const MemoryBank *bank,
                           const Fact *facts, int n_facts, const Shown *shown, const int *gen,
                           int len) {
    if (!ep->gold) return -1;
    int oracle[ORACLE_MAX];
    int on = world_teacher_manage(env, ep, bank, facts, n_facts, shown, NULL, 0.0f, NULL, oracle,
                                  ORACLE_MAX);
    if (on < 0) return -1;  // no teacher
    MemoryOp want[MAX_ITEMS], got[MAX_ITEMS];
    int want_facts[MAX_ITEMS * FACT_MAX_TOKENS], got_facts[MAX_ITEMS * FACT_MAX_TOKENS];  // 16 KB each
    int bad = 0, ignored = 0, invalid = 0, oracle_invalid = 0;
    int nw = world_parse_manage(env, oracle, on, facts, n_facts, shown, want, MAX_ITEMS,
                                want_facts, &oracle_invalid, &ignored);
    int ng = world_parse_manage(env, gen, len, facts, n_facts, shown, got, MAX_ITEMS, got_facts,
                                &invalid, &bad);
    unsigned char used[MAX_ITEMS] = {0};
    int matched = 0;
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < ng; j++)
            if (!used[j] && same_op(&want[i], &got[j])) {
                used[j] = 1;
                matched++;
                break;
            }
    // ops the parser rejected are extra ops of the policy
    return edit_count(nw, ng + invalid, matched) + (bad ? 1 : 0);
}
