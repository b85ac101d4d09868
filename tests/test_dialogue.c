// tests/test_dialogue.c: the real-dialogue world's pieces (dialogue.h) on a hand-written fixture
// conversation (tests/fixtures/dialogue/conv.json) and the tiny SmolLM2-style BPE fixture:
// chunks, prompt text against golden files, chat-template ids (no special-token injection),
// the JSON parsers on good, malformed and adversarial outputs, retrieval, answer extraction, the
// frozen answerer on a hand-made bank with a tiny random Llama, and bank sizing.
//
//   build/rel/tests/test_dialogue
//   MEMR2_UPDATE_GOLDEN=1 build/rel/tests/test_dialogue    # rewrite the golden files (review
//                                                          # the diff before committing it)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dialogue.h"
#include "llama.h"
#include "rng.h"
#include "tests/check.h"

#define FIX "tests/fixtures/"
#define GOLD FIX "dialogue/"

static Dataset DS;
static Bpe *TOK;
static Dialogue DLG;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) free(b), b = NULL;
    if (b) b[n] = '\0';
    fclose(f);
    return b;
}

// Compares text with the golden file (or writes it with MEMR2_UPDATE_GOLDEN=1).
static void golden(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, GOLD "%s", name);
    const char *up = getenv("MEMR2_UPDATE_GOLDEN");
    if (up && *up == '1') {
        FILE *f = fopen(path, "wb");
        CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
        printf("golden: wrote %s\n", path);
        return;
    }
    char *want = slurp(path);
    CHECK(want != NULL, "read golden file %s", path);
    if (!want) return;
    int same = strcmp(want, text) == 0;
    if (!same) {
        size_t i = 0;
        while (want[i] && want[i] == text[i]) i++;
        fprintf(stderr, "golden %s differs at byte %zu: want \"%.40s\" got \"%.40s\"\n", path, i,
                want + i, text + i);
    }
    CHECK(same, "prompt text equals %s", path);
    free(want);
}

static void encode(const char *s, BpeIds *ids) {
    char err[256];
    ids->n = 0;
    CHECK(bpe_encode_ordinary(TOK, s, strlen(s), ids, err, sizeof err) == 0, "encode: %s", err);
}

// Writes text into a bank slot (as the manager's INSERT would) with its session and evidence.
static void bank_put(MemoryBank *b, const char *text, int session, int dia) {
    BpeIds ids = {0};
    encode(text, &ids);
    int tok[256];
    int n = (int)ids.n < 256 ? (int)ids.n : 256;
    for (int i = 0; i < n; i++) tok[i] = ids.ids[i];
    MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = tok, .fact_len = n, .evidence = dia};
    CHECK(memory_apply(b, &op, session, NULL) == 0, "bank_put %s", text);
    bpe_ids_free(&ids);
}

static int count_id(const BpeIds *ids, int id) {
    int n = 0;
    for (size_t i = 0; i < ids->n; i++) n += ids->ids[i] == id;
    return n;
}

// ---- chunks and prompts ----------------------------------------------------------------------
static void test_chunks(void) {
    const Episode *ep = &DS.episodes[0];
    DialogueConfig c;
    dialogue_config_default(&c);
    Dialogue d6 = DLG;
    d6.cfg = c;  // 6 per session (the paper)
    CHECK(dialogue_num_chunks(&d6, ep, 1) == 6 && dialogue_num_chunks(&d6, ep, 2) == 5,
          "6 chunks of 7 turns, 5 of 5 turns: %d %d", dialogue_num_chunks(&d6, ep, 1),
          dialogue_num_chunks(&d6, ep, 2));
    int t0, t1, covered = 0, ok = 1, prev = 0;
    for (int k = 0; k < 6; k++) {
        dialogue_chunk_turns(&d6, ep, 1, k, &t0, &t1);
        ok &= t0 == prev && t1 > t0 && t1 - t0 <= 2;
        covered += t1 - t0, prev = t1;
    }
    CHECK(ok && covered == 7, "chunks tile the session (%d turns)", covered);
    d6.cfg.max_chunk_turns = 1;
    d6.cfg.chunks_per_session = 2;
    CHECK(dialogue_num_chunks(&d6, ep, 1) == 7, "max_chunk_turns 1 gives one chunk per turn");
    CHECK(dialogue_num_chunks(&DLG, ep, 0) == 0 && dialogue_num_chunks(&DLG, ep, 3) == 0,
          "no chunks outside the sessions");
    dialogue_chunk_turns(&DLG, ep, 1, 3, &t0, &t1);
    CHECK(t0 == 0 && t1 == 0, "chunk past the end is empty");
    CHECK(dialogue_turn_dia(ep, 1, 3) == DIA_CODE(1, 4), "dia of turn 3 is D1:4");
    const Turn *T = dialogue_find_turn(ep, DIA_CODE(2, 3));
    CHECK(T && strcmp(T->speaker, "Ben") == 0, "D2:3 is Ben's");
    CHECK(!dialogue_find_turn(ep, DIA_CODE(2, 9)) && !dialogue_find_turn(ep, 0),
          "no turn D2:9 or 0");
}

