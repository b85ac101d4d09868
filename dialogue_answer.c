// dialogue_answer.c: the frozen answerer of the real-dialogue world (see dialogue.h): a frozen
// backbone reads the top memories per speaker, grouped by session with their dates, and answers
// in a few words, greedy; one sample() call per batch of questions. Scores are the project's
// (score_answer: SQuAD-normalised F1, BLEU-1, EM) and M-Fail from the dia_ids the bank carries.
//
// The instructions follow the paper's release (its QA prompt: use the memories' dates, prefer the
// most recent memory, turn relative times into dates, answer concisely inside <answer>), in our
// words and shorter: a small backbone follows a short prompt better, and its context is 2,048
// positions.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dialogue.h"
#include "dialogue_internal.h"
#include "eval.h"  // score_answer

static const char ANSWER_SYSTEM[] =
    "You answer questions about a long conversation between two people, using the memories a "
    "memory system kept about them. Each memory has the date of the session it comes from.\n"
    "- Use only the memories. When they disagree, trust the most recent one.\n"
    "- Turn relative times into dates with the memory's date: \"last year\" in a memory of 4 May "
    "2022 means 2021.\n"
    "- Answer in a few words (at most 10), naming people, places and dates exactly.\n"
    "- Write only the answer, inside <answer></answer>.";

typedef struct {
    int slot;
    double score;
} Ranked;

static int ranked_cmp(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->slot - y->slot;
}

// Picks up to k slots for speaker `who` (slots of unknown speaker count for both; taken[] keeps a
// slot from being shown twice), best BM25 score first, ties and zeros by slot.
static int pick(const Episode *ep, const MemoryBank *bank, const double *score, const char *who,
                int k, uint8_t *taken, Ranked *tmp, int *out) {
    int n = 0;
    for (int i = 0; i < bank->cap; i++) {
        if (!bank->alive[i] || taken[i]) continue;
        const char *sp = slot_speaker(ep, bank, i);
        if (sp && who && strcmp(sp, who) != 0) continue;
        tmp[n++] = (Ranked){i, score[i]};
    }
    qsort(tmp, (size_t)n, sizeof *tmp, ranked_cmp);
    if (n > k) n = k;
    for (int i = 0; i < n; i++) out[i] = tmp[i].slot, taken[tmp[i].slot] = 1;
    // shown grouped by session (then slot): insertion sort, n <= answer_k
    for (int i = 1; i < n; i++) {
        int v = out[i], j = i - 1;
        while (j >= 0 && (bank->session[out[j]] > bank->session[v] ||
                          (bank->session[out[j]] == bank->session[v] && out[j] > v)))
            out[j + 1] = out[j], j--;
        out[j + 1] = v;
    }
    return n;
}

static void speaker_block(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                          const char *who, const int *slots, int n, DStr *s) {
    dstr_printf(s, "Memories of %s:\n", who ? who : "unknown");
    if (n == 0) dstr_puts(s, "(none)\n");
    int last = -1;
    for (int i = 0; i < n; i++) {
        int sl = slots[i], se = bank->session[sl];
        if (se != last) {
            const char *date = se >= 1 && se <= ep->n_sessions && ep->sessions[se - 1].date_time
                                   ? ep->sessions[se - 1].date_time
                                   : "unknown date";
            dstr_printf(s, "Session %d (%s):\n", se, date);
            last = se;
        }
        char *txt = ids_text(d, bank->tokens + (size_t)sl * bank->slot_len, bank->len[sl]);
        dstr_puts(s, "- ");
        dstr_puts(s, txt ? txt : "");
        dstr_puts(s, "\n");
        free(txt);
    }
    dstr_puts(s, "\n");
}

// The user message with k memories per speaker.
static int answer_user(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                       const Question *q, int k, DStr *s) {
    int cap = bank->cap > 0 ? bank->cap : 1;
    double *score = calloc((size_t)cap, sizeof *score);
    uint8_t *taken = calloc((size_t)cap, 1);
    Ranked *tmp = malloc(sizeof *tmp * (size_t)cap);
    int *sa = malloc(sizeof(int) * (size_t)cap), *sb = malloc(sizeof(int) * (size_t)cap);
    BpeIds qids = {0};
    char err[128];
    int rc = -1;
    if (!score || !taken || !tmp || !sa || !sb) goto done;
    if (bpe_encode_ordinary(d->tok, q->question, strlen(q->question), &qids, err, sizeof err))
        goto done;
    int *qi = malloc(sizeof(int) * (qids.n ? qids.n : 1));
    if (!qi) goto done;
    for (size_t i = 0; i < qids.n; i++) qi[i] = qids.ids[i];
    memory_bm25_scores(bank, qi, (int)qids.n, d->stop_mask, d->n_vocab, score);
    free(qi);
    int na = pick(ep, bank, score, ep->speaker_a, k, taken, tmp, sa);
    int nb = pick(ep, bank, score, ep->speaker_b, k, taken, tmp, sb);
    speaker_block(d, ep, bank, ep->speaker_a, sa, na, s);
    speaker_block(d, ep, bank, ep->speaker_b, sb, nb, s);
    dstr_printf(s, "Question: %s\nAnswer in a few words, inside <answer></answer>.", q->question);
    rc = s->oom ? -1 : 0;
done:
    free(score), free(taken), free(tmp), free(sa), free(sb);
    bpe_ids_free(&qids);
    return rc;
}

