// mistakes.c: per-session mistakes of a policy against the gold world (see mistakes.h).
#include "mistakes.h"

#include "world_synth.h"

#include <stdlib.h>
#include <string.h>

#include "data/grammar.h"

enum { FMAX = FACT_MAX_TOKENS };  // tokens of one fact (world.h: Fact.tokens)

typedef struct {
    int ids[FMAX];
    int n;
} Ids;

// The extractor facts of one session of one lane: "<tK> fact words <sep>" segments.
static int session_facts(const TurnBuffer *tb, int lane, int s, Ids **out) {
    Ids *f = NULL;
    int n = 0, cap = 0;
    for (int i = 0; i < turns_count(tb); i++) {
        const PolicyTurn *pt = &tb->turns[i];
        if (pt->lane != lane || pt->session != s || pt->role != ROLE_EXTRACT) continue;
        const int *o = tb->tokens + pt->offset + pt->prompt_len;
        int j = 0;
        while (j < pt->out_len && o[j] != TOK_EOS) {
            int k = j;
            while (k < pt->out_len && o[k] != TOK_SEP && o[k] != TOK_EOS) k++;
            int a = j;
            if (a < k && o[a] >= TOK_TURN0 && o[a] < TOK_TURN0 + MAX_CHUNK_TURNS) a++;
            if (k > a) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 16;
                    Ids *g = realloc(f, sizeof(Ids) * (size_t)cap);
                    if (!g) {
                        free(f);
                        return -1;
                    }
                    f = g;
                }
                f[n].n = k - a < FMAX ? k - a : FMAX;
                memcpy(f[n].ids, o + a, sizeof(int) * (size_t)f[n].n);
                n++;
            }
            j = k < pt->out_len && o[k] == TOK_SEP ? k + 1 : k;
        }
    }
    *out = f;
    return n;
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    return na == nb && memcmp(a, b, sizeof(int) * (size_t)na) == 0;
}

static const char *speaker_of(const Episode *ep, int s, int dia) {
    const Session *S = &ep->sessions[s - 1];
    for (int t = 0; t < S->n_turns; t++)
        if (S->turns[t].dia == dia) return S->turns[t].speaker;
    return NULL;
}

// The slots asserting value v (a SET or CHANGE, not "no longer") of (p, attr): returns how
// many; of them, *before were last written before session s and *set_now are SETs written in s.
static int count_asserting(const Env *env, const MemoryBank *bank, const char *p, int attr,
                           const char *v, int s, int *before, int *set_now) {
    int n = 0;
    *before = *set_now = 0;
    for (int i = 0; i < bank->cap; i++) {
        EnvFact f;
        if (!bank->alive[i] ||
            !env_parse_fact(env->vocab, bank->tokens + (size_t)i * bank->slot_len, bank->len[i],
                            &f))
            continue;
        if (f.type == GR_END || f.attr != attr || strcmp(f.p, p) || strcmp(f.v, v)) continue;
        n++;
        *before += bank->session[i] < s;
        *set_now += bank->session[i] == s && f.type == GR_SET;
    }
    return n;
}

static int bank_asserts(const Env *env, const MemoryBank *bank, const char *p, int attr,
                        const char *v) {
    int before, set_now;
    return count_asserting(env, bank, p, attr, v, 0, &before, &set_now) > 0;
}

