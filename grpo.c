// grpo.c: LoGo-GRPO, the math only (DESIGN.md section 5; contract in grpo.h).
//
// Read top to bottom, this is the algorithm (the step's part in sections 5 and 6):
//   1. the knobs and their defaults (the paper's values, G halved for a small CPU budget);
//   2. group-relative advantages: the z-score of a group of rewards;
//   3. global rewards of the G rollouts, per session (evidence attribution) or per trajectory,
//      and their advantages across the G rollouts of each session;
//      (local rewards are the same z-score over the K rerollouts of one session, each scored
//       on its own bank or, with the splice reward, on its source's final bank with the
//       rerun's session swapped in: section 5);
//   4. the loss of one turn, a dual-clip PPO term on a turn-level ratio plus k3 KL and an
//      entropy bonus, and its exact gradient with respect to every token log-prob;
//   5. the step: G rollouts, their rewards and global advantages, the local groups (K reruns
//      of a session from a snapshot before it) and their advantages, each turn's A and weight;
//   6. the update's side: which turns enter it, and the coefficients of a packed batch of turns.
// How lanes run, the model and the memory bank live elsewhere (rollout.c, model.c, memory.c);
// train.c's ppo_update runs the epochs and minibatches over the backend.
#include "grpo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

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
    // the paper's; skip trained as well at ~40% less step time over 2 seeds (docs/design.md)
    // with fewer (cleaner) AdamW updates per step; AdamW divides out its ~3x larger gradient
    c->zero_adv = ZERO_ADV_DILUTE;
    c->lookahead = 0;
    c->local_reward = LOCAL_REWARD_RERUN;
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

void grpo_stats_sum(const Dist *d, GrpoStats *st, long *tokens) {
    if (dist_size(d) == 1) return;
    double x[8] = {st->loss, st->kl, st->entropy, st->ratio, st->clipped, st->n_turns,
                   st->n_tokens, tokens ? (double)*tokens : 0};
    dist_sum_double(d, x, 8);
    st->loss = x[0], st->kl = x[1], st->entropy = x[2], st->ratio = x[3];
    st->clipped = (int)x[4], st->n_turns = (int)x[5], st->n_tokens = (int)x[6];
    if (tokens) *tokens = (long)x[7];
}

// ---- 5. the step ---------------------------------------------------------------------------

int grpo_plan_local(const GrpoConfig *c, int G, int H, Rng *rng, int *session, int *src) {
    if (!c->local || c->K < 2 || G < 1) return 0;
    int n = 0;
    for (int t = 1; t <= H; t++) {
        if (rng_float(rng) >= c->p_local) continue;
        session[n] = t;
        src[n] = (int)rng_below(rng, (uint32_t)G);
        n++;
    }
    return n;
}

// A local group compares actions taken in the very same state: every rerun of session t starts
// from the bank the source rollout had when it ENTERED session t, i.e. after session t - 1. With
// a lookahead the rerun plays on (same policy, unrecorded) so its reward also sees what its
// writes cost in the next sessions; only session t's turns get the advantage. The K reruns
// play the look-ahead sessions on one shared sampling stream (common random numbers): where
// their banks agree they sample the same continuation, so the group's reward spread comes from
// session t rather than from independent luck afterwards.
int grpo_local_lanes(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                     int n_groups, const int *session, const int *src, const Lane *global,
                     Lane *local) {
    int made = 0, K = c->K;
    int ahead = c->lookahead > 0 && c->local_reward == LOCAL_REWARD_RERUN ? c->lookahead : 0;
    for (int g = 0; g < n_groups; g++) {
        int t = session[g], last = t + ahead < H ? t + ahead : H;
        const void *snap = lane_snapshot(&global[src[g]], t - 1);
        if (!snap) {
            fprintf(stderr, "grpo: rollout %d has no snapshot before session %d\n", src[g], t);
            goto fail;
        }
        for (int k = 0; k < K; k++, made++) {
            Lane *l = &local[g * K + k];
            if (lane_init(l, env, ep, t, last, 0) != 0) goto fail;
            lane_restore(l, snap);
            l->is_local = 1;
            l->record_through = t;
            // the group's look-ahead shares one stream, beyond the lane ids of any step
            if (ahead > 0) l->ahead_stream = GRPO_AHEAD_STREAM0 + g;
        }
    }
    return 0;
fail:
    for (int i = 0; i < made; i++) lane_free(&local[i]);
    return -1;
}

