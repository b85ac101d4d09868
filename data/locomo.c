// data/locomo.c: the LoCoMo loader (contract in data/locomo.h): LoCoMo JSON -> Dataset (cJSON),
// robust to the real files' quirks.
#include "data/locomo.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
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

int question_active(const Question *q, int session) {
    return q->last_session >= 1 && q->last_session <= session && session <= q->valid_until;
}
