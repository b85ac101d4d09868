// rollout.c: runs lanes (memory lineages) through sessions with the model or the teacher as the
// actor, batching the prompts of all lanes into one sample call per role and chunk step.
// See rollout.h for the picture.
#include "rollout.h"

#include "credit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stb/stb_ds.h>

#define MAX_OPS_PER_OUTPUT 128

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------
// Turn buffer

void turns_clear(TurnBuffer *tb) {
    arrsetlen(tb->tokens, 0);
    arrsetlen(tb->logp_old, 0);
    arrsetlen(tb->turns, 0);
}

void turns_free(TurnBuffer *tb) {
    arrfree(tb->tokens);
    arrfree(tb->logp_old);
    arrfree(tb->turns);
}

int turns_count(const TurnBuffer *tb) { return (int)arrlen(tb->turns); }

static void turns_record(TurnBuffer *tb, const Lane *l, int lane, int session, int role,
                         const int *prompt, int prompt_len, const int *out, const float *logp,
                         int out_len, int mistakes) {
    PolicyTurn t = {.lane = lane, .session = session, .role = role,
                    .offset = (int)arrlen(tb->tokens), .prompt_len = prompt_len,
                    .out_len = out_len, .is_local = l->is_local, .mistakes = mistakes,
                    .advantage = 0, .weight = 1};
    for (int i = 0; i < prompt_len; i++) {
        arrput(tb->tokens, prompt[i]);
        arrput(tb->logp_old, 0.0f);
    }
    for (int i = 0; i < out_len; i++) {
        arrput(tb->tokens, out[i]);
        arrput(tb->logp_old, logp ? logp[i] : 0.0f);
    }
    arrput(tb->turns, t);
}

// ---------------------------------------------------------------------------------------------
// Lanes

int lane_init(Lane *l, const World *env, const Episode *ep, int first, int last,
              int with_snapshots) {
    memset(l, 0, sizeof *l);
    l->ahead_stream = -1;
    l->ep = ep;
    l->first_session = first;
    l->last_session = last;
    int cap, slot_len;
    world_bank_shape(env, ep, &cap, &slot_len);
    if (memory_init(&l->bank, cap, slot_len) != 0) return -1;
    if (written_init(&l->written, ep) != 0) {
        memory_free(&l->bank);
        return -1;
    }
    if (with_snapshots) {
        size_t bytes = memory_snapshot_bytes(&l->bank);
        l->snapshots = malloc(bytes * (size_t)(last - first + 2));
        l->counters = calloc((size_t)(last - first + 2), sizeof(LaneCounters));
        if (!l->snapshots || !l->counters) {
            fprintf(stderr, "rollout: out of memory for %d snapshots of %zu bytes\n",
                    last - first + 2, bytes);
            lane_free(l);
            return -1;
        }
    }
    return 0;
}

void lane_free(Lane *l) {
    memory_free(&l->bank);
    written_free(&l->written);
    free(l->snapshots);
    free(l->counters);
    l->snapshots = NULL;
    l->counters = NULL;
}

void lane_restore(Lane *l, const void *snapshot) { memory_restore(&l->bank, snapshot); }

static unsigned char *lane_snapshot_slot(const Lane *l, int session) {
    size_t bytes = memory_snapshot_bytes(&l->bank);
    return l->snapshots + bytes * (size_t)(session - (l->first_session - 1));
}

// Snapshot the bank and the counters after `session`.
static void lane_take_snapshot(Lane *l, int session) {
    memory_snapshot(&l->bank, lane_snapshot_slot(l, session));
    l->counters[session - (l->first_session - 1)] =
        (LaneCounters){.stats = l->stats, .malformed = l->malformed, .outputs = l->outputs};
}

const LaneCounters *lane_counters(const Lane *l, int session) {
    if (!l->counters || session < l->first_session - 1 || session > l->last_session) return NULL;
    return &l->counters[session - (l->first_session - 1)];
}

const void *lane_snapshot(const Lane *l, int session) {
    if (!l->snapshots || session < l->first_session - 1 || session > l->last_session) return NULL;
    return lane_snapshot_slot(l, session);
}