// Renders with answer_k per speaker, then fewer (halving) until the ids fit in max_tokens.
static int answer_render(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Question *q, int max_tokens, char **text, BpeIds *ids, char *err,
                         size_t errlen) {
    for (int k = d->cfg.answer_k;; k = k / 2) {
        DStr u = {0};
        BpeIds tmp = {0};
        if (answer_user(d, ep, bank, q, k, &u) ||
            dialogue_render(d, ANSWER_SYSTEM, u.p, NULL, &tmp, err, errlen)) {
            if (u.oom || !u.p) snprintf(err, errlen, "dialogue_answer_prompt: out of memory");
            free(u.p);
            bpe_ids_free(&tmp);
            return -1;
        }
        int fits = max_tokens <= 0 || tmp.n <= (size_t)max_tokens;
        if (fits || k == 0) {
            int rc = 0;
            if (!fits) {
                snprintf(err, errlen, "dialogue_answer_prompt: %zu tokens with no memories, "
                         "more than the %d allowed", tmp.n, max_tokens);
                rc = -1;
            } else if (ids) {
                for (size_t i = 0; i < tmp.n && rc == 0; i++)
                    if (ids_push(ids, tmp.ids[i])) rc = -1;
                if (rc) snprintf(err, errlen, "dialogue_answer_prompt: out of memory");
            } else {
                rc = dialogue_render(d, ANSWER_SYSTEM, u.p, text, NULL, err, errlen);
            }
            free(u.p);
            bpe_ids_free(&tmp);
            return rc;
        }
        free(u.p);
        bpe_ids_free(&tmp);
    }
}

int dialogue_answer_text(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Question *q, int max_tokens, char **text, char *err,
                         size_t errlen) {
    return answer_render(d, ep, bank, q, max_tokens, text, NULL, err, errlen);
}

int dialogue_answer_prompt(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                           const Question *q, int max_tokens, BpeIds *out, char *err,
                           size_t errlen) {
    return answer_render(d, ep, bank, q, max_tokens, NULL, out, err, errlen);
}

// ---- answer extraction -----------------------------------------------------------------------
static const char *find_ci(const char *s, const char *pat) {
    size_t n = strlen(pat);
    for (; *s; s++)
        if (strncasecmp(s, pat, n) == 0) return s;
    return NULL;
}

