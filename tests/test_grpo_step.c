// tests/test_grpo_step.c: the LoGo-GRPO step of grpo.c with hand-made rewards, lanes and turns,
// the mistake counter of credit.c on hand-written outputs, and the statistics of stats.c.
//
// grpo_collect runs end to end with the noisy teacher as the actor (no model needed). Each
// check below names the wiring fault it exists to catch (docs/design.md lists them):
//   local turns ignoring omega, local weight 0, every local advantage taken from lane 0, the
//   global advantage ignoring the session (grpo_assign_advantages); rerolls restored from the
//   snapshot after t instead of before t (grpo_local_lanes); no KL reference passed and the
//   PPO scale 1/m -> 1 (grpo_rows_grad); a lookahead rerun scored after its own session instead
//   of its last (grpo_local_advantages) or recording the sessions it only looks ahead through;
//   a splice rerun scored on its own bank instead of the spliced final one.
// Fixture: data/fixtures/credit_tiny.json (run from the repository root, as make test does).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_ds.h>

#include "credit.h"
#include "world_synth.h"
#include "grpo.h"
#include "memory.h"
#include "model.h"
#include "rollout.h"
#include "stats.h"
#include "tests/check.h"

// ---- stats ---------------------------------------------------------------------------------

static void test_stats(void) {
    const double x4[4] = {1, 2, 3, 4}, y4[4] = {2, 4, 6, 8}, r4[4] = {8, 6, 4, 2};
    CHECK_CLOSE("pearson linear", stats_pearson(x4, y4, 4), 1.0, 0, 1e-12);
    CHECK_CLOSE("pearson reversed", stats_pearson(x4, r4, 4), -1.0, 0, 1e-12);
    // x {1,2,3}, y {1,3,2}: sxy 1, sxx 2, syy 2 -> 0.5
    const double x3[3] = {1, 2, 3}, y3[3] = {1, 3, 2}, c3[3] = {5, 5, 5};
    CHECK_CLOSE("pearson by hand", stats_pearson(x3, y3, 3), 0.5, 0, 1e-12);
    CHECK(isnan(stats_pearson(x3, c3, 3)), "pearson with a constant side is undefined");
    CHECK(isnan(stats_pearson(x3, y3, 1)), "pearson of one pair is undefined");
    // t quantiles: the table and the expansion against published values
    CHECK_CLOSE("t975 df 1", stats_t975(1), 12.7062, 0, 1e-4);
    CHECK_CLOSE("t975 df 30", stats_t975(30), 2.0423, 0, 1e-4);
    CHECK_CLOSE("t975 df 31", stats_t975(31), 2.0395, 0, 2e-4);
    CHECK_CLOSE("t975 df 47", stats_t975(47), 2.0117, 0, 2e-4);
    CHECK_CLOSE("t975 df 100", stats_t975(100), 1.9840, 0, 2e-4);
    CHECK_CLOSE("t975 df 1000", stats_t975(1000), 1.9623, 0, 2e-4);
    // paired: d = {1,2,3,4}, mean 2.5, sd sqrt(5/3), half width 3.1824 * sd / 2
    const double a[4] = {1.5, 2.5, 3.5, 4.5}, b[4] = {0.5, 0.5, 0.5, 0.5};
    double m, lo, hi, half = 3.1824 * sqrt(5.0 / 3.0) / 2.0;
    CHECK(stats_paired_ci(a, b, 4, &m, &lo, &hi) == 4, "paired over 4 episodes");
    CHECK_CLOSE("paired mean", m, 2.5, 0, 1e-12);
    CHECK_CLOSE("paired lo", lo, 2.5 - half, 0, 1e-4);
    CHECK_CLOSE("paired hi", hi, 2.5 + half, 0, 1e-4);
    stats_paired_ci(a, b, 1, &m, &lo, &hi);
    CHECK(m == 1.0 && isnan(lo) && isnan(hi), "one episode: a mean and no interval");
}

// ---- choosing local groups -----------------------------------------------------------------

static void test_plan_local(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.K = 3, c.p_local = 1.0f;
    int session[8], src[8];
    Rng rng;
    rng_seed(&rng, 3);
    int n = grpo_plan_local(&c, 4, 5, &rng, session, src);
    int ok = n == 5;
    for (int g = 0; g < n; g++) ok &= session[g] == g + 1 && src[g] >= 0 && src[g] < 4;
    CHECK(ok, "p_local 1: every session once, sources in range (%d groups)", n);
    c.p_local = 0.0f;
    CHECK(grpo_plan_local(&c, 4, 5, &rng, session, src) == 0, "p_local 0: no group");
    c.p_local = 1.0f, c.local = 0;
    CHECK(grpo_plan_local(&c, 4, 5, &rng, session, src) == 0, "plain GRPO: no group");
    c.local = 1, c.K = 1;
    CHECK(grpo_plan_local(&c, 4, 5, &rng, session, src) == 0, "K = 1: no group (no spread)");
}

// ---- advantages and weights on turns -------------------------------------------------------

static PolicyTurn turn(int lane, int session, int is_local) {
    return (PolicyTurn){.lane = lane, .session = session, .is_local = is_local, .mistakes = -1,
                        .advantage = 99, .weight = 99};
}

