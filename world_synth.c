// world_synth.c: the synthetic world (contract in world_synth.h; the token formats in vocab.h).
//
// Sections, in pipeline order:
//   grammar    parser of the canonical facts and questions of data/grammar.h
//   prompts    extract / manage prompts and the parsers of the two roles' outputs
//   answerer   the frozen reader, compression penalty
//   world      the World interface (world.h) over these functions
// The teacher (gold extraction, the oracle manager, the designed flaws) is world_synth_teacher.c.
//
//
// The frozen answerer. It retrieves the top answer_k slots (BM25 of memory.c, stop words,
// punctuation and special tokens ignored) and reads them as the environment's fixed reader:
//   - a question of the synthetic grammar ("where does alice live ?") becomes the query
//     "alice lives" (the key's canonical phrase); among the retrieved slots, the highest-ranked
//     one that parses as a fact about that key answers: SET/CHANGE -> its value, END -> "none",
//     and for "... before V ?" a CHANGE -> its previous value. When several slots conflict the
//     reader trusts the highest-ranked one, which is how stale memories hurt: a SET is shorter
//     than the CHANGE that superseded it, so BM25 ranks the stale SET first.
//   - a two-hop question ("where does the owner of the cat live ?") first finds the person whose
//     current value is "cat" the same way, then asks about that person.
//   - anything else (real LoCoMo text, or no slot parses): the words of the best slot that are
//     neither in the question nor stop words nor punctuation, at most 12.
// On generated data the oracle bank therefore answers every question exactly (tests check it).
//
// The oracle manager (env_teacher_manage, noise 0) parses each fact and each shown slot with the
// same grammar: a fact whose key has no shown slot -> INSERT; a restatement of the slot's current
// value -> NOOP; a new value -> UPDATE the slot with "p now <phrase> v , previously <old>" (both
// values stay answerable); an end -> UPDATE the slot to "p no longer <phrase> old" (not DELETE:
// the reader answers "none" from it, while an empty bank answers nothing). Facts that do not
// parse (real LoCoMo) are INSERTed.
#include "world_synth.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/grammar.h"
#include "eval.h"
#include "mistakes.h"
#include "world_synth_internal.h"

#define MAX_WORD VOCAB_MAX_WORD  // words are at most this long (vocab.h)
#define MAX_TURN_TOKENS 512      // tokens of one turn considered by the extract prompt
#define ANSWER_MAX_WORDS 12      // fallback answers are cut here

// =============================================================================================
// Grammar of the synthetic world (data/grammar.h)

// Match the space-separated words of phrase at w[i..]; returns how many words matched, 0 if not.
static int match_phrase(const char *const *w, int n, int i, const char *phrase) {
    int k = 0;
    const char *p = phrase;
    while (*p) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (i + k >= n || strlen(w[i + k]) != len || strncmp(w[i + k], p, len) != 0) return 0;
        k++;
        p += len;
        while (*p == ' ') p++;
    }
    return k;
}

int synth_parse_fact(const char *const *w, int n, ParsedFact *f) {
    if (n < 3 || vocab_is_stop_word(w[0])) return 0;
    int i = 1, type = GR_SET;
    if (strcmp(w[1], "now") == 0) type = GR_CHANGE, i = 2;
    else if (n > 3 && strcmp(w[1], "no") == 0 && strcmp(w[2], "longer") == 0) type = GR_END, i = 3;
    for (int a = 0; a < GR_N_ATTRS; a++) {
        int k = match_phrase(w, n, i, GR_ATTRS[a].phrase);
        if (!k) continue;
        int j = i + k;  // the value
        if (j >= n) return 0;
        *f = (ParsedFact){.type = type, .attr = a, .p = w[0], .v = NULL, .o = NULL};
        if (type == GR_SET && j + 1 == n) return f->v = w[j], 1;
        if (type == GR_END && j + 1 == n) return f->o = w[j], 1;
        if (type == GR_CHANGE && j + 4 == n && strcmp(w[j + 1], ",") == 0 &&
            strcmp(w[j + 2], "previously") == 0)
            return f->v = w[j], f->o = w[j + 3], 1;
        return 0;
    }
    return 0;
}