// ---------------------------------------------------------------------------------------------
// The batched chunk loop.
//
// Every lane walks its own list of (session, chunk) steps; step i of all lanes runs together.
// Lanes of different episodes have different numbers of chunks, so a lane that has finished
// simply sits out the remaining steps.

typedef struct {
    int session, chunk;
} ChunkStep;

// The (session, chunk) steps of a lane, in order; returns the count (caller frees *steps).
static int lane_steps(const World *env, const Lane *l, ChunkStep **steps) {
    int n = 0;
    for (int s = l->first_session; s <= l->last_session; s++) n += world_num_chunks(env, l->ep, s);
    *steps = malloc(sizeof(ChunkStep) * (size_t)(n > 0 ? n : 1));
    if (!*steps) return -1;
    int k = 0;
    for (int s = l->first_session; s <= l->last_session; s++) {
        int nc = world_num_chunks(env, l->ep, s);
        for (int c = 0; c < nc; c++) (*steps)[k++] = (ChunkStep){s, c};
    }
    return n;
}

// Per-call scratch for one role over all lanes.
typedef struct {
    int *prompts;     // (n_lanes, maxT)
    int *prompt_len;  // (n_lanes)
    int *gen;         // (n_lanes, max_new)
    float *gen_logp;  // (n_lanes, max_new)
    int *gen_len;     // (n_lanes)
    int *active;      // (n_lanes) lane indices taking part in this call
    uint64_t *seeds;  // (n_lanes) the sampling stream of each lane's row in this call
    int n_active;
    int stride;       // row stride of gen / gen_logp (the larger role's max_new)
} RoleBatch;

// Generate outputs for the prompts of the active lanes: by the model (one batched sample call)
// or by the teacher (which needs the lane state, hence the callback-free switch in the caller).
static int model_generate(const Actor *a, RoleBatch *rb, int maxT, int max_new, int stop,
                          uint64_t seed, RolloutSpeed *speed) {
    if (rb->n_active == 0) return 0;
    // Compact the active rows to the front: sample() wants n consecutive prompts.
    int n = rb->n_active;
    int *prompts = malloc(sizeof(int) * (size_t)n * (size_t)maxT);
    int *plen = malloc(sizeof(int) * (size_t)n);
    int *tok = malloc(sizeof(int) * (size_t)n * (size_t)max_new);
    float *lp = malloc(sizeof(float) * (size_t)n * (size_t)max_new);
    int *len = malloc(sizeof(int) * (size_t)n);
    uint64_t *seeds = malloc(sizeof(uint64_t) * (size_t)n);
    if (!prompts || !plen || !tok || !lp || !len || !seeds) {
        fprintf(stderr, "rollout: out of memory for a batch of %d prompts\n", n);
        free(prompts), free(plen), free(tok), free(lp), free(len), free(seeds);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int li = rb->active[i];
        memcpy(prompts + (size_t)i * maxT, rb->prompts + (size_t)li * maxT,
               sizeof(int) * (size_t)rb->prompt_len[li]);
        plen[i] = rb->prompt_len[li];
        seeds[i] = rb->seeds[li];
        if (speed) speed->prompt_tokens += plen[i];
    }
    SampleRequest req = {.n = n, .prompts = prompts, .prompt_stride = maxT, .prompt_len = plen,
                         .max_new = max_new, .temperature = a->temperature, .top_p = a->top_p,
                         .stop = &stop, .n_stop = 1, .seed = seed, .row_seeds = seeds};
    SampleResult res = {.tokens = tok, .logp = lp, .len = len};
    int rc = a->be->sample(a->model, &req, &res);
    if (rc == 0) {
        for (int i = 0; i < n; i++) {
            int li = rb->active[i];
            memcpy(rb->gen + (size_t)li * rb->stride, tok + (size_t)i * max_new,
                   sizeof(int) * (size_t)len[i]);
            memcpy(rb->gen_logp + (size_t)li * rb->stride, lp + (size_t)i * max_new,
                   sizeof(float) * (size_t)len[i]);
            rb->gen_len[li] = len[i];
            if (speed) speed->new_tokens += len[i];
        }
    } else {
        fprintf(stderr, "rollout: the model refused a sample call of %d prompts\n", n);
    }
    free(prompts), free(plen), free(tok), free(lp), free(len), free(seeds);
    return rc;
}

