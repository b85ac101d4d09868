// grpo.h: LoGo-GRPO, the whole algorithm (docs/design.md "The LoGo-GRPO step"):
//   the step   G rollouts -> per-session rewards -> global advantages; local groups: K reruns of
//              a session from a rollout's snapshot before it -> local advantages; every recorded
//              turn gets its advantage and weight (grpo_collect and its testable parts);
//   the loss   the clipped turn-level policy loss with its KL and entropy terms -> per-token
//              coefficients dL/dlogp and dL/dentropy for the model's backward (grpo_rows_grad).
// How lanes run (rollout.c), the model (model.c, kernels.cu) and the optimiser loop (train.c's
// ppo_update) live elsewhere.
#ifndef MEMR2_GRPO_H
#define MEMR2_GRPO_H

#include <stddef.h>

#include "world.h"
#include "rollout.h"

typedef enum { REWARD_PER_SESSION = 0, REWARD_TRAJECTORY = 1 } RewardMode;
// Whether turns whose advantage is 0 take part in the update: DILUTE (the paper) keeps them,
// so they count in the mean of the loss (1/m) and carry their KL and entropy terms; SKIP leaves
// them out of the update, so the mean is over the turns that carry a signal.
typedef enum { ZERO_ADV_DILUTE = 0, ZERO_ADV_SKIP = 1 } ZeroAdvMode;
// What a local rerun of session t is scored on. RERUN (the paper's): its own bank right after t
// (or after c->lookahead more sessions), on the questions active then. SPLICE: the source
// rollout's FINAL bank with its session-t writes replaced by the rerun's (memory_splice), on
// the questions active at the horizon H, so a write that only hurts later (a restatement that
// goes stale) is priced in the session that made it, at no extra rollout tokens.
typedef enum { LOCAL_REWARD_RERUN = 0, LOCAL_REWARD_SPLICE = 1 } LocalRewardMode;

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
    ZeroAdvMode zero_adv;// (ZERO_ADV_DILUTE, the paper's)
    int lookahead;       // sessions a local rerun goes on through after its own, unrecorded,
                         // before it is scored (0, the paper's: scored right after it), so a
                         // write's later cost (a stale duplicate) enters the local reward
                         // (not used by LOCAL_REWARD_SPLICE, which scores at H)
    LocalRewardMode local_reward;  // (LOCAL_REWARD_RERUN, the paper's)
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

// Sums st (and *tokens, when not NULL) over the ranks of a data-parallel update (dist.h): each
// rank accumulated the turns it computed; afterwards every rank holds the whole batch's figures.
void grpo_stats_sum(const Dist *d, GrpoStats *st, long *tokens);

// ---- the step ---------------------------------------------------------------------------------

// What one step measured (logged per step in log.jsonl, docs/design.md).
typedef struct {
    double reward_mean, reward_std;      // trajectory reward (mean F1 - lambda c) over G rollouts
    int groups_global, zero_std_global;  // H session groups of G rollouts; zero-variance ones
    int groups_local, zero_std_local;    // local groups of K reruns; zero-variance ones
    double adv_global_mean, adv_global_std, adv_local_mean, adv_local_std;
    int turns_global, turns_local, turns_nonzero;  // recorded turns; those with advantage != 0
    double credit_global, credit_local;  // Pearson(advantage, -mistakes) over global / local
                                         // turns with known mistakes; NAN when undefined
    double credit_global_unit, credit_local_unit;  // the same per advantage unit (a rollout's
                                         // session, a rerun), mistakes centred in the group
    double mem_words;                    // mean words of the G final banks
    MemoryStats ops;                     // ops of the G rollouts (invalid includes malformed)
    RolloutSpeed roll, reroll;
} GrpoStepStats;

// Chooses the local groups: each session t = 1..H independently with probability p_local, and
// for each chosen one the global rollout i (uniform) it branches from. Writes session[g] and
// src[g] (room for H each); returns the number of groups (0 when c->local is 0 or K < 2).
int grpo_plan_local(const GrpoConfig *c, int G, int H, Rng *rng, int *session, int *src);

// Initialises local[g * K + k] (k < K) for every group g: a lane whose bank starts as
// global[src[g]]'s snapshot BEFORE session t = session[g] (after t - 1), running sessions
// t .. min(t + c->lookahead, H) (t alone under LOCAL_REWARD_SPLICE) and recording the turns of
// session t only; the global lanes must have snapshots. With a lookahead, the K lanes of group g sample sessions after t from one
// shared stream, Lane.ahead_stream = GRPO_AHEAD_STREAM0 + g. Returns 0, or -1 with every lane it
// made freed again.
#define GRPO_AHEAD_STREAM0 (1 << 24)
int grpo_local_lanes(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                     int n_groups, const int *session, const int *src, const Lane *global,
                     Lane *local);