const char *synth_fact_current(const ParsedFact *f) { return f->type == GR_END ? NULL : f->v; }

typedef struct {
    int attr, prev;          // attribute asked; 1 for "... before V ?"
    const char *person;      // NULL for a two-hop question
    int hop_attr;            // two-hop: the bridge attribute and its value
    const char *hop_value;
} ParsedQuestion;

// Match template tokens (whitespace-separated; "{x}" a span of >= 1 words, "{v}" one word).
static int match_template(const char *tmpl, const char *const *w, int n, int *xs, int *xn,
                          int *vi) {
    const char *tt[32];
    char buf[256];
    int nt = 0;
    snprintf(buf, sizeof buf, "%s", tmpl);
    for (char *s = buf; *s && nt < 32;) {  // split on spaces (no strtok: reentrant)
        while (*s == ' ') *s++ = '\0';
        if (!*s) break;
        tt[nt++] = s;
        while (*s && *s != ' ') s++;
    }
    int x = -1;
    for (int i = 0; i < nt; i++)
        if (strcmp(tt[i], "{x}") == 0) x = i;
    *xs = -1, *xn = 0, *vi = -1;
    int wi = 0;
    for (int i = 0; i < nt; i++) {
        if (i == x) {
            int rest = nt - 1 - x;
            int span = n - wi - rest;
            if (span < 1) return 0;
            *xs = wi, *xn = span;
            wi += span;
            continue;
        }
        if (wi >= n) return 0;
        if (strcmp(tt[i], "{v}") == 0) *vi = wi;
        else if (strcmp(tt[i], w[wi]) != 0) return 0;
        wi++;
    }
    return wi == n;
}

static int parse_question(const char *const *w, int n, ParsedQuestion *q) {
    for (int a = 0; a < GR_N_ATTRS; a++) {
        for (int prev = 0; prev <= 1; prev++) {
            int xs, xn, vi;
            if (!match_template(prev ? GR_ATTRS[a].q_prev : GR_ATTRS[a].q_cur, w, n, &xs, &xn,
                                &vi))
                continue;
            *q = (ParsedQuestion){.attr = a, .prev = prev, .person = NULL, .hop_attr = -1};
            if (xn == 1) return q->person = w[xs], 1;
            for (int b = 0; b < GR_N_ATTRS && !prev; b++) {
                int ys, yn, bv;
                if (!GR_ATTRS[b].desc || !match_template(GR_ATTRS[b].desc, w + xs, xn, &ys, &yn, &bv))
                    continue;
                if (bv < 0) continue;
                q->hop_attr = b, q->hop_value = w[xs + bv];
                return 1;
            }
            return 0;
        }
    }
    return 0;
}

// The words of a bank slot (pointers into the vocabulary).
int synth_slot_words(const Vocab *v, const MemoryBank *m, int slot, const char **w, int max) {
    int n = m->len[slot] < max ? m->len[slot] : max;
    const int *row = m->tokens + (size_t)slot * m->slot_len;
    for (int i = 0; i < n; i++) w[i] = vocab_word(v, row[i]);
    return n;
}

int synth_ids_words(const Vocab *v, const int *ids, int n, const char **w, int max) {
    if (n > max) n = max;
    for (int i = 0; i < n; i++) w[i] = vocab_word(v, ids[i]);
    return n;
}

int env_fact_key(const Vocab *v, const int *ids, int n, char *key, size_t keylen, int *ends) {
    const char *w[64];
    ParsedFact f;
    int k = synth_ids_words(v, ids, n, w, 64);
    if (n > 64 || !synth_parse_fact(w, k, &f)) return 0;
    snprintf(key, keylen, "%s|%s", f.p, GR_ATTRS[f.attr].name);
    if (ends) *ends = f.type == GR_END;
    return 1;
}

