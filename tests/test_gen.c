// tests/test_gen.c: the synthetic episode generator (data/gen_episodes.c) as a program.
//
// Runs the built binary ($MEMR2_GEN, default ./gen_episodes; `make test` builds it first):
//   determinism   same flags -> byte-identical files; another seed -> different bytes
//   command line  --help names every flag and exits 0; bad values exit non-zero
//   schema        the output loads through dataset_load with the shape the flags asked for:
//                 sessions, turns, dia_ids, alternating speakers, dates, questions with answers,
//                 categories and evidence that names turns carrying a gold fact, keyed gold facts
//   world         closed vocabulary (a few hundred words), short turns, a 64-session horizon
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"
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
                           "--event-rate", "--distractor-share", "--all-states", "--output"};
    for (int i = 0; i < 9; i++)
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
                bad_q += Q->valid_until != QUESTION_FOREVER;  // no --all-states: all to the end
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

    // ---- --all-states: every question has a window [last_session, valid_until]
    CHECK(run("--seed 7 --episodes 2 --sessions 12 --all-states", c) == 0, "--all-states failed");
    rc = dataset_load(c, &ds, err, sizeof err);
    CHECK(rc == 0, "--all-states: %s", err);
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
        CHECK(bad == 0 && windows > 0, "--all-states: %d bad windows, %d early ends", bad, windows);
        dataset_free(&ds);
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