int mistakes_add_session(const Env *env, const Episode *ep, int s, const TurnBuffer *tb, int lane,
                         const MemoryBank *bank, MistakeCounts *mc) {
    if (!ep->gold || s < 1 || s > ep->n_sessions) return 0;
    Ids *ex = NULL;
    int nx = session_facts(tb, lane, s, &ex);
    if (nx < 0) return -1;
    int ng = ep->n_gold[s - 1];
    Ids *gold = malloc(sizeof(Ids) * (size_t)(ng > 0 ? ng : 1));
    char *used = calloc((size_t)(nx > 0 ? nx : 1), 1);  // extractor facts that match gold
    if (!gold || !used) {
        free(ex), free(gold), free(used);
        return -1;
    }
    for (int g = 0; g < ng; g++) {
        const GoldFact *G = &ep->gold[s - 1][g];
        gold[g].n = vocab_encode(env->vocab, G->text, gold[g].ids, FMAX);
        const char *spk = speaker_of(ep, s, G->dia);
        size_t pl = G->key ? strcspn(G->key, "|") : 0;
        int first = spk && G->key && strlen(spk) == pl && !strncmp(G->key, spk, pl);
        int found = 0;
        for (int x = 0; x < nx; x++)
            if (same_ids(ex[x].ids, ex[x].n, gold[g].ids, gold[g].n)) found = 1, used[x] = 1;
        mc->facts++, mc->facts_first += first, mc->facts_third += !first;
        mc->missed += !found, mc->missed_first += !found && first;
        mc->missed_third += !found && !first;
        // management: only for the changes and ends the extractor did hand over
        EnvFact f;
        if (!found || !env_parse_fact(env->vocab, gold[g].ids, gold[g].n, &f)) continue;
        if (f.type == GR_CHANGE) {
            int has_new = bank_asserts(env, bank, f.p, f.attr, f.v);
            int has_old = bank_asserts(env, bank, f.p, f.attr, f.o);
            mc->changes++;
            mc->dup += has_new && has_old;
            mc->stale += !has_new;
        } else if (f.type == GR_END) {
            mc->ends++;
            mc->missing_end += bank_asserts(env, bank, f.p, f.attr, f.o);
        } else {  // a SET: a restatement when a slot from before s holds the value already
            int before, set_now;
            count_asserting(env, bank, f.p, f.attr, f.v, s, &before, &set_now);
            mc->restates += before > 0;
            mc->restate_dup += before > 0 && set_now > 0;
        }
    }
    // extractor facts that match no gold fact: the right fact about the wrong person?
    for (int x = 0; x < nx; x++) {
        if (used[x]) continue;
        int swapped = 0;
        for (int g = 0; g < ng && !swapped; g++)
            swapped = ex[x].n == gold[g].n && ex[x].n > 1 && ex[x].ids[0] != gold[g].ids[0] &&
                      same_ids(ex[x].ids + 1, ex[x].n - 1, gold[g].ids + 1, gold[g].n - 1);
        mc->wrong_speaker += swapped, mc->wrong_other += !swapped;
    }
    mc->extracted += nx;
    free(ex), free(gold), free(used);
    return 0;
}

void mistakes_sum(MistakeCounts *into, const MistakeCounts *x) {
    into->facts += x->facts, into->facts_first += x->facts_first;
    into->facts_third += x->facts_third, into->missed += x->missed;
    into->missed_first += x->missed_first, into->missed_third += x->missed_third;
    into->extracted += x->extracted, into->wrong_speaker += x->wrong_speaker;
    into->wrong_other += x->wrong_other, into->changes += x->changes, into->dup += x->dup;
    into->stale += x->stale, into->ends += x->ends, into->missing_end += x->missing_end;
    into->restates += x->restates, into->restate_dup += x->restate_dup;
}

static double rate(long k, long n) { return n > 0 ? (double)k / (double)n : 0.0; }

void mistakes_print(const MistakeCounts *m, const char *policy, int first, int last, FILE *f) {
    fprintf(f,
            "mistakes policy=%s sessions=%d-%d facts=%ld missed=%.4f missed_first=%.4f "
            "missed_third=%.4f extracted=%ld wrong_speaker=%.4f wrong_other=%.4f changes=%ld "
            "dup=%.4f stale=%.4f ends=%ld missing_end=%.4f restates=%ld restate_dup=%.4f\n",
            policy, first, last, m->facts, rate(m->missed, m->facts),
            rate(m->missed_first, m->facts_first), rate(m->missed_third, m->facts_third),
            m->extracted, rate(m->wrong_speaker, m->extracted), rate(m->wrong_other, m->extracted),
            m->changes, rate(m->dup, m->changes), rate(m->stale, m->changes), m->ends,
            rate(m->missing_end, m->ends), m->restates, rate(m->restate_dup, m->restates));
}