// =============================================================================================
// Configuration and prompts
// Bank size: memory_snapshot_bytes = cap * (4 * slot_len + 13) = 512 * 109 = 55,808 bytes per
// snapshot; G = 8 rollouts x 33 snapshots (sessions 0..32) = 14.7 MB. The oracle keeps one slot
// per key (<= 7 attributes x 16 people = 112; ~40 with 4 people); store-turns needs one per turn
// (256 at 32 sessions of 8 turns; real LoCoMo's ~700 turns overflow, which is counted).
int env_parse_fact(const Vocab *v, const int *ids, int n, EnvFact *f) {
    const char *w[64];
    ParsedFact pf;
    int wn = synth_ids_words(v, ids, n, w, 64);
    if (n > 64 || !synth_parse_fact(w, wn, &pf)) return 0;
    f->type = pf.type, f->attr = pf.attr;
    snprintf(f->p, sizeof f->p, "%s", pf.p);
    snprintf(f->v, sizeof f->v, "%s", pf.v ? pf.v : "");
    snprintf(f->o, sizeof f->o, "%s", pf.o ? pf.o : "");
    return 1;
}

void env_config_default(EnvConfig *c) {
    c->chunk_turns = 4;   // sessions of ~8 turns -> 2 chunks
    c->retrieve_k = 3;    // slots per fact shown to the manager
    c->max_shown = 12;
    c->bank_cap = 512;    // store-turns at 32 sessions x 8 turns needs 256; real LoCoMo ~700
    c->slot_len = 24;     // canonical facts are <= 10 tokens; raw turns are cut here
    c->max_facts = 6;
    c->answer_k = 8;
    c->rho = 0.7f, c->lambda = 0.3f;
}

static int chunk_turns(const Env *env) {
    int ct = env->cfg.chunk_turns;
    return ct < 1 ? 1 : ct > MAX_CHUNK_TURNS ? MAX_CHUNK_TURNS : ct;
}

static const Session *get_session(const Episode *ep, int session) {
    return (session >= 1 && session <= ep->n_sessions) ? &ep->sessions[session - 1] : NULL;
}

int env_num_chunks(const Env *env, const Episode *ep, int session) {
    const Session *S = get_session(ep, session);
    if (!S) return 0;
    int ct = chunk_turns(env);
    return (S->n_turns + ct - 1) / ct;
}

// Turns [*t0, *t1) of a chunk.
int synth_chunk_range(const Env *env, const Episode *ep, int session, int chunk, int *t0,
                       int *t1) {
    const Session *S = get_session(ep, session);
    int ct = chunk_turns(env);
    if (!S || chunk < 0 || chunk * ct >= S->n_turns) return 0;
    *t0 = chunk * ct;
    *t1 = *t0 + ct < S->n_turns ? *t0 + ct : S->n_turns;
    return 1;
}

