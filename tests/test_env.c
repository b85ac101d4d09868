// tests/test_env.c: the synthetic world (world_synth.c, vocab.c, data/locomo.c, eval.c): scores,
// tokenizer, loader errors, the LoCoMo quirks fixture, prompt build/parse round trips, the
// teacher, and the four baselines on generated data.
//
// Generated data comes from the built generator ($MEMR2_GEN, default ./gen_episodes), the quirks
// fixture from data/fixtures/locomo_quirks.json (run from the repository root, as make test does).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "world_synth.h"
#include "tests/check.h"

static char tmpdir[] = "/tmp/memr2_test_env_XXXXXX";

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

// ---------------------------------------------------------------------------------------------
// Scores against hand-computed SQuAD-style values
static void test_scores(void) {
    struct {
        const char *pred, *gold;
        double f1, bleu1, em;
    } cases[] = {
        {"The Cat", "cat", 1, 1, 1},                          // case, article
        {"in Paris!", "paris", 2.0 / 3, 0.5, 0},              // P=1/2 R=1; c>r: no penalty
        {"paris", "lyon and paris", 0.5, exp(-2.0), 0},      // P=1 R=1/3; BP=exp(1-3/1)
        {"paris paris", "paris", 2.0 / 3, 0.5, 0},            // clipped counts
        {"Don't", "dont", 1, 1, 1},                           // punctuation removed
        {"3", "3 hours", 2.0 / 3, exp(-1.0), 0},              // BP=exp(1-2/1)
        {"an apple, a pear", "pear apple", 1, 1, 0},          // bag of words, order for EM
        {"blue green red", "green", 0.5, 1.0 / 3, 0},         // P=1/3 R=1
        {"", "", 1, 1, 1},                                    // both empty
        {"", "x", 0, 0, 0},
        {"x", "", 0, 0, 0},
        {"the", "a", 1, 1, 1},                                // both empty after normalising
        {"none", "none", 1, 1, 1},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        QAScore s = score_answer(cases[i].pred, cases[i].gold);
        char name[128];
        snprintf(name, sizeof name, "f1('%s','%s')", cases[i].pred, cases[i].gold);
        CHECK_CLOSE(name, s.f1, cases[i].f1, 0, 1e-12);
        snprintf(name, sizeof name, "bleu1('%s','%s')", cases[i].pred, cases[i].gold);
        CHECK_CLOSE(name, s.bleu1, cases[i].bleu1, 0, 1e-12);
        snprintf(name, sizeof name, "em('%s','%s')", cases[i].pred, cases[i].gold);
        CHECK_CLOSE(name, s.em, cases[i].em, 0, 0);
        worst = fmax(worst, fabs(s.f1 - cases[i].f1) + fabs(s.bleu1 - cases[i].bleu1));
    }
    printf("scores: %zu hand-computed cases, max abs error %.3g\n",
           sizeof cases / sizeof cases[0], worst);
}

// ---------------------------------------------------------------------------------------------
// Loader errors name the file and the position; never a crash
static void test_load_errors(void) {
    struct {
        const char *json, *want1, *want2;
    } cases[] = {
        {"[{\"conversation\": {\"speaker_a\": \"a\"", "JSON syntax error", "line 1"},
        {"[\n{\"sample_id\": \"s0\",\n \"qa\": [}\n]", "JSON syntax error", "line 3"},
        {"[{\"sample_id\": \"x1\"}]", "sample 0 (x1)", "'conversation': missing"},
        {"[{\"conversation\": 5}]", "sample 0", "'conversation': expected an object"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"session_1\": []}}]", "sample 0",
         "'speaker_b': missing"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": 3, \"session_1\": []}}]",
         "sample 0", "'speaker_b': expected a string"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\"}}]", "sample 0",
         "no session_N"},
        {"[{}, {\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_2\": 7}}]",
         "sample 0", "conversation"},
        {"[{\"sample_id\": \"ok\", \"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", "
         "\"session_1\": []}}, {\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", "
         "\"session_2\": 7}}]",
         "sample 1", "session_2: expected a list of turns"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": "
         "[{\"speaker\": \"a\", \"dia_id\": \"D1:1\", \"text\": \"hi\"}, {\"speaker\": \"b\", "
         "\"dia_id\": \"D1:2\", \"text\": 42}]}}]",
         "session_1 turn 1", "'text': expected a string"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": "
         "[{\"dia_id\": \"D1:1\", \"text\": \"hi\"}]}}]",
         "session_1 turn 0", "'speaker': missing"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": "
         "[\"hello\"]}}]", "session_1 turn 0", "expected an object"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": {}}]", "sample 0", "'qa': expected a list"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"evidence\": [\"D1:1\"]}, "
         "{\"question\": 9, \"answer\": \"x\"}]}]", "qa 1", "'question': expected a string"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": {\"x\": 1}}]}]", "qa 0",
         "'answer': expected a string or a number"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": \"four\"}]}]", "qa 0",
         "'category': expected an integer"},
        // numbers are range-checked before conversion (a cast of 1e300 to int is undefined)
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": 1e300}]}]", "qa 0",
         "'category': expected an integer in [0, 1000]"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": -1e999}]}]", "qa 0",
         "'category': expected an integer"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": -3}]}]", "qa 0",
         "'category': expected an integer"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": 2.5}]}]", "qa 0",
         "'category': expected an integer"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"memr2_valid_until\": 1e300}]}]",
         "qa 0", "'memr2_valid_until': expected an integer"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"memr2_valid_until\": \"3\"}]}]",
         "qa 0", "'memr2_valid_until': expected an integer"},
        {"[]", "no samples", "empty"},
        {" [ ] ", "no samples", "empty"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"observation\": {\"session_1_observation\": {\"a\": [[1, \"D1:1\"]]}}}]",
         "observation.session_1_observation.a item 0", "expected [fact, dia_id]"},
        {"42", "top level", "expected a list"},
        {"", "JSON syntax error", "line 1"},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        char path[256], err[512] = "";
        snprintf(path, sizeof path, "%s/bad%d.json", tmpdir, i);
        write_file(path, cases[i].json);
        Dataset ds;
        int rc = dataset_load(path, &ds, err, sizeof err);
        CHECK(rc == -1, "case %d: bad file accepted", i);
        CHECK(strstr(err, path) != NULL, "case %d: error does not name the file: %s", i, err);
        CHECK(strstr(err, cases[i].want1) && strstr(err, cases[i].want2),
              "case %d: error '%s' lacks '%s' / '%s'", i, err, cases[i].want1, cases[i].want2);
        if (rc == 0) dataset_free(&ds);
        remove(path);
    }
    char err[512] = "";
    Dataset ds;
    CHECK(dataset_load("/nonexistent/memr2.json", &ds, err, sizeof err) == -1 &&
              strstr(err, "/nonexistent/memr2.json") && strstr(err, "cannot open"),
          "missing file: %s", err);
    printf("loader: %d bad files rejected with positioned messages, e.g. \"%s\"\n", n, err);
}

