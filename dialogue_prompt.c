// dialogue_prompt.c: the real-dialogue world's setup (config, stop mask), chunks, the extractor's
// and the manager's prompts, and the manager's retrieval. See dialogue.h.
//
// The system prompts follow the structure of the paper's release (docs/dialogue.md): role, what
// to keep, the JSON to answer with, one worked example; the wording and the example are ours. Turns, facts and memories are shown as one compact JSON
// object per line (cJSON escapes them), so a model reads exactly the fields it has to copy back.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dialogue.h"
#include "dialogue_internal.h"

static const char EXTRACT_SYSTEM[] =
    "You are the fact extractor of a memory system. You read the new turns of a long "
    "conversation between two people and write down what is worth remembering about them: "
    "personal details, relationships, events, plans, preferences, work, health, hobbies and "
    "dates.\n"
    "\n"
    "Rules:\n"
    "- Each fact is one short, self-contained sentence of at most 20 words. Name the person; "
    "do not use pronouns.\n"
    "- Keep times: write \"yesterday\" or \"next month\" into the fact as a date, using the "
    "session date.\n"
    "- Give each fact the dia_id of the turn it comes from and the speaker it is about.\n"
    "- Skip greetings, small talk and questions that carry no information.\n"
    "- Answer with one JSON object and nothing else: {\"facts\": [{\"speaker\": \"...\", "
    "\"dia_id\": \"...\", \"fact\": \"...\"}]}. With nothing to remember, answer "
    "{\"facts\": []}.\n"
    "\n"
    "Example:\n"
    "Session date: 2:15 pm on 3 June, 2023\n"
    "Turns:\n"
    "{\"speaker\":\"Ana\",\"dia_id\":\"D2:1\",\"text\":\"Hey Ben! How was your week?\"}\n"
    "{\"speaker\":\"Ben\",\"dia_id\":\"D2:2\",\"text\":\"Busy! I started a pottery class on "
    "Tuesday, and my sister Mia moves to Lisbon next month.\"}\n"
    "Answer: {\"facts\": [{\"speaker\": \"Ben\", \"dia_id\": \"D2:2\", \"fact\": \"Ben started "
    "a pottery class on 30 May 2023\"}, {\"speaker\": \"Ben\", \"dia_id\": \"D2:2\", \"fact\": "
    "\"Ben's sister Mia moves to Lisbon in July 2023\"}]}";

static const char MANAGE_SYSTEM[] =
    "You are the memory manager of a memory system. You receive new facts from a conversation "
    "and the existing memories most related to them, each with an id. For each new fact, "
    "decide:\n"
    "- INSERT when the fact is new: {\"op\": \"INSERT\", \"content\": \"...\", \"dia_id\": "
    "\"...\"}\n"
    "- UPDATE when the fact changes, corrects or adds detail to memory N; write the merged "
    "memory: {\"op\": \"UPDATE\", \"id\": N, \"content\": \"...\", \"dia_id\": \"...\"}\n"
    "- DELETE when the fact shows that memory N is wrong or no longer true: {\"op\": "
    "\"DELETE\", \"id\": N}\n"
    "- nothing when the fact is already in memory or not worth keeping.\n"
    "Write content as one self-contained sentence of at most 20 words in the third person, "
    "naming the person. Use only the ids of the existing memories shown. Answer with one JSON "
    "object and nothing else: {\"operations\": [...]}; with nothing to do, "
    "{\"operations\": []}.\n"
    "\n"
    "Example:\n"
    "New facts:\n"
    "{\"speaker\":\"Ben\",\"dia_id\":\"D5:3\",\"fact\":\"Ben now teaches pottery on weekends\"}\n"
    "{\"speaker\":\"Ben\",\"dia_id\":\"D5:4\",\"fact\":\"Ben adopted a cat named Miso\"}\n"
    "Existing memories:\n"
    "{\"id\":0,\"session_time\":\"2:15 pm on 3 June, 2023\",\"speaker\":\"Ben\",\"content\":"
    "\"Ben started a pottery class\"}\n"
    "Answer: {\"operations\": [{\"op\": \"UPDATE\", \"id\": 0, \"content\": \"Ben took a "
    "pottery class and now teaches pottery on weekends\", \"dia_id\": \"D5:3\"}, {\"op\": "
    "\"INSERT\", \"content\": \"Ben adopted a cat named Miso\", \"dia_id\": \"D5:4\"}]}";