static void test_assign(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.omega = 0.5f;
    enum { G = 3, H = 4, NL = 6 };
    float gadv[G * H], ladv[NL];
    for (int i = 0; i < G; i++)
        for (int t = 0; t < H; t++) gadv[i * H + t] = (float)(10 * i + t + 1);  // all distinct
    for (int j = 0; j < NL; j++) ladv[j] = (float)(100 + j);
    PolicyTurn tt[] = {turn(0, 1, 0), turn(2, 3, 0), turn(1, 4, 0), turn(2, 2, 0),
                       turn(0, 1, 1), turn(5, 2, 1), turn(3, 4, 1),
                       turn(3, 1, 0) /* lane >= G */, turn(0, 5, 0) /* session > H */,
                       turn(6, 1, 1) /* local lane >= n_local */};
    int n = (int)(sizeof tt / sizeof tt[0]);
    int bad = grpo_assign_advantages(&c, G, H, gadv, NL, ladv, tt, n);
    CHECK(bad == 3, "three turns outside the step's shapes (got %d)", bad);
    // global: A = gadv[lane, session - 1] (catches: the session ignored), weight 1
    const float want_g[4] = {1, 23, 14, 22};
    for (int i = 0; i < 4; i++)
        CHECK(tt[i].advantage == want_g[i] && tt[i].weight == 1.0f,
              "global turn %d (lane %d, session %d): A %g w %g, want %g and 1", i, tt[i].lane,
              tt[i].session, tt[i].advantage, tt[i].weight, want_g[i]);
    // local: A = ladv[lane] (catches: every local advantage from lane 0), weight omega
    // (catches: omega ignored -> 1, local weight 0)
    const float want_l[3] = {100, 105, 103};
    for (int i = 0; i < 3; i++)
        CHECK(tt[4 + i].advantage == want_l[i] && tt[4 + i].weight == 0.5f,
              "local turn of lane %d: A %g w %g, want %g and omega 0.5", tt[4 + i].lane,
              tt[4 + i].advantage, tt[4 + i].weight, want_l[i]);
    for (int i = 7; i < n; i++)
        CHECK(tt[i].advantage == 0 && tt[i].weight == 0, "bad record %d gets no signal", i);
}

static void test_update_turns(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    PolicyTurn tt[4] = {turn(0, 1, 0), turn(0, 1, 0), turn(0, 1, 0), turn(0, 1, 0)};
    const float A[4] = {0, 1, 0, -2};
    for (int i = 0; i < 4; i++) tt[i].advantage = A[i];
    int idx[4];
    CHECK(c.zero_adv == ZERO_ADV_DILUTE, "the default is the paper's: zero advantages dilute");
    CHECK(grpo_update_turns(&c, tt, 4, idx) == 4 && idx[0] == 0 && idx[3] == 3,
          "dilute: every turn enters the update");
    c.zero_adv = ZERO_ADV_SKIP;
    CHECK(grpo_update_turns(&c, tt, 4, idx) == 2 && idx[0] == 1 && idx[1] == 3,
          "skip: only turns 1 and 3 (advantage != 0)");
}

static void test_credit(void) {
    PolicyTurn tt[6] = {turn(0, 1, 0), turn(0, 1, 0), turn(0, 1, 0), turn(0, 1, 0),
                        turn(0, 1, 1), turn(1, 1, 1)};
    const float A[6] = {1, -1, 0.5f, 0, 1, -1};
    const int M[6] = {0, 2, 1, -1, 0, 3};
    for (int i = 0; i < 6; i++) tt[i].advantage = A[i], tt[i].mistakes = M[i];
    double cg, cl;
    grpo_credit(tt, 6, &cg, &cl);
    // global, the unknown (-1) left out: x {1, -1, .5}, y {0, -2, -1}: sxy 2, sxx 13/6, syy 2
    CHECK_CLOSE("credit_global", cg, 2.0 / sqrt(13.0 / 6.0 * 2.0), 0, 1e-6);
    CHECK_CLOSE("credit_local", cl, 1.0, 0, 1e-6);
    tt[4].advantage = tt[5].advantage = 0;
    grpo_credit(tt, 6, &cg, &cl);
    CHECK(isnan(cl), "a local group without spread has no credit quality");
}

