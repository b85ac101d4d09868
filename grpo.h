// grpo.h: LoGo-GRPO, the whole algorithm (DESIGN.md section 5). grpo.c holds the math only:
// rewards -> group-relative advantages -> the clipped turn-level policy loss with its KL and
// entropy terms -> per-token coefficients dL/dlogp and dL/dentropy for the model's backward.
// Rollouts, the model and the memory bank live elsewhere (rollout.c, model.c, memory.c).
#ifndef MEMR2_GRPO_H
#define MEMR2_GRPO_H

#include <stddef.h>

typedef enum { REWARD_PER_SESSION = 0, REWARD_TRAJECTORY = 1 } RewardMode;

typedef struct {
    int G;               // global rollouts per episode (paper 16, default 8)
    int K;               // local rerollouts of a picked session (4)
    float p_local;       // probability that a session gets a local group (0.5)
    int local;           // 1 = LoGo-GRPO, 0 = plain GRPO (local branch off)
    float omega;         // weight of local turns in the batch (1)
    RewardMode reward_mode;
    float eps_clip;      // PPO clip (0.2)
    float dual_clip;     // dual-clip constant c for negative advantages (3)
    float max_log_ratio; // turn-level log-ratio cap before exp (3)
    float beta_kl;       // k3 KL to the stage reference (1e-3)
    float beta_ent;      // entropy bonus (1e-3)
    int ppo_epochs;      // passes over each batch with cached old log-probs (2)
    float lambda, rho;   // compression penalty weight and allowance (0.3, 0.7)
} GrpoConfig;

void grpo_config_default(GrpoConfig *c);

// z-score of n rewards: (r - mean) / (std + 1e-6), population std. A group of one, or one whose
// rewards are all equal (std < 1e-6), gets advantages 0. Returns 1 if the group had zero
// variance (or n < 2), else 0 (for the frac_reward_zero_std metric).
int grpo_zscore(const float *r, int n, float *adv);

// Global per-session rewards (DESIGN.md section 5).
//   f1:        (G, Q) F1 of question q answered on rollout i's FINAL bank
//   q_session: (Q, H) 1 if question q has evidence in session t (1-based t -> column t-1)
//   penalty:   (G) compression penalty c(M_iH) = max(0, (words - rho * seen) / seen) of each
//              final bank, WITHOUT lambda: this function multiplies it by c->lambda
//   r:         (G, H) out. REWARD_PER_SESSION: mean F1 over the questions with evidence in
//              session t (0 if none) - lambda * c. REWARD_TRAJECTORY: mean F1 over all Q
//              questions - lambda * c, the same for every t.
void grpo_global_rewards(const GrpoConfig *c, int G, int H, int Q, const float *f1,
                         const unsigned char *q_session, const float *penalty, float *r);

// Global advantages: for each session t, z-score of r[., t] across the G rollouts.
// adv: (G, H). Returns the number of zero-variance groups (of H).
int grpo_global_advantages(int G, int H, const float *r, float *adv);

// Per-turn statistics accumulated over a batch. Zero it before the batch. To report: loss as is;
// kl and entropy / n_tokens; ratio and clipped / n_turns.
typedef struct {
    double loss;         // sum over turns of scale * turn_loss: the batch objective as minimised,
                         // whose gradient is exactly what dlogp / dent receive
    double kl;           // sum over tokens of k3 (unscaled)
    double entropy;      // sum over tokens of entropy (unscaled)
    double ratio;        // sum over turns of the turn-level ratio rho (after the cap)
    int clipped;         // turns with A != 0 whose policy-gradient term was cut: PPO clip, dual
                         // clip, or the log-ratio cap
    int n_turns, n_tokens;
} GrpoStats;

// The loss of one turn (one role output of L tokens) and its gradient.
//   logp_new, logp_old, logp_ref, entropy: (L) per output token
//   advantage: A of the turn; weight: omega for local turns, 1 for global ones
//   scale: 1 / (number of turns in the batch)  (loss = mean over turns)
// Loss of the turn, with s = mean_l(logp_new - logp_old), rho = exp(min(max_log_ratio, s)):
//   pg = -min(rho A, clip(rho, 1-eps, 1+eps) A);  if A < 0: pg = min(pg, -dual_clip * A)
//   turn_loss = weight * pg + beta_kl * mean_l k3_l - beta_ent * mean_l entropy_l,
//   k3_l = exp(d) - d - 1, d = logp_ref - logp_new.
// Writes (+=) dlogp[l] = scale * d turn_loss / d logp_new[l] and dent[l] = -scale * beta_ent / L.
// Adds to *st. L = 0 is a no-op. Clipped branches (the clipped term active, the dual clip, or
// the cap s >= max_log_ratio) have zero policy-gradient; otherwise d rho / d logp_new[l] = rho/L.
// Optional (NULL): logp_ref (the KL term is skipped, as if beta_kl = 0), entropy (the entropy term reads as 0 in
// the loss; dent is still written), dent, st.
void grpo_turn_loss(const GrpoConfig *c, int L, const float *logp_new, const float *logp_old,
                    const float *logp_ref, const float *entropy, float advantage, float weight,
                    float scale, float *dlogp, float *dent, GrpoStats *st);

#endif