// Numbers at the edges: huge dia_ids are counted skips (the contract for malformed evidence),
// a huge numeric sample_id is only a name, NaN is not JSON, huge session numbers are refused.
static void test_load_numbers(void) {
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/numbers.json", tmpdir);
    write_file(path,
               "[{\"sample_id\": 1e300, \"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": "
               "\"b\", \"session_1\": [{\"speaker\": \"a\", \"dia_id\": \"D99999999999999:1\", "
               "\"text\": \"hi\"}]}, \"qa\": [{\"question\": \"q?\", \"answer\": 1e300, "
               "\"evidence\": [\"D1:99999999999\", \"D99999999999:1\", \"D1:1\"], \"category\": 1000}]}]");
    Dataset ds;
    int rc = dataset_load(path, &ds, err, sizeof err);
    CHECK(rc == 0, "huge ids: %s", err);
    if (rc == 0) {
        const Episode *E = &ds.episodes[0];
        CHECK(strcmp(E->sample_id, "1e+300") == 0, "numeric sample_id '%s'", E->sample_id);
        CHECK(E->sessions[0].turns[0].dia == 0, "huge turn dia_id -> 0 (%d)",
              E->sessions[0].turns[0].dia);
        CHECK(E->n_qa == 1 && E->qa[0].n_evidence == 1 && E->qa[0].evidence[0] == DIA_CODE(1, 1) &&
                  ds.evidence_skipped == 2 && E->qa[0].category == 1000,
              "huge evidence ids skipped and counted: %d kept, %d skipped", E->qa[0].n_evidence,
              ds.evidence_skipped);
        CHECK(strcmp(E->qa[0].answer, "1e+300") == 0, "numeric answer '%s'", E->qa[0].answer);
        dataset_free(&ds);
    }
    const char *bad[][2] = {
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_1\": []}, "
         "\"qa\": [{\"question\": \"q?\", \"answer\": \"x\", \"category\": NaN}]}]",
         "JSON syntax error"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", "
         "\"session_99999999999\": []}}]", "no session_N"},
        {"[{\"conversation\": {\"speaker_a\": \"a\", \"speaker_b\": \"b\", \"session_5000\": []}}]",
         "at most 999 sessions"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i][0]);
        err[0] = 0;
        rc = dataset_load(path, &ds, err, sizeof err);
        CHECK(rc == -1 && strstr(err, path) && strstr(err, bad[i][1]), "case %zu: want '%s', got '%s'",
              i, bad[i][1], err);
        if (rc == 0) dataset_free(&ds);
    }
    remove(path);
}