// Per unit, mistakes centred in the group. G 2, H 2: units (lane, t); K 2, one local group.
static void test_credit_units(void) {
    PolicyTurn tt[9] = {turn(0, 1, 0), turn(0, 1, 0), turn(1, 1, 0), turn(0, 2, 0),
                        turn(1, 2, 0), turn(1, 2, 0), turn(0, 2, 1), turn(1, 2, 1),
                        turn(1, 2, 1)};
    // session 1: lane 0 has 1 + 2 mistakes (A -1), lane 1 has 1 (A +1): centred -(+1), -(-1);
    // session 2: lane 0 has 0 (A +1), lane 1 has 4 + unknown (A -1): centred -(-2), -(+2);
    // so x {-1, 1, 1, -1}, y {-1, 1, 2, -2} (the unit order: (0,1) (1,1) (0,2) (1,2))
    const float A[9] = {-1, -1, 1, 1, -1, -1, 0.5f, -0.5f, -0.5f};
    const int M[9] = {1, 2, 1, 0, 4, -1, 3, 0, 6};
    for (int i = 0; i < 9; i++) tt[i].advantage = A[i], tt[i].mistakes = M[i];
    double cg, cl;
    grpo_credit_units(tt, 9, 2, 2, 2, 2, &cg, &cl);
    // x mean 0, y mean 0: sxy 1 + 1 + 2 + 2 = 6, sxx 4, syy 10
    CHECK_CLOSE("credit_global_unit", cg, 6.0 / sqrt(4.0 * 10.0), 0, 1e-6);
    // local: rerun 0 has 3 (A .5), rerun 1 has 6 (A -.5): the fewer mistakes, the higher A
    CHECK_CLOSE("credit_local_unit", cl, 1.0, 0, 1e-6);
    // the per-turn metric sees less of the same signal: turns of one unit share A
    double tg, tl;
    grpo_credit(tt, 9, &tg, &tl);
    CHECK(tg < cg, "per turn %.3f < per unit %.3f here", tg, cg);
    // advantages that ignore mistakes but follow the group's size do not count as credit
    for (int i = 0; i < 9; i++) tt[i].advantage = tt[i].session == 1 ? 1.0f : -1.0f;
    tt[6].advantage = tt[7].advantage = tt[8].advantage = 0;
    grpo_credit_units(tt, 9, 2, 2, 2, 2, &cg, &cl);
    CHECK_CLOSE("an advantage constant within groups", cg, 0, 0, 1e-9);
    CHECK(isnan(cl), "local advantages without spread: NAN");
}

// ---- the local lanes start from the snapshot BEFORE their session --------------------------

static void test_local_lanes(const Env *env, const Episode *ep) {
    int H = ep->n_sessions;  // 2
    Lane g;
    World w;
    world_synth_wrap(&w, env);
    CHECK(lane_init(&g, &w, ep, 1, H, 1) == 0, "global lane with snapshots");
    // bank after session s holds s memories: snapshot s
    size_t bytes = memory_snapshot_bytes(&g.bank);
    const int fact[2] = {TOK_FIRST_WORD + 1, TOK_FIRST_WORD + 2};
    for (int s = 0; s <= H; s++) {
        if (s > 0) {
            MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = fact, .fact_len = 2,
                           .evidence = DIA_CODE(s, 1)};
            memory_apply(&g.bank, &op, s, NULL);
        }
        memory_snapshot(&g.bank, (void *)lane_snapshot(&g, s));  // the test writes them by hand
    }
    enum { K = 2, NG = 2 };
    const int session[NG] = {1, 2}, src[NG] = {0, 0};
    Lane local[NG * K];
    GrpoConfig c;
    grpo_config_default(&c);
    c.K = K;
    CHECK(grpo_local_lanes(&c, &w, ep, H, NG, session, src, &g, local) == 0, "local lanes made");
    unsigned char *copy = malloc(bytes);
    for (int gi = 0; gi < NG; gi++)
        for (int k = 0; k < K; k++) {
            Lane *l = &local[gi * K + k];
            int t = session[gi];
            memory_snapshot(&l->bank, copy);
            CHECK(memory_alive_count(&l->bank) == t - 1 &&
                      !memcmp(copy, lane_snapshot(&g, t - 1), bytes),
                  "rerun %d of session %d starts from the bank after session %d (%d memories)",
                  k, t, t - 1, memory_alive_count(&l->bank));
            CHECK(l->first_session == t && l->last_session == t && l->is_local == 1 &&
                      l->record_through == t && l->ahead_stream == -1,
                  "rerun %d of session %d covers that session only, marked local, own stream",
                  k, t);
            lane_free(l);
        }
    // lookahead 1: session 1's reruns play on through session 2; session 2's stop at H = 2.
    // Both record their own session only and start from the same snapshots as before.
    c.lookahead = 1;
    CHECK(grpo_local_lanes(&c, &w, ep, H, NG, session, src, &g, local) == 0, "lookahead lanes");
    for (int gi = 0; gi < NG; gi++)
        for (int k = 0; k < K; k++) {
            Lane *l = &local[gi * K + k];
            int t = session[gi], last = t + 1 < H ? t + 1 : H;
            memory_snapshot(&l->bank, copy);
            CHECK(l->ahead_stream == GRPO_AHEAD_STREAM0 + gi,
                  "lookahead rerun %d of group %d: shared stream %d, want %d", k, gi,
                  l->ahead_stream, GRPO_AHEAD_STREAM0 + gi);
            CHECK(l->first_session == t && l->last_session == last && l->record_through == t &&
                      !memcmp(copy, lane_snapshot(&g, t - 1), bytes),
                  "lookahead rerun %d of session %d: sessions %d..%d (want %d), records %d, "
                  "starts after %d", k, t, l->first_session, l->last_session, last,
                  l->record_through, t - 1);
            lane_free(l);
        }
    free(copy);
    lane_free(&g);
}

// ---- local rewards are read after the lane's last session ----------------------------------

