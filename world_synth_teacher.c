// world_synth_teacher.c: the synthetic world's teacher (contract in world_synth.h): gold
// extraction and the oracle manager, with the warm start's designed flaws and a noise knob.
//
//
// The oracle manager (env_teacher_manage, noise 0) parses each fact and each shown slot with the
// same grammar: a fact whose key has no shown slot -> INSERT; a restatement of the slot's current
// value -> NOOP; a new value -> UPDATE the slot with "p now <phrase> v , previously <old>" (both
// values stay answerable); an end -> UPDATE the slot to "p no longer <phrase> old" (not DELETE:
// the reader answers "none" from it, while an empty bank answers nothing). Facts that do not
// parse (real LoCoMo) are INSERTed.
#include "world_synth.h"

#include <stdlib.h>
#include <string.h>

#include "data/grammar.h"
#include "world_synth_internal.h"

// =============================================================================================
// Teacher
TeacherFlaws teacher_flaws_default(void) {
    enum { CITY = 1u << 0, JOB = 1u << 1, EMPLOYER = 1u << 2, PET = 1u << 3, CAR = 1u << 4,
           HOBBY = 1u << 5, PARTNER = 1u << 6 };
    // Each flaw spares some attributes, so the model also learns the right action for the
    // same kind of fact and RL has a nearby alternative to find by sampling.
    return (TeacherFlaws){.skip_third = PET | HOBBY,
                          .dup_change = CITY | JOB | CAR | PARTNER,
                          .keep_ended = EMPLOYER | PET | CAR | HOBBY};
}

static int attr_of_key(const char *key) {
    const char *bar = key ? strchr(key, '|') : NULL;
    for (int a = 0; bar && a < GR_N_ATTRS; a++)
        if (strcmp(bar + 1, GR_ATTRS[a].name) == 0) return a;
    return -1;
}

// A gold fact the flawed extractor leaves out: about someone other than the speaker, of an
// attribute in flaws->skip_third.
static int skipped_third(const TeacherFlaws *fl, const GoldFact *G, const char *speaker) {
    int a = attr_of_key(G->key);
    if (!fl || a < 0 || !(fl->skip_third & (1u << a)) || !speaker) return 0;
    size_t pl = strcspn(G->key, "|");
    return !(strlen(speaker) == pl && strncmp(G->key, speaker, pl) == 0);
}

int env_teacher_extract(const Env *env, const Episode *ep, int session, int chunk, float noise,
                        Rng *rng, int *out, int max) {
    return env_teacher_extract_flawed(env, ep, session, chunk, NULL, noise, rng, out, max);
}

int env_teacher_extract_flawed(const Env *env, const Episode *ep, int session, int chunk,
                               const TeacherFlaws *flaws, float noise, Rng *rng, int *out,
                               int max) {
    int t0, t1, n = 0, nf = 0;
    if (max < 1) return 0;
    if (synth_chunk_range(env, ep, session, chunk, &t0, &t1) && ep->gold) {
        const Session *S = &ep->sessions[session - 1];
        int flen = synth_fact_cap(env), buf[64];
        for (int k = 0; k < t1 - t0; k++) {
            int dia = S->turns[t0 + k].dia;
            for (int g = 0; g < ep->n_gold[session - 1]; g++) {
                const GoldFact *G = &ep->gold[session - 1][g];
                if (dia == 0 || G->dia != dia || nf >= env->cfg.max_facts) continue;
                if (skipped_third(flaws, G, S->turns[t0 + k].speaker)) continue;
                if (noise > 0 && rng && rng_float(rng) < noise) continue;  // dropped fact
                int fl = vocab_encode(env->vocab, G->text, buf, flen);
                if (fl == 0 || n + fl + 2 > max - 1) continue;
                out[n++] = TOK_TURN0 + k;
                memcpy(out + n, buf, (size_t)fl * sizeof(int));
                n += fl;
                out[n++] = TOK_SEP;
                nf++;
            }
        }
    }
    out[n++] = TOK_EOS;
    return n;
}

// The same key: same person and attribute.
static int same_key(const ParsedFact *a, const ParsedFact *b) {
    return a->attr == b->attr && strcmp(a->p, b->p) == 0;
}

int env_teacher_manage(const Env *env, const Episode *ep, const MemoryBank *bank,
                       const Fact *facts, int n_facts, const Shown *shown, float noise, Rng *rng,
                       int *out, int max) {
    return env_teacher_manage_flawed(env, ep, bank, facts, n_facts, shown, NULL, noise, rng, out,
                                     max);
}