int env_extract_prompt(const Env *env, const Episode *ep, int session, int chunk, int *out,
                       int max) {
    int t0, t1;
    if (max < 2 || !synth_chunk_range(env, ep, session, chunk, &t0, &t1)) return 0;
    const Session *S = &ep->sessions[session - 1];
    int nt = t1 - t0;
    const int cap_turn = MAX_TURN_TOKENS;
    int head[MAX_CHUNK_TURNS][MAX_WORD];  // <tK> speaker : (speaker cut to MAX_WORD-2 tokens)
    int nhead[MAX_CHUNK_TURNS];
    int *body = malloc((size_t)nt * cap_turn * sizeof(int));  // (nt, cap_turn)
    int nbody[MAX_CHUNK_TURNS];
    if (!body) return 0;
    int total_head = 0, longest = 0;
    for (int k = 0; k < nt; k++) {
        const Turn *T = &S->turns[t0 + k];
        head[k][0] = TOK_TURN0 + k;
        int h = 1 + vocab_encode(env->vocab, T->speaker, head[k] + 1, MAX_WORD - 2);
        h += vocab_encode(env->vocab, ":", head[k] + h, 1);
        nhead[k] = h;
        nbody[k] = vocab_encode(env->vocab, T->text, body + (size_t)k * cap_turn, cap_turn);
        total_head += h;
        if (nbody[k] > longest) longest = nbody[k];
    }
    // Water-filling: the largest per-turn cap L with sum(head + min(body, L)) <= budget, so a
    // long turn is cut before a short one loses anything.
    int budget = max - 2, L = longest;
    for (;;) {
        long need = total_head;
        for (int k = 0; k < nt; k++) need += nbody[k] < L ? nbody[k] : L;
        if (need <= budget || L == 0) break;
        L--;
    }
    int n = 0;
    out[n++] = TOK_EXTRACT;
    for (int k = 0; k < nt; k++) {
        for (int i = 0; i < nhead[k] && n < max - 1; i++) out[n++] = head[k][i];
        int nb = nbody[k] < L ? nbody[k] : L;
        for (int i = 0; i < nb && n < max - 1; i++) out[n++] = body[(size_t)k * cap_turn + i];
    }
    out[n++] = TOK_OUT;
    free(body);
    return n;
}

static int is_special(int id) { return id < TOK_FIRST_WORD; }
static int is_turn_tok(int id) { return id >= TOK_TURN0 && id < TOK_TURN0 + MAX_CHUNK_TURNS; }
static int is_slot_tok(int id) { return id >= TOK_SLOT0 && id < TOK_SLOT0 + MAX_SHOWN_SLOTS; }

int synth_fact_cap(const Env *env) {
    int c = env->cfg.slot_len;
    int room = (int)(sizeof(((Fact *)0)->tokens) / sizeof(int));
    return c < 1 ? 1 : c > room ? room : c;
}

int env_parse_extract(const Env *env, const Episode *ep, int session, int chunk, const int *gen,
                      int len, Fact *facts, int max, int *malformed) {
    int t0 = 0, t1 = 0, n = 0, bad = 0;
    int have = synth_chunk_range(env, ep, session, chunk, &t0, &t1);
    int cap = env->cfg.max_facts < max ? env->cfg.max_facts : max;
    int flen = synth_fact_cap(env);
    int i = 0, ended = 0;
    while (i < len) {
        if (gen[i] == TOK_EOS) {
            ended = 1;
            break;
        }
        // one fact: <tK> words <sep>
        int k = -1;
        if (is_turn_tok(gen[i])) k = gen[i++] - TOK_TURN0;
        int j = i, special = 0;
        while (j < len && gen[j] != TOK_SEP && gen[j] != TOK_EOS) special |= is_special(gen[j++]);
        int ok = k >= 0 && have && k < t1 - t0 && j > i && !special && j < len &&
                 gen[j] == TOK_SEP;
        if (!ok) bad = 1;
        if (ok && n < cap) {
            Fact *f = &facts[n++];
            memset(f, 0, sizeof *f);
            f->len = j - i < flen ? j - i : flen;
            memcpy(f->tokens, gen + i, (size_t)f->len * sizeof(int));
            f->evidence = ep->sessions[session - 1].turns[t0 + k].dia;
            f->turn = k;
        }
        i = (j < len && gen[j] == TOK_SEP) ? j + 1 : j;
    }
    if (!ended) bad = 1;
    if (malformed) *malformed = bad;
    return n;
}

// Retrieval through memory.c with the vocabulary's stop mask.
static int retrieve(const Env *env, const MemoryBank *bank, const int *q, int qn, int k,
                    int *out) {
    if (k <= 0 || qn <= 0) return 0;
    return memory_retrieve_masked(bank, q, qn, vocab_stop_mask(env->vocab),
                                  vocab_size(env->vocab), k, out);
}