// A group of session 1 with lookahead 1 (lanes over sessions 1..2): rerun A holds the oracle's
// bank, rerun B an empty one. The fixture's one question has its evidence in session 2, so it
// is asked only when the group is scored after session 2: A must get the positive advantage.
// Scored after session 1 instead (the lookahead ignored), no question is active and the
// compression penalty alone ranks them the other way.
static void test_local_advantages(const Env *env, const Episode *ep) {
    World w;
    world_synth_wrap(&w, env);
    GrpoConfig c;
    grpo_config_default(&c);
    c.K = 2, c.lookahead = 1;
    Lane l[2];
    CHECK(lane_init(&l[0], &w, ep, 1, 2, 0) == 0 && lane_init(&l[1], &w, ep, 1, 2, 0) == 0,
          "two lanes over sessions 1..2");
    Actor oracle = {.kind = ACTOR_TEACHER, .max_seq = 256, .max_new_extract = 48,
                    .max_new_manage = 64};
    Rng rng;
    rng_seed(&rng, 3);
    CHECK(rollout_run(&w, &l[0], 1, &oracle, &rng, NULL) == 0, "the oracle runs lane A");
    float ladv[2] = {0, 0};
    int zero = -1;
    CHECK(grpo_local_advantages(&c, &w, ep, 2, 1, NULL, NULL, l, ladv, &zero) == 0 && zero == 0,
          "the group is scored (zero-variance groups %d)", zero);
    CHECK(ladv[0] > 0.9f && ladv[1] < -0.9f,
          "the bank that answers the session-2 question wins (A %g, B %g)", ladv[0], ladv[1]);
    lane_free(&l[0]);
    lane_free(&l[1]);
}

// ---- the splice local reward prices a write where it is made --------------------------------

// Source: the oracle through both sessions (it updates leo's job in session 2). A group of
// session 1 with two reruns: A plays the oracle's session 1; B does the same and also restates
// "leo works as a baker" as a new slot. Right after session 1 no question is active and with
// lambda 0 the two reruns tie (the rerun reward: no signal). Spliced into the source, B's extra
// slot survives to the end as a stale SET, which the reader ranks above the source's "now
// nurse , previously baker": B answers the session-2 question wrong, so A must win.
static void test_splice_advantages(const Env *env, const Episode *ep) {
    World w;
    world_synth_wrap(&w, env);
    GrpoConfig c;
    grpo_config_default(&c);
    c.K = 2, c.lambda = 0.0f, c.local_reward = LOCAL_REWARD_SPLICE;
    c.lookahead = 1;  // ignored: a splice rerun plays its own session only
    Actor oracle = {.kind = ACTOR_TEACHER, .max_seq = 256, .max_new_extract = 48,
                    .max_new_manage = 64};
    Rng rng;
    rng_seed(&rng, 3);
    Lane src, l[2];
    CHECK(lane_init(&src, &w, ep, 1, 2, 1) == 0 && rollout_run(&w, &src, 1, &oracle, &rng, NULL) == 0,
          "the oracle's source rollout over sessions 1..2");
    int session = 1, source = 0;
    CHECK(grpo_local_lanes(&c, &w, ep, 2, 1, &session, &source, &src, l) == 0 &&
              l[0].last_session == 1 && l[1].last_session == 1,
          "splice reruns play their own session only");
    CHECK(rollout_run(&w, l, 2, &oracle, &rng, NULL) == 0, "the oracle plays both reruns");
    int fact[16], n = vocab_encode(env->vocab, "leo works as a baker", fact, 16);
    MemoryOp op = {.kind = OP_INSERT, .slot = -1, .fact = fact, .fact_len = n,
                   .evidence = DIA_CODE(1, 1)};
    CHECK(n == 5 && memory_apply(&l[1].bank, &op, 1, NULL) == 0, "rerun B restates leo's job");
    float ladv[2] = {0, 0};
    int zero = -1;
    CHECK(grpo_local_advantages(&c, &w, ep, 2, 1, &source, &src, l, ladv, &zero) == 0 &&
              zero == 0,
          "the spliced group is scored (zero-variance groups %d)", zero);
    CHECK(ladv[0] > 0.9f && ladv[1] < -0.9f,
          "the restatement loses once spliced into the trajectory (A %g, B %g)", ladv[0], ladv[1]);
    c.local_reward = LOCAL_REWARD_RERUN;
    CHECK(grpo_local_advantages(&c, &w, ep, 2, 1, NULL, NULL, l, ladv, &zero) == 0 && zero == 1,
          "scored on the reruns' own banks after session 1 the two tie (zero-variance %d)", zero);
    lane_free(&src), lane_free(&l[0]), lane_free(&l[1]);
}

// One grpo_collect over the whole episode with the noisy teacher as the actor (rng seed 5);
// *chunks: the episode's chunks over all sessions (two role outputs each per lane).
static int collect_noisy(const Env *env, const Episode *ep, const GrpoConfig *c, TurnBuffer *tb,
                         GrpoStepStats *st, int *chunks) {
    int H = ep->n_sessions;
    *chunks = 0;
    for (int t = 1; t <= H; t++) *chunks += env_num_chunks(env, ep, t);
    Actor a = {.kind = ACTOR_TEACHER, .teacher_noise = 0.3f, .max_seq = 256,
               .max_new_extract = 48, .max_new_manage = 64};
    Rng rng;
    rng_seed(&rng, 5);
    World w;
    world_synth_wrap(&w, env);
    return grpo_collect(c, &w, ep, H, &a, &rng, tb, st);
}

