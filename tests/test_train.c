// tests/test_train.c: the rollout engine and the training program end to end.
//
//   - local rerollouts start from byte-identical snapshots of the rollout they branch from
//   - the same seed gives the same rollouts (tokens, log-probs, banks); another seed differs
//   - K sampled rerollouts of one session from one snapshot are not all identical
//   - the teacher's traces replayed through the same path rebuild the same bank
//   - a tiny `train_cpu` run finishes with finite metrics and changed weights, is reproducible
//     from its seed, and its checkpoint evaluates through `--eval`
// Binaries: $MEMR2_GEN (default ./gen_episodes) and $MEMR2_TRAIN (default ./train_cpu).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_ds.h>

#include "check.h"
#include "eval.h"
#include "memory.h"
#include "model.h"
#include "rollout.h"
#include "world_synth.h"

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static char tmpdir[256];

static int run(const char *cmd) {
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static Actor tiny_actor(const ModelBackend *be, Model *m, float temperature, TurnBuffer *tb) {
    return (Actor){.kind = ACTOR_MODEL, .be = be, .model = m, .temperature = temperature,
                   .top_p = 1, .max_seq = be->config(m)->maxT, .max_new_extract = 24,
                   .max_new_manage = 24, .record = tb};
}

static void test_rollouts(const Dataset *ds, const World *env) {
    const ModelBackend *be = &cpu_backend;
    const Episode *ep = &ds->episodes[0];
    ModelConfig cfg = {.V = env->vocab_size, .maxT = 256, .L = 1, .NH = 2, .C = 16};
    Model *m = be->create(&cfg, 8, 7);
    CHECK(m != NULL, "create a tiny model");
    if (!m) return;
    int H = ep->n_sessions < 3 ? ep->n_sessions : 3;

    // Two runs with the same seed: identical turns and banks.
    TurnBuffer tb[2] = {{0}};
    Lane lanes[2][2];
    for (int run_i = 0; run_i < 2; run_i++) {
        Rng rng;
        rng_seed(&rng, 42);
        for (int i = 0; i < 2; i++) CHECK(lane_init(&lanes[run_i][i], env, ep, 1, H, 1) == 0, "lane");
        Actor a = tiny_actor(be, m, 1.0f, &tb[run_i]);
        CHECK(rollout_run(env, lanes[run_i], 2, &a, &rng, NULL) == 0, "rollout runs");
    }
    CHECK(turns_count(&tb[0]) == turns_count(&tb[1]) && turns_count(&tb[0]) > 0,
          "same seed, same number of turns (%d vs %d)", turns_count(&tb[0]), turns_count(&tb[1]));
    CHECK(arrlen(tb[0].tokens) == arrlen(tb[1].tokens) &&
              !memcmp(tb[0].tokens, tb[1].tokens, sizeof(int) * (size_t)arrlen(tb[0].tokens)),
          "same seed, same tokens");
    CHECK(!memcmp(tb[0].logp_old, tb[1].logp_old, sizeof(float) * (size_t)arrlen(tb[0].logp_old)),
          "same seed, same log-probs");
    size_t bytes = memory_snapshot_bytes(&lanes[0][0].bank);
    CHECK(!memcmp(lane_snapshot(&lanes[0][1], H), lane_snapshot(&lanes[1][1], H), bytes),
          "same seed, same final bank");
    // Every generated token's log-prob is a real log-probability.
    int bad = 0;
    for (int t = 0; t < turns_count(&tb[0]); t++) {
        const PolicyTurn *pt = &tb[0].turns[t];
        for (int l = 0; l < pt->out_len; l++) {
            float lp = tb[0].logp_old[pt->offset + pt->prompt_len + l];
            bad += !(lp <= 0 && isfinite(lp));
        }
    }
    CHECK(bad == 0, "%d sampled log-probs are not finite and <= 0", bad);

    // Another seed samples something else.
    TurnBuffer other = {0};
    Lane ol;
    Rng rng;
    rng_seed(&rng, 43);
    CHECK(lane_init(&ol, env, ep, 1, H, 0) == 0, "lane");
    Actor a = tiny_actor(be, m, 1.0f, &other);
    rollout_run(env, &ol, 1, &a, &rng, NULL);
    int same = arrlen(other.tokens) >= arrlen(tb[0].tokens) / 2 &&
               !memcmp(other.tokens, tb[0].tokens, sizeof(int) * (size_t)arrlen(other.tokens) / 2);
    CHECK(!same, "a different seed gives different samples");
    lane_free(&ol);
    turns_free(&other);

    // Local rerollouts: K lanes restored from the snapshot before session t are byte-identical
    // to it, and sampling then makes them differ.
    int t = H, K = 4;
    Lane local[4];
    const void *snap = lane_snapshot(&lanes[0][1], t - 1);
    unsigned char *copy = malloc(bytes);
    for (int k = 0; k < K; k++) {
        CHECK(lane_init(&local[k], env, ep, t, t, 0) == 0, "local lane");
        lane_restore(&local[k], snap);
        memory_snapshot(&local[k].bank, copy);
        CHECK(!memcmp(copy, snap, bytes), "rerollout %d starts from a byte-identical snapshot", k);
    }
    TurnBuffer ltb = {0};
    a = tiny_actor(be, m, 1.0f, &ltb);
    CHECK(rollout_run(env, local, K, &a, &rng, NULL) == 0, "local rollouts run");
    int distinct = 0;
    for (int k = 1; k < K; k++) {
        const PolicyTurn *p0 = &ltb.turns[0], *pk = NULL;
        for (int j = 0; j < turns_count(&ltb); j++)
            if (ltb.turns[j].lane == k && ltb.turns[j].role == ROLE_EXTRACT) {
                pk = &ltb.turns[j];
                break;
            }
        if (pk && (pk->out_len != p0->out_len ||
                   memcmp(ltb.tokens + pk->offset + pk->prompt_len,
                          ltb.tokens + p0->offset + p0->prompt_len,
                          sizeof(int) * (size_t)p0->out_len)))
            distinct++;
    }
    CHECK(distinct > 0, "sampled rerollouts of one session are not all identical");
    for (int k = 0; k < K; k++) lane_free(&local[k]);
    free(copy);
    turns_free(&ltb);
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < 2; i++) lane_free(&lanes[r][i]);
        turns_free(&tb[r]);
    }
    be->destroy(m);
}

