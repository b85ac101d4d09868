// tests/test_grpo.c: the LoGo-GRPO math of grpo.c against hand computation and finite differences.
//
// z-scores (zero-variance, singleton, n = 2 groups), global rewards in both modes with a session
// that holds no evidence, global advantages with a zero-variance session, and the turn loss:
// its gradient against central differences of the loss it reports, in every branch of the
// dual clip and with the log-ratio cap active, the k3 KL and entropy terms, the clipped counts,
// and += accumulation.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "grpo.h"
#include "tests/check.h"

// ---- z-scores ------------------------------------------------------------------------------

static void test_zscore(void) {
    float adv[4];
    // {1,2,3,4}: mean 2.5, population variance 1.25
    const float r4[4] = {1, 2, 3, 4};
    int z = grpo_zscore(r4, 4, adv);
    CHECK(z == 0, "zscore {1,2,3,4}: returned %d, want 0", z);
    double sd = sqrt(1.25) + 1e-6;
    const double want4[4] = {-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd};
    double err = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_CLOSE("zscore {1,2,3,4}", adv[i], want4[i], 1e-6, 1e-7);
        err = fmax(err, fabs(adv[i] - want4[i]));
    }
    printf("zscore {1,2,3,4}: adv %.6f %.6f %.6f %.6f, max err %.2g\n", adv[0], adv[1], adv[2],
           adv[3], err);

    // n = 2: {0, 1}: mean 0.5, std 0.5 -> -+0.5 / (0.5 + 1e-6)
    const float r2[2] = {0, 1};
    z = grpo_zscore(r2, 2, adv);
    CHECK(z == 0, "zscore n=2: returned %d", z);
    CHECK_CLOSE("zscore n=2 [0]", adv[0], -0.5 / (0.5 + 1e-6), 1e-6, 1e-7);
    CHECK_CLOSE("zscore n=2 [1]", adv[1], 0.5 / (0.5 + 1e-6), 1e-6, 1e-7);

    // zero variance: all equal -> 0, returns 1
    const float r3[3] = {0.3f, 0.3f, 0.3f};
    for (int i = 0; i < 3; i++) adv[i] = 42;
    z = grpo_zscore(r3, 3, adv);
    CHECK(z == 1, "zscore zero variance: returned %d, want 1", z);
    CHECK(adv[0] == 0 && adv[1] == 0 && adv[2] == 0, "zscore zero variance: adv %g %g %g", adv[0],
          adv[1], adv[2]);

    // a spread below 1e-6 counts as none (1 and the next float: std 6e-8)
    const float rt[2] = {1.0f, nextafterf(1.0f, 2.0f)};
    z = grpo_zscore(rt, 2, adv);
    CHECK(z == 1 && adv[0] == 0 && adv[1] == 0, "zscore tiny spread: z %d adv %g %g", z, adv[0],
          adv[1]);

    // a NaN reward gives a group without signal, not NaN advantages
    const float rn[3] = {1.0f, NAN, 2.0f};
    z = grpo_zscore(rn, 3, adv);
    CHECK(z == 1 && adv[0] == 0 && adv[1] == 0 && adv[2] == 0, "zscore NaN: z %d", z);

    // singleton -> 0, returns 1
    const float r1[1] = {5};
    adv[0] = 42;
    z = grpo_zscore(r1, 1, adv);
    CHECK(z == 1 && adv[0] == 0, "zscore singleton: z %d adv %g", z, adv[0]);

    // the advantages of a group sum to 0 and have population std ~1
    const float r5[5] = {0.1f, 0.7f, 0.2f, 0.9f, 0.4f};
    float a5[5];
    grpo_zscore(r5, 5, a5);
    double s = 0, ss = 0;
    for (int i = 0; i < 5; i++) s += a5[i], ss += (double)a5[i] * a5[i];
    CHECK_CLOSE("zscore sum", s, 0.0, 0, 1e-6);
    CHECK_CLOSE("zscore var", ss / 5, 1.0, 1e-4, 0);
}

// ---- global rewards and advantages -----------------------------------------------------------