// grpo_collect with the splice reward: the reruns record one session each, and every group's
// advantages sum to 0.
static void test_collect_splice(const Env *env, const Episode *ep) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.G = 6, c.K = 3, c.p_local = 1.0f, c.local_reward = LOCAL_REWARD_SPLICE;
    c.lookahead = 1;  // ignored: a splice rerun plays its own session only
    int H = ep->n_sessions, chunks;
    TurnBuffer tb = {0};
    GrpoStepStats st;
    CHECK(collect_noisy(env, ep, &c, &tb, &st, &chunks) == 0, "grpo_collect with splice");
    CHECK(st.groups_local == H && st.turns_local == c.K * 2 * chunks,
          "splice: %d local groups, %d local turns (want %d, %d)", st.groups_local,
          st.turns_local, H, c.K * 2 * chunks);
    CHECK(fabs(st.adv_local_mean) < 1e-5, "splice: local advantages centred (mean %g)",
          st.adv_local_mean);
    CHECK(st.groups_local > st.zero_std_local, "splice: some group has a reward spread (%d of %d "
          "zero)", st.zero_std_local, st.groups_local);
    turns_free(&tb);
}

// ---- the whole collection, with the noisy teacher as the actor (no model needed) -----------

// grpo_collect end to end on the fixture: turn counts, z-scores summing to 0 per group, local
// weights, and the credit metric seeing the teacher's injected mistakes.
static void test_collect(const Env *env, const Episode *ep) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.G = 24, c.K = 3, c.p_local = 1.0f;
    int H = ep->n_sessions;
    Actor a = {.kind = ACTOR_TEACHER, .teacher_noise = 0.3f, .max_seq = 256,
               .max_new_extract = 48, .max_new_manage = 64};
    Rng rng;
    rng_seed(&rng, 11);
    TurnBuffer tb = {0};
    GrpoStepStats st;
    World w;
    world_synth_wrap(&w, env);
    CHECK(grpo_collect(&c, &w, ep, H, &a, &rng, &tb, &st) == 0, "grpo_collect runs");
    int n = turns_count(&tb), chunks = 0;
    for (int t = 1; t <= H; t++) chunks += env_num_chunks(env, ep, t);
    // two role outputs per chunk and lane: G lanes through all sessions, K per local group
    CHECK(st.turns_global == c.G * 2 * chunks, "global turns %d, want %d", st.turns_global,
          c.G * 2 * chunks);
    CHECK(st.groups_local == H && st.turns_local == c.K * 2 * chunks && n == st.turns_global +
              st.turns_local, "every session got a local group of K reruns (%d groups, %d turns)",
          st.groups_local, st.turns_local);
    CHECK(st.reward_std > 0 && st.turns_nonzero > 0, "the noisy teacher's rewards vary (std %g, "
          "%d turns with A != 0)", st.reward_std, st.turns_nonzero);
    // the advantages of one group are z-scores: they sum to 0 over the group. Every turn of a
    // (lane, session) carries the same advantage, so sum one turn per lane and session.
    double worst = 0;
    for (int t = 1; t <= H; t++) {
        double sum = 0;
        for (int lane = 0; lane < c.G; lane++)
            for (int i = 0; i < n; i++)
                if (!tb.turns[i].is_local && tb.turns[i].lane == lane &&
                    tb.turns[i].session == t) {
                    sum += tb.turns[i].advantage;
                    break;
                }
        worst = fmax(worst, fabs(sum));
    }
    for (int g = 0; g < st.groups_local; g++) {
        double sum = 0;
        for (int k = 0; k < c.K; k++)
            for (int i = 0; i < n; i++)
                if (tb.turns[i].is_local && tb.turns[i].lane == g * c.K + k) {
                    sum += tb.turns[i].advantage;
                    CHECK(tb.turns[i].weight == c.omega, "local turn weight omega");
                    break;
                }
        worst = fmax(worst, fabs(sum));
    }
    CHECK(worst < 1e-4, "every group's advantages sum to 0 (worst %g)", worst);
    // The teacher's noise makes real mistakes, and a rollout that made them scores lower: the
    // credit metric sees it.
    int known = 0, wrong = 0;
    for (int i = 0; i < n; i++) known += tb.turns[i].mistakes >= 0, wrong += tb.turns[i].mistakes > 0;
    CHECK(known == n && wrong > 0, "mistakes known for every turn (%d of %d), %d wrong", known, n,
          wrong);
    CHECK(isfinite(st.credit_global) && st.credit_global > 0,
          "global advantages correlate with minus the mistakes (%g)", st.credit_global);
    printf("collect: G %d K %d: reward %.3f +- %.3f, zero-std %d/%d global %d/%d local, "
           "credit %.3f / %.3f\n", c.G, c.K, st.reward_mean, st.reward_std, st.zero_std_global,
           st.groups_global, st.zero_std_local, st.groups_local, st.credit_global,
           st.credit_local);
    turns_free(&tb);
}