void dialogue_config_default(DialogueConfig *c) {
    *c = (DialogueConfig){.chunks_per_session = 6, .max_chunk_turns = 16, .max_facts = 16,
                          .fact_max_tokens = 48, .retrieve_k = 5, .max_shown = 25,
                          .answer_k = 30, .answer_max_new = 32, .answer_batch = 0};
}

// ---- setup -----------------------------------------------------------------------------------
// Words BM25 ignores besides punctuation: the commonest English function words (a bank of a few
// hundred memories gives them a positive idf, and they would tie every query to every slot).
static const char *const STOP_WORDS[] = {
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "to", "of", "and", "or",
    "in", "on", "at", "for", "with", "by", "from", "as", "that", "this", "it", "its", "i", "you",
    "he", "she", "we", "they", "me", "my", "your", "his", "her", "our", "their", "them", "him",
    "has", "have", "had", "do", "does", "did", "so", "but", "not", "what", "when", "who", "how",
    "s", "t", "'s", "about", "up", "out", "just", "really", "too", "very"};

static int is_stop_token(const char *p, size_t n) {
    char w[16];
    size_t k = 0, i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t')) i++;
    int letters = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x80 || isalnum(c)) letters = 1;
        if (k + 1 < sizeof w) w[k++] = (char)tolower(c);
        else return 0;  // long tokens are words
    }
    if (!letters) return 1;  // punctuation, spaces, empty
    w[k] = '\0';
    for (size_t s = 0; s < sizeof STOP_WORDS / sizeof STOP_WORDS[0]; s++)
        if (strcmp(w, STOP_WORDS[s]) == 0) return 1;
    return 0;
}

int dialogue_init(Dialogue *d, const Bpe *tok, const DialogueConfig *cfg, char *err,
                  size_t errlen) {
    memset(d, 0, sizeof *d);
    const DialogueConfig *c = cfg;
    const char *bad = NULL;
    if (c->chunks_per_session < 1) bad = "chunks_per_session < 1";
    else if (c->max_chunk_turns < 1) bad = "max_chunk_turns < 1";
    else if (c->max_facts < 1) bad = "max_facts < 1";
    else if (c->fact_max_tokens < 1 || c->fact_max_tokens > DIALOGUE_FACT_MAX)
        bad = "fact_max_tokens outside [1, 64]";
    else if (c->retrieve_k < 0) bad = "retrieve_k < 0";
    else if (c->max_shown < 0 || c->max_shown > MAX_SHOWN_SLOTS) bad = "max_shown outside [0, 32]";
    else if (c->answer_k < 0) bad = "answer_k < 0";
    else if (c->answer_max_new < 1) bad = "answer_max_new < 1";
    else if (c->answer_batch < 0) bad = "answer_batch < 0";
    if (bad) {
        snprintf(err, errlen, "dialogue_init: config: %s", bad);
        return -1;
    }
    char *probe = NULL;
    BpeMessage m = {"user", "x"};
    if (bpe_chat_render(tok, &m, 1, 1, &probe, err, errlen)) return -1;
    free(probe);
    d->tok = tok;
    d->cfg = *c;
    d->n_vocab = bpe_vocab_size(tok);
    d->stop_mask = calloc((size_t)d->n_vocab, 1);
    if (!d->stop_mask) {
        snprintf(err, errlen, "dialogue_init: out of memory (%d bytes)", d->n_vocab);
        return -1;
    }
    for (int id = 0; id < d->n_vocab; id++) {
        size_t n = 0;
        const char *p = bpe_token_bytes(tok, id, &n);
        d->stop_mask[id] = (uint8_t)(!p || is_stop_token(p, n));
    }
    const char *stops[] = {"<|im_end|>", "<|endoftext|>"};
    for (int s = 0; s < 2; s++) {
        int id = bpe_special_id(tok, stops[s]);
        if (id >= 0) d->stop[d->n_stop++] = id;
    }
    int eos = bpe_eos(tok), known = 0;
    for (int s = 0; s < d->n_stop; s++) known |= d->stop[s] == eos;
    if (eos >= 0 && !known) d->stop[d->n_stop++] = eos;
    for (int s = 0; s < d->n_stop; s++)
        if (d->stop[s] < d->n_vocab) d->stop_mask[d->stop[s]] = 1;
    int im_start = bpe_special_id(tok, "<|im_start|>");
    if (im_start >= 0 && im_start < d->n_vocab) d->stop_mask[im_start] = 1;
    return 0;
}