int env_manage_prompt(const Env *env, const MemoryBank *bank, const Fact *facts, int n_facts,
                      Shown *shown, int *out, int max) {
    shown->n = 0;
    int max_shown = env->cfg.max_shown < MAX_SHOWN_SLOTS ? env->cfg.max_shown : MAX_SHOWN_SLOTS;
    int rk = env->cfg.retrieve_k, got[MAX_SHOWN_SLOTS];
    if (rk > MAX_SHOWN_SLOTS) rk = MAX_SHOWN_SLOTS;
    for (int f = 0; f < n_facts && shown->n < max_shown; f++) {
        int r = retrieve(env, bank, facts[f].tokens, facts[f].len, rk, got);
        for (int i = 0; i < r && shown->n < max_shown; i++) {
            int dup = 0;
            for (int j = 0; j < shown->n; j++) dup |= shown->slot[j] == got[i];
            if (!dup) shown->slot[shown->n++] = got[i];
        }
    }
    if (max < 3) return 0;
    // fit: <manage> [<mK> slot]* <facts> [<tK> fact <sep>]* <out>; drop shown slots from the end
    int fact_part = 2;
    for (int f = 0; f < n_facts; f++) fact_part += facts[f].len + 2;
    int slot_part = 1;
    for (int j = 0; j < shown->n; j++) slot_part += 1 + bank->len[shown->slot[j]];
    while (shown->n > 0 && slot_part + fact_part > max)
        slot_part -= 1 + bank->len[shown->slot[--shown->n]];
    int n = 0;
    out[n++] = TOK_MANAGE;
    for (int j = 0; j < shown->n; j++) {
        int s = shown->slot[j];
        out[n++] = TOK_SLOT0 + j;
        const int *row = bank->tokens + (size_t)s * bank->slot_len;
        for (int i = 0; i < bank->len[s]; i++) out[n++] = row[i];
    }
    if (n < max - 1) out[n++] = TOK_FACTS;
    for (int f = 0; f < n_facts; f++) {
        if (n + facts[f].len + 2 > max - 1) break;
        out[n++] = TOK_TURN0 + (facts[f].turn >= 0 && facts[f].turn < MAX_CHUNK_TURNS ? facts[f].turn : 0);
        for (int i = 0; i < facts[f].len; i++) out[n++] = facts[f].tokens[i];
        out[n++] = TOK_SEP;
    }
    out[n++] = TOK_OUT;
    return n;
}

static int evidence_of_turn(const Fact *facts, int n_facts, int k) {
    for (int f = 0; f < n_facts; f++)
        if (facts[f].turn == k) return facts[f].evidence;
    return 0;
}

int env_parse_manage(const Env *env, const int *gen, int len, const Fact *facts, int n_facts,
                     const Shown *shown, MemoryOp *ops, int max, int *n_invalid, int *malformed) {
    int n = 0, bad = 0, invalid = 0, ended = 0, i = 0;
    while (i < len) {
        int op = gen[i];
        if (op == TOK_EOS) {
            ended = 1;
            break;
        }
        int j = i + 1;
        while (j < len && gen[j] != TOK_SEP && gen[j] != TOK_EOS) j++;
        // the op's arguments are gen[i+1 .. j)
        const int *a = gen + i + 1;
        int na = j - i - 1;
        int closed = j < len && gen[j] == TOK_SEP;
        if (!closed) bad = 1;
        MemoryOp o = {.kind = OP_NOOP, .slot = -1, .fact = NULL, .fact_len = 0, .evidence = 0};
        int keep = closed;
        if (op == TOK_NOOP) {
            if (na != 0) bad = 1;
        } else if (op == TOK_DELETE || op == TOK_UPDATE) {
            o.kind = op == TOK_DELETE ? OP_DELETE : OP_UPDATE;
            if (na < 1 || !is_slot_tok(a[0])) {
                bad = 1, keep = 0;
            } else if (a[0] - TOK_SLOT0 >= shown->n) {
                invalid++, keep = 0;  // a well-formed id that names no shown slot
            } else {
                o.slot = shown->slot[a[0] - TOK_SLOT0];
            }
            if (na > 0) a++, na--;
            if (op == TOK_DELETE && na != 0) bad = 1;
        } else if (op == TOK_INSERT) {
            o.kind = OP_INSERT;
        } else {
            bad = 1, keep = 0;  // not an op word: skip to the next <sep>
        }
        if (keep && (o.kind == OP_INSERT || o.kind == OP_UPDATE)) {
            if (na > 0 && is_turn_tok(a[0])) {
                o.evidence = evidence_of_turn(facts, n_facts, a[0] - TOK_TURN0);
                a++, na--;
            } else {
                bad = 1;  // the fact's source turn is missing
            }
            int special = 0;
            for (int k = 0; k < na; k++) special |= is_special(a[k]);
            if (special) bad = 1, keep = 0;
            else if (na == 0) invalid++, keep = 0;
            o.fact = a, o.fact_len = na;
        }
        if (keep && n < max) ops[n++] = o;
        i = closed ? j + 1 : j;
    }
    if (!ended) bad = 1;
    (void)env;
    if (n_invalid) *n_invalid = invalid;
    if (malformed) *malformed = bad;
    return n;
}