// ---------------------------------------------------------------------------------------------
// The hand-written LoCoMo-format file with the real data's quirks
static void test_quirks(const Env *base) {
    Dataset ds;
    char err[512];
    const char *path = "data/fixtures/locomo_quirks.json";
    int rc = dataset_load(path, &ds, err, sizeof err);
    CHECK(rc == 0, "quirks fixture: %s", err);
    if (rc) return;
    CHECK(ds.n == 2, "quirks: %d samples", ds.n);
    // skipped: the adversarial question (no 'answer') and one whose only evidence is "D";
    // evidence ids skipped: "D" twice and "D9:17" (past the last session)
    CHECK(ds.questions_skipped == 2, "quirks: questions_skipped %d want 2", ds.questions_skipped);
    CHECK(ds.evidence_skipped == 3, "quirks: evidence_skipped %d want 3", ds.evidence_skipped);
    const Episode *E = &ds.episodes[0];
    CHECK(E->n_sessions == 3 && E->sessions[1].n_turns == 0 && E->sessions[2].n_turns == 3,
          "quirks: missing session_2 should give an empty session 2 of 3");
    CHECK(strstr(E->sessions[0].turns[2].text, "[image: a photo of a group") != NULL,
          "quirks: blip_caption not appended: %s", E->sessions[0].turns[2].text);
    CHECK(E->n_qa == 5 && ds.episodes[1].n_qa == 2, "quirks: %d and %d questions kept", E->n_qa,
          ds.episodes[1].n_qa);
    CHECK(strcmp(E->qa[1].answer, "3") == 0 && strcmp(ds.episodes[1].qa[1].answer, "2022") == 0,
          "quirks: numeric answers: '%s' '%s'", E->qa[1].answer, ds.episodes[1].qa[1].answer);
    CHECK(E->qa[2].n_evidence == 2 && E->qa[2].evidence[0] == DIA_CODE(3, 1) &&
              E->qa[2].evidence[1] == DIA_CODE(1, 3) && E->qa[2].last_session == 3,
          "quirks: 'D3:1; D1:3' should give two ids");
    CHECK(E->gold && E->n_gold[0] == 2 && E->n_gold[1] == 0 && E->n_gold[2] == 3,
          "quirks: gold facts per session");
    if (E->gold && E->n_gold[0] == 2)
        CHECK(E->gold[0][0].dia == DIA_CODE(1, 2) && E->gold[0][1].dia == DIA_CODE(1, 3) &&
                  E->gold[0][0].key == NULL,
              "quirks: gold facts sorted by dia_id, no key in real data");
    if (E->gold && E->n_gold[2] == 3)
        CHECK(E->gold[2][2].dia == DIA_CODE(3, 3) || E->gold[2][1].dia == DIA_CODE(3, 3),
              "quirks: a dia_id given as a list");
    CHECK(ds.episodes[1].gold == NULL, "quirks: no observation -> gold NULL");

    Env env = *base;
    Vocab *v = vocab_build(&ds, 0);
    env.vocab = v;
    World world;
    world_synth_wrap(&world, &env);
    // prompts truncate the ~90-word turn sensibly
    int p[64];
    int n = env_extract_prompt(&env, E, 1, 0, p, 64);
    int turns_seen = 0;
    for (int i = 0; i < n; i++) turns_seen += p[i] >= TOK_TURN0 && p[i] < TOK_TURN0 + 4;
    CHECK(n <= 64 && n > 40 && p[0] == TOK_EXTRACT && p[n - 1] == TOK_OUT && turns_seen == 4,
          "quirks: truncated extract prompt: %d tokens, %d turn markers", n, turns_seen);
    int big[4096];
    int nfull = env_extract_prompt(&env, E, 1, 0, big, 4096);
    CHECK(nfull > 130, "quirks: untruncated prompt has %d tokens", nfull);
    // every baseline runs end to end; store-turns writes every evidence turn
    const char *names[4] = {"none", "store-turns", "insert-only", "oracle"};
    double f1[4];
    for (int b = 0; b < 4; b++) {
        EvalResult r;
        CHECK(eval_baseline(&world, &ds, (BaselinePolicy)b, 32, &r) == 0, "quirks: %s failed",
              names[b]);
        eval_print(&r, names[b], stdout);
        f1[b] = r.f1;
        CHECK(r.questions == 7 && r.questions_skipped == 2 && r.evidence_skipped == 3,
              "quirks %s: %d questions, %d/%d skipped", names[b], r.questions,
              r.questions_skipped, r.evidence_skipped);
        if (b == POLICY_STORE_TURNS)
            CHECK(r.mfail == 0.0 && r.ops.inserts == 9, "quirks: store-turns mfail %.3f", r.mfail);
        if (b == POLICY_NONE) CHECK(r.f1 == 0.0 && r.mfail == 1.0, "quirks: none f1 %.3f", r.f1);
    }
    CHECK(f1[1] > 0.1 && f1[2] > 0.1, "quirks: the fallback reader scores nothing (%.3f %.3f)",
          f1[1], f1[2]);
    vocab_free(v);
    dataset_free(&ds);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer: encode/decode and save/load round trip
// The vocabulary file: every number and line is checked; the hash tells vocabularies apart.
static void test_vocab_file_errors(const Vocab *v, const char *path) {
    // The special tokens, one a line: the valid prefix of every case below.
    size_t cap = 16 * TOK_FIRST_WORD + 64;
    char *specials = malloc(cap);
    if (!specials) return;
    size_t k = 0;
    for (int i = 0; i < TOK_FIRST_WORD; i++)
        k += (size_t)snprintf(specials + k, cap - k, "%s\n", vocab_word(v, i));
    struct {
        const char *header, *tail, *want;
        long nul_at;  // >= 0: a NUL byte replaces this byte of the tail
    } cases[] = {
        {"memr2-vocab 1 99999999999999999999\n", "", "line 1", -1},  // overflows long
        {"memr2-vocab 1 4294967357\n", "", "line 1", -1},            // overflows int
        {"memr2-vocab 1 -61\n", "", "line 1", -1},                   // negative count
        {"memr2-vocab -1 61\n", "", "line 1", -1},
        {"memr2-vocab 1 61junk\n", "", "line 1", -1},
        {"memr2-vocab 1 61 7\n", "", "line 1", -1},
        {"memr2-vocab 2 61\n", "", "version 2", -1},
        {"memr2-vocab 1 20000000\n", "", "line 1", -1},
        // TOK_FIRST_WORD = 60 special tokens, so the first word is line 62
        {"memr2-vocab 1 61\n", "cat\ndog\n", "more words than the header", -1},
        {"memr2-vocab 1 62\n", "cat\n", "line 63: file ends", -1},
        {"memr2-vocab 1 62\n", "ca_\ndog\n", "line 62: contains a NUL byte", 2},
        {"memr2-vocab 1 61\n", "\n", "line 62: empty or repeated", -1},
        {"memr2-vocab 1 62\n", "cat\ncat\n", "line 63: empty or repeated word 'cat'", -1},
        {"memr2-vocab 1 61\n", "<eos>\n", "line 62: empty or repeated", -1},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int c = 0; c < n; c++) {
        FILE *f = fopen(path, "wb");
        if (!f) break;
        fputs(cases[c].header, f);
        fwrite(specials, 1, k, f);
        char tail[64];
        snprintf(tail, sizeof tail, "%s", cases[c].tail);
        size_t tl = strlen(tail);
        if (cases[c].nul_at >= 0) tail[cases[c].nul_at] = '\0';
        fwrite(tail, 1, tl, f);
        fclose(f);
        char err[512] = "";
        Vocab *w = vocab_load(path, err, sizeof err);
        CHECK(!w && strstr(err, path) && strstr(err, cases[c].want),
              "vocab case %d (%.30s): want '%s', got '%s'", c, cases[c].header, cases[c].want, err);
        vocab_free(w);
    }
    // A long line is an error, not two words.
    FILE *f = fopen(path, "wb");
    if (f) {
        fprintf(f, "memr2-vocab 1 61\n%s", specials);
        for (int i = 0; i < 5000; i++) fputc('x', f);
        fputs("\n", f);
        fclose(f);
        char err[512] = "";
        Vocab *w = vocab_load(path, err, sizeof err);
        CHECK(!w && strstr(err, "longer than 4096"), "long vocab line: %s", err);
        vocab_free(w);
    }
    // Two vocabularies of the same size with two words swapped hash differently; the same words
    // hash the same.
    f = fopen(path, "wb");
    char err[512] = "";
    Vocab *a = NULL, *b = NULL, *a2 = NULL;
    if (f) {
        fprintf(f, "memr2-vocab 1 62\n%scat\ndog\n", specials);
        fclose(f);
        a = vocab_load(path, err, sizeof err);
        a2 = vocab_load(path, err, sizeof err);
    }
    f = fopen(path, "wb");
    if (f) {
        fprintf(f, "memr2-vocab 1 62\n%sdog\ncat\n", specials);
        fclose(f);
        b = vocab_load(path, err, sizeof err);
    }
    CHECK(a && b && a2, "hash fixtures load: %s", err);
    if (a && b && a2)
        CHECK(vocab_hash(a) == vocab_hash(a2) && vocab_hash(a) != vocab_hash(b) &&
                  vocab_size(a) == vocab_size(b),
              "hash: same words equal, swapped words differ (%016llx vs %016llx)",
              (unsigned long long)vocab_hash(a), (unsigned long long)vocab_hash(b));
    vocab_free(a), vocab_free(a2), vocab_free(b);
    free(specials);
    printf("vocab loader: %d bad files rejected, hash tells swapped words apart\n", n + 1);
}

static void test_tokenizer(const Dataset *ds) {
    Vocab *v = vocab_build(ds, 300);
    CHECK(v && vocab_size(v) == 300, "vocab capped at 300: %d", v ? vocab_size(v) : -1);
    if (!v) return;
    CHECK(strcmp(vocab_word(v, TOK_EOS), "<eos>") == 0 &&
              strcmp(vocab_word(v, TOK_TURN0 + 3), "<t3>") == 0 &&
              strcmp(vocab_word(v, TOK_SLOT0 + 31), "<m31>") == 0,
          "special token names");
    int ids[32];
    int n = vocab_encode(v, "Where does ALICE live?  Zyzzyva!", ids, 32);
    char text[256];
    vocab_decode(v, ids, n, text, sizeof text);
    printf("tokenizer: '%s' (%d tokens)\n", text, n);
    CHECK(n == 7 && ids[5] == TOK_UNK && strcmp(vocab_word(v, ids[4]), "?") == 0,
          "encode: %d tokens '%s'", n, text);
    CHECK(vocab_encode(v, "2023 numbers", ids, 32) == 2, "numbers are words");
    // the most frequent word comes right after the special tokens
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/vocab.txt", tmpdir);
    CHECK(vocab_save(v, path, err, sizeof err) == 0, "vocab_save: %s", err);
    Vocab *w = vocab_load(path, err, sizeof err);
    CHECK(w != NULL, "vocab_load: %s", err);
    if (w) {
        int same = vocab_size(w) == vocab_size(v);
        for (int i = 0; same && i < vocab_size(v); i++)
            same = strcmp(vocab_word(v, i), vocab_word(w, i)) == 0;
        CHECK(same, "vocab round trip changed the words");
        int a[64], b[64];
        const char *s = ds->episodes[0].sessions[0].turns[0].text;
        int na = vocab_encode(v, s, a, 64), nb = vocab_encode(w, s, b, 64);
        CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof(int)) == 0, "encode differs after load");
        CHECK(vocab_hash(w) == vocab_hash(v) && vocab_hash(v) != 0,
              "vocab hash survives save/load: %016llx", (unsigned long long)vocab_hash(v));
        vocab_free(w);
    }
    write_file(path, "memr2-vocab 1 3\n<pad>\n<unk>\n<eos>\n");
    w = vocab_load(path, err, sizeof err);
    CHECK(!w && strstr(err, path) && strstr(err, "line 1"), "short vocab accepted: %s", err);
    vocab_free(w);
    test_vocab_file_errors(v, path);
    remove(path);
    vocab_free(v);
}

