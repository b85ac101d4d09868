// env.c: the world the memory agent lives in (see env.h for the contract and the token formats).
//
// Sections, in pipeline order:
//   loader     LoCoMo JSON -> Dataset (cJSON), robust to the real files' quirks
//   tokenizer  lower-cased words and single punctuation characters; vocab in an stb_ds hash map
//   grammar    parser of the canonical facts and questions of data/grammar.h
//   prompts    extract / manage prompts and the parsers of the two roles' outputs
//   teacher    gold extraction and the oracle manager, with a noise knob
//   answerer   the frozen reader, SQuAD-style scores, compression penalty
//   eval       M-Fail bookkeeping, whole-episode baselines, the summary line
//
// This file owns STB_DS_IMPLEMENTATION for the whole program.
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
#define STB_DS_IMPLEMENTATION
#include <stb/stb_ds.h>

#include "env.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "data/grammar.h"

#define MAX_WORD 64          // longer words are cut (tokenizer)
#define MAX_TURN_TOKENS 512  // tokens of one turn considered by the extract prompt
#define ANSWER_MAX_WORDS 12  // fallback answers are cut here

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

// =============================================================================================
// Tokenizer core: a token is a run of letters and digits (bytes >= 0x80 count as letters, so
// UTF-8 stays inside words; numbers are words) or one other non-space character. Lower-cased.
// Returns the token length written to buf (cut to bufsz-1), 0 at the end of the text.
static int next_token(const char **p, char *buf, size_t bufsz) {
    const unsigned char *s = (const unsigned char *)*p;
    while (*s && isspace(*s)) s++;
    if (!*s) {
        *p = (const char *)s;
        return 0;
    }
    size_t n = 0;
#define WORDCH(c) (isalnum(c) || (c) >= 0x80)
    if (WORDCH(*s)) {
        while (*s && WORDCH(*s)) {
            if (n + 1 < bufsz) buf[n++] = (char)tolower(*s);
            s++;
        }
    } else {
        buf[n++] = (char)*s++;
    }
#undef WORDCH
    buf[n] = '\0';
    *p = (const char *)s;
    return (int)n;
}

static int count_tokens(const char *text) {
    char w[MAX_WORD];
    int n = 0;
    if (!text) return 0;
    while (next_token(&text, w, sizeof w)) n++;
    return n;
}

// =============================================================================================
// Loader
typedef struct {
    const char *path;
    char *err;
    size_t errlen;
} LoadCtx;

static int load_fail(LoadCtx *c, const char *fmt, ...) {
    if (!c->err || c->errlen == 0) return -1;
    int k = snprintf(c->err, c->errlen, "%s: ", c->path);
    if (k < 0 || (size_t)k >= c->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

// A JSON number that is an integer in [lo, hi]: NaN, infinities, fractions and out-of-range
// values are not, so the (int) conversion after this check is always defined.
static int is_int_in(const cJSON *j, int lo, int hi) {
    if (!cJSON_IsNumber(j)) return 0;
    double x = j->valuedouble;
    return x >= (double)lo && x <= (double)hi && x == floor(x);
}

// All "D<s>:<t>" ids in a string ("D8:6; D9:17" gives two). Returns how many were written.
static int parse_dia_ids(const char *s, int *out, int max) {
    int n = 0;
    for (const char *p = s; *p; p++) {
        if (*p != 'D' && *p != 'd') continue;
        const char *q = p + 1;
        if (!isdigit((unsigned char)*q)) continue;
        long ss = 0, tt = 0;
        while (isdigit((unsigned char)*q) && ss < 1000000) ss = ss * 10 + (*q++ - '0');
        if (*q != ':' || !isdigit((unsigned char)q[1])) continue;
        q++;
        while (isdigit((unsigned char)*q) && tt < 1000000) tt = tt * 10 + (*q++ - '0');
        if (ss >= 1 && ss < 100000 && tt < 1000 && n < max) out[n++] = DIA_CODE((int)ss, (int)tt);
        p = q - 1;
    }
    return n;
}

static int parse_dia_one(const cJSON *j) {
    int d[4];
    if (cJSON_IsString(j) && parse_dia_ids(j->valuestring, d, 4) > 0) return d[0];
    if (cJSON_IsArray(j)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            int x = parse_dia_one(e);
            if (x) return x;
        }
    }
    return 0;
}

// "session_<N><suffix>" -> N, or 0 if key does not have exactly that shape.
static int session_key(const char *key, const char *suffix) {
    if (strncmp(key, "session_", 8) != 0) return 0;
    const char *p = key + 8;
    if (!isdigit((unsigned char)*p)) return 0;
    long n = 0;
    while (isdigit((unsigned char)*p) && n < 100000) n = n * 10 + (*p++ - '0');
    if (strcmp(p, suffix) != 0 || n < 1 || n >= 100000) return 0;
    return (int)n;
}

static void episode_free(Episode *e) {
    free(e->sample_id), free(e->speaker_a), free(e->speaker_b);
    for (int s = 0; s < e->n_sessions; s++) {
        Session *S = &e->sessions[s];
        for (int t = 0; t < S->n_turns; t++) free(S->turns[t].speaker), free(S->turns[t].text);
        free(S->turns);
        free(S->date_time);
        if (e->gold) {
            for (int g = 0; g < e->n_gold[s]; g++) free(e->gold[s][g].text), free(e->gold[s][g].key);
            free(e->gold[s]);
        }
    }
    free(e->sessions);
    free(e->gold);
    free(e->n_gold);
    for (int q = 0; q < e->n_qa; q++)
        free(e->qa[q].question), free(e->qa[q].answer), free(e->qa[q].evidence);
    free(e->qa);
    memset(e, 0, sizeof *e);
}

static int load_turns(LoadCtx *c, const cJSON *arr, int si, const char *sid, int sess,
                      Session *S) {
    int n = cJSON_GetArraySize(arr);
    S->turns = calloc(n > 0 ? (size_t)n : 1, sizeof(Turn));
    if (!S->turns) return load_fail(c, "out of memory");
    const cJSON *t;
    int ti = 0;
    cJSON_ArrayForEach(t, arr) {
        if (!cJSON_IsObject(t))
            return load_fail(c, "sample %d (%s): session_%d turn %d: expected an object", si, sid,
                             sess, ti);
        const cJSON *spk = cJSON_GetObjectItemCaseSensitive(t, "speaker");
        const cJSON *txt = cJSON_GetObjectItemCaseSensitive(t, "text");
        const cJSON *dia = cJSON_GetObjectItemCaseSensitive(t, "dia_id");
        const cJSON *cap = cJSON_GetObjectItemCaseSensitive(t, "blip_caption");
        if (!cJSON_IsString(spk))
            return load_fail(c, "sample %d (%s): session_%d turn %d: field 'speaker': %s", si, sid,
                             sess, ti, spk ? "expected a string" : "missing");
        if (!cJSON_IsString(txt))
            return load_fail(c, "sample %d (%s): session_%d turn %d: field 'text': %s", si, sid,
                             sess, ti, txt ? "expected a string" : "missing");
        Turn *T = &S->turns[ti];
        T->speaker = xstrdup(spk->valuestring);
        if (cJSON_IsString(cap) && cap->valuestring[0]) {
            size_t len = strlen(txt->valuestring) + strlen(cap->valuestring) + 16;
            T->text = malloc(len);
            if (T->text) snprintf(T->text, len, "%s [image: %s]", txt->valuestring, cap->valuestring);
        } else {
            T->text = xstrdup(txt->valuestring);
        }
        S->n_turns = ++ti;
        if (!T->speaker || !T->text) return load_fail(c, "out of memory");
        T->dia = parse_dia_one(dia);
    }
    return 0;
}

// Answers may be strings or numbers (LoCoMo has both); numbers become text.
static char *answer_text(const cJSON *a) {
    char buf[64];
    if (cJSON_IsString(a)) return xstrdup(a->valuestring);
    if (cJSON_IsNumber(a)) {
        double v = a->valuedouble;
        if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, sizeof buf, "%.0f", v);
        else snprintf(buf, sizeof buf, "%g", v);
        return xstrdup(buf);
    }
    if (cJSON_IsBool(a)) return xstrdup(cJSON_IsTrue(a) ? "yes" : "no");
    return NULL;
}