// With lookahead 1 the reruns of session 1 also play session 2, but only their own session's
// turns are recorded: the same local turn count as without, one session per local lane.
static void test_collect_lookahead(const Env *env, const Episode *ep) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.G = 6, c.K = 3, c.p_local = 1.0f, c.lookahead = 1;
    int H = ep->n_sessions, chunks;
    TurnBuffer tb = {0};
    GrpoStepStats st;
    CHECK(collect_noisy(env, ep, &c, &tb, &st, &chunks) == 0, "grpo_collect with lookahead");
    CHECK(st.groups_local == H && st.turns_local == c.K * 2 * chunks,
          "lookahead: %d local turns recorded, want %d (the rerun sessions only)", st.turns_local,
          c.K * 2 * chunks);
    int n = turns_count(&tb), mixed = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            mixed += tb.turns[i].is_local && tb.turns[j].is_local &&
                     tb.turns[i].lane == tb.turns[j].lane &&
                     tb.turns[i].session != tb.turns[j].session;
    CHECK(mixed == 0, "every local lane recorded one session (%d mixed pairs)", mixed);
    turns_free(&tb);
}

// The extractor turns of `session` of lanes 1 and 2 that differ (prompt or output) from lane
// 0's turn of the same chunk (the n-th such turn of each lane).
static int extract_outputs_differ(const TurnBuffer *tb, int session) {
    const PolicyTurn *of[3][8];
    int n[3] = {0, 0, 0}, differ = 0;
    for (int i = 0; i < turns_count(tb); i++) {
        const PolicyTurn *t = &tb->turns[i];
        if (t->session == session && t->role == ROLE_EXTRACT && t->lane >= 0 && t->lane < 3 &&
            n[t->lane] < 8)
            of[t->lane][n[t->lane]++] = t;
    }
    for (int lane = 1; lane < 3; lane++) {
        differ += n[lane] != n[0];
        for (int c = 0; c < n[lane] && c < n[0]; c++) {
            const PolicyTurn *t = of[lane][c], *u = of[0][c];
            int len = t->prompt_len + t->out_len;
            differ += len != u->prompt_len + u->out_len ||
                      memcmp(tb->tokens + t->offset, tb->tokens + u->offset,
                             sizeof(int) * (size_t)len) != 0;
        }
    }
    return differ;
}

// Three lanes of a tiny random model from one (empty) bank over sessions 1..2, every turn
// recorded. Session 2's extractor prompt is the dialogue alone, the same for every lane: with a
// shared look-ahead stream the three lanes sample the same tokens there, while session 1 (their
// own streams) differs; without it (ahead_stream -1) session 2 differs too.
static void test_ahead_stream(const Env *env, const Episode *ep) {
    ModelConfig cfg = {.V = vocab_size(env->vocab), .maxT = 256, .L = 1, .NH = 2, .C = 16};
    Model *m = cpu_backend.create(&cfg, 4, 3);
    CHECK(m != NULL, "create a tiny model");
    if (!m || ep->n_sessions < 2) {
        if (m) cpu_backend.destroy(m);
        return;
    }
    World w;
    world_synth_wrap(&w, env);
    int differ[2][2];  // [shared?][session - 1]
    for (int shared = 0; shared <= 1; shared++) {
        Lane lanes[3];
        TurnBuffer tb = {0};
        for (int i = 0; i < 3; i++) {
            CHECK(lane_init(&lanes[i], &w, ep, 1, 2, 0) == 0, "lane %d", i);
            lanes[i].ahead_stream = shared ? GRPO_AHEAD_STREAM0 + 7 : -1;
        }
        Actor a = {.kind = ACTOR_MODEL, .be = &cpu_backend, .model = m, .temperature = 1.0f,
                   .top_p = 1, .max_seq = cfg.maxT, .max_new_extract = 24, .max_new_manage = 24,
                   .record = &tb};
        Rng rng;
        rng_seed(&rng, 9);
        CHECK(rollout_run(&w, lanes, 3, &a, &rng, NULL) == 0, "rollout (shared %d)", shared);
        for (int s = 1; s <= 2; s++) differ[shared][s - 1] = extract_outputs_differ(&tb, s);
        for (int i = 0; i < 3; i++) lane_free(&lanes[i]);
        turns_free(&tb);
    }
    CHECK(differ[1][0] > 0 && differ[1][1] == 0,
          "shared look-ahead stream: session 1 differs across lanes (%d turns), session 2 is "
          "the same (%d turns differ)", differ[1][0], differ[1][1]);
    CHECK(differ[0][1] > 0, "own streams: session 2 differs across lanes (%d turns)",
          differ[0][1]);
    cpu_backend.destroy(m);
}

// ---- the loss of packed rows ---------------------------------------------------------------