static void test_global(void) {
    GrpoConfig c;
    grpo_config_default(&c);  // lambda 0.3
    enum { G = 3, H = 3, Q = 3 };
    // q0: evidence in session 1; q1: sessions 1 and 3 (multi-hop); q2: session 3; session 2: none
    const unsigned char qs[Q * H] = {1, 0, 0, 1, 0, 1, 0, 0, 1};
    const float f1[G * Q] = {1.0f, 0.5f, 0.0f,   // rollout 0
                             0.0f, 1.0f, 1.0f,   // rollout 1
                             0.5f, 0.5f, 0.5f};  // rollout 2
    const float pen[G] = {0.0f, 0.5f, 0.0f};
    float r[G * H], adv[G * H];

    c.reward_mode = REWARD_PER_SESSION;
    grpo_global_rewards(&c, G, H, Q, f1, qs, pen, r);
    // t1 = mean(q0, q1), t2 = 0 (no questions), t3 = mean(q1, q2); minus 0.3 * penalty
    const double want_s[G * H] = {0.75, 0.0, 0.25,  //
                                  0.5 - 0.15, -0.15, 1.0 - 0.15,  //
                                  0.5, 0.0, 0.5};
    double err = 0;
    for (int k = 0; k < G * H; k++) {
        CHECK_CLOSE("per-session reward", r[k], want_s[k], 1e-6, 1e-7);
        err = fmax(err, fabs(r[k] - want_s[k]));
    }
    printf("per-session rewards: max err %.2g\n", err);

    c.reward_mode = REWARD_TRAJECTORY;
    grpo_global_rewards(&c, G, H, Q, f1, qs, pen, r);
    const double want_t[G] = {0.5, 2.0 / 3.0 - 0.15, 0.5};
    for (int i = 0; i < G; i++)
        for (int t = 0; t < H; t++) CHECK_CLOSE("trajectory reward", r[i * H + t], want_t[i], 1e-6, 1e-7);

    // advantages on per-session rewards without penalties: session 2 is 0 everywhere
    const float nopen[G] = {0, 0, 0};
    c.reward_mode = REWARD_PER_SESSION;
    grpo_global_rewards(&c, G, H, Q, f1, qs, nopen, r);
    int zero = grpo_global_advantages(G, H, r, adv);
    CHECK(zero == 1, "global advantages: %d zero-variance sessions, want 1", zero);
    for (int i = 0; i < G; i++) CHECK(adv[i * H + 1] == 0, "session 2 adv[%d] = %g", i, adv[i * H + 1]);
    // session 1: {0.75, 0.5, 0.5} -> mean 7/12, std sqrt(2)/12; session 3: {0.25, 1.0, 0.5}
    for (int t = 0; t < H; t += 2) {
        float col[G], want[G];
        for (int i = 0; i < G; i++) col[i] = r[i * H + t];
        grpo_zscore(col, G, want);
        for (int i = 0; i < G; i++) CHECK_CLOSE("global adv = column zscore", adv[i * H + t], want[i], 0, 0);
    }
    double sd1 = sqrt(2.0) / 12.0 + 1e-6;
    CHECK_CLOSE("global adv s1 r0", adv[0], (0.75 - 7.0 / 12.0) / sd1, 1e-5, 1e-6);
    CHECK_CLOSE("global adv s1 r1", adv[H], (0.5 - 7.0 / 12.0) / sd1, 1e-5, 1e-6);
    printf("global adv session 1: %.6f %.6f %.6f (hand %.6f %.6f)\n", adv[0], adv[H], adv[2 * H],
           (0.75 - 7.0 / 12.0) / sd1, (0.5 - 7.0 / 12.0) / sd1);

    // hand-made (G=3, H=2): column 2 constant
    const float r2[3 * 2] = {1, 0.5f, 2, 0.5f, 3, 0.5f};
    float a2[3 * 2];
    zero = grpo_global_advantages(3, 2, r2, a2);
    double s23 = sqrt(2.0 / 3.0) + 1e-6;
    CHECK(zero == 1, "hand (3,2): zero-variance %d", zero);
    CHECK_CLOSE("hand (3,2) a00", a2[0], -1.0 / s23, 1e-6, 1e-7);
    CHECK_CLOSE("hand (3,2) a10", a2[2], 0.0, 0, 1e-7);
    CHECK_CLOSE("hand (3,2) a20", a2[4], 1.0 / s23, 1e-6, 1e-7);
    CHECK(a2[1] == 0 && a2[3] == 0 && a2[5] == 0, "hand (3,2): constant column not 0");
}

// ---- the turn loss -----------------------------------------------------------------------------

enum { TL = 5 };

// Every value is a multiple of 2^-10 of modest size, so logp +- H_FD is exact in float and the
// finite differences only carry the O(h^2) truncation and the double rounding of the loss.
#define H_FD (1.0 / 1024.0)