void dialogue_free(Dialogue *d) {
    free(d->stop_mask);
    memset(d, 0, sizeof *d);
}

// ---- chunks ----------------------------------------------------------------------------------
static const Session *session_of(const Episode *ep, int session) {
    if (!ep || session < 1 || session > ep->n_sessions) return NULL;
    return &ep->sessions[session - 1];
}

int dialogue_num_chunks(const Dialogue *d, const Episode *ep, int session) {
    const Session *S = session_of(ep, session);
    if (!S || S->n_turns <= 0) return 0;
    int n = S->n_turns, k = d->cfg.chunks_per_session;
    if (k > n) k = n;
    int need = (n + d->cfg.max_chunk_turns - 1) / d->cfg.max_chunk_turns;
    return k > need ? k : need;
}

// Balanced: chunk c is turns [c n / k, (c + 1) n / k), so sizes differ by at most one.
void dialogue_chunk_turns(const Dialogue *d, const Episode *ep, int session, int chunk, int *t0,
                          int *t1) {
    int k = dialogue_num_chunks(d, ep, session);
    *t0 = *t1 = 0;
    if (k <= 0 || chunk < 0 || chunk >= k) return;
    long n = ep->sessions[session - 1].n_turns;
    *t0 = (int)(chunk * n / k);
    *t1 = (int)((chunk + 1) * n / k);
}

int dialogue_turn_dia(const Episode *ep, int session, int t) {
    const Session *S = session_of(ep, session);
    if (!S || t < 0 || t >= S->n_turns) return 0;
    int dia = S->turns[t].dia;
    return dia ? dia : (t + 1 < 1000 ? DIA_CODE(session, t + 1) : 0);
}

const Turn *dialogue_find_turn(const Episode *ep, int dia) {
    const Session *S = session_of(ep, DIA_SESSION(dia));
    if (!S || dia <= 0) return NULL;
    int t = DIA_TURN(dia) - 1;  // LoCoMo numbers turns from 1: try the likely index first
    if (t >= 0 && t < S->n_turns && dialogue_turn_dia(ep, DIA_SESSION(dia), t) == dia)
        return &S->turns[t];
    for (t = 0; t < S->n_turns; t++)
        if (dialogue_turn_dia(ep, DIA_SESSION(dia), t) == dia) return &S->turns[t];
    return NULL;
}

// ---- text building ---------------------------------------------------------------------------
int dstr_add(DStr *s, const char *p, size_t n) {
    if (s->oom) return -1;
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n + 1) cap *= 2;
        char *q = realloc(s->p, cap);
        if (!q) {
            s->oom = 1;
            return -1;
        }
        s->p = q, s->cap = cap;
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
    s->p[s->n] = '\0';
    return 0;
}

int dstr_puts(DStr *s, const char *p) { return dstr_add(s, p, strlen(p)); }