static void test_rows_grad(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.beta_kl = 0.1f, c.beta_ent = 0.01f;
    TurnBuffer tb = {0};
    // turn 0: prompt 3, output 2 (global, A = 1); turn 1: prompt 2, output 3 (local, A = -0.5,
    // w = 0.5). Tokens are irrelevant here; old log-probs sit at the output positions.
    const float old[10] = {0, 0, 0, -1.0f, -2.0f, 0, 0, -0.5f, -0.7f, -0.9f};
    const float ref[10] = {0, 0, 0, -1.2f, -1.8f, 0, 0, -0.4f, -0.9f, -1.0f};
    for (int i = 0; i < 10; i++) {
        arrput(tb.tokens, TOK_FIRST_WORD);
        arrput(tb.logp_old, old[i]);
    }
    PolicyTurn t0 = {.lane = 0, .session = 1, .offset = 0, .prompt_len = 3, .out_len = 2,
                     .advantage = 1.0f, .weight = 1.0f};
    PolicyTurn t1 = {.lane = 0, .session = 1, .offset = 5, .prompt_len = 2, .out_len = 3,
                     .is_local = 1, .advantage = -0.5f, .weight = 0.5f};
    arrput(tb.turns, t0);
    arrput(tb.turns, t1);
    enum { B = 2, T = 5 };
    float logp[B * T], ent[B * T], dl[B * T], de[B * T];
    for (int i = 0; i < B * T; i++) logp[i] = 7.0f, ent[i] = 9.0f;  // off-output garbage
    const float new0[2] = {-0.9f, -2.1f}, new1[3] = {-0.45f, -0.8f, -0.85f};
    const float ent0[2] = {1.0f, 2.0f}, ent1[3] = {0.5f, 0.6f, 0.7f};
    for (int l = 0; l < 2; l++) logp[0 * T + 2 + l] = new0[l], ent[0 * T + 2 + l] = ent0[l];
    for (int l = 0; l < 3; l++) logp[1 * T + 1 + l] = new1[l], ent[1 * T + 1 + l] = ent1[l];
    const int rows[B] = {0, 1};
    const int m = 4;  // the update holds 4 turns; this packed batch 2 of them
    GrpoStats st = {0};
    CHECK(grpo_rows_grad(&c, &tb, ref, rows, B, T, logp, ent, m, dl, de, &st) == 0, "rows grad");
    // the same turns through grpo_turn_loss with the reference and scale 1/m
    float w0[2] = {0}, e0[2] = {0}, w1[3] = {0}, e1[3] = {0};
    grpo_turn_loss(&c, 2, new0, old + 3, ref + 3, ent0, 1.0f, 1.0f, 0.25f, w0, e0, NULL);
    grpo_turn_loss(&c, 3, new1, old + 7, ref + 7, ent1, -0.5f, 0.5f, 0.25f, w1, e1, NULL);
    int pos_ok = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int out0 = b == 0 && t >= 2 && t < 4, out1 = b == 1 && t >= 1 && t < 4;
            float want_l = out0 ? w0[t - 2] : out1 ? w1[t - 1] : 0.0f;
            float want_e = out0 ? e0[t - 2] : out1 ? e1[t - 1] : 0.0f;
            // catches: no KL reference passed (the KL part differs), the scale 1 instead of 1/m,
            // the local turn's weight dropped
            CHECK_CLOSE("rows dlogp", dl[b * T + t], want_l, 1e-6, 1e-9);
            CHECK_CLOSE("rows dent", de[b * T + t], want_e, 1e-6, 1e-9);
            pos_ok &= (out0 || out1) || (dl[b * T + t] == 0 && de[b * T + t] == 0);
        }
    CHECK(pos_ok, "positions without an output token get no gradient");
    CHECK(st.n_turns == 2 && st.n_tokens == 5, "stats count 2 turns, 5 tokens");
    // the KL term is really there: a turn with A = 0 still has a gradient towards pi_ref
    CHECK(fabsf(w0[0]) > 0 && st.kl > 0, "the KL term is active (kl %g)", st.kl);
    CHECK(grpo_rows_grad(&c, &tb, NULL, rows, B, T, logp, ent, m, dl, de, NULL) == -1,
          "no reference with beta_kl > 0 is an error, not a silent KL of 0");
    CHECK(grpo_rows_grad(&c, &tb, ref, rows, B, T, logp, ent, 0, dl, de, NULL) == -1,
          "an update of 0 turns is an error");
    turns_free(&tb);
}

// ---- the mistake counter on hand-written outputs -------------------------------------------

// "<t0> leo works <sep> <eos>" -> token ids (the specials by name, words through the vocab).
static int toks(const Env *env, const char *s, int *out, int max) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *w = strtok(buf, " "); w && n < max; w = strtok(NULL, " ")) {
        int k;
        if (sscanf(w, "<t%d>", &k) == 1) out[n++] = TOK_TURN0 + k;
        else if (sscanf(w, "<m%d>", &k) == 1) out[n++] = TOK_SLOT0 + k;
        else if (!strcmp(w, "<sep>")) out[n++] = TOK_SEP;
        else if (!strcmp(w, "<eos>")) out[n++] = TOK_EOS;
        else if (!strcmp(w, "<ins>")) out[n++] = TOK_INSERT;
        else if (!strcmp(w, "<upd>")) out[n++] = TOK_UPDATE;
        else if (!strcmp(w, "<del>")) out[n++] = TOK_DELETE;
        else if (!strcmp(w, "<noop>")) out[n++] = TOK_NOOP;
        else n += vocab_encode(env->vocab, w, out + n, max - n);
    }
    return n;
}