// ---------------------------------------------------------------------------------------------
// Prompt build / parse round trips and the teacher's ops
static void test_roundtrips(const Env *env, const Dataset *ds) {
    const Episode *E = &ds->episodes[0];
    // teacher extract -> parse gives the gold facts of the chunk, with their dia_ids
    int gen[256], chunks = 0, facts_total = 0, mismatch = 0, bad_total = 0;
    Fact facts[32];
    for (int s = 1; s <= E->n_sessions; s++) {
        for (int c = 0; c < env_num_chunks(env, E, s); c++, chunks++) {
            int gl = env_teacher_extract(env, E, s, c, 0.0f, NULL, gen, 48);
            int bad = 0;
            int nf = env_parse_extract(env, E, s, c, gen, gl, facts, 32, &bad);
            bad_total += bad;
            CHECK(gl >= 1 && gen[gl - 1] == TOK_EOS && gl <= 48, "teacher extract ends in <eos>");
            // the gold facts of this chunk's turns, in order
            int k = 0;
            for (int g = 0; g < E->n_gold[s - 1]; g++) {
                const GoldFact *G = &E->gold[s - 1][g];
                int t = DIA_TURN(G->dia) - 1;
                if (t < c * env->cfg.chunk_turns || t >= (c + 1) * env->cfg.chunk_turns) continue;
                char a[256], b[256];
                int ids[64];
                int n = vocab_encode(env->vocab, G->text, ids, 64);
                vocab_decode(env->vocab, ids, n, a, sizeof a);
                if (k < nf) vocab_decode(env->vocab, facts[k].tokens, facts[k].len, b, sizeof b);
                mismatch += k >= nf || strcmp(a, b) != 0 || facts[k].evidence != G->dia;
                k++;
            }
            mismatch += k != nf;
            facts_total += nf;
        }
    }
    printf("extract round trip: %d chunks, %d facts, %d mismatches, %d malformed\n", chunks,
           facts_total, mismatch, bad_total);
    CHECK(mismatch == 0 && bad_total == 0 && facts_total > 0, "extract round trip");

    // noise 1: every fact dropped
    Rng rng;
    rng_seed(&rng, 5);
    int gl = env_teacher_extract(env, E, 1, 0, 1.0f, &rng, gen, 48);
    CHECK(gl == 1 && gen[0] == TOK_EOS, "noise 1 should drop every fact (%d tokens)", gl);

    // malformed extractor outputs
    int bad = 0;
    int w = TOK_FIRST_WORD + 5;
    int g1[] = {TOK_TURN0, w, w, TOK_SEP, TOK_EOS};
    CHECK(env_parse_extract(env, E, 1, 0, g1, 5, facts, 32, &bad) == 1 && bad == 0, "good output");
    int g2[] = {TOK_TURN0, w, TOK_SEP};  // no <eos>
    CHECK(env_parse_extract(env, E, 1, 0, g2, 3, facts, 32, &bad) == 1 && bad == 1, "no <eos>");
    int g3[] = {w, w, TOK_SEP, TOK_TURN0 + 1, w, TOK_SEP, TOK_EOS};  // first fact lacks <tK>
    CHECK(env_parse_extract(env, E, 1, 0, g3, 7, facts, 32, &bad) == 1 && bad == 1 &&
              facts[0].turn == 1 && facts[0].evidence == DIA_CODE(1, 2),
          "missing turn marker");
    int g4[] = {TOK_TURN0 + 9, w, TOK_SEP, TOK_TURN0, TOK_SEP, TOK_TURN0, TOK_UPDATE, TOK_SEP,
                TOK_EOS};  // turn out of the chunk, empty fact, special token inside
    CHECK(env_parse_extract(env, E, 1, 0, g4, 9, facts, 32, &bad) == 0 && bad == 1, "bad facts");

    // the oracle manager on a hand-made bank
    MemoryBank bank;
    if (memory_init(&bank, 16, env->cfg.slot_len) != 0) return;
    MemoryStats st = {0};
    // people of this episode, so that their names are in the vocabulary
    const char *A = E->speaker_a, *B = E->speaker_b;
    char slots[3][64], ftext[4][96];
    snprintf(slots[0], 64, "%s lives in paris", A);
    snprintf(slots[1], 64, "%s drives a toyota", A);
    snprintf(slots[2], 64, "%s owns a cat", B);
    snprintf(ftext[0], 96, "%s now lives in lyon , previously paris", A);  // -> UPDATE slot 0
    snprintf(ftext[1], 96, "%s owns a cat", B);                           // restatement -> NOOP
    snprintf(ftext[2], 96, "%s no longer drives a toyota", A);            // end -> UPDATE slot 1
    snprintf(ftext[3], 96, "%s works as a nurse", B);                     // new key -> INSERT
    for (int i = 0; i < 3; i++) {
        int ids[32];
        int n = vocab_encode(env->vocab, slots[i], ids, 32);
        MemoryOp op = {OP_INSERT, -1, ids, n, DIA_CODE(1, i + 1)};
        memory_apply(&bank, &op, 1, &st);
    }
    Fact F[4];
    for (int i = 0; i < 4; i++) {
        memset(&F[i], 0, sizeof F[i]);
        F[i].len = vocab_encode(env->vocab, ftext[i], F[i].tokens, 64);
        F[i].turn = i;
        F[i].evidence = DIA_CODE(2, i + 1);
    }
    Shown shown;
    int prompt[512];
    int pn = env_manage_prompt(env, &bank, F, 4, &shown, prompt, 512);
    CHECK(pn > 0 && prompt[0] == TOK_MANAGE && prompt[pn - 1] == TOK_OUT && shown.n == 3,
          "manage prompt: %d tokens, %d shown", pn, shown.n);
    int out[128];
    int on = env_teacher_manage(env, E, &bank, F, 4, &shown, 0.0f, NULL, out, 128);
    MemoryOp ops[16];
    int invalid = 0;
    int no = env_parse_manage(env, out, on, F, 4, &shown, ops, 16, &invalid, &bad);
    char text[256];
    vocab_decode(env->vocab, out, on, text, sizeof text);
    printf("teacher manage: %s\n", text);
    CHECK(no == 4 && bad == 0 && invalid == 0, "teacher manage parse: %d ops, malformed %d", no,
          bad);
    if (no == 4) {
        CHECK(ops[0].kind == OP_UPDATE && ops[0].slot == 0 && ops[0].evidence == DIA_CODE(2, 1),
              "change -> UPDATE slot 0");
        CHECK(ops[1].kind == OP_NOOP, "restatement -> NOOP");
        CHECK(ops[2].kind == OP_UPDATE && ops[2].slot == 1, "end -> UPDATE slot 1");
        CHECK(ops[3].kind == OP_INSERT && ops[3].evidence == DIA_CODE(2, 4), "new key -> INSERT");
        char key[64];
        int ends = 0;
        char want[64];
        snprintf(want, sizeof want, "%s|car", A);
        CHECK(env_fact_key(env->vocab, ops[2].fact, ops[2].fact_len, key, sizeof key, &ends) &&
                  strcmp(key, want) == 0 && ends == 1,
              "the end op writes an END fact for %s (%s)", want, key);
    }
    // a SET fact with a new value is rewritten so both values stay answerable
    Fact S1;
    memset(&S1, 0, sizeof S1);
    char s1[64], s1want[96];
    snprintf(s1, sizeof s1, "%s lives in rome", A);
    snprintf(s1want, sizeof s1want, "%s now lives in rome , previously paris", A);
    S1.len = vocab_encode(env->vocab, s1, S1.tokens, 64);
    pn = env_manage_prompt(env, &bank, &S1, 1, &shown, prompt, 512);
    on = env_teacher_manage(env, E, &bank, &S1, 1, &shown, 0.0f, NULL, out, 128);
    no = env_parse_manage(env, out, on, &S1, 1, &shown, ops, 16, &invalid, &bad);
    if (no == 1) vocab_decode(env->vocab, ops[0].fact, ops[0].fact_len, text, sizeof text);
    CHECK(no == 1 && ops[0].kind == OP_UPDATE && ops[0].slot == 0 &&
              strcmp(text, s1want) == 0,
          "SET with a new value -> '%s'", no == 1 ? text : "?");
    // noise 1: every op swapped (UPDATE -> INSERT, NOOP -> INSERT, INSERT -> NOOP)
    pn = env_manage_prompt(env, &bank, F, 4, &shown, prompt, 512);
    on = env_teacher_manage(env, E, &bank, F, 4, &shown, 1.0f, &rng, out, 128);
    no = env_parse_manage(env, out, on, F, 4, &shown, ops, 16, &invalid, &bad);
    CHECK(no == 4 && ops[0].kind == OP_INSERT && ops[1].kind == OP_INSERT &&
              ops[2].kind == OP_INSERT && ops[3].kind == OP_NOOP,
          "noise 1 swaps every op");
    // small prompt room: shown slots are dropped, the prompt still ends in <out>
    pn = env_manage_prompt(env, &bank, F, 4, &shown, prompt, 40);
    CHECK(pn <= 40 && prompt[pn - 1] == TOK_OUT && shown.n < 3, "manage prompt in 40: %d, %d shown",
          pn, shown.n);
    // malformed manager outputs
    Shown sh = {.slot = {0, 1}, .n = 2};
    int m1[] = {TOK_UPDATE, TOK_SLOT0 + 5, TOK_TURN0, w, TOK_SEP, TOK_DELETE, TOK_SLOT0 + 1,
                TOK_SEP, TOK_EOS};
    no = env_parse_manage(env, m1, 9, F, 4, &sh, ops, 16, &invalid, &bad);
    CHECK(no == 1 && ops[0].kind == OP_DELETE && ops[0].slot == 1 && invalid == 1 && bad == 0,
          "bad slot id is invalid, not malformed (%d ops, %d invalid, %d malformed)", no, invalid,
          bad);
    int m2[] = {w, w, TOK_SEP, TOK_INSERT, TOK_TURN0 + 2, w, TOK_SEP, TOK_NOOP, TOK_SEP};
    no = env_parse_manage(env, m2, 9, F, 4, &sh, ops, 16, &invalid, &bad);
    CHECK(no == 2 && bad == 1 && ops[0].kind == OP_INSERT && ops[0].evidence == DIA_CODE(2, 3) &&
              ops[1].kind == OP_NOOP,
          "garbage op and missing <eos> are malformed, the rest parses");
    int m3[] = {TOK_INSERT, TOK_TURN0, TOK_SEP, TOK_EOS};
    no = env_parse_manage(env, m3, 4, F, 4, &sh, ops, 16, &invalid, &bad);
    CHECK(no == 0 && invalid == 1, "empty INSERT is invalid");
    memory_free(&bank);
}

