// grpo.c: LoGo-GRPO, the math only (DESIGN.md section 5; contract in grpo.h).
//
// Read top to bottom, this is the algorithm:
//   1. the knobs and their defaults (the paper's values, G halved for a small CPU budget);
//   2. group-relative advantages: the z-score of a group of rewards;
//   3. global rewards of the G rollouts, per session (evidence attribution) or per trajectory,
//      and their advantages across the G rollouts of each session;
//      (local rewards are the same z-score over the K rerollouts of one session: the caller
//       scores each copy on its own bank and calls grpo_zscore on the K numbers);
//   4. the loss of one turn, a dual-clip PPO term on a turn-level ratio plus k3 KL and an
//      entropy bonus, and its exact gradient with respect to every token log-prob.
// Rollouts, the model and the memory bank live elsewhere (rollout.c, model.c, memory.c).
#include "grpo.h"

#include <math.h>

// ---- 1. configuration ----------------------------------------------------------------------

void grpo_config_default(GrpoConfig *c) {
    c->G = 8;               // paper 16; 8 keeps a step affordable on 2 cores
    c->K = 4;
    c->p_local = 0.5f;
    c->local = 1;
    c->omega = 1.0f;
    c->reward_mode = REWARD_PER_SESSION;
    c->eps_clip = 0.2f;
    c->dual_clip = 3.0f;
    c->max_log_ratio = 3.0f;
    c->beta_kl = 1e-3f;
    c->beta_ent = 1e-3f;
    c->ppo_epochs = 2;
    c->lambda = 0.3f;
    c->rho = 0.7f;
}

// ---- 2. z-scores ---------------------------------------------------------------------------

// Added to the std so a group with a tiny spread does not blow its advantages up (the paper's
// 1e-6); a spread below it counts as zero variance and the group gets no signal at all.
#define ZSCORE_EPS 1e-6

// A_i = (r_i - mean) / (std + 1e-6), std the population std, over r[i * rstride], i < n,
// written to adv[i * astride]. Strided so the global advantages can read one column of (G, H)
// without a copy. Returns 1 when the group carries no signal (n < 2 or std < 1e-6): all A = 0.
static int zscore_strided(const float *r, int n, size_t rstride, float *adv, size_t astride) {
    if (n < 2) {
        for (int i = 0; i < n; i++) adv[(size_t)i * astride] = 0.0f;
        return 1;
    }
    double mean = 0.0;
    for (int i = 0; i < n; i++) mean += r[(size_t)i * rstride];
    mean /= n;
    // two passes: the one-pass sum of squares loses everything when rewards are nearly equal
    double var = 0.0;
    for (int i = 0; i < n; i++) {
        double d = r[(size_t)i * rstride] - mean;
        var += d * d;
    }
    double std = sqrt(var / n);
    if (!(std >= ZSCORE_EPS)) {  // also catches a NaN reward: no signal rather than NaN advantages
        for (int i = 0; i < n; i++) adv[(size_t)i * astride] = 0.0f;
        return 1;
    }
    for (int i = 0; i < n; i++)
        adv[(size_t)i * astride] = (float)((r[(size_t)i * rstride] - mean) / (std + ZSCORE_EPS));
    return 0;
}

int grpo_zscore(const float *r, int n, float *adv) { return zscore_strided(r, n, 1, adv, 1); }

// ---- 3. global rewards and advantages ------------------------------------------------------

// Every rollout i is scored once, on its final bank M_iH:
//   per-session:  r_it = mean_{q : evidence(q) in t} F1(q, M_iH) - lambda c(M_iH)   (0 F1 if none)
//   trajectory:   r_it = mean_q F1(q, M_iH) - lambda c(M_iH)                       for every t
// Per-session attribution credits session t only with the questions it holds the evidence of,
// so a rollout that botched session 3 is not rewarded for session 5 by the same number.
void grpo_global_rewards(const GrpoConfig *c, int G, int H, int Q, const float *f1,
                         const unsigned char *q_session, const float *penalty, float *r) {
    for (int i = 0; i < G; i++) {
        const float *f = f1 + (size_t)i * Q;  // (Q) this rollout's F1 per question
        float *ri = r + (size_t)i * H;        // (H)
        double pen = (double)c->lambda * penalty[i];
        if (c->reward_mode == REWARD_TRAJECTORY) {
            double s = 0.0;
            for (int q = 0; q < Q; q++) s += f[q];
            double rt = (Q > 0 ? s / Q : 0.0) - pen;
            for (int t = 0; t < H; t++) ri[t] = (float)rt;
        } else {
            for (int t = 0; t < H; t++) {
                double s = 0.0;
                int n = 0;
                for (int q = 0; q < Q; q++) {
                    if (q_session[(size_t)q * H + t]) {
                        s += f[q];
                        n++;
                    }
                }
                ri[t] = (float)((n > 0 ? s / n : 0.0) - pen);
            }
        }
    }
}

// The group of session t is the G rollouts at that session: A_it = zscore_i(r_.t).
int grpo_global_advantages(int G, int H, const float *r, float *adv) {
    int zero = 0;
    for (int t = 0; t < H; t++) zero += zscore_strided(r + t, G, (size_t)H, adv + t, (size_t)H);
    return zero;
}