// The teacher through the rollout path writes the bank the oracle baseline evaluates.
static void test_teacher_trace(const Dataset *ds, const World *env) {
    const Episode *ep = &ds->episodes[0];
    TurnBuffer tb = {0};
    Lane l;
    Rng rng;
    rng_seed(&rng, 1);
    CHECK(lane_init(&l, env, ep, 1, ep->n_sessions, 0) == 0, "lane");
    Actor a = {.kind = ACTOR_TEACHER, .teacher_noise = 0, .max_seq = 256, .max_new_extract = 48,
               .max_new_manage = 64, .record = &tb};
    CHECK(rollout_run(env, &l, 1, &a, &rng, NULL) == 0, "teacher rollout");
    CHECK(l.malformed == 0, "the teacher's outputs parse (%d malformed of %d)", l.malformed,
          l.outputs);
    CHECK(l.stats.invalid == 0, "the teacher's ops are valid (%d invalid)", l.stats.invalid);
    CHECK(memory_alive_count(&l.bank) > 0, "the teacher wrote memories");
    int over = 0;
    for (int i = 0; i < turns_count(&tb); i++)
        over += tb.turns[i].prompt_len + tb.turns[i].out_len > 256;
    CHECK(over == 0, "%d teacher turns do not fit the context", over);
    // Oracle quality: the teacher bank answers the episode's questions.
    EvalResult r = {0};
    eval_add_episode(env, ep, ep->n_sessions, &l.bank, &l.written, &r);
    eval_finish(&r);
    CHECK(r.f1 > 0.9, "the noise-free teacher bank answers (F1 %.3f)", r.f1);
    lane_free(&l);
    turns_free(&tb);
}