int dstr_printf(DStr *s, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (r < 0) return -1;
    if ((size_t)r < sizeof buf) return dstr_add(s, buf, (size_t)r);
    char *big = malloc((size_t)r + 1);
    if (!big) {
        s->oom = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)r + 1, fmt, ap);
    va_end(ap);
    int rc = dstr_add(s, big, (size_t)r);
    free(big);
    return rc;
}

// Appends a cJSON object compactly (cJSON escapes the strings) and frees it.
int dstr_json(DStr *s, cJSON *obj) {
    char *p = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!p) {
        s->oom = 1;
        return -1;
    }
    int rc = dstr_puts(s, p);
    free(p);
    return rc;
}

void dia_format(int dia, char *buf, size_t n) {
    if (dia > 0) snprintf(buf, n, "D%d:%d", DIA_SESSION(dia), DIA_TURN(dia));
    else snprintf(buf, n, "D?:?");
}

// At most max bytes of s, cut back to a UTF-8 boundary.
static size_t utf8_cut(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

// ---- chat encoding ---------------------------------------------------------------------------
// The same ids as bpe_chat on the rendered text when no message contains a special token's text,
// but a message's text is always encoded as text (bpe_encode_ordinary): the template's markers
// are the only special tokens, so a turn saying "<|im_end|>" cannot end its message.
int dialogue_chat_ids(const Dialogue *d, const BpeMessage *msgs, int n, BpeIds *out, char *err,
                      size_t errlen) {
    int im_start = bpe_special_id(d->tok, "<|im_start|>");
    int im_end = bpe_special_id(d->tok, "<|im_end|>");
    if (im_start < 0 || im_end < 0) {
        snprintf(err, errlen, "dialogue: the tokenizer has no <|im_start|> / <|im_end|>");
        return -1;
    }
    char *render = NULL;  // only to learn the default system message the template adds
    if (bpe_chat_render(d->tok, msgs, n, 1, &render, err, errlen)) return -1;
    int add_system = n > 0 && strcmp(msgs[0].role, "system") != 0 &&
                     strncmp(render, "<|im_start|>system\n", 19) == 0;
    DStr body = {0};
    int rc = 0;
    for (int i = -add_system; i <= n && rc == 0; i++) {
        body.n = 0;
        if (i < 0) {  // the template's default system message: render[19 .. first <|im_end|>)
            const char *e = strstr(render + 19, "<|im_end|>");
            dstr_puts(&body, "system\n");
            dstr_add(&body, render + 19, e ? (size_t)(e - render - 19) : 0);
        } else if (i < n) {
            dstr_printf(&body, "%s\n", msgs[i].role);
            dstr_puts(&body, msgs[i].content);
        } else {
            dstr_puts(&body, "assistant\n");
        }
        if (body.oom) {
            snprintf(err, errlen, "dialogue: out of memory");
            rc = -1;
            break;
        }
        if (ids_push(out, im_start)) {
            snprintf(err, errlen, "dialogue: out of memory");
            rc = -1;
        } else if (bpe_encode_ordinary(d->tok, body.p, body.n, out, err, errlen)) {
            rc = -1;
        } else if (i < n && ids_push(out, im_end)) {
            snprintf(err, errlen, "dialogue: out of memory");
            rc = -1;
        } else if (i < n && bpe_encode_ordinary(d->tok, "\n", 1, out, err, errlen)) {
            rc = -1;
        }
    }
    free(body.p);
    free(render);
    return rc;
}

int ids_push(BpeIds *ids, int id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        int32_t *p = realloc(ids->ids, cap * sizeof *p);
        if (!p) return -1;
        ids->ids = p, ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return 0;
}

// Renders system + user into *text (the golden files' form) or, when ids != NULL, into ids.
int dialogue_render(const Dialogue *d, const char *system, const char *user, char **text,
                    BpeIds *ids, char *err, size_t errlen) {
    BpeMessage m[2] = {{"system", system}, {"user", user}};
    if (ids) return dialogue_chat_ids(d, m, 2, ids, err, errlen);
    return bpe_chat_render(d->tok, m, 2, 1, text, err, errlen);
}

// ---- the extractor ---------------------------------------------------------------------------
static int extract_user(const Dialogue *d, const Episode *ep, int session, int chunk, DStr *s) {
    const Session *S = session_of(ep, session);
    int t0, t1;
    dialogue_chunk_turns(d, ep, session, chunk, &t0, &t1);
    if (!S || t1 <= t0) return -1;
    dstr_printf(s, "Session %d, date: %s\n", session, S->date_time ? S->date_time : "unknown");
    dstr_puts(s, "Turns:\n");
    for (int t = t0; t < t1; t++) {
        const Turn *T = &S->turns[t];
        char dia[32], *txt = NULL;
        dia_format(dialogue_turn_dia(ep, session, t), dia, sizeof dia);
        size_t n = utf8_cut(T->text, DIALOGUE_MAX_TURN_CHARS);
        txt = malloc(n + 1);
        if (!txt) return -1;
        memcpy(txt, T->text, n);
        txt[n] = '\0';
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "speaker", T->speaker);
            cJSON_AddStringToObject(o, "dia_id", dia);
            cJSON_AddStringToObject(o, "text", txt);
        }
        free(txt);
        dstr_json(s, o);
        dstr_puts(s, "\n");
    }
    dstr_puts(s, "Write the facts of these turns as JSON.");
    return s->oom ? -1 : 0;
}

