// eval.c: evaluation (contract in eval.h): SQuAD-style scores, M-Fail bookkeeping, the
// whole-episode baselines, greedy evaluation of a policy, the summary line, the final table and
// the per-session mistakes report. World-agnostic: the world answers the questions (world.h).
#include "eval.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_ds.h>

#include "files.h"
#include "mistakes.h"
#include "stats.h"

static int min_int(int a, int b) { return a < b ? a : b; }

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


int eval_add_episode(const World *env, const Episode *ep, int sessions, const MemoryBank *bank,
                     const WrittenSet *w, EvalResult *r) {
    // the world answers the active questions in one call (an LLM answerer batches them)
    int *qidx = malloc(sizeof(int) * (size_t)(ep->n_qa > 0 ? ep->n_qa : 1)), nq = 0;
    QAScore *scores = malloc(sizeof(QAScore) * (size_t)(ep->n_qa > 0 ? ep->n_qa : 1));
    if (!qidx || !scores) {
        fprintf(stderr, "eval: out of memory for %d questions\n", ep->n_qa);
        free(qidx), free(scores);
        return -1;
    }
    for (int i = 0; i < ep->n_qa; i++)
        if (question_active(&ep->qa[i], sessions)) qidx[nq++] = i;
    if (world_answer(env, bank, ep, sessions, qidx, nq, scores) != 0) {
        free(qidx), free(scores);
        return -1;
    }
    r->episodes++;
    r->sessions = sessions;
    r->mem_words += (double)memory_words(bank);
    // distinct evidence dia_ids of the questions asked (M-Fail)
    int *seen = NULL;
    for (int k = 0; k < nq; k++) {
        const Question *q = &ep->qa[qidx[k]];
        QAScore s = scores[k];
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
    free(qidx), free(scores);
    return 0;
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
static int run_oracle_session(const World *env, const Episode *ep, int s, MemoryBank *bank,
                              const TeacherFlaws *flaws, WrittenSet *w, MemoryStats *st,
                              int *malformed) {
    enum { PMAX = 4096, GMAX = 1024 };
    int *prompt = malloc(PMAX * sizeof(int)), *gen = malloc(GMAX * sizeof(int));
    Fact *facts = malloc(sizeof(Fact) * MAX_CHUNK_FACTS);
    MemoryOp *ops = malloc(sizeof(MemoryOp) * 128);
    int *fact_store = malloc(sizeof(int) * 128 * FACT_MAX_TOKENS);
    int rc = -1;
    if (!prompt || !gen || !facts || !ops || !fact_store) goto done;
    for (int c = 0; c < world_num_chunks(env, ep, s); c++) {
        int bad = 0, invalid = 0;
        Shown shown;
        world_extract_prompt(env, ep, s, c, prompt, PMAX);
        int gl = world_teacher_extract(env, ep, s, c, flaws, 0.0f, NULL, gen, GMAX);
        if (gl < 0) goto no_teacher;
        int nf = world_parse_extract(env, ep, s, c, gen, gl, facts, MAX_CHUNK_FACTS, &bad);
        *malformed += bad;
        world_manage_prompt(env, ep, bank, facts, nf, &shown, prompt, PMAX);
        gl = world_teacher_manage(env, ep, bank, facts, nf, &shown, flaws, 0.0f, NULL, gen, GMAX);
        if (gl < 0) goto no_teacher;
        int no = world_parse_manage(env, gen, gl, facts, nf, &shown, ops, 128, fact_store,
                                    &invalid, &bad);
        *malformed += bad;
        st->invalid += invalid;
        for (int o = 0; o < no; o++)
            if (memory_apply(bank, &ops[o], s, st) == 0 &&
                (ops[o].kind == OP_INSERT || ops[o].kind == OP_UPDATE))
                written_mark(w, ops[o].evidence);
    }
    rc = 0;
    goto done;
no_teacher:
    fprintf(stderr, "eval: the %s world has no teacher (no oracle or teacher baseline)\n",
            env->name);
done:
    free(prompt), free(gen), free(facts), free(ops), free(fact_store);
    return rc;
}

int eval_baseline(const World *env, const Dataset *ds, BaselinePolicy p, int sessions,
                  EvalResult *r) {
    memset(r, 0, sizeof *r);
    int buf[1024];
    int rc = 0;
    for (int e = 0; e < ds->n && rc == 0; e++) {
        const Episode *ep = &ds->episodes[e];
        int H = sessions < ep->n_sessions ? sessions : ep->n_sessions;
        WrittenSet w;
        MemoryBank bank;
        int cap, slot_len;
        world_bank_shape(env, ep, &cap, &slot_len);
        slot_len = min_int(slot_len, (int)(sizeof buf / sizeof buf[0]));
        if (memory_init(&bank, cap, slot_len) != 0) return -1;
        if (written_init(&w, ep) != 0) {
            memory_free(&bank);
            rc = -1;
            break;
        }
        MemoryStats st = {0};
        for (int s = 1; s <= H && rc == 0; s++) {
            const Session *S = &ep->sessions[s - 1];
            if (p == POLICY_STORE_TURNS) {
                for (int t = 0; t < S->n_turns; t++) {
                    char head[256];
                    snprintf(head, sizeof head, "%s :", S->turns[t].speaker);
                    int n = world_encode(env, head, buf, slot_len);
                    n += world_encode(env, S->turns[t].text, buf + n, slot_len - n);
                    MemoryOp op = {OP_INSERT, -1, buf, n, S->turns[t].dia};
                    if (memory_apply(&bank, &op, s, &st) == 0) written_mark(&w, op.evidence);
                }
            } else if (p == POLICY_INSERT_ONLY && ep->gold) {
                for (int g = 0; g < ep->n_gold[s - 1]; g++) {
                    const GoldFact *G = &ep->gold[s - 1][g];
                    int n = world_encode(env, G->text, buf, slot_len);
                    MemoryOp op = {OP_INSERT, -1, buf, n, G->dia};
                    if (memory_apply(&bank, &op, s, &st) == 0) written_mark(&w, op.evidence);
                }
            } else if (p == POLICY_ORACLE || p == POLICY_TEACHER) {
                TeacherFlaws fl = env->default_flaws;
                rc = run_oracle_session(env, ep, s, &bank, p == POLICY_TEACHER ? &fl : NULL, &w,
                                        &st, &r->malformed);
            }
        }
        if (rc == 0 && eval_add_episode(env, ep, H, &bank, &w, r) != 0) rc = -1;
        r->ops.inserts += st.inserts, r->ops.updates += st.updates, r->ops.deletes += st.deletes;
        r->ops.noops += st.noops, r->ops.invalid += st.invalid, r->ops.overflow += st.overflow;
        written_free(&w);
        memory_free(&bank);
    }
    r->sessions = sessions;
    r->questions_skipped = ds->questions_skipped;
    r->evidence_skipped = ds->evidence_skipped;
    eval_finish(r);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Evaluation with the model as the actor (greedy), one lane per episode, all in one batch.
// Snapshots after every session give the horizons 8, 16, 32 from a single pass.

int eval_model(const World *env, const Actor *greedy, const Dataset *ds, int n_episodes,
               const int *horizons, int n_h, uint64_t seed, FILE *show_bank, EvalResult *res,
               double *ep_f1) {
    int n = min_int(n_episodes, ds->n);
    int hmax = 0;
    for (int i = 0; i < n_h; i++) hmax = horizons[i] > hmax ? horizons[i] : hmax;
    Lane *lanes = calloc((size_t)n, sizeof *lanes);
    if (!lanes) return -1;
    int rc = -1, made = 0;
    for (int e = 0; e < n; e++, made++) {
        const Episode *ep = &ds->episodes[e];
        if (lane_init(&lanes[e], env, ep, 1, min_int(hmax, ep->n_sessions), 1) != 0)
            goto done;
    }
    Rng rng;
    rng_seed(&rng, seed ^ 0xe7a1ULL);  // greedy: the seed is irrelevant, but fixed
    if (rollout_run(env, lanes, n, greedy, &rng, NULL) != 0) goto done;
    for (int h = 0; h < n_h; h++) {
        memset(&res[h], 0, sizeof res[h]);
        for (int e = 0; e < n; e++) {
            // An episode shorter than the horizon counts with all its sessions, as in the
            // baselines (eval_baseline).
            const Lane *l = &lanes[e];
            int H = min_int(horizons[h], l->last_session);
            MemoryBank bank;  // the lane's bank after session H
            if (memory_init(&bank, l->bank.cap, l->bank.slot_len) != 0) goto done;
            memory_restore(&bank, lane_snapshot(l, H));
            double f1_before = res[h].f1;  // a running sum until eval_finish
            int q_before = res[h].questions;
            int bad = eval_add_episode(env, l->ep, H, &bank, &l->written, &res[h]);
            memory_free(&bank);
            if (bad) goto done;
            if (ep_f1) {
                int nq = res[h].questions - q_before;
                ep_f1[(size_t)h * n + e] = nq > 0 ? (res[h].f1 - f1_before) / nq : 0.0;
            }
            const LaneCounters *c = lane_counters(l, H);
            res[h].ops.inserts += c->stats.inserts, res[h].ops.updates += c->stats.updates;
            res[h].ops.deletes += c->stats.deletes, res[h].ops.noops += c->stats.noops;
            res[h].ops.invalid += c->stats.invalid, res[h].ops.overflow += c->stats.overflow;
            res[h].malformed += c->malformed;
            res[h].outputs += c->outputs;
        }
        res[h].sessions = horizons[h];
        res[h].questions_skipped = ds->questions_skipped;
        res[h].evidence_skipped = ds->evidence_skipped;
        eval_finish(&res[h]);
    }
    if (show_bank && n > 0) {
        fprintf(show_bank, "bank of episode %s after %d sessions (%d memories):\n",
                lanes[0].ep->sample_id, lanes[0].last_session, memory_alive_count(&lanes[0].bank));
        memory_dump(&lanes[0].bank, show_bank, env->token_text, env->state);
    }
    rc = 0;
done:
    for (int e = 0; e < made; e++) lane_free(&lanes[e]);
    free(lanes);
    return rc;
}

static int max_sessions(const Dataset *ds) {
    int h = 0;
    for (int i = 0; i < ds->n; i++)
        if (ds->episodes[i].n_sessions > h) h = ds->episodes[i].n_sessions;
    return h;
}

// The horizons to report: 8, 16, 32 where the data has them (or those asked for).
int eval_horizons(const Dataset *ds, const int *asked, int n_asked, int *h) {
    int n = 0, hmax = max_sessions(ds);
    if (n_asked > 0) {
        // capped at the data; a cap that repeats the previous horizon is not reported twice
        for (int i = 0; i < n_asked && i < EVAL_MAX_HORIZONS; i++) {
            int x = min_int(asked[i], hmax);
            if (n == 0 || x > h[n - 1]) h[n++] = x;
        }
        return n;
    }
    for (int x = 8; x <= 32; x *= 2)
        if (x <= hmax) h[n++] = x;
    if (n == 0) h[n++] = hmax;
    return n;
}

// The final table: none / insert-only / SFT / trained / oracle at 8, 16, 32 sessions, and the
// paired per-episode F1 differences of the trained policy with 95% t-intervals (README
// "Evaluation").

enum { ROW_NONE, ROW_INSERT, ROW_SFT, ROW_TRAINED, ROW_ORACLE, N_ROWS };
static const char *const ROW_NAMES[N_ROWS] = {"none", "insert-only", "sft", "trained", "oracle"};

typedef struct {
    int nh, hs[3], n;          // horizons; test episodes
    int have[N_ROWS];
    EvalResult res[N_ROWS][3];
    double *ep_f1[N_ROWS];     // (nh, n) per-episode F1 of insert-only, sft, trained
} FinalTable;

// insert-only per episode: the baseline run on one-episode views of the test set.
static int baseline_per_episode(const World *env, const Dataset *test, const FinalTable *ft,
                                double *ep_f1) {
    for (int e = 0; e < test->n; e++) {
        Dataset one = *test;
        one.episodes = test->episodes + e;
        one.n = 1;
        for (int h = 0; h < ft->nh; h++) {
            EvalResult r;
            if (eval_baseline(env, &one, POLICY_INSERT_ONLY, ft->hs[h], &r) != 0) return -1;
            ep_f1[(size_t)h * test->n + e] = r.f1;
        }
    }
    return 0;
}

static int final_eval(const World *env, const FinalPolicies *p, const Dataset *test,
                      FinalTable *ft) {
    for (int r = 0; r < N_ROWS; r++) ft->have[r] = r != ROW_SFT || p->sft;
    ft->have[ROW_ORACLE] = env->teacher_extract != NULL;  // a world without a teacher: no oracle
    for (int h = 0; h < ft->nh; h++) {
        if (eval_baseline(env, test, POLICY_NONE, ft->hs[h], &ft->res[ROW_NONE][h]) ||
            eval_baseline(env, test, POLICY_INSERT_ONLY, ft->hs[h], &ft->res[ROW_INSERT][h]) ||
            (ft->have[ROW_ORACLE] &&
             eval_baseline(env, test, POLICY_ORACLE, ft->hs[h], &ft->res[ROW_ORACLE][h])))
            return -1;
    }
    for (int r = ROW_INSERT; r <= ROW_TRAINED; r++) {
        if (!ft->have[r]) continue;
        ft->ep_f1[r] = calloc((size_t)ft->nh * (size_t)test->n, sizeof(double));
        if (!ft->ep_f1[r]) return -1;
    }
    if (baseline_per_episode(env, test, ft, ft->ep_f1[ROW_INSERT]) != 0) return -1;
    if (p->sft && eval_model(env, p->sft, test, test->n, ft->hs, ft->nh, p->seed, p->show_bank,
                             ft->res[ROW_SFT], ft->ep_f1[ROW_SFT]) != 0)
        return -1;
    return eval_model(env, p->trained, test, test->n, ft->hs, ft->nh, p->seed, p->show_bank,
                      ft->res[ROW_TRAINED], ft->ep_f1[ROW_TRAINED]);
}

// The trained policy against `base`, per horizon: mean paired difference and its interval.
static void final_compare(const FinalTable *ft, int base, int h, double *m, double *lo,
                          double *hi) {
    const double *a = ft->ep_f1[ROW_TRAINED] + (size_t)h * ft->n;
    const double *b = ft->ep_f1[base] + (size_t)h * ft->n;
    stats_paired_ci(a, b, ft->n, m, lo, hi);
}

static void final_write_jsonl(const FinalTable *ft, FILE *j) {
    for (int r = 0; r < N_ROWS; r++) {
        if (!ft->have[r]) continue;
        for (int h = 0; h < ft->nh; h++) {
            const EvalResult *e = &ft->res[r][h];
            fprintf(j,
                    "{\"policy\":\"%s\",\"sessions\":%d,\"episodes\":%d,\"questions\":%d,"
                    "\"f1\":%.5f,\"bleu1\":%.5f,\"em\":%.5f,\"mfail\":%.5f,"
                    "\"mem_words\":%.2f,\"ops_insert\":%d,\"ops_update\":%d,"
                    "\"ops_delete\":%d,\"ops_noop\":%d,\"ops_invalid\":%d,\"malformed\":%d,"
                    "\"outputs\":%d",
                    ROW_NAMES[r], ft->hs[h], e->episodes, e->questions, e->f1, e->bleu1, e->em,
                    e->mfail, e->mem_words, e->ops.inserts, e->ops.updates, e->ops.deletes,
                    e->ops.noops, e->ops.invalid, e->malformed, e->outputs);
            // F1 per question category (2 = temporal) and each episode's F1, so runs can be
            // compared per category and paired over episodes (dev/experiment.py)
            fprintf(j, ",\"cat_f1\":[");
            for (int c = 0; c < 8; c++)
                fprintf(j, "%s%.5f", c ? "," : "", e->per_cat_n[c] ? e->per_cat_f1[c] : -1.0);
            fprintf(j, "]");
            if (ft->ep_f1[r]) {
                fprintf(j, ",\"ep_f1\":[");
                for (int e2 = 0; e2 < ft->n; e2++)
                    fprintf(j, "%s%.5f", e2 ? "," : "", ft->ep_f1[r][(size_t)h * ft->n + e2]);
                fprintf(j, "]");
            }
            fprintf(j, "}\n");
        }
    }
    // paired rows: "policy" names the comparison, so readers of the rows above skip them
    for (int base = ROW_INSERT; base <= ROW_SFT; base++) {
        if (!ft->have[base]) continue;
        for (int h = 0; h < ft->nh; h++) {
            double m, lo, hi;
            char slo[32], shi[32];
            final_compare(ft, base, h, &m, &lo, &hi);
            fprintf(j,
                    "{\"policy\":\"trained-vs-%s\",\"paired\":1,\"sessions\":%d,\"episodes\":%d,"
                    "\"diff_f1\":%.5f,\"ci95_lo\":%s,\"ci95_hi\":%s}\n",
                    ROW_NAMES[base], ft->hs[h], ft->n, m, json_num(slo, sizeof slo, lo, "%.5f"),
                    json_num(shi, sizeof shi, hi, "%.5f"));
        }
    }
}

static void final_write_md(const FinalTable *ft, FILE *o) {
    fprintf(o, "\n| policy (%d test episodes) |", ft->n);
    for (int h = 0; h < ft->nh; h++)
        fprintf(o, " F1@%d | BLEU-1@%d | M-Fail@%d |", ft->hs[h], ft->hs[h], ft->hs[h]);
    fprintf(o, "\n|---|");
    for (int h = 0; h < ft->nh; h++) fprintf(o, "---|---|---|");
    fprintf(o, "\n");
    for (int r = 0; r < N_ROWS; r++) {
        if (!ft->have[r]) continue;
        fprintf(o, "| %s |", ROW_NAMES[r]);
        for (int h = 0; h < ft->nh; h++)
            fprintf(o, " %.3f | %.3f | %.3f |", ft->res[r][h].f1, ft->res[r][h].bleu1,
                    ft->res[r][h].mfail);
        fprintf(o, "\n");
    }
    fprintf(o, "\nPaired per-episode F1 difference, mean [95%% t-interval] over %d episodes:\n\n"
               "| comparison |", ft->n);
    for (int h = 0; h < ft->nh; h++) fprintf(o, " dF1@%d |", ft->hs[h]);
    fprintf(o, "\n|---|");
    for (int h = 0; h < ft->nh; h++) fprintf(o, "---|");
    fprintf(o, "\n");
    for (int base = ROW_SFT; base >= ROW_INSERT; base--) {
        if (!ft->have[base]) continue;
        fprintf(o, "| trained - %s |", ROW_NAMES[base]);
        for (int h = 0; h < ft->nh; h++) {
            double m, lo, hi;
            final_compare(ft, base, h, &m, &lo, &hi);
            if (isfinite(lo)) fprintf(o, " %+.3f [%+.3f, %+.3f] |", m, lo, hi);
            else fprintf(o, " %+.3f [n/a: one episode] |", m);
        }
        fprintf(o, "\n");
    }
    // How often the learned policies wrote something the parsers accept (issue: >= 95%).
    for (int r = ROW_SFT; r <= ROW_TRAINED; r++) {
        if (!ft->have[r]) continue;
        const EvalResult *e = &ft->res[r][ft->nh - 1];
        fprintf(o, "\n%s: %d role outputs over %d sessions, %.1f%% parseable, ops "
                   "insert/update/delete/noop %d/%d/%d/%d, %d invalid",
                ROW_NAMES[r], e->outputs, ft->hs[ft->nh - 1],
                e->outputs ? 100.0 * (1.0 - (double)e->malformed / e->outputs) : 0.0,
                e->ops.inserts, e->ops.updates, e->ops.deletes, e->ops.noops, e->ops.invalid);
    }
    fprintf(o, "\n");
}

int final_table(const World *env, const FinalPolicies *p, const Dataset *all, int test_episodes,
                const char *test_path, const char *out_dir) {
    FinalTable ft = {0};
    Dataset test = *all;
    if (test.n > test_episodes) test.n = test_episodes;
    if (test.n < test_episodes)
        fprintf(stderr, "warning: %s has %d episodes, fewer than the %d asked for (delete it to "
                        "regenerate the default data)\n", test_path, test.n, test_episodes);
    ft.n = test.n;
    ft.nh = eval_horizons(all, &p->horizon, p->horizon > 0 ? 1 : 0, ft.hs);
    int rc = final_eval(env, p, &test, &ft);
    if (rc == 0 && out_dir) {  // NULL: measured but not written (MPI ranks other than 0)
        // Both files are built in memory and written atomically (write_text_file): a full
        // disk is an error naming the file, never an empty table.
        char path[4096], *jtext = NULL, *mtext = NULL;
        size_t jn = 0, mn = 0;
        FILE *j = open_memstream(&jtext, &jn), *f = j ? open_memstream(&mtext, &mn) : NULL;
        rc = -1;
        if (j && f) {
            final_write_jsonl(&ft, j);  // machine-readable: one JSON line per (policy, horizon)
            final_write_md(&ft, f);
            final_write_md(&ft, stdout);
        }
        int bad = !j || !f;
        if (j) bad |= fclose(j) != 0;
        if (f) bad |= fclose(f) != 0;
        if (bad) {
            fprintf(stderr, "error: out of memory for the final table\n");
        } else {
            snprintf(path, sizeof path, "%s/%s", out_dir, "eval.jsonl");
            if (write_text_file(path, jtext, jn) == 0) {
                snprintf(path, sizeof path, "%s/%s", out_dir, "eval.md");
                rc = write_text_file(path, mtext, mn);
            }
        }
        free(jtext), free(mtext);
    }
    for (int r = 0; r < N_ROWS; r++) free(ft.ep_f1[r]);
    return rc;
}

// --eval POLICY --mistakes: one greedy (or teacher) pass with every role output recorded and a
// snapshot after every session, then the mistakes of each session (mistakes.h), summed over
// episodes in buckets of sessions 1-8, 9-16, 17-32, 33-64 and over all sessions.
int report_mistakes(const World *env, const Dataset *ds, int hmax, const Actor *actor,
                    const char *name, uint64_t seed) {
    if (!env->session_mistakes) {
        fprintf(stderr, "error: --mistakes: the %s world has no gold grammar to judge with\n",
                env->name);
        return -1;
    }
    int n = ds->n, rc = -1, made = 0;
    Lane *lanes = calloc((size_t)(n ? n : 1), sizeof *lanes);
    TurnBuffer tb = {0};
    MemoryBank bank = {0};
    if (!lanes) goto done;
    for (int e = 0; e < n; e++, made++)
        if (lane_init(&lanes[e], env, &ds->episodes[e], 1,
                      min_int(hmax, ds->episodes[e].n_sessions), 1) != 0)
            goto done;
    Actor a = *actor;
    a.record = &tb;
    Rng rng;
    rng_seed(&rng, seed ^ 0x3157ULL);  // greedy and the teacher draw nothing; fixed
    if (rollout_run(env, lanes, n, &a, &rng, NULL) != 0) goto done;
    enum { NB = 4 };
    static const int lo[NB] = {1, 9, 17, 33}, hi[NB] = {8, 16, 32, 64};
    MistakeCounts bucket[NB] = {{0}}, all = {0};
    int last = 0;
    for (int e = 0; e < n; e++) {
        const Lane *l = &lanes[e];
        memory_free(&bank);
        if (memory_init(&bank, l->bank.cap, l->bank.slot_len) != 0) goto done;
        for (int s = 1; s <= l->last_session; s++) {
            MistakeCounts m = {0};
            memory_restore(&bank, lane_snapshot(l, s));
            if (env->session_mistakes(env->state, l->ep, s, &tb, e, &bank, &m) != 0) goto done;
            for (int b = 0; b < NB; b++)
                if (s >= lo[b] && s <= hi[b]) mistakes_sum(&bucket[b], &m);
            mistakes_sum(&all, &m);
            last = s > last ? s : last;
        }
    }
    for (int b = 0; b < NB; b++)
        if (lo[b] <= last) mistakes_print(&bucket[b], name, lo[b], min_int(hi[b], last), stdout);
    mistakes_print(&all, name, 1, last, stdout);
    rc = 0;
done:
    if (rc != 0) fprintf(stderr, "error: --mistakes: out of memory or the model failed\n");
    for (int e = 0; e < made; e++) lane_free(&lanes[e]);
    free(lanes);
    turns_free(&tb);
    memory_free(&bank);
    return rc;
}

