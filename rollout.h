// rollout.h: running the memory agent through sessions, many lanes at once.
//
// A lane is one memory lineage: an episode, its own bank, and the sessions it still has to
// process. Per session and chunk of turns every lane goes
//     EXTRACT prompt -> facts -> retrieve -> MANAGE prompt -> ops -> apply to its bank
// and the prompts of all active lanes go to the model in ONE batched sample call per role, so G
// global rollouts (or K local rerollouts, or one greedy lane per evaluation episode) share each
// prefill and decode. After each session a lane can snapshot its bank (for local rerollouts).
//
// The actor is either the model (sampled or greedy) or the teacher (gold extraction and oracle
// operations with a noise rate): the teacher's traces, recorded through the very same path, are
// the supervised warm-start data.
#ifndef MEMR2_ROLLOUT_H
#define MEMR2_ROLLOUT_H

#include <stdint.h>

#include "dist.h"
#include "memory.h"
#include "model.h"
#include "world.h"

enum { ROLE_EXTRACT = 0, ROLE_MANAGE = 1 };

// One role output: the prompt and generated tokens of one extractor or manager call.
typedef struct {
    int lane, session, role;
    int offset;               // start in TurnBuffer.tokens / .logp_old
    int prompt_len, out_len;  // tokens[offset .. offset+prompt_len+out_len)
    int is_local;
    int mistakes;             // true mistakes against the oracle (credit.h), -1 if unknown;
                              // counted for every recorded turn, the teacher's included
    float advantage, weight;
} PolicyTurn;

// Recorded turns, all tokens in one growing array (stb_ds arrays).
typedef struct TurnBuffer {
    int *tokens;       // prompt then output of each turn, back to back
    float *logp_old;   // parallel to tokens; the sampling log-prob at output positions, else 0
    PolicyTurn *turns;
} TurnBuffer;

void turns_clear(TurnBuffer *tb);
void turns_free(TurnBuffer *tb);
int turns_count(const TurnBuffer *tb);

// What a lane has done so far: kept per session next to the snapshots, so an evaluation at
// horizon h reports the operations of sessions 1..h only.
typedef struct {
    MemoryStats stats;
    int malformed;                    // role outputs that broke the grammar
    int outputs;                      // role outputs produced
} LaneCounters;

typedef struct {
    const Episode *ep;
    int first_session, last_session;  // 1-based, inclusive
    MemoryBank bank;
    WrittenSet written;               // dia_ids ever written (M-Fail)
    MemoryStats stats;
    int malformed;                    // role outputs that broke the grammar
    int outputs;                      // role outputs produced
    // Optional: snapshots[t] = bank after session t (t = first_session-1 .. last_session), each
    // memory_snapshot_bytes() long, and the counters at that point; NULL = no snapshots.
    unsigned char *snapshots;
    LaneCounters *counters;
    int is_local;
    // Sessions after this one are played but not recorded (0: every session is recorded): a
    // local rerun that looks ahead goes on through later sessions only to be scored after them.
    int record_through;
    // -1 (lane_init's default): every session samples from the lane's own stream. >= 0: the
    // sessions after first_session sample from this shared stream instead, so the K reruns of
    // a local group play their look-ahead sessions with common random numbers (same prompt,
    // same tokens) and their rewards differ by what their own session did, not by the luck
    // of the continuation (docs/design.md, the LoGo-GRPO step).
    int ahead_stream;
} Lane;

typedef enum { ACTOR_MODEL, ACTOR_TEACHER } ActorKind;

typedef struct {
    ActorKind kind;
    // model actor
    const ModelBackend *be;
    Model *model;
    float temperature;          // <= 0: greedy
    float top_p;
    // both actors: context length and output room per role (prompt <= max_seq - max_new)
    int max_seq, max_new_extract, max_new_manage;
    // teacher actor: random noise and systematic flaws (all zero: the oracle)
    float teacher_noise;
    TeacherFlaws teacher_flaws;
    // recording (NULL: nothing recorded)
    TurnBuffer *record;
    // model actor: the ranks that share its lanes (NULL: this process alone). Lane i runs on rank
    // dist_owner(i); afterwards every rank holds every lane's state and the recorded turns of
    // all of them, in the order one process records them. The teacher ignores it (cheap, and
    // its noise draws from rng lane after lane).
    const Dist *dist;
    // progress (NULL: quiet): a line with the elapsed time and an ETA after a chunk step, at
    // most one per PROGRESS_EVERY_S seconds, so only slow rollouts (an LLM backbone) print
    FILE *progress;
} Actor;

enum { PROGRESS_EVERY_S = 30 };

typedef struct {
    long prompt_tokens, new_tokens;  // model tokens processed
    double seconds;
} RolloutSpeed;

// Lanes: init allocates the bank and the written set; with_snapshots allocates room for
// snapshots of sessions first-1..last.
int lane_init(Lane *l, const World *env, const Episode *ep, int first, int last, int with_snapshots);
void lane_free(Lane *l);
// Start a lane from a snapshot (bank state before its first session) instead of empty.
void lane_restore(Lane *l, const void *snapshot);
const void *lane_snapshot(const Lane *l, int session);
// The lane's counters after `session` (requires snapshots), or NULL.
const LaneCounters *lane_counters(const Lane *l, int session);

// Run every lane through its sessions. rng drives sampling seeds and teacher noise: the model
// actor draws one seed per call, and lane i's row of each sample call gets its own stream from
// (that seed, i, the lane's chunk step, the role), so a lane's samples do not depend on which
// lanes share its batch or its rank. Returns 0, or -1 if the model refused a call (stderr).
int rollout_run(const World *env, Lane *lanes, int n_lanes, const Actor *actor, Rng *rng,
                RolloutSpeed *speed);

#endif