static int load_qa(LoadCtx *c, const cJSON *qa, int si, const char *sid, Episode *E,
                   Dataset *ds) {
    int n = cJSON_GetArraySize(qa);
    E->qa = calloc(n > 0 ? (size_t)n : 1, sizeof(Question));
    if (!E->qa) return load_fail(c, "out of memory");
    const cJSON *q;
    int qi = -1;
    cJSON_ArrayForEach(q, qa) {
        qi++;
        if (!cJSON_IsObject(q))
            return load_fail(c, "sample %d (%s): qa %d: expected an object", si, sid, qi);
        const cJSON *qs = cJSON_GetObjectItemCaseSensitive(q, "question");
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(q, "answer");
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(q, "evidence");
        const cJSON *ca = cJSON_GetObjectItemCaseSensitive(q, "category");
        if (qs && !cJSON_IsString(qs))
            return load_fail(c, "sample %d (%s): qa %d: field 'question': expected a string", si,
                             sid, qi);
        if (an && !cJSON_IsNull(an) && !cJSON_IsString(an) && !cJSON_IsNumber(an) &&
            !cJSON_IsBool(an))
            return load_fail(c, "sample %d (%s): qa %d: field 'answer': expected a string or a "
                                "number", si, sid, qi);
        // Every number is checked before it is converted: a cast of 1e300 to int is undefined.
        if (ca && !is_int_in(ca, 0, 1000))
            return load_fail(c, "sample %d (%s): qa %d: field 'category': expected an integer in "
                                "[0, 1000]", si, sid, qi);
        const cJSON *vu = cJSON_GetObjectItemCaseSensitive(q, "memr2_valid_until");
        if (vu && !is_int_in(vu, 1, QUESTION_FOREVER))
            return load_fail(c, "sample %d (%s): qa %d: field 'memr2_valid_until': expected an "
                                "integer in [1, %d]", si, sid, qi, QUESTION_FOREVER);
        if (ev && !cJSON_IsArray(ev) && !cJSON_IsString(ev))
            return load_fail(c, "sample %d (%s): qa %d: field 'evidence': expected a list of "
                                "dia_ids", si, sid, qi);
        if (!qs || !an || cJSON_IsNull(an)) {  // e.g. adversarial questions: no 'answer'
            ds->questions_skipped++;
            continue;
        }
        // evidence: every D<s>:<t> in every string; items giving none are counted
        int ids[64], ne = 0;
        const cJSON *e;
        if (cJSON_IsString(ev)) {
            int k = parse_dia_ids(ev->valuestring, ids, 64);
            if (k == 0) ds->evidence_skipped++;
            ne = k;
        } else if (ev) {
            cJSON_ArrayForEach(e, ev) {
                int k = cJSON_IsString(e) ? parse_dia_ids(e->valuestring, ids + ne, 64 - ne) : 0;
                if (k == 0) ds->evidence_skipped++;
                ne += k;
            }
        }
        int kept = 0, last = 0;
        for (int i = 0; i < ne; i++) {
            if (DIA_SESSION(ids[i]) > E->n_sessions) {  // points past the conversation
                ds->evidence_skipped++;
                continue;
            }
            ids[kept++] = ids[i];
            if (DIA_SESSION(ids[i]) > last) last = DIA_SESSION(ids[i]);
        }
        if (kept == 0) {
            ds->questions_skipped++;
            continue;
        }
        Question *Q = &E->qa[E->n_qa];
        Q->question = xstrdup(qs->valuestring);
        Q->answer = answer_text(an);
        Q->evidence = malloc((size_t)kept * sizeof(int));
        if (!Q->question || !Q->answer || !Q->evidence) {
            free(Q->question), free(Q->answer), free(Q->evidence);
            return load_fail(c, "out of memory");
        }
        memcpy(Q->evidence, ids, (size_t)kept * sizeof(int));
        Q->n_evidence = kept;
        Q->category = ca ? (int)ca->valuedouble : 0;  // range-checked above
        Q->last_session = last;
        Q->valid_until = vu ? (int)vu->valuedouble : QUESTION_FOREVER;  // range-checked above
        E->n_qa++;
    }
    return 0;
}