static double json_number(const char *line, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

// Sum of turns_update and of all recorded turns over the RL lines of a log.
static int update_turns(const char *path, int *all) {
    FILE *f = fopen(path, "r");
    char line[8192];
    int upd = 0;
    *all = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"phase\":\"rl\"")) continue;
        upd += (int)json_number(line, "turns_update");
        *all += (int)(json_number(line, "turns_global") + json_number(line, "turns_local"));
    }
    if (f) fclose(f);
    return upd;
}

// --zero-adv: dilute (default) trains on every turn; skip only on those with an advantage.
static void test_zero_adv(const char *train_bin, const char *flags, const char *data) {
    char cmd[4096], path[512];
    snprintf(cmd, sizeof cmd,
             "%s %s --zero-adv skip --train %s --val %s --test %s -o %s/skip --seed 5 "
             "> %s/skip.txt 2>&1", train_bin, flags, data, data, data, tmpdir, tmpdir);
    CHECK(run(cmd) == 0, "a --zero-adv skip run finishes (see %s/skip.txt)", tmpdir);
    int all = 0, upd;
    snprintf(path, sizeof path, "%s/out0/log.jsonl", tmpdir);
    upd = update_turns(path, &all);
    CHECK(all > 0 && upd == all, "dilute (default): every turn enters the update (%d of %d)", upd,
          all);
    snprintf(path, sizeof path, "%s/skip/log.jsonl", tmpdir);
    upd = update_turns(path, &all);
    CHECK(all > 0 && upd > 0 && upd < all,
          "skip: only turns with an advantage enter the update (%d of %d)", upd, all);
}