// =============================================================================================
// The frozen answerer
static int encode_words(const Env *env, const char *text, int *out, int max) {
    return vocab_encode(env->vocab, text, out, max);
}

// The highest-ranked retrieved slot that parses as a fact about (person, attr); -1 if none.
static int find_key_slot(const Env *env, const MemoryBank *bank, const int *hits, int nh,
                         const char *person, int attr, ParsedFact *pf, const char **w) {
    for (int i = 0; i < nh; i++) {
        int n = synth_slot_words(env->vocab, bank, hits[i], w, 64);
        if (synth_parse_fact(w, n, pf) && pf->attr == attr && strcmp(pf->p, person) == 0)
            return hits[i];
    }
    return -1;
}

QAScore env_answer(const Env *env, const MemoryBank *bank, const Episode *ep, const Question *q,
                   char *pred, size_t predlen) {
    (void)ep;
    enum { QMAX = 256 };
    int qids[QMAX], hits[MAX_SHOWN_SLOTS * 4], query[32];
    int k = env->cfg.answer_k;
    if (k > (int)(sizeof hits / sizeof hits[0])) k = (int)(sizeof hits / sizeof hits[0]);
    char qtext[1024], person[MAX_WORD], local[512];
    if (!pred || predlen == 0) pred = local, predlen = sizeof local;
    const char *qw[QMAX], *w[64];
    int qn = encode_words(env, q->question, qids, QMAX);
    synth_ids_words(env->vocab, qids, qn, qw, QMAX);
    pred[0] = '\0';
    ParsedQuestion pq;
    int answered = 0, nh = 0;
    if (parse_question(qw, qn, &pq)) {
        ParsedFact pf;
        int ok = 1;
        if (!pq.person) {  // two-hop: who holds the bridge value now?
            snprintf(qtext, sizeof qtext, "%s %s", GR_ATTRS[pq.hop_attr].phrase, pq.hop_value);
            int n = encode_words(env, qtext, query, 32);
            nh = retrieve(env, bank, query, n, k, hits);
            ok = 0;
            for (int i = 0; i < nh && !ok; i++) {
                int sn = synth_slot_words(env->vocab, bank, hits[i], w, 64);
                const char *cur;
                if (synth_parse_fact(w, sn, &pf) && pf.attr == pq.hop_attr &&
                    (cur = synth_fact_current(&pf)) &&
                    strcmp(cur, pq.hop_value) == 0) {
                    snprintf(person, sizeof person, "%s", pf.p);
                    ok = 1;
                }
            }
        } else {
            snprintf(person, sizeof person, "%s", pq.person);
        }
        if (ok) {
            snprintf(qtext, sizeof qtext, "%s %s", person, GR_ATTRS[pq.attr].phrase);
            int n = encode_words(env, qtext, query, 32);
            nh = retrieve(env, bank, query, n, k, hits);
            if (find_key_slot(env, bank, hits, nh, person, pq.attr, &pf, w) >= 0) {
                const char *a = pq.prev ? (pf.type == GR_CHANGE ? pf.o : "")
                                        : (pf.type == GR_END ? "none" : pf.v);
                snprintf(pred, predlen, "%s", a);
                answered = 1;
            }
        }
    }
    if (!answered) {
        // Fallback reader: the best slot for the question's words, minus those words.
        nh = retrieve(env, bank, qids, qn, k, hits);
        if (nh > 0) {
            const int *row = bank->tokens + (size_t)hits[0] * bank->slot_len;
            size_t used = 0;
            int words = 0;
            for (int i = 0; i < bank->len[hits[0]] && words < ANSWER_MAX_WORDS; i++) {
                int id = row[i];
                if (id < vocab_size(env->vocab) && vocab_stop_mask(env->vocab)[id]) continue;
                int in_q = 0;
                for (int j = 0; j < qn && !in_q; j++) in_q = qids[j] == id;
                if (in_q || id == TOK_UNK) continue;
                int r = snprintf(pred + used, predlen > used ? predlen - used : 0, "%s%s",
                                 words ? " " : "", vocab_word(env->vocab, id));
                if (r < 0 || used + (size_t)r >= predlen) break;
                used += (size_t)r, words++;
            }
        }
    }
    return score_answer(pred, q->answer);
}