// Gold facts: observation.session_N_observation.{speaker: [[fact, dia_id], ...]}, sorted by
// dia_id (stable), with key/ends from memr2_facts.session_N when present.
static int load_gold(LoadCtx *c, const cJSON *obs, const cJSON *mfacts, int si, const char *sid,
                     Episode *E) {
    E->gold = calloc((size_t)E->n_sessions, sizeof(GoldFact *));
    E->n_gold = calloc((size_t)E->n_sessions, sizeof(int));
    if (!E->gold || !E->n_gold) return load_fail(c, "out of memory");
    const cJSON *so;
    cJSON_ArrayForEach(so, obs) {
        int s = session_key(so->string ? so->string : "", "_observation");
        if (s < 1 || s > E->n_sessions) continue;
        if (!cJSON_IsObject(so))
            return load_fail(c, "sample %d (%s): observation.%s: expected an object of speakers",
                             si, sid, so->string);
        int total = 0;
        const cJSON *sp;
        cJSON_ArrayForEach(sp, so) {
            if (!cJSON_IsArray(sp))
                return load_fail(c, "sample %d (%s): observation.%s.%s: expected a list of "
                                    "[fact, dia_id]", si, sid, so->string, sp->string);
            total += cJSON_GetArraySize(sp);
        }
        GoldFact *g = calloc(total > 0 ? (size_t)total : 1, sizeof(GoldFact));
        if (!g) return load_fail(c, "out of memory");
        for (int k = 0; k < E->n_gold[s - 1]; k++)  // a repeated key: the last one wins
            free(E->gold[s - 1][k].text), free(E->gold[s - 1][k].key);
        free(E->gold[s - 1]);
        E->gold[s - 1] = g;
        E->n_gold[s - 1] = 0;
        cJSON_ArrayForEach(sp, so) {
            const cJSON *pair;
            int pi = -1;
            cJSON_ArrayForEach(pair, sp) {
                pi++;
                const cJSON *ft = cJSON_IsArray(pair) ? cJSON_GetArrayItem(pair, 0) : NULL;
                if (!cJSON_IsString(ft))
                    return load_fail(c, "sample %d (%s): observation.%s.%s item %d: expected "
                                        "[fact, dia_id]", si, sid, so->string, sp->string, pi);
                GoldFact *G = &g[E->n_gold[s - 1]];
                G->text = xstrdup(ft->valuestring);
                if (!G->text) return load_fail(c, "out of memory");
                G->dia = parse_dia_one(cJSON_GetArrayItem(pair, 1));
                E->n_gold[s - 1]++;
            }
        }
        // stable insertion sort by dia_id: the teacher emits facts in conversation order
        for (int i = 1; i < E->n_gold[s - 1]; i++) {
            GoldFact x = g[i];
            int j = i - 1;
            while (j >= 0 && g[j].dia > x.dia) g[j + 1] = g[j], j--;
            g[j + 1] = x;
        }
        // structured annotation of the generator
        char key[32];
        snprintf(key, sizeof key, "session_%d", s);
        const cJSON *ms = mfacts ? cJSON_GetObjectItemCaseSensitive(mfacts, key) : NULL;
        const cJSON *m;
        if (cJSON_IsArray(ms)) cJSON_ArrayForEach(m, ms) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(m, "fact");
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(m, "key");
            const cJSON *en = cJSON_GetObjectItemCaseSensitive(m, "ends");
            int d = parse_dia_one(cJSON_GetObjectItemCaseSensitive(m, "dia_id"));
            if (!cJSON_IsString(f) || !cJSON_IsString(k)) continue;
            for (int i = 0; i < E->n_gold[s - 1]; i++) {
                if (g[i].key || g[i].dia != d || strcmp(g[i].text, f->valuestring) != 0) continue;
                g[i].key = xstrdup(k->valuestring);
                if (!g[i].key) return load_fail(c, "out of memory");
                g[i].ends = cJSON_IsNumber(en) ? en->valuedouble != 0.0 : cJSON_IsTrue(en);
                break;
            }
        }
    }
    return 0;
}

static int load_sample(LoadCtx *c, const cJSON *smp, int si, Episode *E, Dataset *ds) {
    char sid[128];
    snprintf(sid, sizeof sid, "#%d", si);
    if (!cJSON_IsObject(smp)) return load_fail(c, "sample %d: expected an object", si);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(smp, "sample_id");
    if (cJSON_IsString(id)) snprintf(sid, sizeof sid, "%s", id->valuestring);
    else if (cJSON_IsNumber(id)) snprintf(sid, sizeof sid, "%g", id->valuedouble);
    E->sample_id = xstrdup(sid);
    if (!E->sample_id) return load_fail(c, "out of memory");
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(smp, "conversation");
    if (!cJSON_IsObject(conv))
        return load_fail(c, "sample %d (%s): field 'conversation': %s", si, sid,
                         conv ? "expected an object" : "missing");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(conv, "speaker_a");
    const cJSON *sb = cJSON_GetObjectItemCaseSensitive(conv, "speaker_b");
    if (!cJSON_IsString(sa) || !cJSON_IsString(sb))
        return load_fail(c, "sample %d (%s): conversation: field '%s': %s", si, sid,
                         !cJSON_IsString(sa) ? "speaker_a" : "speaker_b",
                         (!cJSON_IsString(sa) ? sa : sb) ? "expected a string" : "missing");
    E->speaker_a = xstrdup(sa->valuestring);
    E->speaker_b = xstrdup(sb->valuestring);
    if (!E->speaker_a || !E->speaker_b) return load_fail(c, "out of memory");
    // sessions: the largest N of a "session_N" key; absent ones in between stay empty
    const cJSON *it;
    int ns = 0;
    cJSON_ArrayForEach(it, conv) {
        int s = session_key(it->string ? it->string : "", "");
        if (s > ns) ns = s;
    }
    if (ns == 0) return load_fail(c, "sample %d (%s): conversation: no session_N field", si, sid);
    if (ns > 999)  // dia_ids pack the session into DIA_CODE
        return load_fail(c, "sample %d (%s): conversation.session_%d: at most 999 sessions are "
                            "supported", si, sid, ns);
    E->sessions = calloc((size_t)ns, sizeof(Session));
    if (!E->sessions) return load_fail(c, "out of memory");
    E->n_sessions = ns;
    cJSON_ArrayForEach(it, conv) {
        const char *k = it->string ? it->string : "";
        int s = session_key(k, "");
        if (s > 0) {
            if (!cJSON_IsArray(it))
                return load_fail(c, "sample %d (%s): conversation.%s: expected a list of turns",
                                 si, sid, k);
            if (E->sessions[s - 1].turns)
                return load_fail(c, "sample %d (%s): conversation.%s: repeated", si, sid, k);
            if (load_turns(c, it, si, sid, s, &E->sessions[s - 1]) != 0) return -1;
        }
        s = session_key(k, "_date_time");
        if (s > 0 && s <= ns && cJSON_IsString(it) && !E->sessions[s - 1].date_time) {
            E->sessions[s - 1].date_time = xstrdup(it->valuestring);
            if (!E->sessions[s - 1].date_time) return load_fail(c, "out of memory");
        }
    }
    const cJSON *qa = cJSON_GetObjectItemCaseSensitive(smp, "qa");
    if (qa && !cJSON_IsArray(qa))
        return load_fail(c, "sample %d (%s): field 'qa': expected a list", si, sid);
    if (qa && load_qa(c, qa, si, sid, E, ds) != 0) return -1;
    const cJSON *obs = cJSON_GetObjectItemCaseSensitive(smp, "observation");
    if (obs && !cJSON_IsObject(obs))
        return load_fail(c, "sample %d (%s): field 'observation': expected an object", si, sid);
    if (obs && load_gold(c, obs, cJSON_GetObjectItemCaseSensitive(smp, "memr2_facts"), si, sid,
                         E) != 0)
        return -1;
    return 0;
}