static void test_extract_prompt(void) {
    const Episode *ep = &DS.episodes[0];
    char err[256] = "", *text = NULL;
    // DLG has 3 chunks per session: session 1 chunk 1 is D1:3, D1:4 (the image turn)
    CHECK(dialogue_extract_text(&DLG, ep, 1, 1, &text, err, sizeof err) == 0, "render: %s", err);
    if (text) {
        golden("extract_s1c1.txt", text);
        CHECK(strstr(text, "[image: a photo of a small dog running on the sand]") != NULL,
              "the image caption is in the prompt");
        CHECK(strstr(text, "\"dia_id\":\"D1:3\"") && strstr(text, "\"dia_id\":\"D1:4\"") &&
                  !strstr(text, "\"D1:5\""),
              "the chunk's dia_ids and no other");
        CHECK(strstr(text, "25 May, 2023") != NULL, "the session date");
        // no special text in this chunk: the ids are bpe_chat's on the rendered text
        BpeIds a = {0}, b = {0};
        CHECK(dialogue_extract_prompt(&DLG, ep, 1, 1, &a, err, sizeof err) == 0, "ids: %s", err);
        CHECK(bpe_encode(TOK, text, strlen(text), &b, err, sizeof err) == 0, "encode: %s", err);
        CHECK(a.n == b.n && a.n > 0 && !memcmp(a.ids, b.ids, a.n * sizeof *a.ids),
              "prompt ids equal the template's text encoded (%zu vs %zu ids)", a.n, b.n);
        bpe_ids_free(&a), bpe_ids_free(&b);
        free(text);
    }
    // session 2 chunk 1 (D2:2, D2:3) as golden, chunk 2 holds a turn writing <|im_end|>
    text = NULL;
    CHECK(dialogue_extract_text(&DLG, ep, 2, 1, &text, err, sizeof err) == 0, "render: %s", err);
    if (text) golden("extract_s2c1.txt", text);
    free(text);
    BpeIds ids = {0};
    CHECK(dialogue_extract_prompt(&DLG, ep, 2, 2, &ids, err, sizeof err) == 0, "ids: %s", err);
    int im_end = bpe_special_id(TOK, "<|im_end|>"), im_start = bpe_special_id(TOK, "<|im_start|>");
    CHECK(im_end >= 0 && count_id(&ids, im_end) == 2 && count_id(&ids, im_start) == 3,
          "a turn's <|im_end|> is text: %d im_end, %d im_start ids (want 2, 3)",
          count_id(&ids, im_end), count_id(&ids, im_start));
    bpe_ids_free(&ids);
    CHECK(dialogue_extract_prompt(&DLG, ep, 2, 7, &ids, err, sizeof err) == -1 &&
              strstr(err, "no such"),
          "a chunk out of range is refused: %s", err);
    bpe_ids_free(&ids);
}

// ---- parsing the extractor -------------------------------------------------------------------
static int parse_x(const char *s, size_t n, Fact *f, int *inv, int *mal) {
    return dialogue_parse_extract_text(&DLG, &DS.episodes[0], 1, 1, s, n, f, 16, inv, mal);
}
#define PX(str, f, inv, mal) parse_x(str, sizeof(str) - 1, f, inv, mal)

