// dialogue_parse.c: what the extractor and the manager write (JSON) -> Fact and MemoryOp records.
// See dialogue.h. Nothing a model writes is fatal: every length is explicit (outputs may hold NUL
// bytes), nesting is bounded, numbers are range-checked before any conversion to int, and every
// item that does not fit the schema is counted and skipped.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dialogue.h"
#include "dialogue_internal.h"

#define JSON_MAX_DEPTH 64       // deeper nesting is junk, not a role's output
#define JSON_MAX_CANDIDATES 64  // '{' positions tried before giving up (bounds the work)

// ---- finding the JSON object -----------------------------------------------------------------
// Scans s[0..n) from an opening '{' (s[0]). Returns the length of the balanced object, or 0 when
// the text ends first (or nests too deep); then *cut / cut_stack / *cut_depth describe the last
// place where the text so far can be closed: right after an element that completed inside a
// list or object, or right after an opening '['.
static size_t scan_object(const char *s, size_t n, size_t *cut, char *cut_stack, int *cut_depth) {
    char stack[JSON_MAX_DEPTH];
    int depth = 0, in_str = 0, esc = 0;
    *cut = 0, *cut_depth = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (depth == JSON_MAX_DEPTH) return 0;
            stack[depth++] = c;
            if (c == '[') {
                *cut = i + 1, *cut_depth = depth;
                memcpy(cut_stack, stack, (size_t)depth);
            }
        } else if (c == '}' || c == ']') {
            if (depth == 0 || stack[depth - 1] != (c == '}' ? '{' : '[')) return 0;  // mismatched
            depth--;
            if (depth == 0) return i + 1;
            *cut = i + 1, *cut_depth = depth;
            memcpy(cut_stack, stack, (size_t)depth);
        }
    }
    return 0;
}

static cJSON *parse_span(const char *s, size_t n, const char *key) {
    cJSON *j = cJSON_ParseWithLength(s, n);
    if (j && cJSON_IsObject(j) && cJSON_GetObjectItemCaseSensitive(j, key)) return j;
    cJSON_Delete(j);
    return NULL;
}

// Closes a truncated object at its last cut point: the text up to there plus the closers.
static cJSON *repair(const char *s, size_t cut, const char *stack, int depth, const char *key) {
    if (cut == 0 || depth <= 0) return NULL;
    char *b = malloc(cut + (size_t)depth + 1);
    if (!b) return NULL;
    memcpy(b, s, cut);
    size_t k = cut;
    // a cut right after "[" or after an element may leave a dangling comma before it: none, as
    // cuts are only taken after '[' or after a closing bracket
    for (int i = depth - 1; i >= 0; i--) b[k++] = stack[i] == '{' ? '}' : ']';
    cJSON *j = parse_span(b, k, key);
    free(b);
    return j;
}

cJSON *dialogue_find_json(const char *text, size_t len, const char *key, int *repaired) {
    *repaired = 0;
    if (!text) return NULL;
    int tries = 0;
    char cut_stack[JSON_MAX_DEPTH];
    for (size_t i = 0; i < len && tries < JSON_MAX_CANDIDATES; i++) {
        if (text[i] != '{') continue;
        tries++;
        size_t cut;
        int cut_depth;
        size_t n = scan_object(text + i, len - i, &cut, cut_stack, &cut_depth);
        if (n > 0) {
            cJSON *j = parse_span(text + i, n, key);
            if (j) return j;
            continue;  // a complete object without the key (or invalid inside): look further
        }
        cJSON *j = repair(text + i, cut, cut_stack, cut_depth, key);
        if (j) {
            *repaired = 1;
            return j;
        }
    }
    return NULL;
}

// ---- helpers ---------------------------------------------------------------------------------
char *dialogue_decode(const Dialogue *d, const int *gen, int n) {
    if (n > 0) {
        for (int s = 0; s < d->n_stop; s++)
            if (gen[n - 1] == d->stop[s]) {
                n--;
                break;
            }
    }
    return ids_text(d, gen, n < 0 ? 0 : n);
}