int dataset_load(const char *path, Dataset *ds, char *err, size_t errlen) {
    memset(ds, 0, sizeof *ds);
    LoadCtx c = {path, err, errlen};
    if (err && errlen) err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return load_fail(&c, "cannot open: %s", strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            size_t nc = cap ? cap * 2 : 1 << 20;
            char *t = realloc(text, nc + 1);
            if (!t) {
                free(text);
                fclose(f);
                return load_fail(&c, "out of memory reading the file");
            }
            text = t, cap = nc;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(text);
        return load_fail(&c, "read error");
    }
    text[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= text && at <= text + len) ? (size_t)(at - text) : len;
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (text[i] == '\n') line++, col = 1;
            else col++;
        }
        free(text);
        return load_fail(&c, "JSON syntax error at line %d, column %d (byte %zu)", line, col, off);
    }
    free(text);
    int n = 1;
    if (cJSON_IsArray(root)) n = cJSON_GetArraySize(root);
    else if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return load_fail(&c, "expected a list of samples (or one sample object) at the top level");
    }
    if (n < 1) {  // nothing to train or evaluate on: an error, never "episodes=0" and success
        cJSON_Delete(root);
        return load_fail(&c, "no samples (the top-level list is empty)");
    }
    ds->episodes = calloc(n > 0 ? (size_t)n : 1, sizeof(Episode));
    if (!ds->episodes) {
        cJSON_Delete(root);
        return load_fail(&c, "out of memory");
    }
    int rc = 0;
    if (cJSON_IsArray(root)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, root) {
            rc = load_sample(&c, s, ds->n, &ds->episodes[ds->n], ds);
            ds->n++;
            if (rc) break;
        }
    } else {
        rc = load_sample(&c, root, 0, &ds->episodes[0], ds);
        ds->n = 1;
    }
    cJSON_Delete(root);
    if (rc) dataset_free(ds);
    return rc;
}

void dataset_free(Dataset *ds) {
    for (int i = 0; i < ds->n; i++) episode_free(&ds->episodes[i]);
    free(ds->episodes);
    memset(ds, 0, sizeof *ds);
}

// =============================================================================================
// Vocabulary
typedef struct {
    char *key;
    int value;
} WordEntry;

struct Vocab {
    char **words;    // (size) owned strings; id -> word
    int size;
    WordEntry *map;  // stb_ds string hash map: word -> id
    uint8_t *stop;   // (size) 1 for ids retrieval ignores: specials, punctuation, stop words
};

// Function words ignored by retrieval (queries and slots alike).
static const char *const STOP_WORDS[] = {
    "a", "an", "the", "in", "on", "at", "of", "to", "for", "and", "or", "is", "are", "was",
    "were", "be", "been", "being", "do", "does", "did", "i", "you", "he", "she", "it", "we",
    "they", "my", "your", "his", "her", "its", "our", "their", "me", "him", "us", "them", "this",
    "that", "these", "those", "with", "from", "by", "as", "what", "who", "whom", "where", "when",
    "which", "how", "why", "have", "has", "had", "will", "would", "can", "could", "should", "there",
    "here", "so", "but", "if", "then", "than", "too", "very", "just", "about", "into", "over",
    "up", "out", "s", "t", "am", "not", "no", "yes", "any", "some", "all"};

static int is_stop_word(const char *w) {
    if (!w[0] || (!isalnum((unsigned char)w[0]) && (unsigned char)w[0] < 0x80)) return 1;
    for (size_t i = 0; i < sizeof STOP_WORDS / sizeof STOP_WORDS[0]; i++)
        if (strcmp(w, STOP_WORDS[i]) == 0) return 1;
    return 0;
}

static void special_name(int id, char *buf, size_t n) {
    static const char *const names[] = {"<pad>", "<unk>", "<eos>", "<extract>", "<manage>",
                                        "<out>", "<sep>", "<facts>", "<ins>", "<upd>", "<del>",
                                        "<noop>"};
    if (id < TOK_TURN0) snprintf(buf, n, "%s", names[id]);
    else if (id < TOK_SLOT0) snprintf(buf, n, "<t%d>", id - TOK_TURN0);
    else snprintf(buf, n, "<m%d>", id - TOK_SLOT0);
}

static Vocab *vocab_alloc(void) {
    Vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    sh_new_strdup(v->map);
    return v;
}

static int vocab_add(Vocab *v, const char *w) {
    char **nw = realloc(v->words, (size_t)(v->size + 1) * sizeof(char *));
    if (!nw) return -1;
    v->words = nw;
    v->words[v->size] = xstrdup(w);
    if (!v->words[v->size]) return -1;
    shput(v->map, w, v->size);
    v->size++;
    return 0;
}

static int vocab_finish(Vocab *v) {
    v->stop = calloc((size_t)v->size, 1);
    if (!v->stop) return -1;
    for (int i = 0; i < v->size; i++) v->stop[i] = i < TOK_FIRST_WORD || is_stop_word(v->words[i]);
    return 0;
}

typedef struct {
    char *key;
    long value;
} CountEntry;