typedef struct {
    float lnew[TL], lold[TL], lref[TL], ent[TL];
} LossTurn;

// A turn whose mean log-ratio is exactly s (s on the 2^-10 grid).
static LossTurn make_turn(double s) {
    static const float off[TL] = {0.25f, -0.125f, 0.0f, 0.125f, -0.25f};  // sums to 0
    LossTurn t;
    for (int l = 0; l < TL; l++) {
        t.lold[l] = -0.5f * (float)(l + 1) - 0.25f;
        t.lnew[l] = t.lold[l] + (float)s + off[l];
        t.lref[l] = t.lold[l] + 0.375f - 0.1875f * (float)l;  // differs from lnew: KL > 0
        t.ent[l] = 1.0f + 0.25f * (float)l;
    }
    return t;
}

static double turn_loss_value(const GrpoConfig *c, const LossTurn *t, float A, float w, float scale) {
    float dl[TL] = {0}, de[TL] = {0};
    GrpoStats st;
    memset(&st, 0, sizeof st);
    grpo_turn_loss(c, TL, t->lnew, t->lold, t->lref, t->ent, A, w, scale, dl, de, &st);
    return st.loss;
}

// Checks dlogp and dent against central differences of st.loss, the clipped count and the
// policy-gradient part against its hand value (w * dpg/drho * drho/dlogp, all tokens equal).
static void check_branch(const char *name, const GrpoConfig *c, double s, float A, int want_clipped,
                         double want_dpg_drho, int want_capped) {
    const float w = 0.5f, scale = 0.25f;
    LossTurn t = make_turn(s);
    float dl[TL] = {0}, de[TL] = {0};
    GrpoStats st;
    memset(&st, 0, sizeof st);
    grpo_turn_loss(c, TL, t.lnew, t.lold, t.lref, t.ent, A, w, scale, dl, de, &st);
    CHECK(st.clipped == want_clipped, "%s: clipped %d, want %d", name, st.clipped, want_clipped);
    CHECK(st.n_turns == 1 && st.n_tokens == TL, "%s: counts %d %d", name, st.n_turns, st.n_tokens);

    double rho = exp(want_capped ? c->max_log_ratio : s);
    CHECK_CLOSE("ratio", st.ratio, rho, 1e-12, 0);
    double err = 0, errh = 0, gmax = 0;
    for (int l = 0; l < TL; l++) {
        LossTurn tp = t, tm = t;
        tp.lnew[l] = (float)(t.lnew[l] + H_FD);
        tm.lnew[l] = (float)(t.lnew[l] - H_FD);
        double fd = (turn_loss_value(c, &tp, A, w, scale) - turn_loss_value(c, &tm, A, w, scale)) /
                    (2 * H_FD);
        err = fmax(err, fabs(fd - dl[l]));
        gmax = fmax(gmax, fabs(dl[l]));
        CHECK(fabs(fd - dl[l]) <= 2e-8 + 1e-6 * fabs(fd), "%s: dlogp[%d] %.9g vs fd %.9g", name, l,
              dl[l], fd);

        // hand value: scale * (w dpg/drho rho/L [not capped] + beta_kl/L (1 - exp(ref - new)))
        double d = (double)t.lref[l] - (double)t.lnew[l];
        double hand = scale * (w * want_dpg_drho * (want_capped ? 0.0 : rho / TL) +
                               c->beta_kl / TL * (1 - exp(d)));
        errh = fmax(errh, fabs(hand - dl[l]));
        CHECK(fabs(hand - dl[l]) <= 1e-7 + 1e-6 * fabs(hand), "%s: dlogp[%d] %.9g vs hand %.9g",
              name, l, dl[l], hand);

        // entropy: the loss is linear in it with coefficient -scale * beta_ent / L
        LossTurn ep = t, em = t;
        ep.ent[l] = (float)(t.ent[l] + H_FD);
        em.ent[l] = (float)(t.ent[l] - H_FD);
        double fde = (turn_loss_value(c, &ep, A, w, scale) - turn_loss_value(c, &em, A, w, scale)) /
                     (2 * H_FD);
        CHECK_CLOSE("dent vs fd", de[l], fde, 1e-6, 1e-9);
        CHECK(de[l] == (float)(-(double)scale * c->beta_ent / TL), "%s: dent[%d] = %.9g", name, l,
              de[l]);
    }
    printf("%-34s rho %7.4f clipped %d  max|dlogp| %.3g  err vs fd %.2g  vs hand %.2g\n", name, rho,
           st.clipped, gmax, err, errh);
}