// Rewards of one bank after `h` sessions: mean F1 over the questions active at h (f1 of each
// written to f1_out[k], k in qidx order, when not NULL) minus lambda * c(M), c the compression
// penalty against the words seen up to h. qidx/nq: the active questions (grpo_active_questions).
// NaN if the world's answerer failed (it says why on stderr).
int grpo_active_questions(const Episode *ep, int h, int *qidx);
double grpo_bank_reward(const GrpoConfig *c, const World *env, const Episode *ep,
                        const MemoryBank *bank, int h, const int *qidx, int nq, float *f1_out);

// Local advantages: each group g's K reruns local[g * K + k] scored and z-scored within the
// group into ladv[g * K + k]. LOCAL_REWARD_RERUN: each rerun's own bank after its last session
// h (grpo_bank_reward at h: the rerun session, or c->lookahead later). LOCAL_REWARD_SPLICE:
// the bank memory_splice makes of the source rollout global[src[g]] (its snapshots before and
// after session t and its final bank) and the rerun's bank, scored at the horizon H; global and
// src are read only in this mode (NULL otherwise). *zero_std: groups without reward variance.
// Returns 0, or -1 (stderr).
int grpo_local_advantages(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                          int n_groups, const int *src, const Lane *global, const Lane *local,
                          float *ladv, int *zero_std);

// Writes every turn's advantage and weight:
//   global turn (is_local 0) of rollout `lane` in session t: A = gadv[lane * H + t - 1], w = 1;
//   local turn (is_local 1) of local lane j = g * K + k:     A = ladv[j],               w = omega.
// gadv: (G, H); ladv: (n_local). Returns the number of turns whose lane or session lies outside
// those shapes (they get A = 0, w = 0, so a bad record never borrows another turn's signal).
int grpo_assign_advantages(const GrpoConfig *c, int G, int H, const float *gadv, int n_local,
                           const float *ladv, PolicyTurn *turns, int n);

// The credit-quality metric: Pearson correlation of advantage and minus mistakes over the
// global turns and over the local turns (turns with mistakes < 0 are left out).
void grpo_credit(const PolicyTurn *turns, int n, double *credit_global, double *credit_local);

// The same question asked of the units an advantage is given to: a global rollout's session
// (lane, t) and a local rerun j. Each unit's mistakes are summed over its turns, centred on the
// mean of its group (the G rollouts' session t; the K reruns of group j / K), and correlated
// (Pearson) with the unit's advantage: does the advantage rank the group's members by their
// true mistakes? The per-turn metric above also counts that all turns of a unit share one
// advantage while their mistakes differ, and that groups differ in how much there is to get
// wrong; this one does not. Units with no turn of known mistakes are left out; NAN when
// undefined.
void grpo_credit_units(const PolicyTurn *turns, int n, int G, int H, int n_local, int K,
                       double *credit_global, double *credit_local);

// One step's data: G rollouts of episode ep through sessions 1..H sampled by `actor` (its record
// is replaced by tb), rewards, local groups (LoGo), and every turn in tb with its advantage and
// weight. tb should be empty; the caller frees it. Returns 0, or -1 (message on stderr).
int grpo_collect(const GrpoConfig *c, const World *env, const Episode *ep, int H,
                 const Actor *actor, Rng *rng, TurnBuffer *tb, GrpoStepStats *st);

// ---- the update -------------------------------------------------------------------------------

// The turns that enter the update: all of them (DILUTE), or those with advantage != 0 (SKIP).
// Writes their indices to idx (room for n); returns how many.
int grpo_update_turns(const GrpoConfig *c, const PolicyTurn *turns, int n, int *idx);

// The loss of B packed rows, each one turn, and its gradient. Row layout (train.c packs it):
// row b holds turn tb->turns[turn_of_row[b]], prompt then output from position 0, and
//   logp[b * T + t] = log p(token t+1 | tokens <= t),   ent[b * T + t] its entropy,
// so output token l sits at t = prompt_len - 1 + l, for l < L = min(out_len, T - prompt_len + 1).
// dlogp, dent (B, T) are overwritten: the coefficients of grpo_turn_loss with scale 1 / m, m the
// number of turns in this optimiser update (which may span several packed batches), zero at
// positions no output token sits on. ref_lp (parallel to tb->tokens, the reference policy's
// log-prob of each output token) is required when beta_kl > 0. Returns 0, or -1 (stderr).
int grpo_rows_grad(const GrpoConfig *c, const TurnBuffer *tb, const float *ref_lp,
                   const int *turn_of_row, int B, int T, const float *logp, const float *ent,
                   int m, float *dlogp, float *dent, GrpoStats *st);

#endif