int env_teacher_manage_flawed(const Env *env, const Episode *ep, const MemoryBank *bank,
                              const Fact *facts, int n_facts, const Shown *shown,
                              const TeacherFlaws *flaws, float noise, Rng *rng, int *out,
                              int max) {
    (void)ep;
    int n = 0;
    if (max < 1) return 0;
    int claimed[MAX_SHOWN_SLOTS] = {0};
    const char *fw[64], *sw[64];
    int text[64];
    char buf[256];
    for (int f = 0; f < n_facts; f++) {
        const Fact *F = &facts[f];
        OpKind kind = OP_INSERT;
        int target = -1;
        const int *body = F->tokens;
        int blen = F->len;
        ParsedFact pf, sf;
        int fn = synth_ids_words(env->vocab, F->tokens, F->len, fw, 64);
        if (synth_parse_fact(fw, fn, &pf)) {
            for (int j = 0; j < shown->n && target < 0; j++) {
                int s = shown->slot[j];
                if (claimed[j] || s < 0 || s >= bank->cap || !bank->alive[s]) continue;
                int sn = synth_slot_words(env->vocab, bank, s, sw, 64);
                if (synth_parse_fact(sw, sn, &sf) && same_key(&pf, &sf)) target = j;
            }
        }
        if (target >= 0) {
            const char *cur = synth_fact_current(&sf), *nv = synth_fact_current(&pf);
            if (pf.type == GR_END) {
                kind = cur ? OP_UPDATE : OP_NOOP;  // already ended: nothing to do
            } else if (cur && strcmp(cur, nv) == 0) {
                kind = OP_NOOP;                    // a restatement
            } else {
                kind = OP_UPDATE;
                if (cur && !(pf.type == GR_CHANGE && strcmp(pf.o, cur) == 0)) {
                    // a new value: keep the old one answerable as "previously"
                    gr_format_fact(buf, sizeof buf, GR_CHANGE, pf.p, pf.attr, nv, cur);
                    blen = vocab_encode(env->vocab, buf, text, synth_fact_cap(env));
                    body = text;
                } else if (!cur && pf.type == GR_CHANGE) {
                    // back after an end: the "previously" of the fact is not in memory
                    gr_format_fact(buf, sizeof buf, GR_SET, pf.p, pf.attr, nv, NULL);
                    blen = vocab_encode(env->vocab, buf, text, synth_fact_cap(env));
                    body = text;
                }
            }
            // The designed flaws: a stale value left in place, or kept beside the new one.
            unsigned bit = 1u << pf.attr;
            if (flaws && kind == OP_UPDATE && pf.type == GR_END && (flaws->keep_ended & bit))
                kind = OP_NOOP;
            if (flaws && kind == OP_UPDATE && pf.type != GR_END && cur &&
                (flaws->dup_change & bit)) {
                kind = OP_INSERT;  // the fact as extracted: "<p> now <phrase> <v> , previously <o>"
                body = F->tokens, blen = F->len;
            }
            if (kind == OP_UPDATE) claimed[target] = 1;
        }
        if (noise > 0 && rng && rng_float(rng) < noise) {  // a wrong op
            kind = kind == OP_UPDATE ? OP_INSERT : kind == OP_INSERT ? OP_NOOP
                 : kind == OP_NOOP ? OP_INSERT : OP_NOOP;
        }
        if (blen > synth_fact_cap(env)) blen = synth_fact_cap(env);
        int tk = TOK_TURN0 + (F->turn >= 0 && F->turn < MAX_CHUNK_TURNS ? F->turn : 0);
        int need = kind == OP_NOOP ? 2 : kind == OP_INSERT ? blen + 3 : blen + 4;
        if (n + need > max - 1) break;
        switch (kind) {
        case OP_NOOP: out[n++] = TOK_NOOP; break;
        case OP_DELETE:
            out[n++] = TOK_DELETE;
            out[n++] = TOK_SLOT0 + target;
            break;
        case OP_INSERT:
        case OP_UPDATE:
            out[n++] = kind == OP_INSERT ? TOK_INSERT : TOK_UPDATE;
            if (kind == OP_UPDATE) out[n++] = TOK_SLOT0 + target;
            out[n++] = tk;
            memcpy(out + n, body, (size_t)blen * sizeof(int));
            n += blen;
            break;
        }
        out[n++] = TOK_SEP;
    }
    out[n++] = TOK_EOS;
    return n;
}