static void count_text(CountEntry **counts, const char *text) {
    char w[MAX_WORD];
    if (!text) return;
    while (next_token(&text, w, sizeof w)) {
        ptrdiff_t i = shgeti(*counts, w);
        if (i < 0) shput(*counts, w, 1);
        else (*counts)[i].value++;
    }
}

static int count_cmp(const void *a, const void *b) {
    const CountEntry *x = a, *y = b;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return strcmp(x->key, y->key);
}

Vocab *vocab_build(const Dataset *ds, int max_size) {
    CountEntry *counts = NULL;
    sh_new_strdup(counts);
    for (int e = 0; e < ds->n; e++) {
        const Episode *E = &ds->episodes[e];
        for (int s = 0; s < E->n_sessions; s++) {
            for (int t = 0; t < E->sessions[s].n_turns; t++) {
                const Turn *T = &E->sessions[s].turns[t];
                count_text(&counts, T->speaker);
                count_text(&counts, ":");  // the extract prompt writes "speaker : text"
                count_text(&counts, T->text);
            }
            if (E->gold)
                for (int g = 0; g < E->n_gold[s]; g++) count_text(&counts, E->gold[s][g].text);
        }
        for (int q = 0; q < E->n_qa; q++) {
            count_text(&counts, E->qa[q].question);
            count_text(&counts, E->qa[q].answer);
        }
    }
    int n = (int)shlen(counts);
    CountEntry *sorted = malloc((size_t)(n > 0 ? n : 1) * sizeof *sorted);
    Vocab *v = vocab_alloc();
    if (!sorted || !v) goto fail;
    memcpy(sorted, counts, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, count_cmp);
    char name[16];
    for (int i = 0; i < TOK_FIRST_WORD; i++) {
        special_name(i, name, sizeof name);
        if (vocab_add(v, name) != 0) goto fail;
    }
    for (int i = 0; i < n && (max_size <= 0 || v->size < max_size); i++)
        if (shgeti(v->map, sorted[i].key) < 0 && vocab_add(v, sorted[i].key) != 0) goto fail;
    if (vocab_finish(v) != 0) goto fail;
    free(sorted);
    shfree(counts);
    return v;
fail:
    fprintf(stderr, "vocab_build: out of memory\n");
    free(sorted);
    shfree(counts);
    vocab_free(v);
    return NULL;
}

#define VOCAB_MAGIC "memr2-vocab"

int vocab_save(const Vocab *v, const char *path, char *err, size_t errlen) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, "%s 1 %d\n", VOCAB_MAGIC, v->size) < 0;
    for (int i = 0; i < v->size && !bad; i++) bad = fprintf(f, "%s\n", v->words[i]) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

// "memr2-vocab <version> <size>" with both numbers decimal, in range, nothing after them
// (sscanf's %d is undefined on overflow, so the numbers go through strtol).
static int parse_vocab_header(const char *line, long *version, long *size) {
    size_t m = strlen(VOCAB_MAGIC);
    if (strncmp(line, VOCAB_MAGIC, m) != 0 || line[m] != ' ') return -1;
    const char *p = line + m;
    long *dst[2] = {version, size};
    for (int i = 0; i < 2; i++) {
        while (*p == ' ') p++;
        if (!isdigit((unsigned char)*p)) return -1;  // no sign, no empty field
        char *end;
        errno = 0;
        *dst[i] = strtol(p, &end, 10);
        if (errno == ERANGE) return -1;
        p = end;
    }
    return strcmp(p, "\n") == 0 || strcmp(p, "\r\n") == 0 || *p == '\0' ? 0 : -1;
}

#define VOCAB_MAX_WORDS 10000000
#define VOCAB_MAX_LINE 4096

Vocab *vocab_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    long version = 0, size = 0;
    Vocab *v = NULL;
    ssize_t got = getline(&line, &cap, f);
    if (got <= 0 || (size_t)got != strlen(line) || parse_vocab_header(line, &version, &size) != 0) {
        snprintf(err, errlen, "%s: line 1: expected the header '%s 1 <size>'", path, VOCAB_MAGIC);
        goto fail;
    }
    if (version != 1 || size < TOK_FIRST_WORD || size > VOCAB_MAX_WORDS) {
        snprintf(err, errlen, "%s: line 1: version %ld size %ld: this build reads version 1 with "
                 "%d to %d words", path, version, size, TOK_FIRST_WORD, VOCAB_MAX_WORDS);
        goto fail;
    }
    v = vocab_alloc();
    if (!v) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (long i = 0; i < size; i++) {
        got = getline(&line, &cap, f);
        if (got <= 0) {
            snprintf(err, errlen, "%s: line %ld: file ends after %ld of %ld words", path, i + 2, i,
                     size);
            goto fail;
        }
        if ((size_t)got != strlen(line) || got > VOCAB_MAX_LINE) {
            snprintf(err, errlen, "%s: line %ld: %s", path, i + 2,
                     got > VOCAB_MAX_LINE ? "longer than 4096 bytes" : "contains a NUL byte");
            goto fail;
        }
        line[strcspn(line, "\r\n")] = '\0';
        char name[16];
        if (i < TOK_FIRST_WORD) {
            special_name((int)i, name, sizeof name);
            if (strcmp(line, name) != 0) {
                snprintf(err, errlen, "%s: line %ld: expected the special token %s, got '%.64s'",
                         path, i + 2, name, line);
                goto fail;
            }
        }
        if (!line[0] || shgeti(v->map, line) >= 0) {
            snprintf(err, errlen, "%s: line %ld: empty or repeated word '%.64s'", path, i + 2,
                     line);
            goto fail;
        }
        if (vocab_add(v, line) != 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto fail;
        }
    }
    // The header's size is the whole vocabulary: more lines mean a damaged or edited file.
    while ((got = getline(&line, &cap, f)) > 0) {
        if (line[strspn(line, " \t\r\n")] != '\0') {
            snprintf(err, errlen, "%s: more words than the header's size %ld", path, size);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    if (vocab_finish(v) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    free(line);
    fclose(f);
    return v;
fail:
    free(line);
    fclose(f);
    vocab_free(v);
    return NULL;
}

uint64_t vocab_hash(const Vocab *v) {
    // FNV-1a 64 over the words in id order, each followed by a NUL byte (so "ab","c" and
    // "a","bc" differ). 0 means "not recorded" in a checkpoint header, so it is never returned.
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < v->size; i++) {
        for (const unsigned char *p = (const unsigned char *)v->words[i]; ; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
            if (!*p) break;
        }
    }
    return h ? h : 1;
}

void vocab_free(Vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->size; i++) free(v->words[i]);
    free(v->words);
    shfree(v->map);
    free(v->stop);
    free(v);
}

