// runstate.h: where a training run is, so that `train_cpu --resume DIR` continues a killed run
// exactly (README, "Outputs and resume").
//
// The trainer saves DIR/state.bin with train_state_save (model.h: AdamW moments, their step
// count, the RNG, atomically) and puts everything else in its opaque blob, encoded here: the
// phase and position (warm-start step, curriculum stage and step), the log position, the best
// validation F1 so far, the curve's points and the parameter copies the phase needs (the policy,
// the stage's best and reference policies, the warm start's policy for the final table).
// The blob is versioned and every length in it is checked before use (runstate_decode).
#ifndef MEMR2_RUNSTATE_H
#define MEMR2_RUNSTATE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RUN_SFT = 1,  // warm start: sft_step steps done
    RUN_RL = 2,   // curriculum: stage_step steps of `stage` done (0: the stage has not started)
    RUN_DONE = 3, // training finished: the final checkpoint, curve and table remain
} RunPhase;

// Points of the learning curve: (step, reward) and (step, validation F1).
typedef struct {
    float step, value;
} CurvePoint;

enum { RUN_PARAMS, RUN_BEST, RUN_REF, RUN_SFT_PARAMS, RUN_NUM_COPIES };

typedef struct {
    int32_t phase;        // RunPhase
    int32_t sft_step;     // warm-start steps done
    int32_t stage;        // curriculum stage (0-based)
    int32_t stage_step;   // RL steps done in that stage
    int32_t done_steps;   // RL steps done in all stages
    int32_t global_step;  // the log's step counter
    int32_t warm_started; // the final table has an "sft" row
    double best_f1;       // the stage's best validation F1 so far
    double elapsed_s;     // run time before the save: the log's time_s continues from it
    int64_t log_bytes;    // length of log.jsonl at the save
    // Parameter copies, num_params floats each, indexed RUN_PARAMS..RUN_SFT_PARAMS; NULL where
    // the phase does not need one (the warm start needs only RUN_PARAMS).
    float *copy[RUN_NUM_COPIES];
    CurvePoint *reward_pts, *val_pts;  // malloc'ed arrays of n_reward, n_val points
    int32_t n_reward, n_val;
} RunState;

// The blob as pieces written back to back: a small head (the scalars and counts), then the
// parameter copies and curve points where they lie, so a save of a 135M-parameter run does not
// hold a second copy of its four parameter arrays (2 GB) in memory.
enum { RUNSTATE_HEAD_BYTES = 72, RUNSTATE_MAX_PIECES = 1 + RUN_NUM_COPIES + 2 };
typedef struct {
    unsigned char head[RUNSTATE_HEAD_BYTES];
    const void *piece[RUNSTATE_MAX_PIECES];  // piece[0] is head
    size_t bytes[RUNSTATE_MAX_PIECES];
    int n;        // pieces in use
    size_t total; // the blob's length: the sum of bytes
} RunStatePieces;

// Fills *out with st's pieces (pointers into st: keep st alive while they are written).
void runstate_pieces(const RunState *st, size_t nparams, RunStatePieces *out);
// Encodes st into one malloc'ed buffer (*blob, *bytes): the pieces concatenated. nparams:
// floats per parameter copy. 0, or -1 when out of memory.
int runstate_encode(const RunState *st, size_t nparams, void **blob, size_t *bytes);
// Decodes a blob made by runstate_encode for a model of nparams parameters. Allocates the
// copies and the curve arrays (runstate_free releases them). 0, or -1 with the reason in err.
int runstate_decode(const void *blob, size_t bytes, size_t nparams, RunState *st, char *err,
                    size_t errlen);
void runstate_free(RunState *st);

#endif