static void test_parse_extract(void) {
    Fact f[16];
    int inv, mal, n;
    const char good[] =
        "Sure! ```json\n{\"facts\": [{\"speaker\": \"Ana\", \"dia_id\": \"D1:3\", \"fact\": "
        "\"Ana started painting classes in April 2023\"}, {\"speaker\": \"Ben\", \"dia_id\": "
        "\"D1:4\", \"fact\": \"Ben's dog Pixel runs on the beach\"}]}\n``` hope this helps";
    n = PX(good, f, &inv, &mal);
    CHECK(n == 2 && inv == 0 && mal == 0, "good output in junk: n %d inv %d mal %d", n, inv, mal);
    BpeIds ids = {0};
    encode("Ana started painting classes in April 2023", &ids);
    CHECK(n >= 1 && f[0].evidence == DIA_CODE(1, 3) && f[0].turn == 0 &&
              f[0].len == (int)ids.n && !memcmp(f[0].tokens, ids.ids, ids.n * sizeof(int)),
          "fact 0: D1:3, turn 0, the BPE ids of its text");
    CHECK(n >= 2 && f[1].evidence == DIA_CODE(1, 4) && f[1].turn == 1, "fact 1: D1:4, turn 1");
    bpe_ids_free(&ids);

    n = PX("{\"facts\": []}", f, &inv, &mal);
    CHECK(n == 0 && inv == 0 && mal == 0, "empty list: nothing, not malformed");
    // a truncated tail: the complete first fact is kept
    n = PX("{\"facts\": [{\"speaker\": \"Ana\", \"dia_id\": \"D1:3\", \"fact\": \"Ana paints\"}, "
           "{\"speaker\": \"Ben\", \"dia_id\": \"D1:4\", \"fa", f, &inv, &mal);
    CHECK(n == 1 && mal == 1 && f[0].evidence == DIA_CODE(1, 3),
          "truncated: first fact kept, malformed (n %d mal %d)", n, mal);
    n = PX("{\"facts\": [{\"speaker\": \"Ana\", \"dia_id\": \"D1", f, &inv, &mal);
    CHECK(n == 0 && mal == 1, "truncated inside the first fact: none, malformed");
    // wrong types, dia_ids outside the chunk, over-long and empty facts, bad items
    char longf[4096];
    snprintf(longf, sizeof longf, "{\"facts\": [{\"dia_id\": \"D1:3\", \"fact\": \"");
    for (int i = 0; i < 60; i++) strcat(longf, "painting classes ");
    strcat(longf, "\"}, {\"dia_id\": \"D1:4\", \"fact\": \"ok fact\"}]}");
    n = parse_x(longf, strlen(longf), f, &inv, &mal);
    CHECK(n == 1 && inv == 1 && mal == 0 && f[0].evidence == DIA_CODE(1, 4),
          "an over-long fact is invalid (n %d inv %d)", n, inv);
    n = PX("{\"facts\": [{\"dia_id\": 13, \"fact\": \"x\"}, {\"dia_id\": \"D1:5\", \"fact\": \"x\"}"
           ", {\"dia_id\": \"D1:3\", \"fact\": 7}, {\"dia_id\": \"D1:3\", \"fact\": \"   \"}, "
           "{\"dia_id\": \"D1:3\"}, \"a string\", [1, 2], null, {\"dia_id\": \"D1:3x\", \"fact\":"
           " \"x\"}, {\"dia_id\": \"D1:3\", \"speaker\": 5, \"fact\": \"x\"}, {\"dia_id\": "
           "\"D1:3\", \"fact\": \"kept\"}]}", f, &inv, &mal);
    CHECK(n == 1 && inv == 10 && mal == 0, "ten bad items skipped, one kept (n %d inv %d)", n,
          inv);
    n = PX("{\"facts\": {\"dia_id\": \"D1:3\"}}", f, &inv, &mal);
    CHECK(n == 0 && mal == 1, "facts not a list: malformed");
    n = PX("{\"facts\": [{\"dia_id\": \"D1:3\", \"fact\": \"first\", \"fact\": \"second\"}], "
           "\"facts\": 3}", f, &inv, &mal);
    CHECK(n == 1 && mal == 0, "duplicate keys: the first wins (n %d)", n);
    n = PX("no json at all", f, &inv, &mal);
    CHECK(n == 0 && mal == 1, "no JSON: malformed");
    n = PX("{\"other\": 1} {\"facts\": [{\"dia_id\": \"D1:4\", \"fact\": \"x y\"}]}", f, &inv, &mal);
    CHECK(n == 1 && mal == 0, "the first object with \"facts\" is taken");
    // NUL bytes: the text is read by length, the NUL before the object hides nothing
    const char nul[] = "\0junk\0{\"facts\": [{\"dia_id\": \"D1:3\", \"fact\": \"a\\u0000b\"}]}";
    n = PX(nul, f, &inv, &mal);
    CHECK(n == 1 && mal == 0, "NUL bytes around and inside: n %d mal %d", n, mal);
    // deeply nested arrays, 100 KB of junk, many candidate braces
    size_t big = 100000;
    char *s = malloc(big + 200);
    if (s) {
        strcpy(s, "{\"facts\": ");
        size_t k = strlen(s);
        for (; k < big; k++) s[k] = '[';
        s[k] = '\0';
        n = parse_x(s, k, f, &inv, &mal);
        CHECK(n == 0 && mal == 1, "100 KB of '[': nothing, malformed (n %d)", n);
        for (size_t i = 0; i < big; i++) s[i] = "{x}\"[,:\\ "[i * 7 % 9];
        strcpy(s + big, "{\"facts\": [{\"dia_id\": \"D1:3\", \"fact\": \"late\"}]}");
        n = parse_x(s, strlen(s), f, &inv, &mal);
        CHECK(n == 0 && mal == 1, "100 KB of brace junk first: gives up, malformed (n %d)", n);
        for (size_t i = 0; i < big; i++) s[i] = 'a' + (char)(i % 26);
        strcpy(s + big, "{\"facts\": [{\"dia_id\": \"D1:3\", \"fact\": \"late\"}]}");
        n = parse_x(s, strlen(s), f, &inv, &mal);
        CHECK(n == 1 && mal == 0, "100 KB of letters, then the object: found (n %d)", n);
        free(s);
    }
    // the cap on facts per chunk
    char many[8192] = "{\"facts\": [";
    for (int i = 0; i < 20; i++)
        strcat(many, i ? ", {\"dia_id\": \"D1:3\", \"fact\": \"f\"}" : "{\"dia_id\": \"D1:3\", "
                                                                      "\"fact\": \"f\"}");
    strcat(many, "]}");
    n = parse_x(many, strlen(many), f, &inv, &mal);
    CHECK(n == DLG.cfg.max_facts && inv == 20 - DLG.cfg.max_facts, "max_facts kept (n %d inv %d)",
          n, inv);
    // from ids (the world's path): the stop token is dropped
    encode("{\"facts\": [{\"dia_id\": \"D1:4\", \"fact\": \"Pixel\"}]}", &ids);
    int gen[256], g = 0;
    for (size_t i = 0; i < ids.n && g < 255; i++) gen[g++] = ids.ids[i];
    gen[g++] = DLG.stop[0];
    gen[g++] = -5;  // out of range ids are dropped, not decoded
    n = dialogue_parse_extract(&DLG, &DS.episodes[0], 1, 1, gen, g, f, 16, &inv, &mal);
    CHECK(n == 1 && f[0].evidence == DIA_CODE(1, 4), "parse from ids (n %d)", n);
    bpe_ids_free(&ids);
}