int grpo_active_questions(const Episode *ep, int h, int *qidx) {
    int n = 0;
    for (int q = 0; q < ep->n_qa; q++)
        if (question_active(&ep->qa[q], h)) qidx[n++] = q;
    return n;
}

double grpo_bank_reward(const GrpoConfig *c, const World *env, const Episode *ep,
                        const MemoryBank *bank, int h, const int *qidx, int nq, float *f1_out) {
    QAScore *sc = malloc(sizeof(QAScore) * (size_t)(nq > 0 ? nq : 1));
    if (!sc || world_answer(env, bank, ep, h, qidx, nq, sc) != 0) {  // the world said why
        free(sc);
        return NAN;
    }
    double s = 0;
    for (int i = 0; i < nq; i++) {
        double f = sc[i].f1;
        if (f1_out) f1_out[i] = (float)f;
        s += f;
    }
    free(sc);
    double pen = world_compression_penalty(env, bank, world_words_seen(env, ep, h));
    return (nq ? s / nq : 0.0) - (double)c->lambda * pen;
}

int grpo_assign_advantages(const GrpoConfig *c, int G, int H, const float *gadv, int n_local,
                           const float *ladv, PolicyTurn *turns, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        PolicyTurn *pt = &turns[i];
        int ok;
        if (pt->is_local) {
            ok = pt->lane >= 0 && pt->lane < n_local;
            pt->advantage = ok ? ladv[pt->lane] : 0.0f;
            pt->weight = ok ? c->omega : 0.0f;
        } else {
            ok = pt->lane >= 0 && pt->lane < G && pt->session >= 1 && pt->session <= H;
            pt->advantage = ok ? gadv[(size_t)pt->lane * H + (size_t)(pt->session - 1)] : 0.0f;
            pt->weight = ok ? 1.0f : 0.0f;
        }
        bad += !ok;
    }
    return bad;
}

void grpo_credit(const PolicyTurn *turns, int n, double *credit_global, double *credit_local) {
    double *x = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    double *y = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    *credit_global = *credit_local = NAN;
    if (x && y) {
        for (int local = 0; local <= 1; local++) {
            int m = 0;
            for (int i = 0; i < n; i++) {
                if (turns[i].is_local != local || turns[i].mistakes < 0) continue;
                x[m] = turns[i].advantage;
                y[m] = -(double)turns[i].mistakes;
                m++;
            }
            *(local ? credit_local : credit_global) = stats_pearson(x, y, m);
        }
    }
    free(x);
    free(y);
}

void grpo_credit_units(const PolicyTurn *turns, int n, int G, int H, int n_local, int K,
                       double *credit_global, double *credit_local) {
    *credit_global = *credit_local = NAN;
    if (K < 1) return;
    // units: global (lane, t) at lane * H + t - 1, then local rerun j at G * H + j; groups:
    // session t - 1 for global units, H + j / K for local ones
    int nu = G * H + n_local, ng = H + (n_local + K - 1) / K;
    size_t a = (size_t)(nu > 0 ? nu : 1), b = (size_t)(ng > 0 ? ng : 1);
    double *adv = calloc(a, sizeof(double)), *mis = calloc(a, sizeof(double));
    double *gsum = calloc(b, sizeof(double)), *x = malloc(a * sizeof(double));
    double *y = malloc(a * sizeof(double));
    int *known = calloc(a, sizeof(int)), *gcnt = calloc(b, sizeof(int));
    if (!adv || !mis || !gsum || !x || !y || !known || !gcnt) goto done;
    for (int i = 0; i < n; i++) {
        const PolicyTurn *pt = &turns[i];
        int u = -1;
        if (!pt->is_local && pt->lane >= 0 && pt->lane < G && pt->session >= 1 && pt->session <= H)
            u = pt->lane * H + pt->session - 1;
        else if (pt->is_local && pt->lane >= 0 && pt->lane < n_local)
            u = G * H + pt->lane;
        if (u < 0 || pt->mistakes < 0) continue;
        adv[u] = pt->advantage;  // shared by the unit's turns
        mis[u] += pt->mistakes;
        known[u] = 1;
    }
    for (int u = 0; u < nu; u++) {
        int g = u < G * H ? u % H : H + (u - G * H) / K;
        if (known[u]) gsum[g] += mis[u], gcnt[g]++;
    }
    for (int local = 0; local <= 1; local++) {
        int m = 0;
        for (int u = local ? G * H : 0; u < (local ? nu : G * H); u++) {
            int g = u < G * H ? u % H : H + (u - G * H) / K;
            if (!known[u]) continue;
            x[m] = adv[u];
            y[m] = -(mis[u] - gsum[g] / gcnt[g]);
            m++;
        }
        *(local ? credit_local : credit_global) = stats_pearson(x, y, m);
    }
done:
    free(adv), free(mis), free(gsum), free(x), free(y), free(known), free(gcnt);
}