static void test_end_to_end(const char *train_bin, const char *data) {
    // A warm start long enough (300 tiny steps, < 1 s) that the sampled rollouts differ in
    // reward: with untrained weights every reward is 0 and the RL steps would test nothing.
    const char *flags = "--layers 1 --heads 2 --channels 48 --max-batch 16 --sft-steps 300 "
                        "--sft-lr 5e-3 --sft-batch 8 --stage-steps 2,1,0 --G 4 --K 2 --p-local 1 "
                        "--eval-every 1 --val-episodes 1 --test-episodes 2 --lr 1e-3 -q";
    char cmd[4096];
    for (int r = 0; r < 2; r++) {
        snprintf(cmd, sizeof cmd,
                 "%s %s --train %s --val %s --test %s -o %s/out%d --seed 5 > %s/train%d.txt 2>&1",
                 train_bin, flags, data, data, data, tmpdir, r, tmpdir, r);
        CHECK(run(cmd) == 0, "tiny training run %d finishes (see %s/train%d.txt)", r, tmpdir, r);
    }
    // Finite metrics, and the RL steps logged what they should.
    char path[512], line[8192];
    snprintf(path, sizeof path, "%s/out0/log.jsonl", tmpdir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "log.jsonl written");
    int rl_lines = 0, finite = 1, local_groups = 0, varied = 0, credit = 0;
    double nonzero = 0, loss_abs = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"phase\":\"rl\"")) continue;
        rl_lines++;
        const char *keys[] = {"reward_mean", "reward_std", "kl", "entropy", "grad_norm", "loss",
                              "frac_zero_std_global", "frac_nonzero_adv"};
        for (int k = 0; k < 8; k++) finite &= isfinite(json_number(line, keys[k]));
        local_groups += (int)json_number(line, "local_groups");
        varied += json_number(line, "reward_std") > 0;
        nonzero += json_number(line, "frac_nonzero_adv");
        loss_abs += fabs(json_number(line, "loss"));
        // the credit metric is a correlation in [-1, 1] (null when no advantage varies)
        double cg = json_number(line, "credit_global");
        credit += isfinite(cg) && cg >= -1 && cg <= 1;
    }
    if (f) fclose(f);
    CHECK(rl_lines == 3, "3 RL steps logged (got %d)", rl_lines);
    CHECK(finite, "RL metrics are finite");
    CHECK(local_groups > 0, "p-local 1 makes local groups (%d)", local_groups);
    CHECK(varied > 0, "some RL step has rewards that differ across rollouts (%d of 3)", varied);
    CHECK(nonzero > 0, "some turns carry a non-zero advantage (mean share %.3f)", nonzero / 3);
    CHECK(loss_abs > 0, "the policy loss is not 0 in every step");
    CHECK(credit > 0, "credit_global is logged as a correlation in some step (%d)", credit);
    test_zero_adv(train_bin, flags, data);
    // The weights moved: final.bin differs from sft.bin.
    ModelConfig c1, c2;
    float *p1 = NULL, *p2 = NULL;
    char err[512], a[512], b[512];
    snprintf(a, sizeof a, "%s/out0/sft.bin", tmpdir);
    snprintf(b, sizeof b, "%s/out0/final.bin", tmpdir);
    int ok = checkpoint_load(a, &c1, &p1, err, sizeof err) == 0 &&
             checkpoint_load(b, &c2, &p2, err, sizeof err) == 0;
    CHECK(ok, "checkpoints load: %s", ok ? "" : err);
    if (ok) {
        size_t sizes[NUM_PARAM_TENSORS], n = param_sizes(&c1, sizes);
        double diff = 0;
        int nonfinite = 0;
        for (size_t i = 0; i < n; i++) {
            diff += fabs((double)p1[i] - p2[i]);
            nonfinite += !isfinite(p2[i]);
        }
        CHECK(diff > 0, "RL changed the weights (sum |diff| = %g)", diff);
        CHECK(nonfinite == 0, "%d non-finite weights", nonfinite);
    }
    free(p1), free(p2);
    // Same seed, same run: the logs agree except for timings.
    snprintf(cmd, sizeof cmd,
             "sed -E 's/\"(time_s|step_s|tok_s_[a-z]+)\":[0-9.e+-]+//g' %s/out0/log.jsonl > %s/a && "
             "sed -E 's/\"(time_s|step_s|tok_s_[a-z]+)\":[0-9.e+-]+//g' %s/out1/log.jsonl > %s/b && "
             "cmp -s %s/a %s/b && cmp -s %s/out0/final.bin %s/out1/final.bin",
             tmpdir, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir);
    CHECK(run(cmd) == 0, "same seed gives the same metrics and weights");
    // The final table's paired comparisons: a markdown row and a JSON line with an interval
    // around the mean difference, per horizon.
    snprintf(cmd, sizeof cmd,
             "grep -q '^| trained - sft | [-+][0-9.]* \\[[-+][0-9.]*, [-+][0-9.]*\\] |' %s/out0/eval.md && "
             "grep -q '^| trained - insert-only |' %s/out0/eval.md", tmpdir, tmpdir);
    CHECK(run(cmd) == 0, "eval.md has the paired F1 differences with intervals");
    snprintf(path, sizeof path, "%s/out0/eval.jsonl", tmpdir);
    f = fopen(path, "r");
    int paired = 0;
    int ep_rows = 0;
    while (f && fgets(line, sizeof line, f)) {
        // the policies' rows carry each episode's F1 (for paired comparisons across runs)
        const char *ep = strstr(line, "\"ep_f1\":[");
        if (ep) {
            double a = -1, b = -1;
            ep_rows += sscanf(ep, "\"ep_f1\":[%lf,%lf]", &a, &b) == 2 && a >= 0 && a <= 1 &&
                       b >= 0 && b <= 1 && strstr(line, "\"cat_f1\":[") != NULL;
        }
        if (!strstr(line, "\"policy\":\"trained-vs-")) continue;
        double m = json_number(line, "diff_f1"), lo = json_number(line, "ci95_lo"),
               hi = json_number(line, "ci95_hi");
        paired += json_number(line, "episodes") == 2 && lo <= m && m <= hi;
    }
    if (f) fclose(f);
    CHECK(ep_rows == 3, "eval.jsonl: insert-only, sft and trained rows carry 2 per-episode F1s "
                        "in [0, 1] and the per-category F1 (%d rows)", ep_rows);
    CHECK(paired == 2, "eval.jsonl: 2 comparisons at the one horizon (4 sessions), lo <= diff <= hi "
                       "(%d)", paired);
    // The checkpoint evaluates through --eval and prints the contract's summary line.
    snprintf(cmd, sizeof cmd,
             "%s --eval %s/out0/final.bin -d %s --sessions 2 | grep -Eq "
             "'^eval policy=.* episodes=[0-9]+ sessions=2 questions=[0-9]+ f1=[0-9.]+ "
             "bleu1=[0-9.]+ em=[0-9.]+ mfail=[0-9.]+ mem_words=[0-9.]+'",
             train_bin, tmpdir, data);
    CHECK(run(cmd) == 0, "--eval CHECKPOINT prints the summary line");
    // Real-LoCoMo quirks (episodes shorter than the horizon, unscorable questions): every
    // episode is counted and the skips are reported, as for the baselines.
    snprintf(cmd, sizeof cmd,
             "%s --eval %s/out0/final.bin -d data/fixtures/locomo_quirks.json > %s/quirks.txt && "
             "grep -q 'episodes=2 sessions=3 questions=7 ' %s/quirks.txt && "
             "grep -q 'skipped_questions=2 skipped_evidence=3' %s/quirks.txt",
             train_bin, tmpdir, tmpdir, tmpdir, tmpdir);
    CHECK(run(cmd) == 0, "a checkpoint evaluates the LoCoMo quirks fixture (see %s/quirks.txt)",
          tmpdir);
    // Bad input: a clear error, not a crash.
    snprintf(cmd, sizeof cmd, "%s --eval %s/out0/vocab.txt -d %s > %s/bad.txt 2>&1", train_bin,
             tmpdir, data, tmpdir);
    int rc = system(cmd);
    CHECK(rc != 0 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1,
          "--eval on a non-checkpoint fails cleanly (status %d)", rc);
    snprintf(cmd, sizeof cmd, "grep -q 'vocab.txt' %s/bad.txt", tmpdir);
    CHECK(run(cmd) == 0, "the error names the file");
    snprintf(cmd, sizeof cmd, "%s --lr banana > /dev/null 2>&1", train_bin);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "a bad flag value exits 2");
}

