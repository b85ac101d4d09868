// tests/test_mistakes.c: the teacher's systematic flaws (world.h, TeacherFlaws) and the
// per-session mistake counts that measure them (mistakes.h).
//
//   - the oracle (no flaws) makes no mistake of any kind on generated episodes
//   - each flaw alone makes exactly its own kind of mistake, on exactly its attributes: with a
//     flaw on every attribute, every third-party fact is missed, every change leaves a
//     duplicate, every end leaves the old value; first-person facts are never missed
//   - the default flaws cost F1 (below the oracle) and still beat insert-only at 32 sessions
//   - restatements: none written anew by the oracle, every one when each SET is inserted again
//   - the counter itself: a hand-made extractor output with a person swapped is one
//     "wrong speaker", a made-up fact is one "other", a gold fact is not a mistake
//   - `train_cpu --eval POLICY --mistakes` on the teacher, a tiny checkpoint and a baseline it
//     cannot report on
// Binaries: $MEMR2_GEN (default ./gen_episodes), $MEMR2_TRAIN (default ./train_cpu).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_ds.h>

#include "check.h"
#include "data/grammar.h"
#include "eval.h"
#include "mistakes.h"
#include "rollout.h"
#include "world_synth.h"

// The teacher with `fl` over every episode; mistakes summed over all sessions.
static MistakeCounts teacher_mistakes(const Env *env, const Dataset *ds, TeacherFlaws fl) {
    MistakeCounts all = {0};
    TurnBuffer tb = {0};
    World w;
    world_synth_wrap(&w, env);
    MemoryBank bank;
    if (memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) != 0) return all;
    for (int e = 0; e < ds->n; e++) {
        Lane l;
        Rng rng;
        rng_seed(&rng, 1);
        const Episode *ep = &ds->episodes[e];
        if (lane_init(&l, &w, ep, 1, ep->n_sessions, 1) != 0) break;
        turns_clear(&tb);
        Actor a = {.kind = ACTOR_TEACHER, .teacher_flaws = fl, .max_seq = 256,
                   .max_new_extract = 48, .max_new_manage = 64, .record = &tb};
        CHECK(rollout_run(&w, &l, 1, &a, &rng, NULL) == 0, "teacher rollout");
        CHECK(l.malformed == 0 && l.stats.invalid == 0, "flawed teacher: %d malformed, %d invalid",
              l.malformed, l.stats.invalid);
        for (int s = 1; s <= ep->n_sessions; s++) {
            MistakeCounts m = {0};
            memory_restore(&bank, lane_snapshot(&l, s));
            CHECK(mistakes_add_session(env, ep, s, &tb, 0, &bank, &m) == 0, "count");
            mistakes_sum(&all, &m);
        }
        lane_free(&l);
    }
    memory_free(&bank);
    turns_free(&tb);
    return all;
}

static void test_flaws(const Env *env, const Dataset *ds) {
    const unsigned ALL = (1u << GR_N_ATTRS) - 1;
    MistakeCounts o = teacher_mistakes(env, ds, (TeacherFlaws){0});
    mistakes_print(&o, "oracle", 1, 32, stdout);
    CHECK(o.facts > 200 && o.changes > 50 && o.ends > 20, "too little data: %ld facts, %ld "
          "changes, %ld ends", o.facts, o.changes, o.ends);
    CHECK(o.missed == 0 && o.wrong_speaker == 0 && o.wrong_other == 0 && o.dup == 0 &&
          o.stale == 0 && o.missing_end == 0 && o.extracted == o.facts,
          "the oracle makes mistakes");

    MistakeCounts t = teacher_mistakes(env, ds, (TeacherFlaws){.skip_third = ALL});
    mistakes_print(&t, "skip-third", 1, 32, stdout);
    CHECK(t.facts_third > 0 && t.missed_third == t.facts_third && t.missed_first == 0,
          "skip_third: missed %ld of %ld third-party facts, %ld first-person", t.missed_third,
          t.facts_third, t.missed_first);
    CHECK(t.dup == 0 && t.missing_end == 0 && t.wrong_speaker == 0, "skip_third leaks");

    MistakeCounts d = teacher_mistakes(env, ds, (TeacherFlaws){.dup_change = ALL});
    mistakes_print(&d, "dup-change", 1, 32, stdout);
    CHECK(d.missed == 0 && d.changes == o.changes && d.dup == d.changes && d.stale == 0,
          "dup_change: %ld duplicates of %ld changes (%ld missed, %ld stale)", d.dup, d.changes,
          d.missed, d.stale);

    MistakeCounts k = teacher_mistakes(env, ds, (TeacherFlaws){.keep_ended = ALL});
    mistakes_print(&k, "keep-ended", 1, 32, stdout);
    CHECK(k.missed == 0 && k.missing_end == k.ends && k.ends == o.ends && k.dup == 0,
          "keep_ended: %ld of %ld ends left the old value (%ld duplicates)", k.missing_end,
          k.ends, k.dup);

    // The default: some attributes each, so every rate sits strictly between 0 and 1.
    MistakeCounts f = teacher_mistakes(env, ds, teacher_flaws_default());
    mistakes_print(&f, "teacher", 1, 32, stdout);
    CHECK(f.missed_first == 0 && f.missed_third > 0 && f.missed_third < f.facts_third,
          "default skip_third: %ld of %ld", f.missed_third, f.facts_third);
    CHECK(f.dup > 0 && f.dup < f.changes, "default dup_change: %ld of %ld", f.dup, f.changes);
    CHECK(f.missing_end > 0 && f.missing_end < f.ends, "default keep_ended: %ld of %ld",
          f.missing_end, f.ends);

    EvalResult ro, rt, ri;
    World w;
    world_synth_wrap(&w, env);
    eval_baseline(&w, ds, POLICY_ORACLE, 32, &ro);
    eval_baseline(&w, ds, POLICY_TEACHER, 32, &rt);
    eval_baseline(&w, ds, POLICY_INSERT_ONLY, 32, &ri);
    printf("f1@32: oracle %.4f teacher %.4f insert-only %.4f\n", ro.f1, rt.f1, ri.f1);
    CHECK(rt.f1 < ro.f1 - 0.2 && rt.f1 > ri.f1, "the default flaws: teacher F1 %.3f, oracle "
          "%.3f, insert-only %.3f", rt.f1, ro.f1, ri.f1);
}