int vocab_size(const Vocab *v) { return v->size; }

const char *vocab_word(const Vocab *v, int id) {
    return (id >= 0 && id < v->size) ? v->words[id] : "<unk>";
}

// The thread-safe lookup: shgeti() stores its result in the table header, a data race when
// several threads encode at once (e.g. lanes in an OpenMP loop); the _ts form returns it instead.
static int vocab_id(const Vocab *v, const char *w) {
    WordEntry *m = v->map;
    ptrdiff_t i = -1;
    m = stbds_hmget_key_ts(m, sizeof *m, (void *)w, sizeof m->key, &i, STBDS_HM_STRING);
    return i < 0 ? TOK_UNK : m[i].value;
}

int vocab_encode(const Vocab *v, const char *text, int *out, int max) {
    char w[MAX_WORD];
    int n = 0;
    if (!text) return 0;
    while (n < max && next_token(&text, w, sizeof w)) out[n++] = vocab_id(v, w);
    return n;
}

int vocab_decode(const Vocab *v, const int *ids, int n, char *out, size_t outlen) {
    size_t k = 0;
    if (outlen == 0) return 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *w = vocab_word(v, ids[i]);
        int r = snprintf(out + k, outlen - k, "%s%s", i ? " " : "", w);
        if (r < 0 || (size_t)r >= outlen - k) {
            k = outlen - 1;
            out[k] = '\0';
            break;
        }
        k += (size_t)r;
    }
    return (int)k;
}

const uint8_t *vocab_stop_mask(const Vocab *v) { return v->stop; }

// =============================================================================================
// Grammar of the synthetic world (data/grammar.h)
typedef struct {
    int type, attr;               // GR_SET / GR_CHANGE / GR_END; index into GR_ATTRS
    const char *p, *v, *o;        // person, value (NULL for END), old value (CHANGE, END)
} ParsedFact;

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

