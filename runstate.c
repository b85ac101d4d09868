// runstate.c: the trainer's resume blob (layout and rationale in runstate.h).
//
// Layout (native byte order: a state file resumes on the machine that wrote it):
//   uint32 magic, uint32 version,
//   int32 phase, sft_step, stage, stage_step, done_steps, global_step, warm_started,
//   double best_f1, elapsed_s, int64 log_bytes,
//   uint32 copy mask (bit i: copy i present), int32 n_reward, int32 n_val,
//   the present copies (nparams floats each, in index order), then the reward and val points.
#include "runstate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNSTATE_MAGIC 0x6d727275u  // "urrm"
#define RUNSTATE_VERSION 1u
#define MAX_POINTS 100000000  // a corrupt count must not ask for terabytes

typedef struct {
    unsigned char *p;
    size_t at, n;
} Cursor;

static void put(Cursor *c, const void *src, size_t bytes) {
    memcpy(c->p + c->at, src, bytes);
    c->at += bytes;
}

static int get(Cursor *c, void *dst, size_t bytes) {
    if (bytes > c->n - c->at) return -1;
    memcpy(dst, c->p + c->at, bytes);
    c->at += bytes;
    return 0;
}

// The layout's fixed part (magic .. counts) is RUNSTATE_HEAD_BYTES, the head piece.
_Static_assert(2 * sizeof(uint32_t) + 7 * sizeof(int32_t) + 2 * sizeof(double) +
                       sizeof(int64_t) + sizeof(uint32_t) + 2 * sizeof(int32_t) ==
                   RUNSTATE_HEAD_BYTES,
               "RUNSTATE_HEAD_BYTES is the layout's fixed part");
static size_t fixed_bytes(void) { return RUNSTATE_HEAD_BYTES; }

static void add_piece(RunStatePieces *out, const void *p, size_t bytes) {
    out->piece[out->n] = p;
    out->bytes[out->n] = bytes;
    out->n++;
    out->total += bytes;
}

void runstate_pieces(const RunState *st, size_t nparams, RunStatePieces *out) {
    uint32_t mask = 0;
    for (int i = 0; i < RUN_NUM_COPIES; i++)
        if (st->copy[i]) mask |= 1u << i;
    uint32_t head[2] = {RUNSTATE_MAGIC, RUNSTATE_VERSION};
    int32_t ints[7] = {st->phase, st->sft_step, st->stage, st->stage_step, st->done_steps,
                       st->global_step, st->warm_started};
    double dbl[2] = {st->best_f1, st->elapsed_s};
    int32_t counts[2] = {st->n_reward, st->n_val};
    Cursor c = {.p = out->head, .at = 0, .n = sizeof out->head};
    put(&c, head, sizeof head);
    put(&c, ints, sizeof ints);
    put(&c, dbl, sizeof dbl);
    put(&c, &st->log_bytes, sizeof st->log_bytes);
    put(&c, &mask, sizeof mask);
    put(&c, counts, sizeof counts);
    out->n = 0;
    out->total = 0;
    add_piece(out, out->head, fixed_bytes());
    for (int i = 0; i < RUN_NUM_COPIES; i++)
        if (st->copy[i]) add_piece(out, st->copy[i], nparams * sizeof(float));
    if (st->n_reward) add_piece(out, st->reward_pts, (size_t)st->n_reward * sizeof(CurvePoint));
    if (st->n_val) add_piece(out, st->val_pts, (size_t)st->n_val * sizeof(CurvePoint));
}

int runstate_encode(const RunState *st, size_t nparams, void **blob, size_t *bytes) {
    RunStatePieces pc;
    runstate_pieces(st, nparams, &pc);
    Cursor c = {.p = malloc(pc.total), .at = 0, .n = pc.total};
    if (!c.p) return -1;
    for (int i = 0; i < pc.n; i++) put(&c, pc.piece[i], pc.bytes[i]);
    *blob = c.p;
    *bytes = pc.total;
    return 0;
}

void runstate_free(RunState *st) {
    for (int i = 0; i < RUN_NUM_COPIES; i++) free(st->copy[i]);
    free(st->reward_pts);
    free(st->val_pts);
    memset(st, 0, sizeof *st);
}

// Copies n floats out of the cursor into a new array; NULL on short input or no memory.
static void *get_array(Cursor *c, size_t n, size_t size) {
    if (n == 0) return NULL;
    if (n > (c->n - c->at) / size) return NULL;
    void *a = malloc(n * size);
    if (a) get(c, a, n * size);
    return a;
}

