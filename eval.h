// eval.h: evaluation, the same for every world (world.h):
//   scores     SQuAD-normalised F1, BLEU-1 (with brevity penalty) and exact match
//   M-Fail     the share of the questions' evidence dia_ids never written to a slot
//   baselines  none, store-turns, insert-only, oracle, teacher: whole episodes without a model
//   policies   greedy evaluation of a model (one lane per episode, snapshots give every horizon)
//   reports    the summary line (docs/design.md), the final table, the per-session mistakes
#ifndef MEMR2_EVAL_H
#define MEMR2_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "data/locomo.h"
#include "memory.h"
#include "rollout.h"
#include "world.h"

// SQuAD-normalised token F1, BLEU-1 (with brevity penalty) and exact match of two strings.
QAScore score_answer(const char *pred, const char *gold);

// ---------------------------------------------------------------------------------------------
// Evaluation of whole episodes
// POLICY_TEACHER: the warm start's flawed teacher (teacher_flaws_default) acting alone.
typedef enum {
    POLICY_NONE, POLICY_STORE_TURNS, POLICY_INSERT_ONLY, POLICY_ORACLE, POLICY_TEACHER
} BaselinePolicy;

typedef struct {
    int episodes, sessions, questions;
    double f1, bleu1, em;      // means over questions
    double mfail;              // share of gold evidence dia_ids never written to any slot
    double mem_words;          // mean words in the final bank
    MemoryStats ops;           // summed over episodes
    int malformed;             // unparsable role outputs (model policies)
    int outputs;               // role outputs produced (model policies; 0 for baselines)
    int per_cat_n[8];          // per-category counts and F1 sums (category 0..7)
    double per_cat_f1[8];
    long mfail_missing, mfail_total;  // M-Fail counts (distinct evidence ids per episode)
    int questions_skipped, evidence_skipped;  // copied from the Dataset by eval_baseline
} EvalResult;

// Adds this episode's questions (answered by the world on `bank` after `sessions` sessions) to
// *r. Returns 0, or -1 if the answerer failed (message on stderr).
int eval_add_episode(const World *env, const Episode *ep, int sessions, const MemoryBank *bank,
                     const WrittenSet *w, EvalResult *r);
void eval_finish(EvalResult *r);
// The summary line of DESIGN.md section 8 (per-category lines before it).
void eval_print(const EvalResult *r, const char *policy, FILE *f);

int baseline_policy_parse(const char *name, BaselinePolicy *p);
// Runs sessions 1..sessions of every episode with a baseline (oracle and teacher need the
// world's teacher; insert-only stores the gold observations); *r is reset, filled and finished
// (eval_finish) here.
int eval_baseline(const World *env, const Dataset *ds, BaselinePolicy p, int sessions,
                  EvalResult *r);


// Greedy evaluation of a policy (greedy: an Actor with temperature 0) on the first n_episodes
// of ds, one lane per episode in one batch, at each horizon (res[h]). ep_f1 (optional,
// (n_h, n_episodes)): each episode's mean F1 over its questions, for paired comparisons.
// show_bank (optional): the first episode's bank after the last horizon is dumped there.
int eval_model(const World *env, const Actor *greedy, const Dataset *ds, int n_episodes,
               const int *horizons, int n_h, uint64_t seed, FILE *show_bank, EvalResult *res,
               double *ep_f1);
// The horizons to report: 8, 16, 32 where the data has them, or the n_asked (1..3, rising)
// asked for, each capped at the data's longest episode. Returns how many were written to h
// (at most EVAL_MAX_HORIZONS).
enum { EVAL_MAX_HORIZONS = 3 };
int eval_horizons(const Dataset *ds, const int *asked, int n_asked, int *h);

// The final table: none / insert-only / SFT / trained / oracle at 8, 16, 32 sessions and the
// paired per-episode F1 differences of the trained policy with 95% t-intervals (README
// "Evaluation"), on the first test_episodes of test: printed, and written atomically to
// out_dir/eval.jsonl and out_dir/eval.md. The oracle row needs the world's teacher.
typedef struct {
    const Actor *sft;      // greedy warm-start policy, NULL: no sft row
    const Actor *trained;  // greedy trained policy
    uint64_t seed;
    FILE *show_bank;       // as in eval_model (NULL: no dump)
    int horizon;           // 0: 8, 16 and 32 (those the data has); H: at H only (--test-sessions)
} FinalPolicies;
int final_table(const World *env, const FinalPolicies *p, const Dataset *test, int test_episodes,
                const char *test_path, const char *out_dir);

// --eval POLICY --mistakes: one pass of actor (greedy or the teacher) with every role output
// recorded and a snapshot after every session, then the mistakes of each session (mistakes.h,
// the world's session_mistakes), summed over episodes in buckets of sessions 1-8, 9-16, 17-32,
// 33-64 and over all sessions; printed on stdout. Returns 0 or -1.
int report_mistakes(const World *env, const Dataset *ds, int hmax, const Actor *actor,
                    const char *name, uint64_t seed);

#endif