static int parse_fact(const char *const *w, int n, ParsedFact *f) {
    if (n < 3 || is_stop_word(w[0])) return 0;
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

static const char *fact_current(const ParsedFact *f) { return f->type == GR_END ? NULL : f->v; }

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
static int slot_words(const Vocab *v, const MemoryBank *m, int slot, const char **w, int max) {
    int n = m->len[slot] < max ? m->len[slot] : max;
    const int *row = m->tokens + (size_t)slot * m->slot_len;
    for (int i = 0; i < n; i++) w[i] = vocab_word(v, row[i]);
    return n;
}

static int ids_words(const Vocab *v, const int *ids, int n, const char **w, int max) {
    if (n > max) n = max;
    for (int i = 0; i < n; i++) w[i] = vocab_word(v, ids[i]);
    return n;
}

int env_fact_key(const Vocab *v, const int *ids, int n, char *key, size_t keylen, int *ends) {
    const char *w[64];
    ParsedFact f;
    int k = ids_words(v, ids, n, w, 64);
    if (n > 64 || !parse_fact(w, k, &f)) return 0;
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
    int wn = ids_words(v, ids, n, w, 64);
    if (n > 64 || !parse_fact(w, wn, &pf)) return 0;
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
static int chunk_range(const Env *env, const Episode *ep, int session, int chunk, int *t0,
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
    if (max < 2 || !chunk_range(env, ep, session, chunk, &t0, &t1)) return 0;
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

static int fact_cap(const Env *env) {
    int c = env->cfg.slot_len;
    int room = (int)(sizeof(((Fact *)0)->tokens) / sizeof(int));
    return c < 1 ? 1 : c > room ? room : c;
}

int env_parse_extract(const Env *env, const Episode *ep, int session, int chunk, const int *gen,
                      int len, Fact *facts, int max, int *malformed) {
    int t0 = 0, t1 = 0, n = 0, bad = 0;
    int have = chunk_range(env, ep, session, chunk, &t0, &t1);
    int cap = env->cfg.max_facts < max ? env->cfg.max_facts : max;
    int flen = fact_cap(env);
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
    return memory_retrieve_masked(bank, q, qn, env->vocab->stop, env->vocab->size, k, out);
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
    if (chunk_range(env, ep, session, chunk, &t0, &t1) && ep->gold) {
        const Session *S = &ep->sessions[session - 1];
        int flen = fact_cap(env), buf[64];
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
        int fn = ids_words(env->vocab, F->tokens, F->len, fw, 64);
        if (parse_fact(fw, fn, &pf)) {
            for (int j = 0; j < shown->n && target < 0; j++) {
                int s = shown->slot[j];
                if (claimed[j] || s < 0 || s >= bank->cap || !bank->alive[s]) continue;
                int sn = slot_words(env->vocab, bank, s, sw, 64);
                if (parse_fact(sw, sn, &sf) && same_key(&pf, &sf)) target = j;
            }
        }
        if (target >= 0) {
            const char *cur = fact_current(&sf), *nv = fact_current(&pf);
            if (pf.type == GR_END) {
                kind = cur ? OP_UPDATE : OP_NOOP;  // already ended: nothing to do
            } else if (cur && strcmp(cur, nv) == 0) {
                kind = OP_NOOP;                    // a restatement
            } else {
                kind = OP_UPDATE;
                if (cur && !(pf.type == GR_CHANGE && strcmp(pf.o, cur) == 0)) {
                    // a new value: keep the old one answerable as "previously"
                    gr_format_fact(buf, sizeof buf, GR_CHANGE, pf.p, pf.attr, nv, cur);
                    blen = vocab_encode(env->vocab, buf, text, fact_cap(env));
                    body = text;
                } else if (!cur && pf.type == GR_CHANGE) {
                    // back after an end: the "previously" of the fact is not in memory
                    gr_format_fact(buf, sizeof buf, GR_SET, pf.p, pf.attr, nv, NULL);
                    blen = vocab_encode(env->vocab, buf, text, fact_cap(env));
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
        if (blen > fact_cap(env)) blen = fact_cap(env);
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

// =============================================================================================
// Scores (SQuAD normalisation: lower-case, punctuation removed, articles a/an/the dropped)
typedef struct {
    char *buf;
    char **tok;
    int n;
} NormTokens;

static int normalize(const char *s, NormTokens *t) {
    size_t len = s ? strlen(s) : 0;
    t->buf = malloc(len + 1);
    t->tok = malloc((len / 2 + 2) * sizeof(char *));
    t->n = 0;
    if (!t->buf || !t->tok) return -1;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && ispunct(c)) continue;
        t->buf[k++] = (char)(c < 0x80 ? tolower(c) : c);
    }
    t->buf[k] = '\0';
    for (char *p = t->buf; *p;) {
        while (*p && isspace((unsigned char)*p)) *p++ = '\0';
        if (!*p) break;
        char *w = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        if (*p) *p++ = '\0';
        if (strcmp(w, "a") && strcmp(w, "an") && strcmp(w, "the")) t->tok[t->n++] = w;
    }
    return 0;
}

QAScore score_answer(const char *pred, const char *gold) {
    QAScore r = {0, 0, 0};
    NormTokens p = {0}, g = {0};
    if (normalize(pred, &p) != 0 || normalize(gold, &g) != 0) goto done;
    if (p.n == 0 || g.n == 0) {  // SQuAD: F1 = EM = 1 only if both are empty
        double same = (p.n == 0 && g.n == 0) ? 1.0 : 0.0;
        r.f1 = r.bleu1 = r.em = same;
        goto done;
    }
    int eq = p.n == g.n;
    for (int i = 0; eq && i < p.n; i++) eq = strcmp(p.tok[i], g.tok[i]) == 0;
    r.em = eq;
    // multiset overlap: each gold token matches at most one predicted token
    unsigned char *used = calloc((size_t)g.n, 1);
    if (!used) goto done;
    int common = 0;
    for (int i = 0; i < p.n; i++)
        for (int j = 0; j < g.n; j++)
            if (!used[j] && strcmp(p.tok[i], g.tok[j]) == 0) {
                used[j] = 1, common++;
                break;
            }
    free(used);
    if (common > 0) {
        double prec = (double)common / p.n, rec = (double)common / g.n;
        r.f1 = 2 * prec * rec / (prec + rec);
    }
    // BLEU-1: clipped unigram precision times the brevity penalty exp(1 - r/c) when c < r
    double bp = p.n >= g.n ? 1.0 : exp(1.0 - (double)g.n / p.n);
    r.bleu1 = bp * (double)common / p.n;
done:
    free(p.buf), free(p.tok), free(g.buf), free(g.tok);
    return r;
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
        int n = slot_words(env->vocab, bank, hits[i], w, 64);
        if (parse_fact(w, n, pf) && pf->attr == attr && strcmp(pf->p, person) == 0) return hits[i];
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
    ids_words(env->vocab, qids, qn, qw, QMAX);
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
                int sn = slot_words(env->vocab, bank, hits[i], w, 64);
                const char *cur;
                if (parse_fact(w, sn, &pf) && pf.attr == pq.hop_attr && (cur = fact_current(&pf)) &&
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
                if (id < env->vocab->size && env->vocab->stop[id]) continue;
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
            n += count_tokens(ep->sessions[s - 1].turns[t].text);
    return n;
}

double env_compression_penalty(const Env *env, const MemoryBank *bank, long words_seen) {
    if (words_seen <= 0) return 0.0;
    double x = ((double)memory_words(bank) - env->cfg.rho * (double)words_seen) / words_seen;
    return x > 0 ? x : 0.0;  // lambda is applied by the reward (grpo.c, train.c)
}

// =============================================================================================
// Evaluation
int written_init(WrittenSet *w, const Episode *ep) {
    w->n = DIA_CODE(ep->n_sessions + 1, 0);
    w->written = calloc((size_t)w->n, 1);
    if (!w->written) {
        fprintf(stderr, "written_init: out of memory (%d bytes)\n", w->n);
        w->n = 0;
        return -1;
    }
    return 0;
}

void written_free(WrittenSet *w) {
    free(w->written);
    w->written = NULL;
    w->n = 0;
}

void written_mark(WrittenSet *w, int dia) {
    if (w && w->written && dia > 0 && dia < w->n) w->written[dia] = 1;
}

static int written_has(const WrittenSet *w, int dia) {
    return w && w->written && dia > 0 && dia < w->n && w->written[dia];
}

int question_active(const Question *q, int session) {
    return q->last_session >= 1 && q->last_session <= session && session <= q->valid_until;
}

void eval_add_episode(const Env *env, const Episode *ep, int sessions, const MemoryBank *bank,
                      const WrittenSet *w, EvalResult *r) {
    char pred[512];
    r->episodes++;
    r->sessions = sessions;
    r->mem_words += (double)memory_words(bank);
    // distinct evidence dia_ids of the questions asked (M-Fail)
    int *seen = NULL;
    for (int i = 0; i < ep->n_qa; i++) {
        const Question *q = &ep->qa[i];
        if (!question_active(q, sessions)) continue;
        QAScore s = env_answer(env, bank, ep, q, pred, sizeof pred);
        r->questions++;
        r->f1 += s.f1, r->bleu1 += s.bleu1, r->em += s.em;
        int c = q->category >= 0 && q->category < 8 ? q->category : 0;
        r->per_cat_n[c]++;
        r->per_cat_f1[c] += s.f1;
        for (int e = 0; e < q->n_evidence; e++) {
            int d = q->evidence[e], dup = 0;
            for (int j = 0; j < (int)arrlen(seen) && !dup; j++) dup = seen[j] == d;
            if (dup) continue;
            arrput(seen, d);
            r->mfail_total++;
            if (!written_has(w, d)) r->mfail_missing++;
        }
    }
    arrfree(seen);
}

void eval_finish(EvalResult *r) {
    if (r->questions > 0) {
        r->f1 /= r->questions, r->bleu1 /= r->questions, r->em /= r->questions;
    }
    for (int c = 0; c < 8; c++)
        if (r->per_cat_n[c] > 0) r->per_cat_f1[c] /= r->per_cat_n[c];
    r->mfail = r->mfail_total > 0 ? (double)r->mfail_missing / r->mfail_total : 0.0;
    if (r->episodes > 0) r->mem_words /= r->episodes;
}

void eval_print(const EvalResult *r, const char *policy, FILE *f) {
    static const char *const cat_names[8] = {"none", "multi-hop", "temporal", "open-domain",
                                             "single-hop", "adversarial", "6", "7"};
    for (int c = 0; c < 8; c++)
        if (r->per_cat_n[c] > 0)
            fprintf(f, "eval policy=%s sessions=%d category=%d (%s) questions=%d f1=%.4f\n", policy,
                    r->sessions, c, cat_names[c], r->per_cat_n[c], r->per_cat_f1[c]);
    fprintf(f,
            "eval policy=%s sessions=%d ops_insert=%d ops_update=%d ops_delete=%d ops_noop=%d "
            "ops_invalid=%d overflow=%d malformed=%d skipped_questions=%d skipped_evidence=%d\n",
            policy, r->sessions, r->ops.inserts, r->ops.updates, r->ops.deletes, r->ops.noops,
            r->ops.invalid, r->ops.overflow, r->malformed, r->questions_skipped,
            r->evidence_skipped);
    if (r->outputs > 0)
        fprintf(f, "eval policy=%s sessions=%d outputs=%d parseable=%.4f\n", policy, r->sessions,
                r->outputs, 1.0 - (double)r->malformed / r->outputs);
    fprintf(f,
            "eval policy=%s episodes=%d sessions=%d questions=%d f1=%.4f bleu1=%.4f em=%.4f "
            "mfail=%.4f mem_words=%.1f\n",
            policy, r->episodes, r->sessions, r->questions, r->f1, r->bleu1, r->em, r->mfail,
            r->mem_words);
}

int baseline_policy_parse(const char *name, BaselinePolicy *p) {
    static const char *const names[] = {"none", "store-turns", "insert-only", "oracle",
                                        "teacher"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0) return *p = (BaselinePolicy)i, 0;
    return -1;
}

// The oracle (flaws NULL) or the flawed teacher through the same prompt -> output -> parse ->
// apply path the model uses.
static int run_oracle_session(const Env *env, const Episode *ep, int s, MemoryBank *bank,
                              const TeacherFlaws *flaws, WrittenSet *w, MemoryStats *st,
                              int *malformed) {
    enum { PMAX = 4096, GMAX = 1024 };
    int *prompt = malloc(PMAX * sizeof(int)), *gen = malloc(GMAX * sizeof(int));
    Fact *facts = malloc(sizeof(Fact) * MAX_CHUNK_TURNS * 2);
    MemoryOp *ops = malloc(sizeof(MemoryOp) * 128);
    int rc = -1;
    if (!prompt || !gen || !facts || !ops) goto done;
    for (int c = 0; c < env_num_chunks(env, ep, s); c++) {
        int bad = 0, invalid = 0;
        Shown shown;
        env_extract_prompt(env, ep, s, c, prompt, PMAX);
        int gl = env_teacher_extract_flawed(env, ep, s, c, flaws, 0.0f, NULL, gen, GMAX);
        int nf = env_parse_extract(env, ep, s, c, gen, gl, facts, MAX_CHUNK_TURNS * 2, &bad);
        *malformed += bad;
        env_manage_prompt(env, bank, facts, nf, &shown, prompt, PMAX);
        gl = env_teacher_manage_flawed(env, ep, bank, facts, nf, &shown, flaws, 0.0f, NULL, gen,
                                       GMAX);
        int no = env_parse_manage(env, gen, gl, facts, nf, &shown, ops, 128, &invalid, &bad);
        *malformed += bad;
        st->invalid += invalid;
        for (int o = 0; o < no; o++)
            if (memory_apply(bank, &ops[o], s, st) == 0 &&
                (ops[o].kind == OP_INSERT || ops[o].kind == OP_UPDATE))
                written_mark(w, ops[o].evidence);
    }
    rc = 0;
done:
    free(prompt), free(gen), free(facts), free(ops);
    return rc;
}

int eval_baseline(const Env *env, const Dataset *ds, BaselinePolicy p, int sessions,
                  EvalResult *r) {
    memset(r, 0, sizeof *r);
    MemoryBank bank;
    if (memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) != 0) return -1;
    int buf[1024];
    int rc = 0;
    for (int e = 0; e < ds->n && rc == 0; e++) {
        const Episode *ep = &ds->episodes[e];
        int H = sessions < ep->n_sessions ? sessions : ep->n_sessions;
        WrittenSet w;
        if (written_init(&w, ep) != 0) {
            rc = -1;
            break;
        }
        memory_clear(&bank);
        MemoryStats st = {0};
        for (int s = 1; s <= H && rc == 0; s++) {
            const Session *S = &ep->sessions[s - 1];
            if (p == POLICY_STORE_TURNS) {
                for (int t = 0; t < S->n_turns; t++) {
                    char head[256];
                    snprintf(head, sizeof head, "%s :", S->turns[t].speaker);
                    int n = vocab_encode(env->vocab, head, buf, env->cfg.slot_len);
                    n += vocab_encode(env->vocab, S->turns[t].text, buf + n, env->cfg.slot_len - n);
                    MemoryOp op = {OP_INSERT, -1, buf, n, S->turns[t].dia};
                    if (memory_apply(&bank, &op, s, &st) == 0) written_mark(&w, op.evidence);
                }
            } else if (p == POLICY_INSERT_ONLY && ep->gold) {
                for (int g = 0; g < ep->n_gold[s - 1]; g++) {
                    const GoldFact *G = &ep->gold[s - 1][g];
                    int n = vocab_encode(env->vocab, G->text, buf, env->cfg.slot_len);
                    MemoryOp op = {OP_INSERT, -1, buf, n, G->dia};
                    if (memory_apply(&bank, &op, s, &st) == 0) written_mark(&w, op.evidence);
                }
            } else if (p == POLICY_ORACLE || p == POLICY_TEACHER) {
                TeacherFlaws fl = teacher_flaws_default();
                rc = run_oracle_session(env, ep, s, &bank, p == POLICY_TEACHER ? &fl : NULL, &w,
                                        &st, &r->malformed);
            }
        }
        eval_add_episode(env, ep, H, &bank, &w, r);
        r->ops.inserts += st.inserts, r->ops.updates += st.updates, r->ops.deletes += st.deletes;
        r->ops.noops += st.noops, r->ops.invalid += st.invalid, r->ops.overflow += st.overflow;
        written_free(&w);
    }
    memory_free(&bank);
    r->sessions = sessions;
    r->questions_skipped = ds->questions_skipped;
    r->evidence_skipped = ds->evidence_skipped;
    eval_finish(r);
    return rc;
}