static void test_turn_branches(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    // larger than the defaults so the KL and entropy gradients are well above the fd error
    c.beta_kl = 0.1f;
    c.beta_ent = 0.05f;
    //                                       s        A    clipped  dpg/drho   capped
    check_branch("A>0 unclipped (rho<1+eps)", &c, 0.0625, 1.5f, 0, -1.5, 0);
    check_branch("A>0 unclipped (rho<1-eps)", &c, -0.5, 1.5f, 0, -1.5, 0);
    check_branch("A>0 clipped (rho>1+eps)", &c, 0.25, 1.5f, 1, 0.0, 0);
    check_branch("A<0 unclipped (rho~1)", &c, 0.0625, -0.75f, 0, 0.75, 0);
    check_branch("A<0 unclipped (1+eps<rho<c)", &c, 0.5, -0.75f, 0, 0.75, 0);
    check_branch("A<0 clipped (rho<1-eps)", &c, -0.5, -0.75f, 1, 0.0, 0);
    check_branch("A<0 dual-clipped (rho>c)", &c, 1.5, -0.75f, 1, 0.0, 0);
    check_branch("A<0 capped + dual (s>3)", &c, 3.5, -0.75f, 1, 0.0, 1);
    check_branch("A=0 (KL and entropy only)", &c, 0.25, 0.0f, 0, 0.0, 0);
    // a cap below log(1+eps): the cap alone cuts the gradient (rho = e^0.125 = 1.133)
    GrpoConfig cc = c;
    cc.max_log_ratio = 0.125f;
    check_branch("A>0 log-ratio cap only", &cc, 0.25, 1.5f, 1, 0.0, 1);
    check_branch("A>0 just under the cap", &cc, 0.0625, 1.5f, 0, -1.5, 0);
}

// The loss values in each branch, by hand (beta_kl = beta_ent = 0, w = 1, scale = 1).
static void test_turn_values(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.beta_kl = 0;
    c.beta_ent = 0;
    struct {
        double s;
        float A;
        double want;
    } cases[] = {
        {0.0625, 2.0f, -exp(0.0625) * 2},  // -rho A
        {0.25, 2.0f, -1.2 * 2},            // -(1+eps) A
        {-0.5, -2.0f, 0.8 * 2},            // -(1-eps) A
        {0.5, -2.0f, exp(0.5) * 2},        // -rho A
        {1.5, -2.0f, 3.0 * 2},             // -c A
        {3.5, -2.0f, 3.0 * 2},             // capped at e^3 = 20.1 > c: -c A
        {3.5, 2.0f, -1.2 * 2},             // capped, clipped
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        LossTurn t = make_turn(cases[k].s);
        double got = turn_loss_value(&c, &t, cases[k].A, 1.0f, 1.0f);
        CHECK_CLOSE("pg loss value", got, cases[k].want, 1e-6, 1e-7);
    }
    // omega and scale multiply the policy term
    LossTurn t = make_turn(0.0625);
    CHECK_CLOSE("pg loss w scale", turn_loss_value(&c, &t, 2.0f, 0.5f, 0.25f),
                0.25 * 0.5 * -exp(0.0625) * 2, 1e-6, 1e-8);
}