// ---- 4. the turn loss and its gradient -----------------------------------------------------

// One turn = one role output of L tokens, trained as one action (the ratio is per turn):
//   s     = (1/L) sum_l (logp_new_l - logp_old_l)
//   rho   = exp(min(m, s))                                  m = max_log_ratio
//   pg    = -min(rho A, clip(rho, 1-eps, 1+eps) A)
//   pg    = min(pg, -c A)            if A < 0               c = dual_clip
//   k3_l  = exp(d_l) - d_l - 1,  d_l = logp_ref_l - logp_new_l   (>= 0, unbiased KL estimate)
//   loss  = w pg + beta_kl (1/L) sum_l k3_l - beta_ent (1/L) sum_l H_l
// and the batch objective is sum over turns of scale * loss.
//
// Gradient, branch by branch (d pg / d rho; "clipped" = the clipped term is the active one,
// which is constant in rho, so its gradient is 0):
//   A > 0:  rho <= 1+eps  -> -A            rho > 1+eps  -> 0  (clipped)
//   A < 0:  rho <  1-eps  -> 0 (clipped)   1-eps <= rho <= c -> -A    rho > c -> 0 (dual clip)
//   A = 0:  0
// (for A < 0 above 1+eps the min picks rho A itself, so only the dual clip bounds it).
// The turn ratio depends on every token through the mean:
//   d rho / d logp_new_l = rho / L  if s < m,  0 if the cap is active (s >= m).
// KL: d k3_l / d logp_new_l = -exp(d_l) + 1 = 1 - exp(logp_ref_l - logp_new_l).
// Entropy enters the model's backward as its own coefficient: d loss / d H_l = -beta_ent / L.
// So, per token:
//   dlogp_l += scale * ( w (d pg / d rho) (d rho / d logp_l) + beta_kl / L (1 - exp(d_l)) )
//   dent_l  += scale * ( -beta_ent / L )
void grpo_turn_loss(const GrpoConfig *c, int L, const float *logp_new, const float *logp_old,
                    const float *logp_ref, const float *entropy, float advantage, float weight,
                    float scale, float *dlogp, float *dent, GrpoStats *st) {
    if (L <= 0) return;
    const double A = advantage, eps = c->eps_clip, dual = c->dual_clip;

    // turn-level log-ratio, accumulated in double: L can be hundreds of tokens
    double s = 0.0;
    for (int l = 0; l < L; l++) s += (double)logp_new[l] - (double)logp_old[l];
    s /= L;
    // the cap keeps exp() finite when the policy has moved far; beyond it rho is a constant
    int capped = s >= c->max_log_ratio;
    double rho = exp(capped ? (double)c->max_log_ratio : s);

    double pg, dpg_drho;
    int clipped = 0;
    if (A > 0) {
        if (rho > 1.0 + eps) {  // min(rho A, (1+eps) A) = (1+eps) A
            pg = -(1.0 + eps) * A;
            dpg_drho = 0.0;
            clipped = 1;
        } else {  // rho A <= clip(rho) A: the unclipped term, also when rho < 1-eps
            pg = -rho * A;
            dpg_drho = -A;
        }
    } else if (A < 0) {
        if (rho < 1.0 - eps) {  // min(rho A, (1-eps) A) = (1-eps) A, since A < 0
            pg = -(1.0 - eps) * A;
            dpg_drho = 0.0;
            clipped = 1;
        } else if (rho > dual) {  // -rho A = rho |A| grows without bound: cap it at c |A|
            pg = -dual * A;
            dpg_drho = 0.0;
            clipped = 1;
        } else {
            pg = -rho * A;
            dpg_drho = -A;
        }
    } else {
        pg = 0.0;
        dpg_drho = 0.0;
    }
    // the cap cuts the gradient too; with the defaults (rho = e^3 > 1+eps and > c) a capped
    // turn with A != 0 is already clipped, but a smaller cap can bind on its own
    if (capped && A != 0 && !clipped) clipped = 1;
    double drho_dlogp = capped ? 0.0 : rho / L;
    double g_pg = (double)weight * dpg_drho * drho_dlogp;  // same for every token of the turn

    const double bkl_L = (double)c->beta_kl / L, bent_L = (double)c->beta_ent / L;
    double kl = 0.0, ent = 0.0;
    for (int l = 0; l < L; l++) {
        double g = g_pg;
        if (logp_ref) {
            double d = (double)logp_ref[l] - (double)logp_new[l];
            double ed = exp(d);
            kl += ed - d - 1.0;
            g += bkl_L * (1.0 - ed);
        }
        if (entropy) ent += entropy[l];
        dlogp[l] += (float)(scale * g);
        if (dent) dent[l] += (float)(-(double)scale * bent_L);
    }

    if (st) {
        double turn_loss = weight * pg + bkl_L * kl - bent_L * ent;
        st->loss += scale * turn_loss;
        st->kl += kl;
        st->entropy += ent;
        st->ratio += rho;
        st->clipped += clipped;
        st->n_turns += 1;
        st->n_tokens += L;
    }
}