// ---- the manager -----------------------------------------------------------------------------
static Fact make_fact(const char *text, int dia, int turn) {
    BpeIds ids = {0};
    encode(text, &ids);
    Fact f = {.evidence = dia, .turn = turn};
    for (size_t i = 0; i < ids.n && i < DIALOGUE_FACT_MAX; i++) f.tokens[f.len++] = ids.ids[i];
    bpe_ids_free(&ids);
    return f;
}

static void test_retrieve_and_manage_prompt(void) {
    const Episode *ep = &DS.episodes[0];
    MemoryBank b;
    CHECK(memory_init(&b, 16, 48) == 0, "bank");
    bank_put(&b, "Ben adopted a dog named Pixel", 1, DIA_CODE(1, 2));        // slot 0, Ben
    bank_put(&b, "Ana started painting classes in April", 1, DIA_CODE(1, 3));  // slot 1, Ana
    bank_put(&b, "Ana's sister Lia lives in Porto", 1, DIA_CODE(1, 5));      // slot 2, Ana
    bank_put(&b, "Ben takes Pixel to the beach", 1, DIA_CODE(1, 4));         // slot 3, Ben
    bank_put(&b, "Ben likes the lake", 1, DIA_CODE(1, 6));                  // slot 4, Ben
    Fact facts[2] = {make_fact("Ben moved to Leeds with his dog Pixel", DIA_CODE(2, 1), 0),
                     make_fact("Ana loves painting", DIA_CODE(2, 2), 1)};
    Shown sh;
    int n = dialogue_retrieve(&DLG, ep, &b, facts, 2, &sh);
    int has0 = 0, has1 = 0, has3 = 0;
    for (int i = 0; i < sh.n; i++) {
        has0 |= sh.slot[i] == 0, has1 |= sh.slot[i] == 1;
        has3 |= sh.slot[i] == 3;
    }
    CHECK(n == sh.n && has0 && has3 && has1, "Pixel's memories for Ben's fact, painting for Ana's"
          " (%d shown)", n);
    CHECK(sh.n >= 1 && (sh.slot[0] == 0 || sh.slot[0] == 3), "Ben's fact retrieves first");
    int dup = 0;
    for (int i = 0; i < sh.n; i++)
        for (int j = 0; j < i; j++) dup |= sh.slot[i] == sh.slot[j];
    CHECK(!dup, "no slot shown twice");
    Shown sh2, sh1;
    dialogue_retrieve(&DLG, ep, &b, facts, 1, &sh1);
    Fact same[2] = {facts[0], facts[0]};
    dialogue_retrieve(&DLG, ep, &b, same, 2, &sh2);
    CHECK(sh2.n == sh1.n && !memcmp(sh2.slot, sh1.slot, sizeof(int) * (size_t)sh1.n),
          "the same fact twice: deduplicated (%d, %d)", sh2.n, sh1.n);
    // against the definition: per fact the top k positive BM25 scores among the slots of its
    // speaker, ties by slot, first retrieval first
    for (int k = 1; k <= 5; k += 2) {
        Dialogue dk = DLG;
        dk.cfg.retrieve_k = k;
        dialogue_retrieve(&dk, ep, &b, facts, 2, &sh2);
        Shown want = {.n = 0};
        for (int f = 0; f < 2; f++) {
            double sc[16];
            memory_bm25_scores(&b, facts[f].tokens, facts[f].len, DLG.stop_mask, DLG.n_vocab, sc);
            const char *who = f == 0 ? "Ben" : "Ana";
            for (int r = 0; r < k; r++) {
                int best = -1;
                for (int i = 0; i < b.cap; i++) {
                    const Turn *T = dialogue_find_turn(ep, b.evidence[i]);
                    if (sc[i] > 0 && T && !strcmp(T->speaker, who) && (best < 0 || sc[i] > sc[best]))
                        best = i;
                }
                if (best < 0) break;
                sc[best] = 0;
                want.slot[want.n++] = best;
            }
        }
        CHECK(sh2.n == want.n && !memcmp(sh2.slot, want.slot, sizeof(int) * (size_t)want.n),
              "k = %d: the definition's slots (%d vs %d)", k, sh2.n, want.n);
    }
    Dialogue d1 = DLG;
    d1.cfg.max_shown = 1;
    dialogue_retrieve(&d1, ep, &b, facts, 2, &sh2);
    CHECK(sh2.n == 1, "max_shown 1 (%d)", sh2.n);
    // Ana's fact never shows Ben's memories (speaker filter)
    dialogue_retrieve(&DLG, ep, &b, facts + 1, 1, &sh2);
    int ben = 0;
    for (int i = 0; i < sh2.n; i++) ben |= sh2.slot[i] == 0 || sh2.slot[i] == 3 || sh2.slot[i] == 4;
    CHECK(sh2.n >= 1 && !ben, "only Ana's memories for Ana's fact (%d)", sh2.n);

    char err[256] = "", *text = NULL;
    CHECK(dialogue_manage_text(&DLG, ep, &b, facts, 2, &sh, &text, err, sizeof err) == 0,
          "manage render: %s", err);
    if (text) {
        golden("manage.txt", text);
        CHECK(strstr(text, "\"id\":0,") && strstr(text, "\"session_time\":\"1:14 pm on 25 May, "
                                                        "2023\""),
              "ids and dates of the memories");
        free(text);
    }
    BpeIds ids = {0};
    CHECK(dialogue_manage_prompt(&DLG, ep, &b, facts, 2, &sh2, &ids, err, sizeof err) == 0 &&
              sh2.n == sh.n && ids.n > 100,
          "manage ids (%zu)", ids.n);
    bpe_ids_free(&ids);
    memory_free(&b);
}