// Copies src to dst; when swap > 0, lines swap and swap+1 (1-based) trade places.
static int copy_file_swapping(const char *src, const char *dst, int swap) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    char line[2][4096];
    int n = 0, ok = in && out;
    while (ok && fgets(line[0], sizeof line[0], in)) {
        n++;
        if (n == swap && fgets(line[1], sizeof line[1], in)) {
            n++;
            ok = fputs(line[1], out) >= 0;
        }
        if (ok) ok = fputs(line[0], out) >= 0;
    }
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok ? 0 : -1;
}

// Checkpoints record the vocabulary hash; --eval and --init refuse another vocabulary of the
// same size, and accept (with a warning) an old checkpoint that records none.
static void test_vocab_hash(const char *train_bin, const char *data) {
    char a[512], b[512], cmd[8192], err[512];
    snprintf(a, sizeof a, "%s/out0/vocab.txt", tmpdir);
    snprintf(b, sizeof b, "%s/out0/final.bin", tmpdir);
    Vocab *v = vocab_load(a, err, sizeof err);
    ModelConfig c;
    float *p = NULL;
    int ok = v && checkpoint_load(b, &c, &p, err, sizeof err) == 0;
    CHECK(ok, "final.bin and vocab.txt load: %s", err);
    if (!ok) {
        vocab_free(v);
        return;
    }
    CHECK(c.tokenizer_hash != 0 && c.tokenizer_hash == vocab_hash(v),
          "final.bin records the hash of its vocab.txt (%016llx vs %016llx)",
          (unsigned long long)c.tokenizer_hash, (unsigned long long)vocab_hash(v));
    // out2: the same checkpoint beside a vocabulary with its first two words swapped
    snprintf(cmd, sizeof cmd, "mkdir -p %s/out2 %s/out3 && cp %s %s/out2/final.bin", tmpdir,
             tmpdir, b, tmpdir);
    CHECK(run(cmd) == 0, "copy the checkpoint");
    char v2[512], v3[512], c3[512];
    snprintf(v2, sizeof v2, "%s/out2/vocab.txt", tmpdir);
    CHECK(copy_file_swapping(a, v2, TOK_FIRST_WORD + 2) == 0, "write the swapped vocabulary");
    const char *modes[2] = {"--eval %s/out2/final.bin -d %s", "--init %s/out2/final.bin "
                            "--train %s --val %s --test %s -o %s/out4 --sft-steps 0 "
                            "--stage-steps 1,0,0 --layers 1 --heads 2 --channels 32 -q"};
    for (int m = 0; m < 2; m++) {
        char args[4096];
        if (m == 0) snprintf(args, sizeof args, modes[0], tmpdir, data);
        else snprintf(args, sizeof args, modes[1], tmpdir, data, data, data, tmpdir);
        snprintf(cmd, sizeof cmd, "%s %s > %s/mismatch%d.txt 2>&1", train_bin, args, tmpdir, m);
        int rc = system(cmd);
        CHECK(rc != 0 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1,
              "%s with a swapped vocab.txt fails (status %d)", m ? "--init" : "--eval", rc);
        snprintf(cmd, sizeof cmd,
                 "grep 'another vocabulary' %s/mismatch%d.txt | grep -F %s/out2/final.bin | "
                 "grep -qF %s", tmpdir, m, tmpdir, v2);
        CHECK(run(cmd) == 0, "the error names the checkpoint and the vocabulary (see "
                             "%s/mismatch%d.txt)", tmpdir, m);
    }
    // out3: a checkpoint without a hash (as before hashes were recorded) loads with a warning
    c.tokenizer_hash = 0;
    snprintf(c3, sizeof c3, "%s/out3/final.bin", tmpdir);
    snprintf(v3, sizeof v3, "%s/out3/vocab.txt", tmpdir);
    CHECK(checkpoint_save(c3, &c, p, err, sizeof err) == 0 && copy_file_swapping(a, v3, 0) == 0,
          "write a hash-less checkpoint: %s", err);
    snprintf(cmd, sizeof cmd, "%s --eval %s -d %s --sessions 2 > %s/nohash.txt 2>&1 && "
             "grep -q 'records no vocabulary hash' %s/nohash.txt && grep -q '^eval policy' "
             "%s/nohash.txt", train_bin, c3, data, tmpdir, tmpdir, tmpdir);
    CHECK(run(cmd) == 0, "a hash-less checkpoint evaluates with a warning (see %s/nohash.txt)",
          tmpdir);
    free(p);
    vocab_free(v);
}