static void mean_std(const float *x, int n, double *mean, double *std) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += x[i];
    double m = n ? s / n : 0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *std = n ? sqrt(ss / n) : 0;
}

// Global part: score every final bank; per-session (or trajectory) rewards; adv (G, H).
static int score_global(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                        const Lane *lanes, float *adv, GrpoStepStats *st) {
    int G = c->G, nqa = ep->n_qa > 0 ? ep->n_qa : 1, rc = -1;
    int *qidx = malloc(sizeof(int) * (size_t)nqa);
    float *f1 = calloc((size_t)G * (size_t)nqa, sizeof(float));
    unsigned char *q_session = calloc((size_t)nqa * (size_t)H, 1);
    float *penalty = calloc((size_t)G, sizeof(float)), *traj = calloc((size_t)G, sizeof(float));
    float *r = malloc(sizeof(float) * (size_t)G * (size_t)H);
    if (!qidx || !f1 || !q_session || !penalty || !traj || !r) goto done;
    int Q = grpo_active_questions(ep, H, qidx);
    for (int k = 0; k < Q; k++) {  // which sessions hold each question's evidence
        const Question *q = &ep->qa[qidx[k]];
        for (int e = 0; e < q->n_evidence; e++) {
            int s = DIA_SESSION(q->evidence[e]);
            if (s >= 1 && s <= H) q_session[(size_t)k * H + (s - 1)] = 1;
        }
    }
    long seen = world_words_seen(env, ep, H);
    for (int i = 0; i < G; i++) {
        traj[i] = (float)grpo_bank_reward(c, env, ep, &lanes[i].bank, H, qidx, Q,
                                          f1 + (size_t)i * Q);
        if (isnan(traj[i])) goto done;  // the answerer failed
        penalty[i] = (float)world_compression_penalty(env, &lanes[i].bank, seen);
        st->mem_words += (double)memory_words(&lanes[i].bank) / G;
        const MemoryStats *ms = &lanes[i].stats;
        st->ops.inserts += ms->inserts, st->ops.updates += ms->updates;
        st->ops.deletes += ms->deletes, st->ops.noops += ms->noops;
        st->ops.invalid += ms->invalid + lanes[i].malformed, st->ops.overflow += ms->overflow;
    }
    mean_std(traj, G, &st->reward_mean, &st->reward_std);
    grpo_global_rewards(c, G, H, Q, f1, q_session, penalty, r);
    st->groups_global = H;
    st->zero_std_global = grpo_global_advantages(G, H, r, adv);
    mean_std(adv, G * H, &st->adv_global_mean, &st->adv_global_std);
    rc = 0;
done:
    if (rc) fprintf(stderr, "grpo: out of memory scoring %d rollouts\n", G);
    free(qidx), free(f1), free(q_session), free(penalty), free(traj), free(r);
    return rc;
}