static int parse_m(const char *s, const Fact *facts, int nf, const Shown *sh, DialogueOps *o,
                   int *inv, int *mal) {
    return dialogue_parse_manage_text(&DLG, s, strlen(s), facts, nf, sh, o, inv, mal);
}

static void test_parse_manage(void) {
    Fact facts[2] = {make_fact("Ben moved to Leeds", DIA_CODE(2, 1), 0),
                     make_fact("Pixel loves the park", DIA_CODE(2, 3), 2)};
    Shown sh = {.slot = {7, 3, 5}, .n = 3};
    DialogueOps o;
    int inv, mal, n;
    n = parse_m("```json\n{\"operations\": [{\"op\": \"INSERT\", \"content\": \"Ben moved to "
                "Leeds\", \"dia_id\": \"D2:1\"}, {\"op\": \"UPDATE\", \"id\": 1, \"content\": "
                "\"Pixel loves the park near Ben's flat\"}, {\"op\": \"DELETE\", \"id\": 2}]}\n```",
                facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == 3 && inv == 0 && mal == 0, "three ops (n %d inv %d mal %d)", n, inv, mal);
    CHECK(o.op[0].kind == OP_INSERT && o.op[0].slot == -1 && o.op[0].evidence == DIA_CODE(2, 1) &&
              o.op[0].fact == o.tokens[0] && o.op[0].fact_len > 0,
          "INSERT with its dia_id");
    CHECK(o.op[1].kind == OP_UPDATE && o.op[1].slot == 3 && o.op[1].evidence == DIA_CODE(2, 3),
          "UPDATE id 1 -> slot 3, evidence by overlap with fact 1 (%d)", o.op[1].evidence);
    CHECK(o.op[2].kind == OP_DELETE && o.op[2].slot == 5, "DELETE id 2 -> slot 5");
    n = parse_m("{\"operations\": []}", facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == 1 && o.op[0].kind == OP_NOOP && inv == 0 && mal == 0, "empty list is one NOOP");
    // the release's spellings are understood too
    n = parse_m("{\"operations\": [{\"operation\": \"DELETE\", \"memory_id\": 0}]}", facts, 2, &sh,
                &o, &inv, &mal);
    CHECK(n == 1 && o.op[0].kind == OP_DELETE && o.op[0].slot == 7, "operation / memory_id keys");
    // bad ids and items: all invalid, never fatal
    n = parse_m("{\"operations\": [{\"op\": \"DELETE\", \"id\": 1e300}, {\"op\": \"DELETE\", "
                "\"id\": -1}, {\"op\": \"DELETE\", \"id\": \"1\"}, {\"op\": \"DELETE\", \"id\": 3},"
                " {\"op\": \"DELETE\", \"id\": 1.5}, {\"op\": \"DELETE\"}, {\"op\": \"UPDATE\", "
                "\"id\": 0}, {\"op\": \"UPDATE\", \"id\": 0, \"content\": 5}, {\"op\": \"INSERT\"},"
                " {\"op\": \"MERGE\", \"content\": \"x\"}, {\"op\": 3}, [1], \"INSERT\", null, "
                "{\"op\": \"INSERT\", \"content\": \"\"}, {\"op\": \"DELETE\", \"id\": 2147483648},"
                " {\"op\": \"DELETE\", \"id\": -1e300}, {\"op\": \"DELETE\", \"id\": 2}]}",
                facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == 1 && inv == 17 && mal == 0 && o.op[0].slot == 5,
          "17 bad ops skipped, one kept (n %d inv %d)", n, inv);
    n = parse_m("{\"operations\": [{\"op\": \"INSERT\", \"content\": \"Ben has a flat\"}, {\"op\": "
                "\"DEL", facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == 1 && mal == 1 && o.op[0].kind == OP_INSERT && o.op[0].evidence == DIA_CODE(2, 1),
          "truncated: the complete op kept, evidence by overlap (n %d)", n);
    n = parse_m("{\"operations\": \"none\"}", facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == 0 && mal == 1, "operations not a list: malformed, no ops");
    n = parse_m("{\"operations\": [{\"op\": \"INSERT\", \"content\": \"no facts\"}]}", NULL, 0, &sh,
                &o, &inv, &mal);
    CHECK(n == 1 && o.op[0].evidence == 0, "without facts the evidence is unknown");
    char big[8192] = "{\"operations\": [";
    for (int i = 0; i < 40; i++) strcat(big, i ? ", {\"op\": \"DELETE\", \"id\": 0}" :
                                                "{\"op\": \"DELETE\", \"id\": 0}");
    strcat(big, "]}");
    n = parse_m(big, facts, 2, &sh, &o, &inv, &mal);
    CHECK(n == DIALOGUE_MAX_OPS && inv == 40 - DIALOGUE_MAX_OPS, "ops capped at %d (n %d inv %d)",
          DIALOGUE_MAX_OPS, n, inv);
    // applied to a bank: the parsed ops are what memory_apply expects
    MemoryBank b;
    CHECK(memory_init(&b, 8, 48) == 0, "bank");
    bank_put(&b, "Ben lives in York", 1, DIA_CODE(1, 2));
    Shown s1 = {.slot = {0}, .n = 1};
    n = parse_m("{\"operations\": [{\"op\": \"UPDATE\", \"id\": 0, \"content\": \"Ben moved to "
                "Leeds\", \"dia_id\": \"D2:1\"}, {\"op\": \"INSERT\", \"content\": \"Pixel loves "
                "the park\", \"dia_id\": \"D2:3\"}]}", facts, 2, &s1, &o, &inv, &mal);
    MemoryStats st = {0};
    for (int i = 0; i < n; i++) memory_apply(&b, &o.op[i], 2, &st);
    CHECK(st.updates == 1 && st.inserts == 1 && st.invalid == 0 && b.evidence[0] == DIA_CODE(2, 1) &&
              b.evidence[1] == DIA_CODE(2, 3) && b.session[1] == 2,
          "UPDATE and INSERT applied with their evidence");
    memory_free(&b);
}