int main(void) {
    // Idle OpenMP threads sleep instead of spinning: on shared cores a spinning team slows
    // these small runs many-fold (README "Speed"). The programs below inherit it.
    setenv("OMP_WAIT_POLICY", "passive", 0);
    const char *gen = env_or("MEMR2_GEN", "./gen_episodes");
    const char *train_bin = env_or("MEMR2_TRAIN", "./train_cpu");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/memr2_test_train_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char data[512], cmd[1024], err[1024];
    snprintf(data, sizeof data, "%s/tiny.json", tmpdir);
    snprintf(cmd, sizeof cmd, "%s --seed 3 --episodes 2 --sessions 4 -o %s", gen, data);
    CHECK(run(cmd) == 0, "generate tiny data");
    Dataset ds = {0};
    int loaded = dataset_load(data, &ds, err, sizeof err) == 0;
    CHECK(loaded, "load tiny data: %s", loaded ? "" : err);
    if (loaded && ds.n > 0) {
        Env env;
        env_config_default(&env.cfg);
        Vocab *v = vocab_build(&ds, 4096);
        env.vocab = v;
        World world;
        world_synth_wrap(&world, &env);
        test_teacher_trace(&ds, &world);
        test_rollouts(&ds, &world);
        vocab_free(v);
        test_end_to_end(train_bin, data);
        test_vocab_hash(train_bin, data);
    }
    dataset_free(&ds);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (!check_counts.failed) system(cmd);
    else fprintf(stderr, "kept %s for inspection\n", tmpdir);
    return check_summary("test_train");
}