// "D<s>:<t>" exactly (spaces around allowed) -> DIA_CODE, else 0.
static int parse_dia(const char *s) {
    while (*s == ' ') s++;
    if (*s != 'D' && *s != 'd') return 0;
    s++;
    long a = 0, b = 0;
    int na = 0, nb = 0;
    while (*s >= '0' && *s <= '9' && na < 6) a = a * 10 + (*s++ - '0'), na++;
    if (*s++ != ':') return 0;
    while (*s >= '0' && *s <= '9' && nb < 4) b = b * 10 + (*s++ - '0'), nb++;
    while (*s == ' ') s++;
    if (*s || na == 0 || nb == 0 || a < 1 || a >= 100000 || b >= 1000) return 0;
    return DIA_CODE((int)a, (int)b);
}

// Encodes text as a fact: 1 and the ids in f->tokens, or 0 when empty or over cap tokens.
static int encode_fact(const Dialogue *d, const char *text, int *tokens, int *len) {
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\n')) n--;
    while (n > 0 && (*text == ' ' || *text == '\n')) text++, n--;
    if (n == 0 || n > 4096) return 0;  // 4 KB is far more than any cap in tokens
    BpeIds ids = {0};
    char err[128];
    int ok = bpe_encode_ordinary(d->tok, text, n, &ids, err, sizeof err) == 0 && ids.n > 0 &&
             ids.n <= (size_t)d->cfg.fact_max_tokens;
    if (ok) {
        for (size_t i = 0; i < ids.n; i++) tokens[i] = ids.ids[i];
        *len = (int)ids.n;
    }
    bpe_ids_free(&ids);
    return ok;
}

static const cJSON *get(const cJSON *o, const char *a, const char *b) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, a);
    return j || !b ? j : cJSON_GetObjectItemCaseSensitive(o, b);
}

// ---- the extractor's output ------------------------------------------------------------------
int dialogue_parse_extract_text(const Dialogue *d, const Episode *ep, int session, int chunk,
                                const char *text, size_t len, Fact *facts, int max,
                                int *n_invalid, int *malformed) {
    *n_invalid = 0, *malformed = 0;
    int repaired;
    cJSON *root = dialogue_find_json(text, len, "facts", &repaired);
    const cJSON *list = root ? cJSON_GetObjectItemCaseSensitive(root, "facts") : NULL;
    if (!cJSON_IsArray(list)) {
        *malformed = 1;
        cJSON_Delete(root);
        return 0;
    }
    *malformed = repaired;
    int t0, t1, n = 0;
    dialogue_chunk_turns(d, ep, session, chunk, &t0, &t1);
    if (max > d->cfg.max_facts) max = d->cfg.max_facts;
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const cJSON *fact = cJSON_GetObjectItemCaseSensitive(it, "fact");
        const cJSON *dia = cJSON_GetObjectItemCaseSensitive(it, "dia_id");
        const cJSON *spk = cJSON_GetObjectItemCaseSensitive(it, "speaker");
        int code = cJSON_IsString(dia) ? parse_dia(dia->valuestring) : 0, turn = -1;
        for (int t = t0; t < t1 && code && turn < 0; t++)
            if (dialogue_turn_dia(ep, session, t) == code) turn = t - t0;
        Fact f = {.evidence = code, .turn = turn};
        if (n >= max || !cJSON_IsObject(it) || !cJSON_IsString(fact) || turn < 0 ||
            (spk && !cJSON_IsString(spk)) ||
            !encode_fact(d, fact->valuestring, f.tokens, &f.len)) {
            (*n_invalid)++;
            continue;
        }
        facts[n++] = f;
    }
    cJSON_Delete(root);
    return n;
}

int dialogue_parse_extract(const Dialogue *d, const Episode *ep, int session, int chunk,
                           const int *gen, int n, Fact *facts, int max, int *n_invalid,
                           int *malformed) {
    char *text = dialogue_decode(d, gen, n);
    if (!text) {
        *n_invalid = 0, *malformed = 1;
        return 0;
    }
    int k = dialogue_parse_extract_text(d, ep, session, chunk, text, strlen(text), facts, max,
                                        n_invalid, malformed);
    free(text);
    return k;
}