static void test_find_json(void) {
    int rep;
    cJSON *j = dialogue_find_json("x {\"a\": \"}{\\\"\", \"facts\": [1]} y", 33, "facts", &rep);
    CHECK(j && !rep && cJSON_IsArray(cJSON_GetObjectItem(j, "facts")),
          "braces and escapes inside strings");
    cJSON_Delete(j);
    j = dialogue_find_json("{\"facts\": [1, 2], \"more\": {\"x\": [", 33, "facts", &rep);
    CHECK(j && rep, "truncated after a complete list: repaired");
    cJSON_Delete(j);
    j = dialogue_find_json("{\"facts\": ]", 11, "facts", &rep);
    CHECK(!j, "mismatched brackets: none");
    CHECK(!dialogue_find_json(NULL, 0, "facts", &rep), "NULL text");
}

// ---- answers ---------------------------------------------------------------------------------
static void test_extract_answer(void) {
    char a[64];
    dialogue_extract_answer("Let me think.\n<answer> Pixel </answer> done", a, sizeof a);
    CHECK(strcmp(a, "Pixel") == 0, "tagged: '%s'", a);
    dialogue_extract_answer("<ANSWER>Leeds", a, sizeof a);
    CHECK(strcmp(a, "Leeds") == 0, "unclosed tag: '%s'", a);
    dialogue_extract_answer("\n  \n  in 2022\nbecause", a, sizeof a);
    CHECK(strcmp(a, "in 2022") == 0, "first non-empty line: '%s'", a);
    dialogue_extract_answer("", a, sizeof a);
    CHECK(a[0] == '\0', "empty");
    size_t n = dialogue_extract_answer("<answer>a very long answer indeed</answer>", a, 8);
    CHECK(n == 7 && strcmp(a, "a very ") == 0, "cut to the buffer: '%s'", a);
}

static void hand_bank(MemoryBank *b) {
    memory_init(b, 32, 48);
    bank_put(b, "Ben adopted a dog named Pixel", 1, DIA_CODE(1, 2));
    bank_put(b, "Ana started painting classes in April 2023", 1, DIA_CODE(1, 3));
    bank_put(b, "Ben moved to Leeds", 2, DIA_CODE(2, 1));
    bank_put(b, "Ana's sister Lia visits from Porto", 1, 0);  // unknown speaker
}