long env_words_seen(const Env *env, const Episode *ep, int session) {
    (void)env;
    long n = 0;
    for (int s = 1; s <= session && s <= ep->n_sessions; s++)
        for (int t = 0; t < ep->sessions[s - 1].n_turns; t++)
            n += vocab_count_tokens(ep->sessions[s - 1].turns[t].text);
    return n;
}

double env_compression_penalty(const Env *env, const MemoryBank *bank, long words_seen) {
    if (words_seen <= 0) return 0.0;
    double x = ((double)memory_words(bank) - env->cfg.rho * (double)words_seen) / words_seen;
    return x > 0 ? x : 0.0;  // lambda is applied by the reward (grpo.c, train.c)
}


// =============================================================================================
// The World interface (world.h). The state is the Env (first member, so a state pointer is an
// Env pointer) and, when the world owns it, the vocabulary.
typedef struct {
    Env env;
    Vocab *owned;
} SynthState;

static void ws_bank_shape(const void *s, const Episode *ep, int *cap, int *slot_len) {
    (void)ep;  // the synthetic world's banks are one size (env_config_default says why)
    *cap = ((const Env *)s)->cfg.bank_cap;
    *slot_len = ((const Env *)s)->cfg.slot_len;
}
static int ws_num_chunks(const void *s, const Episode *ep, int session) {
    return env_num_chunks(s, ep, session);
}
static int ws_extract_prompt(const void *s, const Episode *ep, int session, int chunk, int *out,
                             int max) {
    return env_extract_prompt(s, ep, session, chunk, out, max);
}
static int ws_parse_extract(const void *s, const Episode *ep, int session, int chunk,
                            const int *gen, int len, Fact *facts, int max, int *malformed) {
    return env_parse_extract(s, ep, session, chunk, gen, len, facts, max, malformed);
}
static int ws_manage_prompt(const void *s, const Episode *ep, const MemoryBank *bank,
                            const Fact *facts, int n_facts, Shown *shown, int *out, int max) {
    (void)ep;
    return env_manage_prompt(s, bank, facts, n_facts, shown, out, max);
}
static int ws_parse_manage(const void *s, const int *gen, int len, const Fact *facts, int n_facts,
                           const Shown *shown, MemoryOp *ops, int max, int *fact_store,
                           int *n_invalid, int *malformed) {
    (void)fact_store;  // ops point into gen
    return env_parse_manage(s, gen, len, facts, n_facts, shown, ops, max, n_invalid, malformed);
}
static int ws_teacher_extract(const void *s, const Episode *ep, int session, int chunk,
                              const TeacherFlaws *flaws, float noise, Rng *rng, int *out,
                              int max) {
    return env_teacher_extract_flawed(s, ep, session, chunk, flaws, noise, rng, out, max);
}
static int ws_teacher_manage(const void *s, const Episode *ep, const MemoryBank *bank,
                             const Fact *facts, int n_facts, const Shown *shown,
                             const TeacherFlaws *flaws, float noise, Rng *rng, int *out,
                             int max) {
    return env_teacher_manage_flawed(s, ep, bank, facts, n_facts, shown, flaws, noise, rng, out,
                                     max);
}
static int ws_answer(const void *s, const MemoryBank *bank, const Episode *ep, int session,
                     const int *qidx, int nq, QAScore *scores) {
    (void)session;
    char pred[512];
    for (int i = 0; i < nq; i++)
        scores[i] = env_answer(s, bank, ep, &ep->qa[qidx[i]], pred, sizeof pred);
    return 0;
}
static long ws_words_seen(const void *s, const Episode *ep, int session) {
    return env_words_seen(s, ep, session);
}
static double ws_compression_penalty(const void *s, const MemoryBank *bank, long words_seen) {
    return env_compression_penalty(s, bank, words_seen);
}
static int ws_encode(const void *s, const char *text, int *out, int max) {
    return vocab_encode(((const Env *)s)->vocab, text, out, max);
}
static const char *ws_token_text(void *s, int id) {
    return vocab_word(((const Env *)s)->vocab, id);
}
static int ws_session_mistakes(const void *s, const Episode *ep, int session,
                               const struct TurnBuffer *tb, int lane, const MemoryBank *bank,
                               struct MistakeCounts *mc) {
    return mistakes_add_session(s, ep, session, tb, lane, bank, mc);
}
static void ws_destroy(World *w) {
    SynthState *st = w->state;
    if (st) vocab_free(st->owned);
    free(st);
    memset(w, 0, sizeof *w);
}