// The counter on a hand-made extractor output for session 1 of the first episode.
static void test_counter(const Env *env, const Dataset *ds) {
    const Episode *ep = &ds->episodes[0];
    int s = 0;
    for (int i = 1; i <= ep->n_sessions && !s; i++)
        if (ep->n_gold[i - 1] >= 2) s = i;
    CHECK(s > 0, "a session with two gold facts");
    if (!s) return;
    const GoldFact *g0 = &ep->gold[s - 1][0], *g1 = &ep->gold[s - 1][1];
    // output: <t0> gold fact 0 <sep> <t1> fact 1 with another person <sep> <t2> junk <sep> <eos>
    int out[256], n = 0, buf[64];
    out[n++] = TOK_TURN0;
    int k = vocab_encode(env->vocab, g0->text, buf, 64);
    memcpy(out + n, buf, sizeof(int) * (size_t)k), n += k;
    out[n++] = TOK_SEP;
    out[n++] = TOK_TURN0 + 1;
    k = vocab_encode(env->vocab, g1->text, buf, 64);
    size_t la = strlen(ep->speaker_a);
    int is_a = strncmp(g1->text, ep->speaker_a, la) == 0 && g1->text[la] == ' ';
    vocab_encode(env->vocab, is_a ? ep->speaker_b : ep->speaker_a, buf, 1);  // the first word
    memcpy(out + n, buf, sizeof(int) * (size_t)k), n += k;
    out[n++] = TOK_SEP;
    out[n++] = TOK_TURN0 + 2;
    n += vocab_encode(env->vocab, "the weather is lovely", out + n, 16);
    out[n++] = TOK_SEP;
    out[n++] = TOK_EOS;
    TurnBuffer tb = {0};
    PolicyTurn pt = {.lane = 3, .session = s, .role = ROLE_EXTRACT, .offset = 0, .prompt_len = 1,
                     .out_len = n};
    arrput(tb.tokens, TOK_EXTRACT);
    for (int i = 0; i < n; i++) arrput(tb.tokens, out[i]);
    arrput(tb.turns, pt);
    MemoryBank bank;
    CHECK(memory_init(&bank, 16, env->cfg.slot_len) == 0, "bank");
    MistakeCounts m = {0};
    CHECK(mistakes_add_session(env, ep, s, &tb, 3, &bank, &m) == 0, "count");
    int ng = ep->n_gold[s - 1];
    printf("counter: session %d, %d gold facts: extracted %ld, missed %ld, wrong speaker %ld, "
           "other %ld\n", s, ng, m.extracted, m.missed, m.wrong_speaker, m.wrong_other);
    CHECK(m.extracted == 3 && m.facts == ng && m.missed == ng - 1 && m.wrong_speaker == 1 &&
          m.wrong_other == 1, "hand-made output miscounted");
    // another lane's turns are not this lane's
    MistakeCounts z = {0};
    CHECK(mistakes_add_session(env, ep, s, &tb, 2, &bank, &z) == 0 && z.extracted == 0 &&
          z.missed == ng, "lane 2 has no outputs: %ld extracted", z.extracted);
    memory_free(&bank);
    turns_free(&tb);
}