static void test_answer_prompt(void) {
    const Episode *ep = &DS.episodes[0];
    MemoryBank b;
    hand_bank(&b);
    char err[256] = "", *text = NULL;
    CHECK(dialogue_answer_text(&DLG, ep, &b, &ep->qa[1], 0, &text, err, sizeof err) == 0,
          "answer render: %s", err);
    if (text) {
        golden("answer.txt", text);
        const char *a = strstr(text, "Memories of Ana:"), *bb = strstr(text, "Memories of Ben:");
        const char *leeds = strstr(text, "Ben moved to Leeds"), *lia = strstr(text, "Lia");
        CHECK(a && bb && a < bb && leeds > bb && lia && lia < bb,
              "Ben's memories under Ben, the unknown one under Ana once");
        CHECK(strstr(text, "Session 2 (7:30 pm on 2 June, 2023):") != NULL, "grouped by session");
        free(text);
    }
    // a budget in tokens drops memories (halving) until the prompt fits
    BpeIds full = {0}, small = {0};
    CHECK(dialogue_answer_prompt(&DLG, ep, &b, &ep->qa[1], 0, &full, err, sizeof err) == 0, "ids");
    int lim = (int)full.n - 5;
    CHECK(dialogue_answer_prompt(&DLG, ep, &b, &ep->qa[1], lim, &small, err, sizeof err) == 0 &&
              (int)small.n <= lim && small.n < full.n,
          "fits %d tokens: %zu", lim, small.n);
    bpe_ids_free(&small);
    CHECK(dialogue_answer_prompt(&DLG, ep, &b, &ep->qa[1], 10, &small, err, sizeof err) == -1 &&
              strstr(err, "no memories"),
          "too small a budget is an error: %s", err);
    bpe_ids_free(&full), bpe_ids_free(&small);
    memory_free(&b);
}

static void test_answerer(void) {
    const Episode *ep = &DS.episodes[0];
    ModelConfig cfg = {.V = bpe_vocab_size(TOK), .maxT = 1536, .L = 2, .NH = 2, .C = 32,
                       .arch = ARCH_LLAMA, .n_kv_heads = 1, .ffn = 48, .rope_dim = 16,
                       .rope_base = 10000.0f, .norm_eps = 1e-5f, .tied = 1};
    const ModelBackend *be = cpu_backend_for(&cfg);
    Model *m = be->create(&cfg, 8, 5);
    CHECK(m != NULL, "tiny llama");
    if (!m) return;
    {  // a larger spread than llama_params_init, so greedy answers are not one repeated token
        size_t np = be->num_params(m);
        float *p = malloc(sizeof(float) * np);
        Rng r;
        rng_seed(&r, 77);
        be->get_params(m, p);
        for (size_t i = 0; p && i < np; i++) p[i] += 0.3f * rng_normal(&r);
        if (p) be->set_params(m, p);
        free(p);
    }
    MemoryBank b;
    hand_bank(&b);
    char err[256] = "";
    QAScore s1[8], s2[8];
    char *p1[8], *p2[8];
    DialogueAnswerStats a1, a2;
    int rc = dialogue_answer_episode(&DLG, be, m, ep, &b, 2, s1, p1, &a1, err, sizeof err);
    CHECK(rc == 0, "answer: %s", err);
    CHECK(ep->n_qa == 5 && a1.questions == 5, "5 questions with answers (%d of %d)", a1.questions,
          ep->n_qa);
    int fin = 1;
    for (int q = 0; q < ep->n_qa; q++)
        fin &= isfinite(s1[q].f1) && s1[q].f1 >= 0 && s1[q].f1 <= 1 && s1[q].em >= 0 &&
               s1[q].bleu1 >= 0 && p1[q] != NULL;
    CHECK(fin && isfinite(a1.f1) && a1.prompt_tokens_max > 0 &&
              a1.prompt_tokens_max <= cfg.maxT - DLG.cfg.answer_max_new,
          "finite scores, prompts within the context (%d)", a1.prompt_tokens_max);
    // evidence {D1:2, D2:1, D2:3, D1:3, D1:4, D1:5}; the bank carries D1:2, D1:3, D2:1
    CHECK(a1.mfail_total == 6 && a1.mfail_missing == 3, "M-Fail %ld / %ld (want 3 / 6)",
          a1.mfail_missing, a1.mfail_total);
    Dialogue one = DLG;
    one.cfg.answer_batch = 1;
    rc = dialogue_answer_episode(&one, be, m, ep, &b, 2, s2, p2, &a2, err, sizeof err);
    int same = rc == 0 && a2.questions == a1.questions;
    for (int q = 0; same && q < ep->n_qa; q++) same = p2[q] && strcmp(p1[q], p2[q]) == 0;
    CHECK(same && a2.f1 == a1.f1 && a2.gen_hash == a1.gen_hash && a1.gen_tokens > 5 * 3,
          "batched == one by one (%ld tokens generated)", a1.gen_tokens);
    for (int q = 0; q < ep->n_qa; q++) free(p2[q]);
    rc = dialogue_answer_episode(&DLG, be, m, ep, &b, 2, s2, p2, &a2, err, sizeof err);
    same = rc == 0;
    for (int q = 0; same && q < ep->n_qa; q++) same = p2[q] && strcmp(p1[q], p2[q]) == 0;
    CHECK(same && a2.gen_hash == a1.gen_hash, "deterministic");
    int nonempty = 0;
    for (int q = 0; q < ep->n_qa; q++) nonempty += p1[q] && p1[q][0];
    CHECK(nonempty >= 1, "some answers are not empty (%d)", nonempty);
    printf("test_dialogue: tiny random llama answered %d questions, e.g. '%.30s' (F1 sum %.3f)\n",
           a1.questions, p1[0] ? p1[0] : "", a1.f1);
    for (int q = 0; q < ep->n_qa; q++) free(p1[q]), free(p2[q]);
    // after session 1 only the questions with session-1 evidence are asked
    rc = dialogue_answer_episode(&DLG, be, m, ep, &b, 1, NULL, NULL, &a2, err, sizeof err);
    CHECK(rc == 0 && a2.questions == 3, "3 questions after session 1 (%d)", a2.questions);
    memory_free(&b);
    be->destroy(m);
}