void world_synth_wrap(World *w, const Env *env) {
    *w = (World){
        .name = "synth", .state = (void *)env, .stop_token = TOK_EOS, .pad_token = TOK_PAD,
        .vocab_size = vocab_size(env->vocab), .tokenizer_hash = vocab_hash(env->vocab),
        // room for 48 extractor and 64 manager tokens (the teacher's longest outputs are 38
        // and 45 on generated data)
        .max_new_extract = 48, .max_new_manage = 64,
        .default_flaws = teacher_flaws_default(),
        .bank_shape = ws_bank_shape, .num_chunks = ws_num_chunks,
        .extract_prompt = ws_extract_prompt, .parse_extract = ws_parse_extract,
        .manage_prompt = ws_manage_prompt, .parse_manage = ws_parse_manage,
        .teacher_extract = ws_teacher_extract, .teacher_manage = ws_teacher_manage,
        .answer = ws_answer, .words_seen = ws_words_seen,
        .compression_penalty = ws_compression_penalty, .encode = ws_encode,
        .token_text = ws_token_text, .session_mistakes = ws_session_mistakes, .destroy = NULL};
}

int world_synth_open(World *w, const Env *env, Vocab *vocab, int own_vocab) {
    memset(w, 0, sizeof *w);
    SynthState *st = calloc(1, sizeof *st);
    if (!st) {
        fprintf(stderr, "world_synth_open: out of memory\n");
        if (own_vocab) vocab_free(vocab);
        return -1;
    }
    st->env = *env;
    st->env.vocab = vocab;
    st->owned = own_vocab ? vocab : NULL;
    world_synth_wrap(w, &st->env);  // st->env is st's first member: the state is st
    w->destroy = ws_destroy;
    return 0;
}