static void test_program(const char *dir, const char *data) {
    const char *tr = getenv("MEMR2_TRAIN");
    tr = tr && *tr ? tr : "./train_cpu";
    char cmd[4096];
    // the teacher: one line per bucket of sessions and one for all; no first-person fact missed
    snprintf(cmd, sizeof cmd,
             "%s --eval teacher -d %s --mistakes > %s/t.txt && "
             "test $(grep -c '^mistakes policy=teacher sessions=' %s/t.txt) = 4 && "
             "grep -q '^mistakes policy=teacher sessions=1-32 facts=[1-9][0-9]* missed=0\\.[0-9]* "
             "missed_first=0\\.0000 missed_third=0\\.[1-9]' %s/t.txt",
             tr, data, dir, dir, dir);
    CHECK(system(cmd) == 0, "--eval teacher --mistakes (see %s/t.txt)", dir);
    // a checkpoint (a tiny warm start), greedy, on 2 episodes of 4 sessions (an untrained model
    // writes to its length limit: keep the sanitizer build fast)
    const char *gen = getenv("MEMR2_GEN");
    snprintf(cmd, sizeof cmd,
             "%s --seed 2 --episodes 2 --sessions 4 -o %s/small.json && "
             "%s --layers 1 --heads 2 --channels 32 --max-batch 16 --sft-steps 3 --sft-batch 8 "
             "--algo sft --test-episodes 1 --train %s/small.json --val %s/small.json "
             "--test %s/small.json -o %s/out -q > %s/train.txt 2>&1 && "
             "%s --eval %s/out/sft.bin -d %s/small.json --mistakes > %s/m.txt && "
             "test $(grep -c '^mistakes policy=.*sft.bin sessions=1-4 facts=[1-9]' %s/m.txt) = 2",
             gen && *gen ? gen : "./gen_episodes", dir, tr, dir, dir, dir, dir, dir, tr, dir, dir,
             dir, dir);
    CHECK(system(cmd) == 0, "--eval CHECKPOINT --mistakes (see %s/m.txt, %s/train.txt)", dir,
          dir);
    snprintf(cmd, sizeof cmd, "%s --eval insert-only -d %s --mistakes > /dev/null 2>&1", tr,
             data);
    int rc = system(cmd);
    CHECK(rc != 0, "--mistakes accepted insert-only");
}

// Restatements: the oracle writes every one as NOOP (none counted as written anew); a copy of
// each session's bank with every gold SET of the session inserted again as a new slot has
// every restatement written anew, and nothing else counted as one.
static void test_restatements(const Env *env, const Dataset *ds) {
    const Episode *ep = &ds->episodes[0];
    World w;
    world_synth_wrap(&w, env);
    TurnBuffer tb = {0};
    Lane l;
    Rng rng;
    rng_seed(&rng, 1);
    MemoryBank bank;
    if (memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) != 0 ||
        lane_init(&l, &w, ep, 1, ep->n_sessions, 1) != 0) {
        CHECK(0, "restatements: bank and lane");
        return;
    }
    Actor a = {.kind = ACTOR_TEACHER, .max_seq = 256, .max_new_extract = 48,
               .max_new_manage = 64, .record = &tb};
    CHECK(rollout_run(&w, &l, 1, &a, &rng, NULL) == 0, "oracle rollout");
    MistakeCounts plain = {0}, again = {0};
    for (int s = 1; s <= ep->n_sessions; s++) {
        MistakeCounts m = {0}, m2 = {0};
        memory_restore(&bank, lane_snapshot(&l, s));
        CHECK(mistakes_add_session(env, ep, s, &tb, 0, &bank, &m) == 0, "count");
        for (int g = 0; g < ep->n_gold[s - 1]; g++) {
            int ids[64], n = vocab_encode(env->vocab, ep->gold[s - 1][g].text, ids, 64);
            EnvFact f;
            if (!env_parse_fact(env->vocab, ids, n, &f) || f.type != GR_SET) continue;
            MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = ids, .fact_len = n};
            memory_apply(&bank, &op, s, NULL);
        }
        CHECK(mistakes_add_session(env, ep, s, &tb, 0, &bank, &m2) == 0, "count again");
        mistakes_sum(&plain, &m), mistakes_sum(&again, &m2);
    }
    CHECK(plain.restates > 5 && plain.restate_dup == 0, "oracle: %ld restatements, %ld written "
          "anew", plain.restates, plain.restate_dup);
    CHECK(again.restates == plain.restates && again.restate_dup == again.restates,
          "every SET inserted again: %ld of %ld restatements written anew (oracle %ld)",
          again.restate_dup, again.restates, plain.restates);
    lane_free(&l);
    memory_free(&bank);
    turns_free(&tb);
}

int main(void) {
    const char *gen = getenv("MEMR2_GEN");
    char dir[] = "/tmp/memr2_test_mistakes_XXXXXX", path[256], cmd[1024], err[512];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/gen.json", dir);
    snprintf(cmd, sizeof cmd, "%s --seed 9 --episodes 4 --sessions 32 -o %s",
             gen && *gen ? gen : "./gen_episodes", path);
    CHECK(system(cmd) == 0, "generator failed: %s", cmd);
    Dataset ds;
    if (dataset_load(path, &ds, err, sizeof err) == 0) {
        Env env;
        env_config_default(&env.cfg);
        Vocab *v = vocab_build(&ds, 4096);
        env.vocab = v;
        if (v) {
            test_flaws(&env, &ds);
            test_counter(&env, &ds);
            test_restatements(&env, &ds);
        }
        test_program(dir, path);
        vocab_free(v);
        dataset_free(&ds);
    } else {
        CHECK(0, "generated data: %s", err);
    }
    if (!check_counts.failed) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "kept %s for inspection\n", dir);
    }
    return check_summary("test_mistakes");
}