static int extract_render(const Dialogue *d, const Episode *ep, int session, int chunk,
                          char **text, BpeIds *ids, char *err, size_t errlen) {
    DStr u = {0};
    if (extract_user(d, ep, session, chunk, &u)) {
        snprintf(err, errlen, "dialogue_extract_prompt: %s",
                 u.oom ? "out of memory" : "no such session or chunk");
        free(u.p);
        return -1;
    }
    int rc = dialogue_render(d, EXTRACT_SYSTEM, u.p, text, ids, err, errlen);
    free(u.p);
    return rc;
}

int dialogue_extract_text(const Dialogue *d, const Episode *ep, int session, int chunk,
                          char **text, char *err, size_t errlen) {
    return extract_render(d, ep, session, chunk, text, NULL, err, errlen);
}

int dialogue_extract_prompt(const Dialogue *d, const Episode *ep, int session, int chunk,
                            BpeIds *out, char *err, size_t errlen) {
    return extract_render(d, ep, session, chunk, NULL, out, err, errlen);
}

// ---- retrieval for the manager ---------------------------------------------------------------
// The speaker of slot i (the turn its evidence names), or NULL when unknown.
const char *slot_speaker(const Episode *ep, const MemoryBank *bank, int i) {
    const Turn *T = dialogue_find_turn(ep, bank->evidence[i]);
    return T ? T->speaker : NULL;
}

int dialogue_retrieve(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                      const Fact *facts, int n_facts, Shown *shown) {
    shown->n = 0;
    int max = d->cfg.max_shown;
    double *score = malloc(sizeof(double) * (size_t)(bank->cap > 0 ? bank->cap : 1));
    if (!score) return 0;
    for (int f = 0; f < n_facts && shown->n < max; f++) {
        const Turn *FT = dialogue_find_turn(ep, facts[f].evidence);
        memory_bm25_scores(bank, facts[f].tokens, facts[f].len, d->stop_mask, d->n_vocab, score);
        for (int k = 0; k < d->cfg.retrieve_k && shown->n < max; k++) {
            int best = -1;
            for (int i = 0; i < bank->cap; i++) {
                if (!(score[i] > 0)) continue;
                const char *sp = FT ? slot_speaker(ep, bank, i) : NULL;
                if (sp && strcmp(sp, FT->speaker) != 0) continue;  // the other speaker's
                if (best < 0 || score[i] > score[best]) best = i;
            }
            if (best < 0) break;
            score[best] = 0;  // taken
            int dup = 0;
            for (int j = 0; j < shown->n; j++) dup |= shown->slot[j] == best;
            if (!dup) shown->slot[shown->n++] = best;
        }
    }
    free(score);
    return shown->n;
}