size_t dialogue_extract_answer(const char *text, char *out, size_t outlen) {
    if (!outlen) return 0;
    out[0] = '\0';
    if (!text) return 0;
    const char *a = find_ci(text, "<answer>"), *b, *e;
    if (a) {
        b = a + 8;
        e = find_ci(b, "</answer>");
        if (!e) e = b + strcspn(b, "\n<");  // unclosed: to the end of the line
    } else {  // the first non-empty line
        b = text;
        while (*b) {
            const char *nl = b + strcspn(b, "\n");
            const char *p = b;
            while (p < nl && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
            if (p < nl) break;
            b = *nl ? nl + 1 : nl;
        }
        e = b + strcspn(b, "\n");
    }
    while (b < e && (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n')) b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) e--;
    size_t n = (size_t)(e - b);
    if (n >= outlen) n = outlen - 1;
    memcpy(out, b, n);
    out[n] = '\0';
    return n;
}

// ---- answering an episode --------------------------------------------------------------------
static int carried(const MemoryBank *bank, int dia) {
    for (int i = 0; i < bank->cap; i++)
        if (bank->alive[i] && bank->evidence[i] == dia) return 1;
    return 0;
}

// M-Fail over the distinct evidence dia_ids of the active questions.
static void mfail_add(const Episode *ep, const MemoryBank *bank, int sessions,
                      DialogueAnswerStats *st) {
    for (int q = 0; q < ep->n_qa; q++) {
        const Question *Q = &ep->qa[q];
        if (!question_active(Q, sessions)) continue;
        for (int e = 0; e < Q->n_evidence; e++) {
            int dia = Q->evidence[e], seen = 0;
            for (int p = 0; p < q && !seen; p++) {
                if (!question_active(&ep->qa[p], sessions)) continue;
                for (int f = 0; f < ep->qa[p].n_evidence && !seen; f++)
                    seen = ep->qa[p].evidence[f] == dia;
            }
            for (int f = 0; f < e && !seen; f++) seen = Q->evidence[f] == dia;
            if (seen) continue;
            st->mfail_total++;
            st->mfail_missing += !carried(bank, dia);
        }
    }
}

// One sample() call for questions idx[0..n): prompts -> answers -> scores.
static int answer_batch(const Dialogue *d, const ModelBackend *be, Model *model,
                        const Episode *ep, const MemoryBank *bank, const int *idx, int n,
                        QAScore *scores, char **preds, DialogueAnswerStats *st, char *err,
                        size_t errlen) {
    const ModelConfig *cfg = be->config(model);
    int max_new = d->cfg.answer_max_new, budget = cfg->maxT - max_new, rc = -1;
    if (budget < 1) {
        snprintf(err, errlen, "dialogue_answer: the model's %d positions leave no room for a "
                 "prompt and %d answer tokens", cfg->maxT, max_new);
        return -1;
    }
    BpeIds *p = calloc((size_t)n, sizeof *p);
    int *plen = calloc((size_t)n, sizeof(int)), *len = calloc((size_t)n, sizeof(int));
    int *toks = malloc(sizeof(int) * (size_t)n * (size_t)max_new), *prompts = NULL;
    float *logp = malloc(sizeof(float) * (size_t)n * (size_t)max_new);
    if (!p || !plen || !len || !toks || !logp) {
        snprintf(err, errlen, "dialogue_answer: out of memory");
        goto done;
    }
    int stride = 1;
    for (int i = 0; i < n; i++) {
        if (dialogue_answer_prompt(d, ep, bank, &ep->qa[idx[i]], budget, &p[i], err, errlen))
            goto done;
        plen[i] = (int)p[i].n;
        if (plen[i] > stride) stride = plen[i];
        if (plen[i] > st->prompt_tokens_max) st->prompt_tokens_max = plen[i];
    }
    prompts = calloc((size_t)n * (size_t)stride, sizeof(int));
    if (!prompts) {
        snprintf(err, errlen, "dialogue_answer: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        for (int t = 0; t < plen[i]; t++) prompts[(size_t)i * stride + t] = p[i].ids[t];
    SampleRequest req = {.n = n, .prompts = prompts, .prompt_stride = stride,
                         .prompt_len = plen, .max_new = max_new, .temperature = 0.0f,
                         .top_p = 1.0f, .stop = d->stop, .n_stop = d->n_stop, .seed = 1};
    SampleResult res = {.tokens = toks, .logp = logp, .len = len};
    if (be->sample(model, &req, &res)) {
        snprintf(err, errlen, "dialogue_answer: sampling failed");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < len[i]; t++) {
            uint32_t v = (uint32_t)toks[(size_t)i * max_new + t];
            for (int by = 0; by < 4; by++)
                st->gen_hash = (st->gen_hash ^ ((v >> (8 * by)) & 0xFF)) * 0x100000001b3ULL;
        }
        st->gen_tokens += len[i];
        char *text = dialogue_decode(d, toks + (size_t)i * max_new, len[i]);
        char ans[512];
        dialogue_extract_answer(text ? text : "", ans, sizeof ans);
        free(text);
        const Question *Q = &ep->qa[idx[i]];
        QAScore sc = score_answer(ans, Q->answer);
        st->questions++, st->f1 += sc.f1, st->bleu1 += sc.bleu1, st->em += sc.em;
        if (scores) scores[idx[i]] = sc;
        if (preds) preds[idx[i]] = strdup(ans);
    }
    rc = 0;
done:
    for (int i = 0; p && i < n; i++) bpe_ids_free(&p[i]);
    free(p), free(plen), free(len), free(toks), free(logp), free(prompts);
    return rc;
}

int dialogue_answer_episode(const Dialogue *d, const ModelBackend *be, Model *model,
                            const Episode *ep, const MemoryBank *bank, int sessions,
                            QAScore *scores, char **preds, DialogueAnswerStats *st, char *err,
                            size_t errlen) {
    memset(st, 0, sizeof *st);
    st->gen_hash = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
    for (int q = 0; q < ep->n_qa; q++) {
        if (scores) scores[q] = (QAScore){0, 0, 0};
        if (preds) preds[q] = NULL;
    }
    int *idx = malloc(sizeof(int) * (size_t)(ep->n_qa > 0 ? ep->n_qa : 1)), n = 0;
    if (!idx) {
        snprintf(err, errlen, "dialogue_answer: out of memory");
        return -1;
    }
    for (int q = 0; q < ep->n_qa; q++)
        if (question_active(&ep->qa[q], sessions)) idx[n++] = q;
    int B = d->cfg.answer_batch > 0 ? d->cfg.answer_batch : (n > 0 ? n : 1), rc = 0;
    for (int i = 0; i < n && rc == 0; i += B)
        rc = answer_batch(d, be, model, ep, bank, idx + i, n - i < B ? n - i : B, scores, preds,
                          st, err, errlen);
    free(idx);
    if (rc == 0) mfail_add(ep, bank, sessions, st);
    return rc;
}