// ---------------------------------------------------------------------------------------------
// Property tests: random role outputs never break the parsers; noisy teacher traces stay
// well-formed (the warm start imitates them)
static void test_random_outputs(const Env *env, const Dataset *ds) {
    const Episode *E = &ds->episodes[0];
    Rng rng;
    rng_seed(&rng, 11);
    Fact facts[32];
    MemoryOp ops[16];
    int gen[80], worst_bad = 0, n_trials = 3000;
    Fact F[3];
    for (int i = 0; i < 3; i++) {
        memset(&F[i], 0, sizeof F[i]);
        F[i].len = 2, F[i].tokens[0] = TOK_FIRST_WORD, F[i].tokens[1] = TOK_FIRST_WORD + 1;
        F[i].turn = i, F[i].evidence = DIA_CODE(1, i + 1);
    }
    Shown sh = {.slot = {3, 5, 7}, .n = 3};
    for (int t = 0; t < n_trials; t++) {
        int len = (int)rng_below(&rng, 80);
        for (int i = 0; i < len; i++)  // half special tokens, half words
            gen[i] = rng_below(&rng, 2) ? (int)rng_below(&rng, TOK_FIRST_WORD)
                                        : TOK_FIRST_WORD + (int)rng_below(&rng, 20);
        int bad = 0, invalid = 0;
        int nf = env_parse_extract(env, E, 1 + (int)rng_below(&rng, 3), (int)rng_below(&rng, 3),
                                   gen, len, facts, 32, &bad);
        int ok = nf >= 0 && nf <= env->cfg.max_facts;
        for (int f = 0; f < nf; f++)
            ok &= facts[f].len >= 1 && facts[f].len <= env->cfg.slot_len &&
                  facts[f].turn >= 0 && facts[f].turn < env->cfg.chunk_turns;
        int no = env_parse_manage(env, gen, len, F, 3, &sh, ops, 16, &invalid, &bad);
        ok &= no >= 0 && no <= 16;
        for (int o = 0; o < no; o++) {
            if (ops[o].kind == OP_UPDATE || ops[o].kind == OP_DELETE)
                ok &= ops[o].slot == 3 || ops[o].slot == 5 || ops[o].slot == 7;
            if (ops[o].kind == OP_UPDATE || ops[o].kind == OP_INSERT)
                ok &= ops[o].fact_len >= 1 && ops[o].fact >= gen && ops[o].fact + ops[o].fact_len <= gen + len;
        }
        if (!ok) worst_bad++;
    }
    CHECK(worst_bad == 0, "%d of %d random outputs parsed into bad facts or ops", worst_bad,
          n_trials);

    // the teacher with noise 0.3 through the model's path: always well-formed
    MemoryBank bank;
    if (memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) != 0) return;
    MemoryStats st = {0};
    WrittenSet w;
    written_init(&w, E);
    int prompt[512], out[128], malformed = 0, invalid_total = 0, outputs = 0;
    Shown shown;
    for (int s = 1; s <= E->n_sessions; s++)
        for (int c = 0; c < env_num_chunks(env, E, s); c++) {
            int bad = 0, invalid = 0;
            int gl = env_teacher_extract(env, E, s, c, 0.3f, &rng, out, 48);
            int nf = env_parse_extract(env, E, s, c, out, gl, facts, 32, &bad);
            malformed += bad;
            env_manage_prompt(env, &bank, facts, nf, &shown, prompt, 192);
            gl = env_teacher_manage(env, E, &bank, facts, nf, &shown, 0.3f, &rng, out, 64);
            int no = env_parse_manage(env, out, gl, facts, nf, &shown, ops, 16, &invalid, &bad);
            malformed += bad, invalid_total += invalid, outputs += 2;
            for (int o = 0; o < no; o++)
                if (memory_apply(&bank, &ops[o], s, &st) == 0 &&
                    (ops[o].kind == OP_INSERT || ops[o].kind == OP_UPDATE))
                    written_mark(&w, ops[o].evidence);
        }
    EvalResult r;
    memset(&r, 0, sizeof r);
    World world;
    world_synth_wrap(&world, env);
    eval_add_episode(&world, E, E->n_sessions, &bank, &w, &r);
    eval_finish(&r);
    printf("noisy teacher (0.3): %d outputs, %d malformed, %d invalid; f1 %.4f mfail %.4f\n",
           outputs, malformed, invalid_total, r.f1, r.mfail);
    CHECK(malformed == 0 && invalid_total == 0, "noisy teacher traces are malformed");
    CHECK(r.f1 < 0.95 && r.mfail > 0, "noise 0.3 should cost F1 and evidence (f1 %.3f mfail %.3f)",
          r.f1, r.mfail);
    written_free(&w);
    memory_free(&bank);
}