// Decoded slot or fact tokens (malloc'd, never NULL unless out of memory).
char *ids_text(const Dialogue *d, const int *ids, int n) {
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!buf) return NULL;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < d->n_vocab) buf[k++] = ids[i];
    char *out = NULL, err[128];
    size_t len;
    int rc = bpe_decode(d->tok, buf, (size_t)k, &out, &len, err, sizeof err);
    free(buf);
    return rc ? NULL : out;
}

static int manage_user(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                       const Fact *facts, int n_facts, const Shown *shown, DStr *s) {
    dstr_puts(s, "New facts:\n");
    if (n_facts == 0) dstr_puts(s, "(none)\n");
    for (int f = 0; f < n_facts; f++) {
        const Turn *T = dialogue_find_turn(ep, facts[f].evidence);
        char dia[32], *txt = ids_text(d, facts[f].tokens, facts[f].len);
        dia_format(facts[f].evidence, dia, sizeof dia);
        cJSON *o = txt ? cJSON_CreateObject() : NULL;
        if (o) {
            cJSON_AddStringToObject(o, "speaker", T ? T->speaker : "unknown");
            cJSON_AddStringToObject(o, "dia_id", dia);
            cJSON_AddStringToObject(o, "fact", txt);
        }
        free(txt);
        dstr_json(s, o);
        dstr_puts(s, "\n");
    }
    dstr_puts(s, "Existing memories:\n");
    if (shown->n == 0) dstr_puts(s, "(none)\n");
    for (int k = 0; k < shown->n; k++) {
        int i = shown->slot[k];
        const Session *S = session_of(ep, bank->session[i]);
        const char *sp = slot_speaker(ep, bank, i);
        char *txt = ids_text(d, bank->tokens + (size_t)i * bank->slot_len, bank->len[i]);
        cJSON *o = txt ? cJSON_CreateObject() : NULL;
        if (o) {
            cJSON_AddNumberToObject(o, "id", k);
            cJSON_AddStringToObject(o, "session_time",
                                    S && S->date_time ? S->date_time : "unknown");
            cJSON_AddStringToObject(o, "speaker", sp ? sp : "unknown");
            cJSON_AddStringToObject(o, "content", txt);
        }
        free(txt);
        dstr_json(s, o);
        dstr_puts(s, "\n");
    }
    dstr_puts(s, "Write the memory operations as JSON.");
    return s->oom ? -1 : 0;
}

static int manage_render(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Fact *facts, int n_facts, Shown *shown, char **text, BpeIds *ids,
                         char *err, size_t errlen) {
    dialogue_retrieve(d, ep, bank, facts, n_facts, shown);
    DStr u = {0};
    if (manage_user(d, ep, bank, facts, n_facts, shown, &u)) {
        snprintf(err, errlen, "dialogue_manage_prompt: out of memory");
        free(u.p);
        return -1;
    }
    int rc = dialogue_render(d, MANAGE_SYSTEM, u.p, text, ids, err, errlen);
    free(u.p);
    return rc;
}

int dialogue_manage_text(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Fact *facts, int n_facts, Shown *shown, char **text, char *err,
                         size_t errlen) {
    return manage_render(d, ep, bank, facts, n_facts, shown, text, NULL, err, errlen);
}

int dialogue_manage_prompt(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                           const Fact *facts, int n_facts, Shown *shown, BpeIds *out, char *err,
                           size_t errlen) {
    return manage_render(d, ep, bank, facts, n_facts, shown, NULL, out, err, errlen);
}