// The splice reward of a rerun of session t from source rollout `source`: the source's final
// bank with session t as the rerun played it, scored at H on the questions active there.
// tmp: three banks of the lanes' shape (before t, source after t, the spliced bank).
static double splice_reward(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                            const Lane *source, const Lane *rerun, MemoryBank *tmp,
                            const int *qidx, int nq) {
    int t = rerun->first_session;
    const void *before = lane_snapshot(source, t - 1), *after = lane_snapshot(source, t);
    if (!before || !after) {
        fprintf(stderr, "grpo: the source rollout has no snapshots around session %d\n", t);
        return NAN;
    }
    memory_restore(&tmp[0], before);
    memory_restore(&tmp[1], after);
    if (memory_splice(&tmp[2], &tmp[0], &tmp[1], &source->bank, &rerun->bank, t) < 0) return NAN;
    return grpo_bank_reward(c, env, ep, &tmp[2], H, qidx, nq, NULL);
}

int grpo_local_advantages(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                          int n_groups, const int *src, const Lane *global, const Lane *local,
                          float *ladv, int *zero_std) {
    int K = c->K, rc = -1, splice = c->local_reward == LOCAL_REWARD_SPLICE, nb = 0;
    int *qidx = malloc(sizeof(int) * (size_t)(ep->n_qa > 0 ? ep->n_qa : 1));
    float *rk = malloc(sizeof(float) * (size_t)(K > 0 ? K : 1));
    MemoryBank tmp[3];
    if (!qidx || !rk) {
        fprintf(stderr, "grpo: out of memory scoring %d local groups\n", n_groups);
        goto done;
    }
    if (splice && n_groups > 0) {
        if (!global || !src) {
            fprintf(stderr, "grpo: the splice local reward needs the global rollouts\n");
            goto done;
        }
        for (; nb < 3; nb++)
            if (memory_init(&tmp[nb], local[0].bank.cap, local[0].bank.slot_len) != 0) goto done;
    }
    *zero_std = 0;
    for (int g = 0; g < n_groups; g++) {
        int h = splice ? H : local[g * K].last_session, nq = grpo_active_questions(ep, h, qidx);
        for (int k = 0; k < K; k++) {
            const Lane *l = &local[g * K + k];
            rk[k] = (float)(splice ? splice_reward(c, env, ep, H, &global[src[g]], l, tmp, qidx, nq)
                                   : grpo_bank_reward(c, env, ep, &l->bank, h, qidx, nq, NULL));
            if (isnan(rk[k])) goto done;  // the answerer or the splice failed (it said why)
        }
        *zero_std += grpo_zscore(rk, K, ladv + (size_t)g * K);
    }
    rc = 0;
done:
    for (int i = 0; i < nb; i++) memory_free(&tmp[i]);
    free(qidx), free(rk);
    return rc;
}

// Local part: K reruns of each planned session from its source's snapshot before it, scored
// (grpo_local_advantages) into ladv (n_groups * K).
static int run_local(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                     int n_groups, const int *session, const int *src, const Lane *global,
                     const Actor *actor, Rng *rng, float *ladv, GrpoStepStats *st) {
    int n = n_groups * c->K, rc = -1;
    Lane *local = calloc((size_t)(n > 0 ? n : 1), sizeof *local);
    if (!local) {
        fprintf(stderr, "grpo: out of memory for %d local lanes\n", n);
        return -1;
    }
    if (grpo_local_lanes(c, env, ep, H, n_groups, session, src, global, local) != 0) {
        free(local);
        return -1;
    }
    if (rollout_run(env, local, n, actor, rng, &st->reroll) == 0 &&
        grpo_local_advantages(c, env, ep, H, n_groups, src, global, local, ladv,
                              &st->zero_std_local) == 0) {
        st->groups_local = n_groups;
        mean_std(ladv, n, &st->adv_local_mean, &st->adv_local_std);
        rc = 0;
    }
    for (int i = 0; i < n; i++) lane_free(&local[i]);
    free(local);
    return rc;
}