static void test_extract_mistakes(const Env *env, const Episode *ep) {
    static const struct { const char *out; int want; } cases[] = {
        {"<t0> leo works as a baker <sep> <t1> mia enjoys gardening <sep> <eos>", 0},
        {"<t1> mia enjoys gardening <sep> <t0> leo works as a baker <sep> <eos>", 0},
        {"<t0> leo works as a baker <sep> <eos>", 1},                          // a fact missed
        {"<t0> leo works as a nurse <sep> <t1> mia enjoys gardening <sep> <eos>", 1},  // wrong
        {"<t2> leo works as a baker <sep> <t1> mia enjoys gardening <sep> <eos>", 1},  // wrong turn
        {"<t0> leo works as a baker <sep> <t1> mia enjoys gardening <sep> "
         "<t2> leo enjoys gardening <sep> <eos>", 1},                           // invented
        {"<t0> leo works as a baker <sep> <t1> mia enjoys gardening <sep>", 1},  // no <eos>
        {"<eos>", 2},
    };
    int gen[128];
    World w;
    world_synth_wrap(&w, env);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = toks(env, cases[i].out, gen, 128);
        int got = credit_extract_mistakes(&w, ep, 1, 0, gen, n);
        CHECK(got == cases[i].want, "extract '%s': %d mistakes, want %d", cases[i].out, got,
              cases[i].want);
    }
    Episode no_gold = *ep;
    no_gold.gold = NULL;
    int n = toks(env, cases[0].out, gen, 128);
    CHECK(credit_extract_mistakes(&w, &no_gold, 1, 0, gen, n) == -1, "no gold facts: unknown");
}

static void test_manage_mistakes(const Env *env, const Episode *ep) {
    MemoryBank bank;
    CHECK(memory_init(&bank, env->cfg.bank_cap, env->cfg.slot_len) == 0, "bank");
    int f[64];
    MemoryOp ins = {.kind = OP_INSERT, .slot = -1, .fact = f, .evidence = DIA_CODE(1, 1)};
    ins.fact_len = toks(env, "leo works as a baker", f, 64);
    memory_apply(&bank, &ins, 1, NULL);
    // session 2's facts as the extractor gave them, and the manager's prompt (fills shown)
    Fact facts[2] = {{.evidence = DIA_CODE(2, 1), .turn = 0}, {.evidence = DIA_CODE(2, 2), .turn = 1}};
    facts[0].len = toks(env, "leo now works as a nurse , previously baker", facts[0].tokens, 64);
    facts[1].len = toks(env, "mia drives a toyota", facts[1].tokens, 64);
    Shown shown;
    int prompt[256];
    env_manage_prompt(env, &bank, facts, 2, &shown, prompt, 256);
    CHECK(shown.n >= 1 && shown.slot[0] == 0, "the baker slot is shown as <m0>");
    static const struct { const char *out; int want; } cases[] = {
        {"<upd> <m0> <t0> leo now works as a nurse , previously baker <sep> "
         "<ins> <t1> mia drives a toyota <sep> <eos>", 0},
        {"<ins> <t0> leo now works as a nurse , previously baker <sep> "
         "<ins> <t1> mia drives a toyota <sep> <eos>", 1},   // a stale duplicate kept
        {"<upd> <m0> <t0> leo now works as a nurse , previously baker <sep> <noop> <sep> <eos>", 1},
        {"<upd> <m0> <t0> leo now works as a nurse , previously baker <sep> <eos>", 1},
        {"<upd> <m0> <t0> leo now works as a nurse , previously baker <sep> "
         "<ins> <t1> mia drives a toyota <sep> <del> <m0> <sep> <eos>", 1},  // an extra op
        {"<upd> <m9> <t0> leo now works as a nurse , previously baker <sep> "
         "<ins> <t1> mia drives a toyota <sep> <eos>", 1},   // a slot never shown: invalid
        {"<upd> <m0> <t0> leo now works as a nurse , previously baker <sep> "
         "<ins> <t1> mia drives a toyota <sep>", 1},         // no <eos>
    };
    int gen[128];
    World w;
    world_synth_wrap(&w, env);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = toks(env, cases[i].out, gen, 128);
        int got = credit_manage_mistakes(&w, ep, &bank, facts, 2, &shown, gen, n);
        CHECK(got == cases[i].want, "manage '%s': %d mistakes, want %d", cases[i].out, got,
              cases[i].want);
    }
    memory_free(&bank);
}

int main(void) {
    test_stats();
    test_plan_local();
    test_assign();
    test_update_turns();
    test_credit();
    test_credit_units();
    test_rows_grad();
    const char *path = "data/fixtures/credit_tiny.json";
    Dataset ds = {0};
    char err[1024];
    int loaded = dataset_load(path, &ds, err, sizeof err) == 0;
    CHECK(loaded && ds.n == 1, "load %s: %s", path, loaded ? "" : err);
    if (loaded && ds.n == 1) {
        Env env;
        env_config_default(&env.cfg);
        Vocab *v = vocab_build(&ds, 4096);
        env.vocab = v;
        test_local_lanes(&env, &ds.episodes[0]);
        test_local_advantages(&env, &ds.episodes[0]);
        test_collect(&env, &ds.episodes[0]);
        test_collect_lookahead(&env, &ds.episodes[0]);
        test_splice_advantages(&env, &ds.episodes[0]);
        test_collect_splice(&env, &ds.episodes[0]);
        test_ahead_stream(&env, &ds.episodes[0]);
        test_extract_mistakes(&env, &ds.episodes[0]);
        test_manage_mistakes(&env, &ds.episodes[0]);
        vocab_free(v);
    }
    dataset_free(&ds);
    return check_summary("test_grpo_step");
}
