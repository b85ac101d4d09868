// tests/test_gen.c: the synthetic episode generator (data/gen_episodes.c) as a program.
//
// Runs the built binary ($MEMR2_GEN, default ./gen_episodes; `make test` builds it first):
//   determinism   same flags -> byte-identical files; another seed -> different bytes
//   command line  --help names every flag and exits 0; bad values exit non-zero
//   schema        the output loads through dataset_load with the shape the flags asked for:
//                 sessions, turns, dia_ids, alternating speakers, dates, questions with answers,
//                 categories and evidence that names turns carrying a gold fact, keyed gold facts
//   world         closed vocabulary (a few hundred words), short turns, a 64-session horizon
//   horizon       replaying the gold facts gives the true state after every session H; the
//                 questions active at H are exactly those about that state, and every answer is
//                 the true one (current, ended, previous and two-hop); changes and ends are
//                 as frequent as --event-rate and --end-share ask
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/grammar.h"
#include "memory.h"
#include "vocab.h"
#include "tests/check.h"

static const char *gen_path(void) {
    const char *g = getenv("MEMR2_GEN");
    return g && *g ? g : "./gen_episodes";
}

static int run(const char *args, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s%s%s", gen_path(), args, out ? " -o " : "", out ? out : "");
    return system(cmd);
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && na > 0 && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

static int count_words(const char *s) {
    int n = 0, in = 0;
    for (; *s; s++) {
        int w = *s != ' ';
        n += w && !in;
        in = w;
    }
    return n;
}


// ---- the true state at every horizon, replayed from the gold facts alone
enum { MAXP = GR_N_NAMES };
typedef struct {
    int value[MAXP][GR_N_ATTRS];  // current value index, -1: none (never set or ended)
    int prev[MAXP][GR_N_ATTRS];   // value before the last CHANGE, -1 if the state is not one
    int set[MAXP][GR_N_ATTRS];    // 1 once the key has had any state
} GenWorld;

static int name_index(const char *w) {
    for (int i = 0; i < GR_N_NAMES; i++)
        if (strcmp(GR_NAMES[i], w) == 0) return i;
    return -1;
}
static int value_index(int attr, const char *w) {
    for (int i = 0; i < GR_N_VALUES; i++)
        if (strcmp(GR_ATTRS[attr].values[i], w) == 0) return i;
    return -1;
}

// Split a canonical fact into words (at most 16 of up to 31 chars).
static int split_words(const char *s, char w[16][32]) {
    int n = 0;
    while (*s && n < 16) {
        while (*s == ' ') s++;
        int k = 0;
        while (*s && *s != ' ' && k < 31) w[n][k++] = *s++;
        while (*s && *s != ' ') s++;
        w[n][k] = 0;
        if (k) n++;
    }
    return n;
}

// Apply one gold fact (data/grammar.h forms) to the world. Returns the event kind seen:
// 0 intro, 1 restate, 2 change, 3 end, -1 unparsable.
static int world_apply(GenWorld *W, const GoldFact *G) {
    char w[16][32];
    int n = split_words(G->text, w);
    const char *bar = G->key ? strchr(G->key, '|') : NULL;
    if (n < 3 || !bar) return -1;
    int p = name_index(w[0]), a = -1;
    for (int i = 0; i < GR_N_ATTRS; i++)
        if (strcmp(bar + 1, GR_ATTRS[i].name) == 0) a = i;
    if (p < 0 || a < 0) return -1;
    int *v = &W->value[p][a], *pv = &W->prev[p][a], had = W->set[p][a] && *v >= 0;
    W->set[p][a] = 1;
    if (G->ends) {  // "<p> no longer <phrase> <o>"
        if (!had || value_index(a, w[n - 1]) != *v) return -1;
        *v = -1, *pv = -1;
        return 3;
    }
    if (strcmp(w[1], "now") == 0) {  // "<p> now <phrase> <v> , previously <o>"
        if (n < 5 || strcmp(w[n - 2], "previously") != 0) return -1;
        int nv = value_index(a, w[n - 4]), o = value_index(a, w[n - 1]);
        if (nv < 0 || o < 0 || !had || o != *v) return -1;
        *pv = o, *v = nv;
        return 2;
    }
    int nv = value_index(a, w[n - 1]);  // "<p> <phrase> <v>": an intro or a restatement
    if (nv < 0 || (had && nv != *v)) return -1;
    if (had) return 1;
    *v = nv, *pv = -1;
    return 0;
}

// The true answer of question q in world W, "" if the question is not one of the grammar's.
static void true_answer(const GenWorld *W, const char *q, char *out, size_t n) {
    char buf[256], desc[128];
    out[0] = 0;
    for (int p = 0; p < GR_N_NAMES; p++)
        for (int a = 0; a < GR_N_ATTRS; a++) {
            const GrAttr *A = &GR_ATTRS[a];
            gr_fill(buf, sizeof buf, A->q_cur, GR_NAMES[p], NULL, NULL);
            if (strcmp(buf, q) == 0) {
                snprintf(out, n, "%s", W->value[p][a] >= 0 ? A->values[W->value[p][a]] : "none");
                return;
            }
            if (W->value[p][a] >= 0 && W->prev[p][a] >= 0) {
                gr_fill(buf, sizeof buf, A->q_prev, GR_NAMES[p], A->values[W->value[p][a]], NULL);
                if (strcmp(buf, q) == 0) {
                    snprintf(out, n, "%s", A->values[W->prev[p][a]]);
                    return;
                }
            }
        }
    // two-hop: the attribute t of the only person holding bridge value v of attribute b
    for (int b = 0; b < GR_N_ATTRS; b++) {
        if (!GR_ATTRS[b].desc) continue;
        for (int v = 0; v < GR_N_VALUES; v++)
            for (int t = 0; t < GR_N_ATTRS; t++) {
                gr_fill(desc, sizeof desc, GR_ATTRS[b].desc, NULL, GR_ATTRS[b].values[v], NULL);
                gr_fill(buf, sizeof buf, GR_ATTRS[t].q_cur, desc, NULL, NULL);
                if (strcmp(buf, q) != 0) continue;
                int holder = -1, holders = 0;
                for (int p = 0; p < GR_N_NAMES; p++)
                    if (W->value[p][b] == v) holder = p, holders++;
                if (holders == 1 && W->value[holder][t] >= 0)
                    snprintf(out, n, "%s", GR_ATTRS[t].values[W->value[holder][t]]);
                return;
            }
    }
}

// Every question active after H sessions has the true answer at H; every key with a state at H
// is asked about; the event mix follows the flags. counts: intro, restate, change, end.
static void check_horizons(const Dataset *ds, long counts[4]) {
    int wrong = 0, unparsed = 0, bad_facts = 0, unasked = 0, asked = 0;
    char ans[64], buf[256];
    for (int e = 0; e < ds->n; e++) {
        const Episode *E = &ds->episodes[e];
        GenWorld W;
        memset(&W, 0, sizeof W);
        for (int p = 0; p < MAXP; p++)
            for (int a = 0; a < GR_N_ATTRS; a++) W.value[p][a] = W.prev[p][a] = -1;
        for (int s = 1; s <= E->n_sessions; s++) {
            for (int g = 0; E->gold && g < E->n_gold[s - 1]; g++) {
                int k = world_apply(&W, &E->gold[s - 1][g]);
                if (k < 0) bad_facts++;
                else counts[k]++;
            }
            for (int q = 0; q < E->n_qa; q++) {
                const Question *Q = &E->qa[q];
                true_answer(&W, Q->question, ans, sizeof ans);
                if (!question_active(Q, s)) continue;
                asked++;
                if (!ans[0]) unparsed++;
                else if (strcmp(ans, Q->answer) != 0) wrong++;
            }
            // completeness: every key that has had a state is asked about at s
            for (int p = 0; p < GR_N_NAMES; p++)
                for (int a = 0; a < GR_N_ATTRS; a++) {
                    if (!W.set[p][a]) continue;
                    gr_fill(buf, sizeof buf, GR_ATTRS[a].q_cur, GR_NAMES[p], NULL, NULL);
                    int found = 0;
                    for (int q = 0; q < E->n_qa && !found; q++)
                        found = question_active(&E->qa[q], s) && !strcmp(E->qa[q].question, buf);
                    unasked += !found;
                }
        }
    }
    printf("horizons: %d question-horizon pairs checked against the replayed world, %d wrong, "
           "%d not understood, %d keys not asked about; events intro %ld restate %ld change %ld "
           "end %ld\n", asked, wrong, unparsed, unasked, counts[0], counts[1], counts[2],
           counts[3]);
    CHECK(bad_facts == 0, "%d gold facts do not follow the grammar or the world's history",
          bad_facts);
    CHECK(asked > 0 && wrong == 0 && unparsed == 0,
          "%d of %d active questions are not the true state at the horizon (%d not understood)",
          wrong, asked, unparsed);
    CHECK(unasked == 0, "%d (key, horizon) pairs with a state but no question about it", unasked);
}

int main(void) {
    char dir[] = "/tmp/memr2_test_gen_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char a[256], b[256], c[256], d[256], h[256];
    snprintf(a, sizeof a, "%s/a.json", dir);
    snprintf(b, sizeof b, "%s/b.json", dir);
    snprintf(c, sizeof c, "%s/c.json", dir);
    snprintf(d, sizeof d, "%s/d.json", dir);
    snprintf(h, sizeof h, "%s/help.txt", dir);

    // ---- determinism
    const char *flags = "--seed 7 --episodes 3 --sessions 12 --people 3 --turns 9 "
                        "--event-rate 0.4 --distractor-share 0.4";
    CHECK(run(flags, a) == 0, "gen_episodes failed (binary %s)", gen_path());
    CHECK(run(flags, b) == 0, "gen_episodes failed on the second run");
    CHECK(same_file(a, b), "same flags gave different bytes");
    CHECK(run("--seed 8 --episodes 3 --sessions 12 --people 3 --turns 9 --event-rate 0.4 "
              "--distractor-share 0.4", c) == 0, "gen_episodes --seed 8 failed");
    CHECK(!same_file(a, c), "a different seed gave the same bytes");

    // ---- command line
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s --help > %s", gen_path(), h);
    CHECK(system(cmd) == 0, "--help did not exit 0");
    size_t hn = 0;
    char *help = slurp(h, &hn);
    const char *names[] = {"--seed", "--episodes", "--sessions", "--people", "--turns",
                           "--event-rate", "--distractor-share", "--all-states", "--output",
                           "--end-share", "--final-only"};
    for (int i = 0; i < 11; i++)
        CHECK(help && hn && strstr(help, names[i]), "--help does not mention %s", names[i]);
    free(help);
    snprintf(cmd, sizeof cmd, "%s --sessions 0 -o %s/x.json 2>/dev/null", gen_path(), dir);
    CHECK(system(cmd) != 0, "--sessions 0 was accepted");
    snprintf(cmd, sizeof cmd, "%s --event-rate 1.5 -o %s/x.json 2>/dev/null", gen_path(), dir);
    CHECK(system(cmd) != 0, "--event-rate 1.5 was accepted");
    snprintf(cmd, sizeof cmd, "%s --no-such-flag 2>/dev/null", gen_path());
    CHECK(system(cmd) != 0, "an unknown flag was accepted");

    // ---- schema
    Dataset ds;
    char err[512];
    int rc = dataset_load(a, &ds, err, sizeof err);
    CHECK(rc == 0, "dataset_load: %s", err);
    if (rc == 0) {
        CHECK(ds.n == 3, "episodes: got %d want 3", ds.n);
        CHECK(ds.questions_skipped == 0 && ds.evidence_skipped == 0,
              "generated data has skipped questions (%d) or evidence ids (%d)",
              ds.questions_skipped, ds.evidence_skipped);
        int bad_turn = 0, bad_q = 0, bad_ev = 0, bad_gold = 0, n_q = 0, n_gold = 0, maxw = 0;
        int cats[8] = {0};
        for (int e = 0; e < ds.n; e++) {
            const Episode *E = &ds.episodes[e];
            CHECK(E->n_sessions == 12, "episode %d: %d sessions, want 12", e, E->n_sessions);
            CHECK(E->gold != NULL, "episode %d has no gold facts", e);
            CHECK(E->speaker_a && E->speaker_b && strcmp(E->speaker_a, E->speaker_b) != 0,
                  "episode %d: speakers", e);
            for (int s = 0; s < E->n_sessions; s++) {
                const Session *S = &E->sessions[s];
                bad_turn += S->n_turns != 9 || !S->date_time;
                for (int t = 0; t < S->n_turns; t++) {
                    const Turn *T = &S->turns[t];
                    const char *want = (t % 2 == 0) == (strcmp(S->turns[0].speaker, E->speaker_a) == 0)
                                           ? E->speaker_a : E->speaker_b;
                    bad_turn += T->dia != DIA_CODE(s + 1, t + 1) || strcmp(T->speaker, want) != 0;
                    int w = count_words(T->text);
                    if (w > maxw) maxw = w;
                }
                for (int g = 0; E->gold && g < E->n_gold[s]; g++) {
                    const GoldFact *G = &E->gold[s][g];
                    n_gold++;
                    bad_gold += !G->key || DIA_SESSION(G->dia) != s + 1 || DIA_TURN(G->dia) < 1 ||
                                DIA_TURN(G->dia) > S->n_turns;
                }
            }
            for (int q = 0; q < E->n_qa; q++) {
                const Question *Q = &E->qa[q];
                n_q++;
                cats[Q->category & 7]++;
                // questions about the state at the horizon: each has its window
                bad_q += Q->valid_until < Q->last_session || Q->valid_until > E->n_sessions;
                bad_q += !Q->answer[0] || Q->n_evidence < 1 || Q->last_session < 1 ||
                         Q->last_session > E->n_sessions ||
                         (Q->category != 1 && Q->category != 2 && Q->category != 4);
                // every evidence id is a turn that carries a gold fact
                for (int k = 0; k < Q->n_evidence; k++) {
                    int dia = Q->evidence[k], s = DIA_SESSION(dia), found = 0;
                    for (int g = 0; s >= 1 && s <= E->n_sessions && g < E->n_gold[s - 1]; g++)
                        found |= E->gold[s - 1][g].dia == dia;
                    bad_ev += !found;
                }
            }
        }
        printf("schema: %d questions (multi-hop %d, temporal %d, single-hop %d), %d gold facts, "
               "longest turn %d words\n", n_q, cats[1], cats[2], cats[4], n_gold, maxw);
        CHECK(bad_turn == 0, "%d turns with a wrong count, dia_id, speaker or date", bad_turn);
        CHECK(bad_q == 0, "%d malformed questions", bad_q);
        CHECK(bad_ev == 0, "%d evidence ids name a turn without a gold fact", bad_ev);
        CHECK(bad_gold == 0, "%d gold facts without key or with a bad dia_id", bad_gold);
        CHECK(cats[1] > 0 && cats[2] > 0 && cats[4] > 0, "a question category is missing");
        CHECK(n_gold > 3 * 12, "too few gold facts: %d", n_gold);
        CHECK(maxw <= 16, "a turn of %d words (turns should stay short)", maxw);
        Vocab *v = vocab_build(&ds, 0);
        CHECK(v && vocab_size(v) > 150 && vocab_size(v) < 1500, "vocabulary of %d words",
              v ? vocab_size(v) : -1);
        printf("vocabulary: %d tokens\n", v ? vocab_size(v) : -1);
        vocab_free(v);
        dataset_free(&ds);
    }

    // ---- windows: active exactly from the evidence session to valid_until
    CHECK(run("--seed 7 --episodes 2 --sessions 12", c) == 0, "--sessions 12 failed");
    rc = dataset_load(c, &ds, err, sizeof err);
    CHECK(rc == 0, "windows: %s", err);
    if (rc == 0) {
        int bad = 0, windows = 0;
        for (int e = 0; e < ds.n; e++)
            for (int q = 0; q < ds.episodes[e].n_qa; q++) {
                const Question *Q = &ds.episodes[e].qa[q];
                bad += Q->valid_until < Q->last_session || Q->valid_until > 12;
                windows += Q->valid_until < 12;
                bad += question_active(Q, Q->last_session) != 1 ||
                       question_active(Q, Q->last_session - 1) != 0 ||
                       question_active(Q, Q->valid_until + 1) != 0;
            }
        CHECK(bad == 0 && windows > 0, "windows: %d bad windows, %d early ends", bad, windows);
        dataset_free(&ds);
    }
    // --all-states is the default (kept as a flag for old scripts): the same bytes
    CHECK(run("--seed 7 --episodes 2 --sessions 12 --all-states", d) == 0, "--all-states failed");
    CHECK(same_file(c, d), "--all-states changed the default output");

    // ---- --final-only: the old world, questions about the last state only, no windows
    CHECK(run("--seed 7 --episodes 2 --sessions 12 --final-only", d) == 0, "--final-only failed");
    rc = dataset_load(d, &ds, err, sizeof err);
    CHECK(rc == 0, "--final-only: %s", err);
    if (rc == 0) {
        int bad = 0;
        for (int e = 0; e < ds.n; e++)
            for (int q = 0; q < ds.episodes[e].n_qa; q++)
                bad += ds.episodes[e].qa[q].valid_until != QUESTION_FOREVER;
        CHECK(bad == 0, "--final-only: %d questions with a window", bad);
        dataset_free(&ds);
    }

    // ---- the state at every horizon, and the event mix of the default flags
    CHECK(run("--seed 5 --episodes 8 --sessions 32", d) == 0, "--seed 5 failed");
    rc = dataset_load(d, &ds, err, sizeof err);
    CHECK(rc == 0, "horizons: %s", err);
    if (rc == 0) {
        long ev[4] = {0};
        check_horizons(&ds, ev);
        // Defaults: a turn about a key with a value changes or ends it with probability 0.6,
        // and 35% of those are ends where the attribute can end (6 of 7 attributes): expect
        // (change + end) / (restate + change + end) near 0.6 and end / (change + end) near 0.3.
        double moved = (double)(ev[2] + ev[3]) / (double)(ev[1] + ev[2] + ev[3] + 1e-9);
        double ends = (double)ev[3] / (double)(ev[2] + ev[3] + 1e-9);
        printf("event mix: (change+end)/(events on set keys) %.3f, end/(change+end) %.3f\n",
               moved, ends);
        CHECK(moved > 0.52 && moved < 0.68, "changes and ends: share %.3f, want ~0.6", moved);
        CHECK(ends > 0.22 && ends < 0.38, "ends: share %.3f of changes, want ~0.3", ends);
        CHECK(ev[2] > ev[1] / 2 && ev[3] > 0, "too few changes (%ld) or ends (%ld)", ev[2], ev[3]);
        dataset_free(&ds);
        long ev2[4] = {0};
        CHECK(run("--seed 5 --episodes 8 --sessions 32 --event-rate 0.2 --end-share 0.9", d) == 0,
              "--event-rate 0.2 failed");
        if (dataset_load(d, &ds, err, sizeof err) == 0) {
            check_horizons(&ds, ev2);
            double m2 = (double)(ev2[2] + ev2[3]) / (double)(ev2[1] + ev2[2] + ev2[3] + 1e-9);
            double e2 = (double)ev2[3] / (double)(ev2[2] + ev2[3] + 1e-9);
            CHECK(m2 > 0.14 && m2 < 0.26 && e2 > 0.65, "--event-rate 0.2 --end-share 0.9 gave "
                  "shares %.3f and %.3f", m2, e2);
            dataset_free(&ds);
        } else {
            CHECK(0, "--event-rate 0.2: %s", err);
        }
    }

    // ---- a long horizon: 64 sessions
    CHECK(run("--seed 2 --episodes 1 --sessions 64", d) == 0, "--sessions 64 failed");
    rc = dataset_load(d, &ds, err, sizeof err);
    CHECK(rc == 0 && ds.n == 1 && ds.episodes[0].n_sessions == 64, "64 sessions: %s",
          rc ? err : "wrong shape");
    if (rc == 0) dataset_free(&ds);

    remove(a), remove(b), remove(c), remove(d), remove(h);
    char x[300];
    snprintf(x, sizeof x, "%s/x.json", dir);
    remove(x);
    rmdir(dir);
    return check_summary("test_gen");
}