int grpo_collect(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                 const Actor *actor, Rng *rng, TurnBuffer *tb, GrpoStepStats *st) {
    memset(st, 0, sizeof *st);
    int G = c->G, made = 0, rc = -1, n_groups = 0;
    Actor a = *actor;
    a.record = tb;
    Lane *lanes = calloc((size_t)G, sizeof *lanes);
    float *adv = malloc(sizeof(float) * (size_t)G * (size_t)H);
    int *session = malloc(sizeof(int) * (size_t)H), *src = malloc(sizeof(int) * (size_t)H);
    float *ladv = malloc(sizeof(float) * ((size_t)H * (size_t)(c->K > 0 ? c->K : 1)));
    if (!lanes || !adv || !session || !src || !ladv) {
        fprintf(stderr, "grpo: out of memory for a step of %d rollouts x %d sessions\n", G, H);
        goto done;
    }
    // 1. G rollouts from an empty bank through sessions 1..H, with a snapshot after each
    for (int i = 0; i < G; i++, made++)
        if (lane_init(&lanes[i], env, ep, 1, H, 1) != 0) goto done;
    if (rollout_run(env, lanes, G, &a, rng, &st->roll) != 0) goto done;
    st->turns_global = turns_count(tb);
    // 2. rewards of the final banks, advantages across the G rollouts of each session
    if (score_global(c, env, ep, H, lanes, adv, st) != 0) goto done;
    // 3. local groups, their reruns and advantages
    n_groups = grpo_plan_local(c, G, H, rng, session, src);
    if (n_groups > 0 &&
        run_local(c, env, ep, H, n_groups, session, src, lanes, &a, rng, ladv, st) != 0)
        goto done;
    st->turns_local = turns_count(tb) - st->turns_global;
    // 4. every turn's advantage and weight; what they say about the true mistakes
    int bad = grpo_assign_advantages(c, G, H, adv, n_groups * c->K, ladv, tb->turns,
                                     turns_count(tb));
    if (bad) {
        fprintf(stderr, "grpo: %d turns name a lane or session outside the step\n", bad);
        goto done;
    }
    for (int i = 0; i < turns_count(tb); i++) st->turns_nonzero += tb->turns[i].advantage != 0;
    grpo_credit(tb->turns, turns_count(tb), &st->credit_global, &st->credit_local);
    grpo_credit_units(tb->turns, turns_count(tb), G, H, n_groups * c->K, c->K,
                      &st->credit_global_unit, &st->credit_local_unit);
    rc = 0;
done:
    for (int i = 0; i < made; i++) lane_free(&lanes[i]);
    free(lanes), free(adv), free(session), free(src), free(ladv);
    return rc;
}

// ---- 6. the update -------------------------------------------------------------------------

int grpo_update_turns(const GrpoConfig *c, const PolicyTurn *turns, int n, int *idx) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (c->zero_adv == ZERO_ADV_DILUTE || turns[i].advantage != 0) idx[m++] = i;
    return m;
}

int grpo_rows_grad(const GrpoConfig *c, const TurnBuffer *tb, const float *ref_lp,
                   const int *turn_of_row, int B, int T, const float *logp, const float *ent,
                   int m, float *dlogp, float *dent, GrpoStats *st) {
    if (!ref_lp && c->beta_kl > 0) {
        fprintf(stderr, "grpo: beta_kl = %g but no reference log-probs were given\n", c->beta_kl);
        return -1;
    }
    if (m < 1) {
        fprintf(stderr, "grpo: an update of %d turns\n", m);
        return -1;
    }
    memset(dlogp, 0, sizeof(float) * (size_t)B * (size_t)T);
    memset(dent, 0, sizeof(float) * (size_t)B * (size_t)T);
    float scale = 1.0f / (float)m;  // the loss is the mean over the update's turns
    for (int b = 0; b < B; b++) {
        const PolicyTurn *pt = &tb->turns[turn_of_row[b]];
        int L = pt->out_len < T - pt->prompt_len + 1 ? pt->out_len : T - pt->prompt_len + 1;
        if (L <= 0 || pt->prompt_len < 1) continue;
        size_t row = (size_t)b * T + (size_t)(pt->prompt_len - 1);
        const float *old = tb->logp_old + pt->offset + pt->prompt_len;
        const float *ref = ref_lp ? ref_lp + pt->offset + pt->prompt_len : NULL;
        // the row's output positions are contiguous: the turn loss reads and writes them in place
        grpo_turn_loss(c, L, logp + row, old, ref, ent ? ent + row : NULL, pt->advantage,
                       pt->weight, scale, dlogp + row, dent + row, st);
    }
    return 0;
}