int runstate_decode(const void *blob, size_t bytes, size_t nparams, RunState *st, char *err,
                    size_t errlen) {
    memset(st, 0, sizeof *st);
    Cursor c = {.p = (unsigned char *)blob, .at = 0, .n = bytes};
    uint32_t head[2], mask;
    int32_t ints[7], counts[2];
    double dbl[2];
    if (!blob || get(&c, head, sizeof head) || get(&c, ints, sizeof ints) ||
        get(&c, dbl, sizeof dbl) || get(&c, &st->log_bytes, sizeof st->log_bytes) ||
        get(&c, &mask, sizeof mask) || get(&c, counts, sizeof counts)) {
        snprintf(err, errlen, "run state truncated (%zu bytes)", bytes);
        return -1;
    }
    if (head[0] != RUNSTATE_MAGIC || head[1] != RUNSTATE_VERSION) {
        snprintf(err, errlen, "not a memr2 run state (magic %08x version %u, want %08x %u)",
                 head[0], head[1], RUNSTATE_MAGIC, RUNSTATE_VERSION);
        return -1;
    }
    st->phase = ints[0], st->sft_step = ints[1], st->stage = ints[2], st->stage_step = ints[3];
    st->done_steps = ints[4], st->global_step = ints[5], st->warm_started = ints[6];
    st->best_f1 = dbl[0], st->elapsed_s = dbl[1];
    st->n_reward = counts[0], st->n_val = counts[1];
    const char *why = NULL;
    if (st->phase < RUN_SFT || st->phase > RUN_DONE) why = "unknown phase";
    else if (st->sft_step < 0 || st->stage < 0 || st->stage > 2 || st->stage_step < 0 ||
             st->done_steps < 0 || st->global_step < 0 || st->n_reward < 0 || st->n_val < 0 ||
             st->n_reward > MAX_POINTS || st->n_val > MAX_POINTS || st->log_bytes < 0)
        why = "negative or out-of-range count";
    else if (st->warm_started != 0 && st->warm_started != 1) why = "bad warm_started flag";
    else if (!isfinite(st->best_f1) || !isfinite(st->elapsed_s) || st->elapsed_s < 0)
        why = "non-finite number";
    else if (mask >> RUN_NUM_COPIES || !(mask & (1u << RUN_PARAMS)))
        why = "bad parameter copy mask";
    else if (nparams == 0) why = "no parameters";
    if (why) {
        snprintf(err, errlen, "run state: %s", why);
        return -1;
    }
    size_t need = c.at, np_bytes = nparams * sizeof(float);
    for (int i = 0; i < RUN_NUM_COPIES; i++) need += (mask >> i & 1u) ? np_bytes : 0;
    need += ((size_t)st->n_reward + (size_t)st->n_val) * sizeof(CurvePoint);
    if (need != bytes) {
        snprintf(err, errlen, "run state is %zu bytes, its header needs %zu (%s)", bytes, need,
                 bytes < need ? "truncated" : "trailing garbage");
        st->n_reward = st->n_val = 0;
        return -1;
    }
    int bad = 0;
    for (int i = 0; i < RUN_NUM_COPIES && !bad; i++)
        if (mask >> i & 1u) bad = !(st->copy[i] = get_array(&c, nparams, sizeof(float)));
    if (!bad && st->n_reward)
        bad = !(st->reward_pts = get_array(&c, (size_t)st->n_reward, sizeof(CurvePoint)));
    if (!bad && st->n_val)
        bad = !(st->val_pts = get_array(&c, (size_t)st->n_val, sizeof(CurvePoint)));
    if (bad) {
        snprintf(err, errlen, "run state: out of memory");
        runstate_free(st);
        return -1;
    }
    // A policy of NaNs would resume into undefined behaviour in the sampler: refuse it here.
    for (int i = 0; i < RUN_NUM_COPIES; i++)
        for (size_t k = 0; st->copy[i] && k < nparams; k++)
            if (!isfinite(st->copy[i][k])) {
                snprintf(err, errlen, "run state: non-finite value in parameter copy %d", i);
                runstate_free(st);
                return -1;
            }
    for (int32_t k = 0; k < st->n_reward; k++)
        if (!isfinite(st->reward_pts[k].step) || !isfinite(st->reward_pts[k].value)) bad = 1;
    for (int32_t k = 0; k < st->n_val; k++)
        if (!isfinite(st->val_pts[k].step) || !isfinite(st->val_pts[k].value)) bad = 1;
    if (bad) {
        snprintf(err, errlen, "run state: non-finite curve point");
        runstate_free(st);
        return -1;
    }
    return 0;
}