// k3 = exp(d) - d - 1, d = ref - new: 0 at equality, positive otherwise.
static void test_kl_entropy(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    c.beta_kl = 1.0f;
    c.beta_ent = 0.0f;
    const float lold[1] = {-1.0f};
    struct {
        float lnew, lref;
        double want;
    } cases[] = {
        {-1.0f, -1.0f, 0.0},                      // same policy
        {-1.0f, -0.5f, exp(0.5) - 0.5 - 1.0},     // d = 0.5: 0.148721271
        {-1.0f, -2.0f, exp(-1.0) + 1.0 - 1.0},    // d = -1:  0.367879441
        {-3.0f, -0.5f, exp(2.5) - 2.5 - 1.0},     // d = 2.5: 8.682493960
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float dl[1] = {0};
        GrpoStats st;
        memset(&st, 0, sizeof st);
        const float lnew[1] = {cases[k].lnew}, lref[1] = {cases[k].lref};
        grpo_turn_loss(&c, 1, lnew, lold, lref, NULL, 0.0f, 1.0f, 1.0f, dl, NULL, &st);
        CHECK_CLOSE("k3 value", st.kl, cases[k].want, 1e-7, 1e-12);
        CHECK_CLOSE("k3 loss", st.loss, cases[k].want, 1e-7, 1e-12);
        CHECK(k == 0 ? st.kl == 0 : st.kl > 0, "k3 sign: %g", st.kl);
        double d = (double)cases[k].lref - cases[k].lnew;
        CHECK_CLOSE("dk3/dlogp = 1 - exp(d)", dl[0], 1 - exp(d), 1e-6, 1e-9);
    }
    printf("k3 at d = 0, 0.5, -1, 2.5: %.9f %.9f %.9f %.9f\n", cases[0].want, cases[1].want,
           cases[2].want, cases[3].want);

    // entropy bonus: loss -= beta_ent * mean entropy; coefficient -scale beta_ent / L per token
    c.beta_kl = 0.0f;
    c.beta_ent = 0.5f;
    LossTurn t = make_turn(0.0);
    float dl[TL] = {0}, de[TL] = {0};
    GrpoStats st;
    memset(&st, 0, sizeof st);
    grpo_turn_loss(&c, TL, t.lnew, t.lold, NULL, t.ent, 0.0f, 1.0f, 0.5f, dl, de, &st);
    double ment = 0;
    for (int l = 0; l < TL; l++) ment += t.ent[l];
    CHECK_CLOSE("entropy stat", st.entropy, ment, 1e-12, 0);
    ment /= TL;
    CHECK_CLOSE("entropy loss", st.loss, -0.5 * 0.5 * ment, 1e-7, 0);
    for (int l = 0; l < TL; l++) {
        CHECK(de[l] == (float)(-0.5 * 0.5 / TL), "dent[%d] = %.9g", l, de[l]);
        CHECK(dl[l] == 0, "A = 0, no ref: dlogp[%d] = %g", l, dl[l]);
    }
}

// dlogp and dent are accumulated (+=), the stats too; L = 0 is a no-op.
static void test_accumulate(void) {
    GrpoConfig c;
    grpo_config_default(&c);
    LossTurn t = make_turn(0.0625);
    float d1[TL] = {0}, e1[TL] = {0}, d2[TL] = {0}, e2[TL] = {0};
    GrpoStats s1, s2;
    memset(&s1, 0, sizeof s1);
    memset(&s2, 0, sizeof s2);
    grpo_turn_loss(&c, TL, t.lnew, t.lold, t.lref, t.ent, 1.0f, 1.0f, 0.5f, d1, e1, &s1);
    grpo_turn_loss(&c, TL, t.lnew, t.lold, t.lref, t.ent, 1.0f, 1.0f, 0.5f, d2, e2, &s2);
    grpo_turn_loss(&c, TL, t.lnew, t.lold, t.lref, t.ent, 1.0f, 1.0f, 0.5f, d2, e2, &s2);
    for (int l = 0; l < TL; l++) {
        CHECK(d1[l] != 0 && d2[l] == 2 * d1[l], "dlogp += : %g vs %g", d2[l], d1[l]);
        CHECK(e1[l] != 0 && e2[l] == 2 * e1[l], "dent += : %g vs %g", e2[l], e1[l]);
    }
    CHECK(s2.n_turns == 2 && s2.n_tokens == 2 * TL, "stats counts %d %d", s2.n_turns, s2.n_tokens);
    CHECK_CLOSE("stats loss", s2.loss, 2 * s1.loss, 1e-12, 0);
    CHECK_CLOSE("stats ratio", s2.ratio, 2 * s1.ratio, 1e-12, 0);

    // st and dent may be NULL: the gradient is the same
    float d3[TL] = {0};
    grpo_turn_loss(&c, TL, t.lnew, t.lold, t.lref, t.ent, 1.0f, 1.0f, 0.5f, d3, NULL, NULL);
    for (int l = 0; l < TL; l++) CHECK(d3[l] == d1[l], "NULL st/dent: dlogp[%d] %g vs %g", l, d3[l], d1[l]);

    GrpoStats s0 = s2;
    float before = d2[0];
    grpo_turn_loss(&c, 0, t.lnew, t.lold, t.lref, t.ent, 1.0f, 1.0f, 0.5f, d2, e2, &s2);
    CHECK(memcmp(&s0, &s2, sizeof s0) == 0 && d2[0] == before, "L = 0 changed something");
}

int main(void) {
    test_zscore();
    test_global();
    test_turn_branches();
    test_turn_values();
    test_kl_entropy();
    test_accumulate();
    return check_summary("test_grpo");
}