// ---------------------------------------------------------------------------------------------
// The four baselines on generated data
static void test_baselines(const Env *env, const Dataset *ds) {
    const char *names[4] = {"none", "store-turns", "insert-only", "oracle"};
    EvalResult r[4];
    World world;
    world_synth_wrap(&world, env);
    for (int b = 0; b < 4; b++) {
        CHECK(eval_baseline(&world, ds, (BaselinePolicy)b, 32, &r[b]) == 0, "%s failed", names[b]);
        eval_print(&r[b], names[b], stdout);
    }
    CHECK(r[3].questions > 100, "only %d questions", r[3].questions);
    // the summary line of DESIGN.md section 8 is the last line eval_print writes
    char path[300], line[512] = "", last[512] = "", want[128];
    snprintf(path, sizeof path, "%s/eval.txt", tmpdir);
    FILE *f = fopen(path, "w+");
    if (f) {
        eval_print(&r[3], "oracle", f);
        rewind(f);
        while (fgets(line, sizeof line, f)) memcpy(last, line, sizeof line);
        fclose(f);
        remove(path);
    }
    snprintf(want, sizeof want, "eval policy=oracle episodes=%d sessions=32 questions=%d f1=1.0000 "
             "bleu1=1.0000 em=1.0000 mfail=0.0000 mem_words=", ds->n, r[3].questions);
    CHECK(strncmp(last, want, strlen(want)) == 0, "summary line: %s", last);
    CHECK_CLOSE("oracle f1", r[3].f1, 1.0, 0, 1e-12);
    CHECK_CLOSE("oracle em", r[3].em, 1.0, 0, 1e-12);
    CHECK_CLOSE("oracle mfail", r[3].mfail, 0.0, 0, 0);
    CHECK(r[3].malformed == 0 && r[3].ops.invalid == 0 && r[3].ops.overflow == 0,
          "oracle: malformed %d invalid %d overflow %d", r[3].malformed, r[3].ops.invalid,
          r[3].ops.overflow);
    CHECK(r[3].ops.updates > 0 && r[3].ops.noops > 0, "oracle never updates or never noops");
    CHECK(r[2].f1 < r[3].f1 - 0.3, "insert-only f1 %.3f not clearly below oracle", r[2].f1);
    CHECK(r[0].f1 < r[2].f1 - 0.1, "none f1 %.3f not below insert-only %.3f", r[0].f1, r[2].f1);
    CHECK_CLOSE("none f1", r[0].f1, 0.0, 0, 0);
    CHECK_CLOSE("store-turns mfail", r[1].mfail, 0.0, 0, 0);
    CHECK(r[1].ops.overflow == 0, "store-turns overflowed the bank");
    CHECK(r[2].mem_words > r[3].mem_words, "insert-only should store more words than oracle");
    // stale values: insert-only loses on temporal (previous values) and changed keys
    CHECK(r[2].per_cat_n[2] > 0 && r[2].per_cat_f1[2] < 0.5, "insert-only temporal f1 %.3f",
          r[2].per_cat_f1[2]);
    // the gold annotation agrees with the grammar parser the oracle uses
    int agree = 0, total = 0;
    for (int e = 0; e < ds->n; e++)
        for (int s = 0; s < ds->episodes[e].n_sessions; s++)
            for (int g = 0; g < ds->episodes[e].n_gold[s]; g++) {
                const GoldFact *G = &ds->episodes[e].gold[s][g];
                int ids[64], ends = -1;
                char key[64];
                int n = vocab_encode(env->vocab, G->text, ids, 64);
                total++;
                agree += env_fact_key(env->vocab, ids, n, key, sizeof key, &ends) && G->key &&
                         strcmp(key, G->key) == 0 && ends == G->ends;
            }
    CHECK(agree == total, "grammar parser agrees with %d of %d gold annotations", agree, total);
    // the compression penalty: zero for the oracle, positive for a bank bigger than rho * seen
    MemoryBank bank;
    if (memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) == 0) {
        long seen = env_words_seen(env, &ds->episodes[0], 2);
        CHECK(seen > 20, "words seen %ld", seen);
        CHECK_CLOSE("penalty of an empty bank", env_compression_penalty(env, &bank, seen), 0, 0, 0);
        int ids[24] = {0};
        for (int i = 0; i < 24; i++) ids[i] = TOK_FIRST_WORD + i;
        MemoryStats st = {0};
        int k = 0;
        while (memory_words(&bank) < seen) {
            MemoryOp op = {OP_INSERT, -1, ids, 24, 0};
            memory_apply(&bank, &op, 1, &st);
            k++;
        }
        double words = (double)memory_words(&bank);
        double want = (words - (double)env->cfg.rho * seen) / seen;
        CHECK_CLOSE("compression penalty", env_compression_penalty(env, &bank, seen), want, 1e-12, 0);
        memory_free(&bank);
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Env env;
    env_config_default(&env.cfg);
    test_scores();
    test_load_errors();
    test_load_numbers();
    test_quirks(&env);

    const char *gen = getenv("MEMR2_GEN");
    char path[256], cmd[1024], err[512];
    snprintf(path, sizeof path, "%s/gen.json", tmpdir);
    snprintf(cmd, sizeof cmd, "%s --seed 3 --episodes 6 --sessions 32 -o %s",
             gen && *gen ? gen : "./gen_episodes", path);
    CHECK(system(cmd) == 0, "generator failed: %s", cmd);
    Dataset ds;
    if (dataset_load(path, &ds, err, sizeof err) == 0) {
        env.vocab = vocab_build(&ds, 0);
        test_tokenizer(&ds);
        test_roundtrips(&env, &ds);
        test_random_outputs(&env, &ds);
        test_baselines(&env, &ds);
        vocab_free((Vocab *)env.vocab);
        dataset_free(&ds);
    } else {
        CHECK(0, "generated data: %s", err);
    }
    remove(path);

    // questions about the state at the horizon (the generator's default): each active only
    // while its answer holds; the oracle answers all of them after any number of sessions
    snprintf(cmd, sizeof cmd, "%s --seed 4 --episodes 3 --sessions 24 -o %s",
             gen && *gen ? gen : "./gen_episodes", path);
    CHECK(system(cmd) == 0, "generator failed: %s", cmd);
    if (dataset_load(path, &ds, err, sizeof err) == 0) {
        env.vocab = vocab_build(&ds, 0);
        double worst = 1.0;
        int asked = 0, limited = 0;
        for (int e = 0; e < ds.n; e++)
            for (int q = 0; q < ds.episodes[e].n_qa; q++)
                limited += ds.episodes[e].qa[q].valid_until < 24;
        World world;
        world_synth_wrap(&world, &env);
        for (int h = 1; h <= 24; h++) {
            EvalResult r;
            eval_baseline(&world, &ds, POLICY_ORACLE, h, &r);
            if (r.questions > 0 && r.f1 < worst) worst = r.f1;
            asked += r.questions;
        }
        printf("state at the horizon: %d question-horizon pairs over 24 horizons, %d questions end early, "
               "worst oracle f1 %.4f\n", asked, limited, worst);
        CHECK(limited > 0 && asked > 0, "the generator wrote no time-limited questions");
        CHECK_CLOSE("oracle f1 at the worst horizon", worst, 1.0, 0, 1e-12);
        vocab_free((Vocab *)env.vocab);
        dataset_free(&ds);
    } else {
        CHECK(0, "generated data: %s", err);
    }
    remove(path);
    rmdir(tmpdir);
    return check_summary("test_env");
}