// ---- the manager's output --------------------------------------------------------------------
// The evidence of an INSERT / UPDATE: its dia_id when a fact has it, else the fact sharing the
// most token ids with the content (the first on ties), 0 without facts.
static int op_evidence(const cJSON *dia, const int *tok, int len, const Fact *facts, int nf) {
    int code = cJSON_IsString(dia) ? parse_dia(dia->valuestring) : 0;
    for (int f = 0; f < nf && code; f++)
        if (facts[f].evidence == code) return code;
    int best = -1, best_n = -1;
    for (int f = 0; f < nf; f++) {
        int common = 0;
        for (int i = 0; i < len; i++)
            for (int j = 0; j < facts[f].len; j++)
                if (tok[i] == facts[f].tokens[j]) {
                    common++;
                    break;
                }
        if (common > best_n) best = f, best_n = common;
    }
    return best >= 0 ? facts[best].evidence : 0;
}

// A shown id: an integer-valued JSON number in [0, n), else -1 (strings, 1e300, -1, 2.5).
static int shown_id(const cJSON *id, int n) {
    if (!cJSON_IsNumber(id)) return -1;
    double v = id->valuedouble;
    if (!(v >= 0 && v < n) || v != floor(v)) return -1;
    return (int)v;
}

static int parse_op(const Dialogue *d, const cJSON *it, const Fact *facts, int nf,
                    const Shown *shown, MemoryOp *op, int *tokens) {
    if (!cJSON_IsObject(it)) return -1;
    const cJSON *kind = get(it, "op", "operation");
    if (!cJSON_IsString(kind)) return -1;
    const char *k = kind->valuestring;
    OpKind ok;
    if (strcmp(k, "INSERT") == 0 || strcmp(k, "ADD") == 0) ok = OP_INSERT;
    else if (strcmp(k, "UPDATE") == 0) ok = OP_UPDATE;
    else if (strcmp(k, "DELETE") == 0) ok = OP_DELETE;
    else if (strcmp(k, "NOOP") == 0 || strcmp(k, "NONE") == 0) ok = OP_NOOP;
    else return -1;
    *op = (MemoryOp){.kind = ok, .slot = -1};
    if (ok == OP_UPDATE || ok == OP_DELETE) {
        int sid = shown_id(get(it, "id", "memory_id"), shown->n);
        if (sid < 0) return -1;
        op->slot = shown->slot[sid];
    }
    if (ok == OP_INSERT || ok == OP_UPDATE) {
        const cJSON *content = get(it, "content", "fact");
        int len = 0;
        if (!cJSON_IsString(content) || !encode_fact(d, content->valuestring, tokens, &len))
            return -1;
        op->fact = tokens, op->fact_len = len;
        op->evidence = op_evidence(cJSON_GetObjectItemCaseSensitive(it, "dia_id"), tokens, len,
                                   facts, nf);
    }
    return 0;
}

int dialogue_parse_manage_text(const Dialogue *d, const char *text, size_t len,
                               const Fact *facts, int n_facts, const Shown *shown,
                               DialogueOps *ops, int *n_invalid, int *malformed) {
    *n_invalid = 0, *malformed = 0;
    ops->n = 0;
    int repaired;
    cJSON *root = dialogue_find_json(text, len, "operations", &repaired);
    const cJSON *list = root ? cJSON_GetObjectItemCaseSensitive(root, "operations") : NULL;
    if (!cJSON_IsArray(list)) {
        *malformed = 1;
        cJSON_Delete(root);
        return 0;
    }
    *malformed = repaired;
    const cJSON *it;
    int items = 0;
    cJSON_ArrayForEach(it, list) {
        items++;
        if (ops->n >= DIALOGUE_MAX_OPS ||
            parse_op(d, it, facts, n_facts, shown, &ops->op[ops->n], ops->tokens[ops->n])) {
            (*n_invalid)++;
            continue;
        }
        ops->n++;
    }
    if (items == 0) ops->op[ops->n++] = (MemoryOp){.kind = OP_NOOP, .slot = -1};
    cJSON_Delete(root);
    return ops->n;
}

int dialogue_parse_manage(const Dialogue *d, const int *gen, int n, const Fact *facts,
                          int n_facts, const Shown *shown, DialogueOps *ops, int *n_invalid,
                          int *malformed) {
    char *text = dialogue_decode(d, gen, n);
    if (!text) {
        ops->n = 0, *n_invalid = 0, *malformed = 1;
        return 0;
    }
    int k = dialogue_parse_manage_text(d, text, strlen(text), facts, n_facts, shown, ops,
                                       n_invalid, malformed);
    free(text);
    return k;
}