static int role_batch_init(RoleBatch *rb, int n_lanes, int maxT, int max_new) {
    size_t n = (size_t)n_lanes;
    rb->prompts = malloc(sizeof(int) * n * (size_t)maxT);
    rb->prompt_len = calloc(n, sizeof(int));
    rb->gen = malloc(sizeof(int) * n * (size_t)max_new);
    rb->gen_logp = malloc(sizeof(float) * n * (size_t)max_new);
    rb->gen_len = calloc(n, sizeof(int));
    rb->active = malloc(sizeof(int) * n);
    rb->seeds = malloc(sizeof(uint64_t) * n);
    rb->n_active = 0;
    rb->stride = max_new;
    if (!rb->prompts || !rb->prompt_len || !rb->gen || !rb->gen_logp || !rb->gen_len ||
        !rb->active || !rb->seeds) {
        fprintf(stderr, "rollout: out of memory for %d lanes\n", n_lanes);
        return -1;
    }
    return 0;
}

static void role_batch_free(RoleBatch *rb) {
    free(rb->prompts), free(rb->prompt_len), free(rb->gen), free(rb->gen_logp);
    free(rb->gen_len), free(rb->active), free(rb->seeds);
}

// Everything between the two role calls of one chunk that must survive: the parsed facts.
typedef struct {
    Fact facts[MAX_CHUNK_FACTS];
    int n_facts;
    Shown shown;
} ChunkState;

// The sampling stream of lane `gid`'s row at its chunk step k and role: a function of the call's
// seed and the lane's global index only (splitmix64 of a distinct word per row).
static uint64_t row_seed(uint64_t base, int gid, int k, int role) {
    uint64_t x = base ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(gid + 1));
    x = splitmix64(&x) + 0xd1b54a32d192ed03ULL * (uint64_t)(2 * k + role + 1);
    return splitmix64(&x);
}

// A progress line after chunk step `done` of `most` (Actor.progress), throttled: the ETA assumes
// the remaining steps cost what the finished ones did on average (later prompts are longer, so
// it is a lower bound).
static void report_progress(FILE *f, int done, int most, int session, int n_lanes, double t0,
                            double *last) {
    double now = now_seconds();
    if (!f || (done < most && now - *last < PROGRESS_EVERY_S)) return;
    if (done == most && now - t0 < PROGRESS_EVERY_S) return;  // a quick rollout stays quiet
    *last = now;
    double el = now - t0, eta = el / done * (most - done);
    fprintf(f,
            "rollout: %d lane(s), chunk step %d of %d (session %d), %.0f s elapsed, ETA %.0f s\n",
            n_lanes, done, most, session, el, eta);
    fflush(f);
}