// ---- bank sizing -----------------------------------------------------------------------------
static void test_bank_size(void) {
    char err[256] = "";
    DialogueBankSize bs;
    CHECK(dialogue_bank_size(&DS, TOK, 20, &bs, err, sizeof err) == 0, "size: %s", err);
    CHECK(bs.max_turns == 12 && bs.cap == 64 && bs.tokens_per_word > 1.0 &&
              bs.slot_len % 8 == 0 && bs.slot_len >= 16 && bs.slot_len <= DIALOGUE_FACT_MAX,
          "fixture: %d turns -> cap %d, %.2f tokens/word -> slot_len %d", bs.max_turns, bs.cap,
          bs.tokens_per_word, bs.slot_len);
    long want = (long)ceil(20 * bs.tokens_per_word * 1.25);
    want = (want + 7) / 8 * 8;
    if (want > DIALOGUE_FACT_MAX) want = DIALOGUE_FACT_MAX;
    CHECK(bs.slot_len == want, "slot_len %d = 20 words * tokens/word * 1.25 rounded (%ld)",
          bs.slot_len, want);
    // a conversation of 700 turns (real LoCoMo has up to ~700): 704 slots
    enum { N = 700 };
    static Turn turns[N];
    for (int t = 0; t < N; t++) turns[t] = (Turn){.speaker = "A", .text = "hello world", .dia = 0};
    Session s = {.turns = turns, .n_turns = N};
    Episode e = {.sessions = &s, .n_sessions = 1};
    Dataset d = {.episodes = &e, .n = 1};
    CHECK(dialogue_bank_size(&d, TOK, 20, &bs, err, sizeof err) == 0 && bs.cap == 704 &&
              bs.max_turns == 700,
          "700 turns -> cap %d", bs.cap);
    Dataset empty = {0};
    CHECK(dialogue_bank_size(&empty, TOK, 20, &bs, err, sizeof err) == -1, "no episodes");
}

static void test_init(void) {
    Dialogue d;
    DialogueConfig c;
    char err[256];
    dialogue_config_default(&c);
    CHECK(c.chunks_per_session == 6 && c.retrieve_k == 5 && c.max_shown == 25 && c.answer_k == 30,
          "the paper's defaults");
    c.max_shown = 33;
    CHECK(dialogue_init(&d, TOK, &c, err, sizeof err) == -1 && strstr(err, "max_shown"),
          "max_shown > 32 refused: %s", err);
    dialogue_config_default(&c);
    c.fact_max_tokens = 65;
    CHECK(dialogue_init(&d, TOK, &c, err, sizeof err) == -1, "fact_max_tokens > 64 refused");
    int comma = -1, the = -1, pixel = -1;
    BpeIds ids = {0};
    encode(",", &ids);
    if (ids.n == 1) comma = ids.ids[0];
    encode(" the", &ids);
    if (ids.n == 1) the = ids.ids[0];
    encode(" Caroline", &ids);
    if (ids.n == 1) pixel = ids.ids[0];
    bpe_ids_free(&ids);
    CHECK(comma >= 0 && DLG.stop_mask[comma] && the >= 0 && DLG.stop_mask[the] && pixel >= 0 &&
              !DLG.stop_mask[pixel],
          "stop mask: ',' and ' the' ignored, ' Caroline' kept");
    CHECK(DLG.n_stop >= 1 && DLG.stop[0] == bpe_special_id(TOK, "<|im_end|>"), "stops");
}

int main(void) {
    char err[512];
    if (dataset_load(GOLD "conv.json", &DS, err, sizeof err)) {
        fprintf(stderr, "test_dialogue: %s\n", err);
        return 1;
    }
    TOK = bpe_load(FIX "bpe_smollm.tok", err, sizeof err);
    if (!TOK) {
        fprintf(stderr, "test_dialogue: %s\n", err);
        return 1;
    }
    DialogueConfig c;
    dialogue_config_default(&c);
    c.chunks_per_session = 3;  // chunks of 2-3 turns: the golden prompts show several turns
    if (dialogue_init(&DLG, TOK, &c, err, sizeof err)) {
        fprintf(stderr, "test_dialogue: %s\n", err);
        return 1;
    }
    CHECK(DS.n == 1 && DS.episodes[0].n_sessions == 2, "fixture loaded");
    test_init();
    test_chunks();
    test_extract_prompt();
    test_find_json();
    test_parse_extract();
    test_retrieve_and_manage_prompt();
    test_parse_manage();
    test_extract_answer();
    test_answer_prompt();
    test_answerer();
    test_bank_size();
    dialogue_free(&DLG);
    bpe_free(TOK);
    dataset_free(&DS);
    return check_summary("test_dialogue");
}