// The lanes of one process: gid[i] is lane i's global index (NULL: i), which names its turns in
// the record and its sampling streams; base is the model actor's seed of this call.
static int run_lanes(const World *env, Lane *lanes, int n_lanes, const int *gid, const Actor *a,
                     Rng *rng, uint64_t base, RolloutSpeed *speed) {
    double t0 = now_seconds();
    // Prompt room: the context minus what the role may generate (the teacher obeys the same
    // limits, so its traces fit the model that imitates them).
    int maxT = a->max_seq;
    int max_new_role[2] = {a->max_new_extract, a->max_new_manage};
    int max_new = max_new_role[0] > max_new_role[1] ? max_new_role[0] : max_new_role[1];
    if (a->kind == ACTOR_MODEL && maxT > a->be->config(a->model)->maxT) {
        fprintf(stderr, "rollout: max_seq %d exceeds the model's %d positions\n", maxT,
                a->be->config(a->model)->maxT);
        return -1;
    }

    ChunkStep **steps = calloc((size_t)n_lanes, sizeof *steps);
    int *n_steps = calloc((size_t)n_lanes, sizeof(int));
    ChunkState *cs = calloc((size_t)n_lanes, sizeof *cs);
    RoleBatch rb = {0};
    MemoryOp *ops = malloc(sizeof(MemoryOp) * MAX_OPS_PER_OUTPUT);
    int *fact_store = malloc(sizeof(int) * MAX_OPS_PER_OUTPUT * FACT_MAX_TOKENS);
    int rc = -1;
    if (!ops || !fact_store) goto done;
    if (!steps || !n_steps || !cs || role_batch_init(&rb, n_lanes, maxT, max_new) != 0) goto done;
    int most = 0, longest = 0;  // the lane with the most chunk steps names the session
    double last_report = t0;
    for (int i = 0; i < n_lanes; i++) {
        n_steps[i] = lane_steps(env, &lanes[i], &steps[i]);
        if (n_steps[i] < 0) goto done;
        if (n_steps[i] > most) most = n_steps[i], longest = i;
        if (lanes[i].snapshots) lane_take_snapshot(&lanes[i], lanes[i].first_session - 1);
    }

    for (int k = 0; k < most; k++) {
        for (int role = ROLE_EXTRACT; role <= ROLE_MANAGE; role++) {
            int prompt_max = maxT - max_new_role[role];
            // 1. prompts of every lane that has a step k
            rb.n_active = 0;
            for (int i = 0; i < n_lanes; i++) {
                if (k >= n_steps[i]) continue;
                Lane *l = &lanes[i];
                ChunkStep st = steps[i][k];
                int *p = rb.prompts + (size_t)i * maxT;
                if (role == ROLE_EXTRACT)
                    rb.prompt_len[i] = world_extract_prompt(env, l->ep, st.session, st.chunk, p,
                                                            prompt_max);
                else
                    rb.prompt_len[i] = world_manage_prompt(env, l->ep, &l->bank, cs[i].facts,
                                                           cs[i].n_facts, &cs[i].shown, p,
                                                           prompt_max);
                int stream = gid ? gid[i] : i;
                if (l->ahead_stream >= 0 && st.session > l->first_session)
                    stream = l->ahead_stream;
                rb.seeds[i] = row_seed(base, stream, k, role);
                rb.active[rb.n_active++] = i;
            }
            // 2. outputs: one batched model call, or the teacher lane by lane
            if (a->kind == ACTOR_MODEL) {
                if (model_generate(a, &rb, maxT, max_new_role[role], env->stop_token, base,
                                   speed) != 0)
                    goto done;
            } else {
                for (int j = 0; j < rb.n_active; j++) {
                    int i = rb.active[j];
                    Lane *l = &lanes[i];
                    ChunkStep st = steps[i][k];
                    int *g = rb.gen + (size_t)i * rb.stride;
                    if (role == ROLE_EXTRACT)
                        rb.gen_len[i] = world_teacher_extract(
                            env, l->ep, st.session, st.chunk, &a->teacher_flaws, a->teacher_noise,
                            rng, g, max_new_role[role]);
                    else
                        rb.gen_len[i] = world_teacher_manage(
                            env, l->ep, &l->bank, cs[i].facts, cs[i].n_facts, &cs[i].shown,
                            &a->teacher_flaws, a->teacher_noise, rng, g, max_new_role[role]);
                    if (rb.gen_len[i] < 0) {
                        fprintf(stderr, "rollout: the %s world has no teacher\n", env->name);
                        goto done;
                    }
                }
            }
            // 3. parse, apply, record
            for (int j = 0; j < rb.n_active; j++) {
                int i = rb.active[j];
                Lane *l = &lanes[i];
                ChunkStep st = steps[i][k];
                const int *g = rb.gen + (size_t)i * rb.stride;
                int glen = rb.gen_len[i];
                int malformed = 0;
                l->outputs++;
                // the credit metric's ground truth, judged on the state the policy saw (the
                // bank before this output is applied); only recorded turns need it
                int record = a->record &&
                             (!l->record_through || st.session <= l->record_through);
                int mistakes = -1;
                if (record)
                    mistakes = role == ROLE_EXTRACT
                        ? credit_extract_mistakes(env, l->ep, st.session, st.chunk, g, glen)
                        : credit_manage_mistakes(env, l->ep, &l->bank, cs[i].facts,
                                                 cs[i].n_facts, &cs[i].shown, g, glen);
                if (role == ROLE_EXTRACT) {
                    cs[i].n_facts = world_parse_extract(env, l->ep, st.session, st.chunk, g, glen,
                                                        cs[i].facts,
                                                        (int)(sizeof cs[i].facts / sizeof(Fact)),
                                                        &malformed);
                } else {
                    int n_invalid = 0;
                    int n_ops = world_parse_manage(env, g, glen, cs[i].facts, cs[i].n_facts,
                                                   &cs[i].shown, ops, MAX_OPS_PER_OUTPUT,
                                                   fact_store, &n_invalid, &malformed);
                    l->stats.invalid += n_invalid;
                    for (int o = 0; o < n_ops; o++) {
                        if (memory_apply(&l->bank, &ops[o], st.session, &l->stats) == 0 &&
                            (ops[o].kind == OP_INSERT || ops[o].kind == OP_UPDATE))
                            written_mark(&l->written, ops[o].evidence);
                    }
                }
                l->malformed += malformed;
                if (record)
                    turns_record(a->record, l, gid ? gid[i] : i, st.session, role,
                                 rb.prompts + (size_t)i * maxT, rb.prompt_len[i], g,
                                 a->kind == ACTOR_MODEL ? rb.gen_logp + (size_t)i * rb.stride
                                                        : NULL,
                                 glen, mistakes);
                // the session's last chunk: snapshot the bank after the manager ran
                if (role == ROLE_MANAGE && l->snapshots &&
                    (k + 1 == n_steps[i] || steps[i][k + 1].session != st.session))
                    lane_take_snapshot(l, st.session);
            }
        }
        report_progress(a->progress, k + 1, most, steps[longest][k].session, n_lanes, t0,
                        &last_report);
    }
    // A session without turns has no chunk step: its snapshot is the one before it.
    for (int i = 0; i < n_lanes; i++) {
        Lane *l = &lanes[i];
        if (!l->snapshots) continue;
        for (int s = l->first_session; s <= l->last_session; s++)
            if (world_num_chunks(env, l->ep, s) == 0) {
                memcpy(lane_snapshot_slot(l, s), lane_snapshot_slot(l, s - 1),
                       memory_snapshot_bytes(&l->bank));
                l->counters[s - (l->first_session - 1)] = l->counters[s - l->first_session];
            }
    }
    rc = 0;
done:
    free(ops);
    free(fact_store);
    if (steps)
        for (int i = 0; i < n_lanes; i++) free(steps[i]);
    free(steps);
    free(n_steps);
    free(cs);
    role_batch_free(&rb);
    if (speed) speed->seconds += now_seconds() - t0;
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Lanes shared by ranks (Actor.dist): each rank runs its lanes, then every lane's state is
// broadcast by its owner and the recorded turns are gathered, so every rank continues with what
// one process would hold.

// Bytes of a lane's state: bank, written set, counters, snapshots. The same on every rank,
// since every rank initialised the same lanes.
static size_t lane_state_bytes(const Lane *l) {
    size_t nsnap = l->snapshots ? (size_t)(l->last_session - l->first_session + 2) : 0;
    return memory_snapshot_bytes(&l->bank) * (1 + nsnap) + (size_t)l->written.n +
           sizeof(LaneCounters) * (1 + nsnap);
}

static void lane_state_copy(Lane *l, unsigned char *buf, int pack) {
    size_t sb = memory_snapshot_bytes(&l->bank);
    size_t nsnap = l->snapshots ? (size_t)(l->last_session - l->first_session + 2) : 0;
    LaneCounters now = {.stats = l->stats, .malformed = l->malformed, .outputs = l->outputs};
    unsigned char *p = buf;
    if (pack) {
        memory_snapshot(&l->bank, p);
        memcpy(p + sb, l->written.written, (size_t)l->written.n);
        memcpy(p + sb + l->written.n, &now, sizeof now);
    } else {
        memory_restore(&l->bank, p);
        memcpy(l->written.written, p + sb, (size_t)l->written.n);
        memcpy(&now, p + sb + l->written.n, sizeof now);
        l->stats = now.stats, l->malformed = now.malformed, l->outputs = now.outputs;
    }
    p += sb + (size_t)l->written.n + sizeof now;
    if (nsnap) {
        unsigned char *snap = l->snapshots, *cnt = (unsigned char *)l->counters;
        size_t cb = sizeof(LaneCounters) * nsnap;
        memcpy(pack ? p : snap, pack ? snap : p, sb * nsnap);
        memcpy(pack ? p + sb * nsnap : cnt, pack ? cnt : p + sb * nsnap, cb);
    }
}

static int sync_lanes(const Dist *d, Lane *lanes, int n) {
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if (lane_state_bytes(&lanes[i]) > most) most = lane_state_bytes(&lanes[i]);
    unsigned char *buf = malloc(most ? most : 1);
    if (!buf) {
        fprintf(stderr, "rollout: out of memory sharing lanes of %zu bytes\n", most);
        dist_abort(d, 1);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int owner = dist_owner(d, i), mine = owner == dist_rank(d);
        if (mine) lane_state_copy(&lanes[i], buf, 1);
        dist_bcast(d, buf, lane_state_bytes(&lanes[i]), owner);
        if (!mine) lane_state_copy(&lanes[i], buf, 0);
    }
    free(buf);
    return 0;
}

// A turn in transit: the PolicyTurn, then its tokens, then their logp_old.
static size_t packed_turn_bytes(const PolicyTurn *t) {
    size_t n = (size_t)(t->prompt_len + t->out_len);
    return sizeof(PolicyTurn) + n * (sizeof(int) + sizeof(float));
}

// The ordering key of a turn: one process records them by (the lane's chunk step, role, lane),
// and a lane's turns alternate extract / manage, so its j-th turn of a call is step j / 2.
static int64_t turn_key(int j, int role, int lane) {
    return ((int64_t)(j / 2) << 33) | ((int64_t)role << 32) | (int64_t)(uint32_t)lane;
}
typedef struct {
    int64_t key;
    const unsigned char *at;
} TurnRef;
static int cmp_turn_ref(const void *a, const void *b) {
    int64_t x = ((const TurnRef *)a)->key, y = ((const TurnRef *)b)->key;
    return (x > y) - (x < y);
}

// Replaces the turns recorded since turn `first` (and token `first_tok`) on this rank with those
// of every rank, in one process's order. Lane indices are global (n_lanes of them).
static int gather_turns(const Dist *d, TurnBuffer *tb, int first, int first_tok, int n_lanes) {
    size_t bytes = 0;
    int nt = turns_count(tb);
    for (int i = first; i < nt; i++) bytes += packed_turn_bytes(&tb->turns[i]);
    unsigned char *mine = malloc(bytes ? bytes : 1), *all = NULL, *p = mine;
    size_t *counts = malloc(sizeof(size_t) * (size_t)dist_size(d));
    int *ord = calloc((size_t)(n_lanes > 0 ? n_lanes : 1), sizeof(int));
    TurnRef *refs = NULL;
    int rc = -1;
    if (!mine || !counts || !ord) goto done;
    for (int i = first; i < nt; i++) {
        const PolicyTurn *t = &tb->turns[i];
        size_t n = (size_t)(t->prompt_len + t->out_len);
        memcpy(p, t, sizeof *t);
        memcpy(p + sizeof *t, tb->tokens + t->offset, n * sizeof(int));
        memcpy(p + sizeof *t + n * sizeof(int), tb->logp_old + t->offset, n * sizeof(float));
        p += packed_turn_bytes(t);
    }
    if (dist_allgather(d, mine, bytes, (void **)&all, counts) != 0) goto done;
    size_t total = 0;
    for (int r = 0; r < dist_size(d); r++) total += counts[r];
    // index every turn (each rank's turns of a lane are in the lane's own order)
    int n_all = 0;
    for (const unsigned char *q = all; q < all + total; n_all++) {
        PolicyTurn t;
        memcpy(&t, q, sizeof t);
        q += packed_turn_bytes(&t);
    }
    refs = malloc(sizeof(TurnRef) * (size_t)(n_all ? n_all : 1));
    if (!refs) goto done;
    const unsigned char *q = all;
    for (int i = 0; i < n_all; i++) {
        PolicyTurn t;
        memcpy(&t, q, sizeof t);
        if (t.lane < 0 || t.lane >= n_lanes) {
            fprintf(stderr, "rollout: a gathered turn names lane %d of %d\n", t.lane, n_lanes);
            goto done;
        }
        refs[i] = (TurnRef){turn_key(ord[t.lane]++, t.role, t.lane), q};
        q += packed_turn_bytes(&t);
    }
    qsort(refs, (size_t)n_all, sizeof *refs, cmp_turn_ref);
    arrsetlen(tb->turns, first);
    arrsetlen(tb->tokens, first_tok);
    arrsetlen(tb->logp_old, first_tok);
    for (int i = 0; i < n_all; i++) {
        PolicyTurn t;
        memcpy(&t, refs[i].at, sizeof t);
        size_t n = (size_t)(t.prompt_len + t.out_len);
        const int *tok = (const int *)(refs[i].at + sizeof t);
        const float *lp = (const float *)(refs[i].at + sizeof t + n * sizeof(int));
        t.offset = (int)arrlen(tb->tokens);
        for (size_t k = 0; k < n; k++) {
            int v;
            float f;
            memcpy(&v, tok + k, sizeof v), memcpy(&f, lp + k, sizeof f);  // unaligned-safe
            arrput(tb->tokens, v);
            arrput(tb->logp_old, f);
        }
        arrput(tb->turns, t);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "rollout: rank %d could not gather the recorded turns\n", dist_rank(d));
    free(mine), free(all), free(counts), free(ord), free(refs);
    return rc;
}

static int run_shared(const World *env, Lane *lanes, int n_lanes, const Actor *a, Rng *rng,
                      uint64_t base, RolloutSpeed *speed) {
    const Dist *d = a->dist;
    double t0 = now_seconds();
    Lane *mine = malloc(sizeof(Lane) * (size_t)(n_lanes > 0 ? n_lanes : 1));
    int *gid = calloc((size_t)(n_lanes > 0 ? n_lanes : 1), sizeof(int));
    int m = 0, rc = -1;
    int first = a->record ? turns_count(a->record) : 0;
    int first_tok = a->record ? (int)arrlen(a->record->tokens) : 0;
    RolloutSpeed sp = {0};
    if (mine && gid) {
        for (int i = 0; i < n_lanes; i++)
            if (dist_owner(d, i) == dist_rank(d)) mine[m] = lanes[i], gid[m++] = i;
        rc = m > 0 ? run_lanes(env, mine, m, gid, a, rng, base, &sp) : 0;
        for (int j = 0; j < m; j++) lanes[gid[j]] = mine[j];  // the counters moved on
    }
    free(mine), free(gid);
    if (!dist_all_ok(d, rc == 0)) return -1;  // every rank stops together
    if (sync_lanes(d, lanes, n_lanes) != 0) return -1;
    if (a->record && !dist_all_ok(d, gather_turns(d, a->record, first, first_tok, n_lanes) == 0))
        return -1;
    if (speed) {
        double tok[2] = {(double)sp.prompt_tokens, (double)sp.new_tokens};
        dist_sum_double(d, tok, 2);
        speed->prompt_tokens += (long)tok[0], speed->new_tokens += (long)tok[1];
        speed->seconds += now_seconds() - t0;
    }
    return 0;
}

int rollout_run(const World *env, Lane *lanes, int n_lanes, const Actor *a, Rng *rng,
                RolloutSpeed *speed) {
    if (a->kind != ACTOR_MODEL) return run_lanes(env, lanes, n_lanes, NULL, a, rng, 0, speed);
    uint64_t base = rng_fork_seed(rng);  // one draw per call, however the lanes are split
    if (dist_size(a->dist) == 1) return run_lanes(env, lanes, n_lanes, NULL, a, rng, base, speed);
    return run_shared(env, lanes, n_lanes, a, rng, base, speed);
}
