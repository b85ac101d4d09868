// tests/test_memory.c: the memory bank (memory.c) against simple reference models.
//
//   1. Property test: random op sequences (INSERT / UPDATE / DELETE / NOOP, bad ids, empty and
//      over-long facts, full banks) applied to the bank and to a reference made of plain structs
//      must agree slot by slot and counter by counter; snapshot, more ops, restore gives the same
//      bytes and the same behaviour when the ops are replayed.
//   2. Hand cases: overflow and bad ids counted, truncation, init failures, the text dump.
//   4. (after BM25) Splicing a session into a trajectory: a hand case per rule of memory.h, and
//      splicing a session back into its own trajectory changes nothing.
//   3. BM25: a hand-computed example, then random banks (with and without a stop-word mask,
//      small vocabularies for many exact ties, k beyond the top-k stack buffer, a bank dense
//      enough to take memory.c's second-pass path) against a brute-force scorer.
// Build and run: make build/rel/tests/test_memory && build/rel/tests/test_memory
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../memory.h"
#include "../rng.h"
#include "check.h"

// ---------------------------------------------------------------------------------------------
// Reference bank: an array of structs, written from the spec in memory.h without looking at
// memory.c's layout.
#define REF_MAXCAP 64
#define REF_MAXLEN 32

typedef struct {
    int alive, len, session, evidence;
    int tok[REF_MAXLEN];
} RefSlot;

typedef struct {
    int cap, slot_len;
    RefSlot s[REF_MAXCAP];
    MemoryStats st;
} Ref;

static int ref_apply(Ref *r, const MemoryOp *op, int session) {
    int has_fact = op->fact != NULL && op->fact_len > 0;
    int ok_slot = op->slot >= 0 && op->slot < r->cap && r->s[op->slot].alive;
    int target = -1;
    if (op->kind == OP_NOOP) { r->st.noops++; return 0; }
    if (op->kind == OP_INSERT) {
        if (!has_fact) { r->st.invalid++; return -1; }
        for (int i = 0; i < r->cap && target < 0; i++)
            if (!r->s[i].alive) target = i;
        if (target < 0) { r->st.overflow++; return -1; }
        r->st.inserts++;
    } else if (op->kind == OP_UPDATE) {
        if (!has_fact || !ok_slot) { r->st.invalid++; return -1; }
        target = op->slot;
        r->st.updates++;
    } else if (op->kind == OP_DELETE) {
        if (!ok_slot) { r->st.invalid++; return -1; }
        r->s[op->slot].alive = 0;
        r->st.deletes++;
        return 0;
    } else {
        r->st.invalid++;
        return -1;
    }
    RefSlot *d = &r->s[target];
    d->alive = 1;
    d->len = op->fact_len > r->slot_len ? r->slot_len : op->fact_len;
    for (int j = 0; j < d->len; j++) d->tok[j] = op->fact[j];
    d->session = session;
    d->evidence = op->evidence;
    return 0;
}

// Number of disagreements between the bank and the reference, including non-canonical bytes
// (dead slots and unused tails must be zero so that equal banks are byte-equal).
static int bank_vs_ref(const MemoryBank *m, const Ref *r) {
    int bad = 0;
    for (int i = 0; i < r->cap; i++) {
        const RefSlot *s = &r->s[i];
        const int *row = m->tokens + (size_t)i * m->slot_len;
        if (m->alive[i] != (s->alive ? 1 : 0)) { bad++; continue; }
        int len = s->alive ? s->len : 0;
        if (m->len[i] != len) bad++;
        if (m->session[i] != (s->alive ? s->session : 0)) bad++;
        if (m->evidence[i] != (s->alive ? s->evidence : 0)) bad++;
        for (int j = 0; j < m->slot_len; j++)
            if (row[j] != (j < len ? s->tok[j] : 0)) bad++;
    }
    return bad;
}

static int stats_equal(MemoryStats a, MemoryStats b) {
    return a.inserts == b.inserts && a.updates == b.updates && a.deletes == b.deletes &&
           a.noops == b.noops && a.invalid == b.invalid && a.overflow == b.overflow;
}

static int ref_alive(const Ref *r) {
    int n = 0;
    for (int i = 0; i < r->cap; i++) n += r->s[i].alive;
    return n;
}
static long ref_words(const Ref *r) {
    long n = 0;
    for (int i = 0; i < r->cap; i++)
        if (r->s[i].alive) n += r->s[i].len;
    return n;
}

// A random op. Facts go into fact_buf (REF_MAXLEN + 8). Roughly: 40% INSERT, 20% UPDATE,
// 20% DELETE, 10% NOOP, 10% broken (a NULL fact, or a kind outside the enum).
static MemoryOp random_op(Rng *rng, const MemoryBank *m, int vocab, int *fact_buf) {
    MemoryOp op = {.kind = OP_NOOP, .slot = -1, .fact = NULL, .fact_len = 0, .evidence = 0};
    uint32_t u = rng_below(rng, 10);
    op.kind = u < 4 ? OP_INSERT : u < 6 ? OP_UPDATE : u < 8 ? OP_DELETE : OP_NOOP;
    // Slots: mostly an alive one (when there is one), else anything, out of range included.
    int alive_n = memory_alive_count(m);
    if (alive_n > 0 && rng_below(rng, 10) < 7) {
        int pick = (int)rng_below(rng, (uint32_t)alive_n);
        for (int i = 0; i < m->cap; i++)
            if (m->alive[i] && pick-- == 0) { op.slot = i; break; }
    } else {
        op.slot = (int)rng_below(rng, (uint32_t)m->cap + 6) - 3;
    }
    // Facts: length 0 .. slot_len + 4 (0 is invalid, beyond slot_len is truncated).
    op.fact_len = (int)rng_below(rng, (uint32_t)m->slot_len + 5);
    for (int j = 0; j < op.fact_len; j++) fact_buf[j] = (int)rng_below(rng, (uint32_t)vocab);
    op.fact = fact_buf;
    op.evidence = DIA_CODE(1 + (int)rng_below(rng, 40), (int)rng_below(rng, 30));
    if (u == 9) {  // broken
        if (rng_below(rng, 2)) { op.kind = OP_INSERT; op.fact = NULL; }
        else op.kind = (OpKind)(OP_NOOP + 1 + (int)rng_below(rng, 3));
    }
    return op;
}

typedef struct {
    MemoryOp op;
    int fact[REF_MAXLEN + 8];
    int session, ret;
} Recorded;

static void test_property(void) {
    Rng rng;
    rng_seed(&rng, 1234);
    const int shapes[][2] = {{1, 1}, {2, 3}, {5, 4}, {16, 8}, {40, 24}, {64, 32}};
    const int n_shapes = (int)(sizeof(shapes) / sizeof(shapes[0]));
    enum { TRIALS = 60, N1 = 300, N2 = 200 };
    static Recorded rec[N2];
    long ops_total = 0, mismatches = 0, count_mismatches = 0, restore_byte_diffs = 0,
         replay_diffs = 0, snapshot_layout_diffs = 0;
    MemoryStats all = {0};
    for (int shape = 0; shape < n_shapes; shape++) {
        int cap = shapes[shape][0], slot_len = shapes[shape][1];
        MemoryBank m, saved;
        if (memory_init(&m, cap, slot_len) || memory_init(&saved, cap, slot_len)) {
            CHECK(0, "memory_init(%d, %d) failed", cap, slot_len);
            return;
        }
        size_t bytes = memory_snapshot_bytes(&m);
        CHECK(bytes == (size_t)cap * (4 * (size_t)slot_len + 13),
              "snapshot bytes %zu for cap %d slot_len %d", bytes, cap, slot_len);
        unsigned char *snap = malloc(bytes), *snap2 = malloc(bytes), *after = malloc(bytes);
        if (!snap || !snap2 || !after) { CHECK(0, "malloc"); return; }
        static Ref ref, ref_saved;
        for (int trial = 0; trial < TRIALS; trial++) {
            memory_clear(&m);
            memset(&ref, 0, sizeof(ref));
            ref.cap = cap;
            ref.slot_len = slot_len;
            MemoryStats st = {0};
            int fact[REF_MAXLEN + 8];
            int vocab = 2 + (int)rng_below(&rng, 50);
            // Phase 1: random ops, compared after every op.
            for (int i = 0; i < N1; i++) {
                int session = 1 + i / 20;
                MemoryOp op = random_op(&rng, &m, vocab, fact);
                int a = memory_apply(&m, &op, session, &st);
                int b = ref_apply(&ref, &op, session);
                mismatches += (a != b) + bank_vs_ref(&m, &ref);
                count_mismatches += !stats_equal(st, ref.st) +
                                    (memory_alive_count(&m) != ref_alive(&ref)) +
                                    (memory_words(&m) != ref_words(&ref));
                ops_total++;
            }
            // Snapshot: the buffer holds the five arrays in order, and is the same when taken twice.
            memory_snapshot(&m, snap);
            memory_snapshot(&m, snap2);
            size_t nt = (size_t)cap * slot_len * sizeof(int), c = (size_t)cap * sizeof(int);
            snapshot_layout_diffs += memcmp(snap, snap2, bytes) != 0;
            snapshot_layout_diffs += memcmp(snap, m.tokens, nt) != 0;
            snapshot_layout_diffs += memcmp(snap + nt, m.len, c) != 0;
            snapshot_layout_diffs += memcmp(snap + nt + c, m.session, c) != 0;
            snapshot_layout_diffs += memcmp(snap + nt + 2 * c, m.evidence, c) != 0;
            snapshot_layout_diffs += memcmp(snap + nt + 3 * c, m.alive, (size_t)cap) != 0;
            memory_copy(&saved, &m);
            ref_saved = ref;
            MemoryStats st_saved = st;
            // Phase 2: more ops, recorded.
            for (int i = 0; i < N2; i++) {
                Recorded *r = &rec[i];
                r->session = 100 + i / 10;
                r->op = random_op(&rng, &m, vocab, r->fact);
                if (r->op.fact) r->op.fact = r->fact;
                r->ret = memory_apply(&m, &r->op, r->session, &st);
                int b = ref_apply(&ref, &r->op, r->session);
                mismatches += (r->ret != b) + bank_vs_ref(&m, &ref);
                count_mismatches += !stats_equal(st, ref.st);
                ops_total++;
            }
            memory_snapshot(&m, after);
            MemoryStats st_after = st;
            // Restore: identical bytes, array by array.
            memory_restore(&m, snap);
            restore_byte_diffs += memcmp(m.tokens, saved.tokens, nt) != 0;
            restore_byte_diffs += memcmp(m.len, saved.len, c) != 0;
            restore_byte_diffs += memcmp(m.session, saved.session, c) != 0;
            restore_byte_diffs += memcmp(m.evidence, saved.evidence, c) != 0;
            restore_byte_diffs += memcmp(m.alive, saved.alive, (size_t)cap) != 0;
            mismatches += bank_vs_ref(&m, &ref_saved);
            // Replay: the same ops give the same results and the same final bytes.
            st = st_saved;
            for (int i = 0; i < N2; i++)
                replay_diffs += memory_apply(&m, &rec[i].op, rec[i].session, &st) != rec[i].ret;
            memory_snapshot(&m, snap2);
            replay_diffs += memcmp(snap2, after, bytes) != 0;
            replay_diffs += !stats_equal(st, st_after);
            all.inserts += st.inserts; all.updates += st.updates; all.deletes += st.deletes;
            all.noops += st.noops; all.invalid += st.invalid; all.overflow += st.overflow;
        }
        free(snap); free(snap2); free(after);
        memory_free(&m);
        memory_free(&saved);
    }
    printf("property: %ld ops (ins %d upd %d del %d noop %d invalid %d overflow %d, summed over "
           "trials)\n", ops_total, all.inserts, all.updates, all.deletes, all.noops,
           all.invalid, all.overflow);
    printf("property: mismatches %ld, counter mismatches %ld, snapshot layout %ld, restore %ld, "
           "replay %ld\n", mismatches, count_mismatches, snapshot_layout_diffs,
           restore_byte_diffs, replay_diffs);
    CHECK(mismatches == 0, "bank and reference disagree %ld times", mismatches);
    CHECK(count_mismatches == 0, "stats / alive / words disagree %ld times", count_mismatches);
    CHECK(snapshot_layout_diffs == 0, "snapshot layout differs %ld times", snapshot_layout_diffs);
    CHECK(restore_byte_diffs == 0, "restore differs from the snapshot %ld times", restore_byte_diffs);
    CHECK(replay_diffs == 0, "replay after restore differs %ld times", replay_diffs);
    // Every path was exercised.
    CHECK(all.inserts > 0 && all.updates > 0 && all.deletes > 0 && all.noops > 0 &&
          all.invalid > 0 && all.overflow > 0, "some op path never ran");
}

// ---------------------------------------------------------------------------------------------
// Hand cases

static void test_hand_ops(void) {
    MemoryBank m;
    CHECK(memory_init(&m, 2, 4) == 0, "init 2x4");
    MemoryStats st = {0};
    int f1[] = {1, 2, 3}, f2[] = {4, 5, 6, 7, 8, 9, 10};  // f2 is longer than slot_len
    MemoryOp ins1 = {OP_INSERT, -1, f1, 3, DIA_CODE(1, 2)};
    MemoryOp ins2 = {OP_INSERT, -1, f2, 7, DIA_CODE(1, 5)};
    CHECK(memory_apply(&m, &ins1, 1, &st) == 0, "insert 1");
    CHECK(memory_apply(&m, &ins2, 1, &st) == 0, "insert 2 (truncated)");
    CHECK(m.len[1] == 4 && m.tokens[4] == 4 && m.tokens[7] == 7, "truncated to slot_len: len %d",
          m.len[1]);
    CHECK(memory_words(&m) == 7 && memory_alive_count(&m) == 2, "words %ld alive %d",
          memory_words(&m), memory_alive_count(&m));
    CHECK(memory_first_free(&m) == -1, "full bank has no free slot");
    // Overflow, then bad ids, dead slots, empty facts: counted, skipped, bank unchanged.
    CHECK(memory_apply(&m, &ins1, 2, &st) == -1 && st.overflow == 1, "overflow counted");
    MemoryOp empty = {OP_INSERT, -1, f1, 0, 0};
    CHECK(memory_apply(&m, &empty, 2, &st) == -1 && st.invalid == 1 && st.overflow == 1,
          "empty insert into a full bank is invalid, not overflow");
    MemoryOp upd_bad = {OP_UPDATE, 7, f1, 3, 0}, upd_neg = {OP_UPDATE, -1, f1, 3, 0};
    CHECK(memory_apply(&m, &upd_bad, 2, &st) == -1, "update slot 7");
    CHECK(memory_apply(&m, &upd_neg, 2, &st) == -1, "update slot -1");
    MemoryOp del0 = {OP_DELETE, 0, NULL, 0, 0};
    CHECK(memory_apply(&m, &del0, 2, &st) == 0 && memory_first_free(&m) == 0, "delete slot 0");
    CHECK(memory_apply(&m, &del0, 2, &st) == -1, "delete a dead slot");
    MemoryOp upd0 = {OP_UPDATE, 0, f1, 3, 0};
    CHECK(memory_apply(&m, &upd0, 2, &st) == -1, "update a dead slot");
    CHECK(memory_apply(&m, NULL, 2, &st) == -1, "NULL op");
    MemoryOp upd1 = {OP_UPDATE, 1, f2 + 1, 6, DIA_CODE(2, 9)};
    CHECK(memory_apply(&m, &upd1, 3, NULL) == 0, "update slot 1 (NULL stats allowed)");
    CHECK(m.len[1] == 4 && m.tokens[4] == 5 && m.tokens[7] == 8 && m.session[1] == 3 &&
          m.evidence[1] == DIA_CODE(2, 9), "update truncated, session and evidence recorded");
    CHECK(st.inserts == 2 && st.updates == 0 && st.deletes == 1 && st.invalid == 6 &&
          st.overflow == 1, "counters: ins %d upd %d del %d invalid %d overflow %d", st.inserts,
          st.updates, st.deletes, st.invalid, st.overflow);
    memory_free(&m);
    CHECK(m.tokens == NULL && m.cap == 0, "free zeroes the struct");
    memory_free(&m);  // twice is harmless

    // Bad shapes are refused with a message, never allocated.
    fprintf(stderr, "(three expected memory_init / memory_copy errors follow)\n");
    CHECK(memory_init(&m, 0, 24) == -1, "cap 0 refused");
    CHECK(memory_init(&m, 1 << 20, 1 << 20) == -1, "2^40 tokens refused");
    // A bank whose init failed is empty and safe to use: nothing stored, nothing retrieved.
    MemoryOp ins = {OP_INSERT, -1, f1, 3, 0};
    MemoryStats st0 = {0};
    int out[4];
    memory_clear(&m);
    CHECK(memory_apply(&m, &ins, 1, &st0) == -1 && st0.overflow == 1, "insert into a 0-slot bank");
    CHECK(memory_retrieve(&m, f1, 3, 4, out) == 0 && memory_alive_count(&m) == 0 &&
          memory_words(&m) == 0 && memory_snapshot_bytes(&m) == 0, "0-slot bank is empty");
    memory_free(&m);
    MemoryBank a, b;
    CHECK(memory_init(&a, 3, 4) == 0 && memory_init(&b, 3, 5) == 0, "init a, b");
    CHECK(memory_copy(&a, &b) == -1, "copy between different shapes refused");
    memory_free(&a);
    memory_free(&b);
}

static const char *word_of(void *ctx, int id) {
    const char **words = ctx;
    return id >= 0 && id < 5 ? words[id] : NULL;
}

static void test_dump(void) {
    MemoryBank m;
    CHECK(memory_init(&m, 4, 6) == 0, "init 4x6");
    int f1[] = {0, 1, 2}, f2[] = {3, 4, 9};
    MemoryOp a = {OP_INSERT, -1, f1, 3, DIA_CODE(3, 7)}, b = {OP_INSERT, -1, f2, 3, 0};
    MemoryOp c = {OP_INSERT, -1, f1, 1, DIA_CODE(12, 0)}, del = {OP_DELETE, 0, NULL, 0, 0};
    memory_apply(&m, &a, 3, NULL);
    memory_apply(&m, &b, 4, NULL);
    memory_apply(&m, &c, 12, NULL);
    memory_apply(&m, &del, 12, NULL);
    const char *words[] = {"alice", "lives", "in", "lyon", "now"};
    FILE *f = tmpfile();
    if (!f) { CHECK(0, "tmpfile failed"); memory_free(&m); return; }
    memory_dump(&m, f, word_of, words);
    memory_dump(&m, f, NULL, NULL);
    char got[1024] = {0};
    rewind(f);
    size_t n = fread(got, 1, sizeof(got) - 1, f);
    fclose(f);
    const char *want =
        "memory: 2/4 slots alive, 4 words\n"
        "[  1] s4  D?       lyon now <9>\n"
        "[  2] s12 D12:0    alice\n"
        "memory: 2/4 slots alive, 4 words\n"
        "[  1] s4  D?       <3> <4> <9>\n"
        "[  2] s12 D12:0    <0>\n";
    CHECK(n == strlen(want) && strcmp(got, want) == 0, "dump:\n%s\nwant:\n%s", got, want);
    memory_free(&m);
}

// ---------------------------------------------------------------------------------------------
// BM25

static void insert(MemoryBank *m, const int *fact, int n) {
    MemoryOp op = {OP_INSERT, -1, fact, n, 0};
    memory_apply(m, &op, 1, NULL);
}

// Hand-computed: slots D0 = [1 2 3], D1 = [2 2 4 5], D2 = [6 7] (and a deleted slot between),
// N = 3, avgdl = 3, k1 = 1.2, b = 0.75, query [2 6]:
//   idf(2) = ln(1 + 1.5/2.5) = 0.47000362924573563   (df 2)
//   idf(6) = ln(1 + 2.5/1.5) = 0.9808292530117263    (df 1)
//   D0: 0.4700036 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 3/3)) = 0.47000362924573563
//   D1: 0.4700036 * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 4/3)) = 0.4700036 * 4.4/3.5 = 0.5908617053374963
//   D2: 0.9808293 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2/3)) = 0.9808293 * 2.2/1.9 = 1.1356970298030515
// so the ranking is D2, D1, D0. With token 2 ignored, lengths become 2, 2, 2 (avgdl 2) and only
// D2 scores: idf(6) * 2.2 / 2.2 = 0.9808292530117263.
static void test_bm25_hand(void) {
    MemoryBank m;
    CHECK(memory_init(&m, 8, 6) == 0, "init 8x6");
    int d0[] = {1, 2, 3}, dx[] = {9, 9, 9}, d1[] = {2, 2, 4, 5}, d2[] = {6, 7};
    insert(&m, d0, 3);
    insert(&m, dx, 3);
    insert(&m, d1, 4);
    insert(&m, d2, 2);
    MemoryOp del = {OP_DELETE, 1, NULL, 0, 0};
    memory_apply(&m, &del, 1, NULL);  // slots: 0 = D0, 2 = D1, 3 = D2
    int q[] = {2, 6}, out[8];
    double sc[8];
    memory_bm25_scores(&m, q, 2, NULL, 0, sc);
    double want0 = 0.47000362924573563, want2 = 0.5908617053374963, want3 = 1.1356970298030515;
    double err = fabs(sc[0] - want0) + fabs(sc[2] - want2) + fabs(sc[3] - want3);
    printf("bm25 hand example: scores %.17g %.17g %.17g, summed abs err %.3g\n", sc[0], sc[2],
           sc[3], err);
    CHECK_CLOSE("bm25 D0", sc[0], want0, 1e-14, 0);
    CHECK_CLOSE("bm25 D1", sc[2], want2, 1e-14, 0);
    CHECK_CLOSE("bm25 D2", sc[3], want3, 1e-14, 0);
    CHECK(sc[1] == 0 && sc[4] == 0, "dead and empty slots score 0");
    int n = memory_retrieve(&m, q, 2, 8, out);
    CHECK(n == 3 && out[0] == 3 && out[1] == 2 && out[2] == 0, "ranking D2 D1 D0: n=%d %d %d %d",
          n, out[0], out[1], out[2]);
    n = memory_retrieve(&m, q, 2, 2, out);
    CHECK(n == 2 && out[0] == 3 && out[1] == 2, "top-2");
    // A repeated query term counts once.
    int qrep[] = {6, 2, 2, 6, 2};
    double sc2[8];
    memory_bm25_scores(&m, qrep, 5, NULL, 0, sc2);
    CHECK(sc2[0] == sc[0] && sc2[2] == sc[2] && sc2[3] == sc[3], "repeated terms count once");
    // No shared term, empty query, k = 0: nothing.
    int qnone[] = {42, 43};
    CHECK(memory_retrieve(&m, qnone, 2, 8, out) == 0, "no shared term");
    CHECK(memory_retrieve(&m, q, 0, 8, out) == 0, "empty query");
    CHECK(memory_retrieve(&m, q, 2, 0, out) == 0, "k = 0");
    // Masked: token 2 removed from query and slots.
    uint8_t ignore[8] = {0};
    ignore[2] = 1;
    memory_bm25_scores(&m, q, 2, ignore, 8, sc2);
    CHECK_CLOSE("bm25 masked D2", sc2[3], 0.9808292530117263, 1e-14, 0);
    CHECK(sc2[0] == 0 && sc2[2] == 0, "masked: only D2 scores");
    n = memory_retrieve_masked(&m, q, 2, ignore, 8, 8, out);
    CHECK(n == 1 && out[0] == 3, "masked retrieval: n=%d", n);
    n = memory_retrieve_masked(&m, q, 2, ignore, -5, 8, out);
    CHECK(n == 3 && out[0] == 3, "a mask of negative length is no mask: n=%d", n);
    // Ties go to the lower slot: two identical slots with the words in different order.
    int e1[] = {7, 6}, e2[] = {6, 7};
    insert(&m, e1, 2);  // slot 1
    insert(&m, e2, 2);  // slot 4
    n = memory_retrieve(&m, (int[]){7}, 1, 3, out);
    CHECK(n == 3 && out[0] == 1 && out[1] == 3 && out[2] == 4, "ties by slot: %d %d %d", out[0],
          out[1], out[2]);
    // Empty bank.
    memory_clear(&m);
    CHECK(memory_retrieve(&m, q, 2, 8, out) == 0 && memory_alive_count(&m) == 0, "empty bank");
    memory_free(&m);
}

// Brute force: distinct non-ignored query terms in order of first occurrence; for each slot,
// the BM25 sum over those terms in that order.
static void brute_scores(const MemoryBank *m, const int *q, int qn, const uint8_t *ign, int ign_n,
                         double *scores) {
    int terms[64], nt = 0;
    for (int i = 0; i < qn; i++) {
        int id = q[i], dup = 0;
        if (ign && id >= 0 && id < ign_n && ign[id]) continue;
        for (int t = 0; t < nt; t++) dup |= terms[t] == id;
        if (!dup) terms[nt++] = id;
    }
    int N = 0;
    double total = 0;
    for (int s = 0; s < m->cap; s++) {
        scores[s] = 0;
        if (!m->alive[s]) continue;
        N++;
        for (int j = 0; j < m->len[s]; j++) {
            int id = m->tokens[(size_t)s * m->slot_len + j];
            total += !(ign && id >= 0 && id < ign_n && ign[id]);
        }
    }
    for (int t = 0; t < nt; t++) {
        int df = 0;
        for (int s = 0; s < m->cap; s++) {
            if (!m->alive[s]) continue;
            int has = 0;
            for (int j = 0; j < m->len[s]; j++) has |= m->tokens[(size_t)s * m->slot_len + j] == terms[t];
            df += has;
        }
        if (df == 0) continue;
        double idf = log(1.0 + ((double)N - df + 0.5) / ((double)df + 0.5));
        double avgdl = total / N;
        for (int s = 0; s < m->cap; s++) {
            if (!m->alive[s]) continue;
            int tf = 0, dl = 0;
            for (int j = 0; j < m->len[s]; j++) {
                int id = m->tokens[(size_t)s * m->slot_len + j];
                tf += id == terms[t];
                dl += !(ign && id >= 0 && id < ign_n && ign[id]);
            }
            if (tf == 0) continue;
            double norm = 1.2 * (1.0 - 0.75 + 0.75 * (double)dl / avgdl);
            scores[s] += idf * tf * (1.2 + 1.0) / (tf + norm);
        }
    }
}

// Top-k from full scores: positive only, score descending, slot ascending on ties.
static int brute_topk(const double *scores, int cap, int k, int *out) {
    int n = 0;
    for (int s = 0; s < cap; s++) {
        if (!(scores[s] > 0)) continue;
        int p;
        if (n < k) {
            p = n++;
        } else {
            if (!(scores[s] > scores[out[k - 1]])) continue;
            p = k - 1;
        }
        while (p > 0 && scores[out[p - 1]] < scores[s]) { out[p] = out[p - 1]; p--; }
        out[p] = s;
    }
    return n;
}

static void test_bm25_random(int cap, int slot_len, int trials, int kmax, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    MemoryBank m;
    if (memory_init(&m, cap, slot_len)) { CHECK(0, "init"); return; }
    double *got = malloc(sizeof(double) * cap), *want = malloc(sizeof(double) * cap);
    int *out = malloc(sizeof(int) * cap), *ref = malloc(sizeof(int) * cap);
    int *fact = malloc(sizeof(int) * (slot_len + 8));
    if (!got || !want || !out || !ref || !fact) { CHECK(0, "malloc"); return; }
    double max_err = 0;
    long rank_diffs = 0, queries = 0, returned = 0, ties = 0;
    for (int trial = 0; trial < trials; trial++) {
        memory_clear(&m);
        int vocab = 3 + (int)rng_below(&rng, 30);  // small vocabularies give many ties
        int fill = (int)rng_below(&rng, (uint32_t)cap + 1);
        for (int i = 0; i < fill; i++) {
            MemoryOp op = random_op(&rng, &m, vocab, fact);
            if (op.kind != OP_DELETE) op.kind = OP_INSERT;
            memory_apply(&m, &op, 1, NULL);
        }
        uint8_t ignore[40] = {0};
        int use_ignore = rng_below(&rng, 2);
        for (int i = 0; i < 40; i++) ignore[i] = rng_below(&rng, 6) == 0;
        for (int qi = 0; qi < 10; qi++) {
            int q[40], qn = (int)rng_below(&rng, 12);
            for (int i = 0; i < qn; i++) q[i] = (int)rng_below(&rng, (uint32_t)vocab + 3) - 1;
            const uint8_t *ign = use_ignore ? ignore : NULL;
            memory_bm25_scores(&m, q, qn, ign, 40, got);
            brute_scores(&m, q, qn, ign, 40, want);
            for (int s = 0; s < cap; s++) {
                double e = fabs(got[s] - want[s]);
                if (e > max_err) max_err = e;
            }
            int k = 1 + (int)rng_below(&rng, (uint32_t)kmax);
            int n = memory_retrieve_masked(&m, q, qn, ign, 40, k, out);
            int nr = brute_topk(want, cap, k < cap ? k : cap, ref);
            rank_diffs += n != nr;
            for (int i = 0; i < n && i < nr; i++) rank_diffs += out[i] != ref[i];
            for (int i = 1; i < nr; i++) ties += want[ref[i]] == want[ref[i - 1]];
            if (!use_ignore) {  // the unmasked entry point is the masked one with no mask
                int n2 = memory_retrieve(&m, q, qn, k, ref);
                rank_diffs += n2 != n;
                for (int i = 0; i < n && i < n2; i++) rank_diffs += out[i] != ref[i];
            }
            returned += n;
            queries++;
        }
    }
    printf("bm25 random cap=%d slot_len=%d: %ld queries, %ld slots returned, %ld exact ties in "
           "the rankings, max |score - brute| %.3g, ranking differences %ld\n",
           cap, slot_len, queries, returned, ties, max_err, rank_diffs);
    CHECK(max_err <= 1e-12, "BM25 scores differ from brute force by %.3g", max_err);
    CHECK(rank_diffs == 0, "rankings differ from brute force %ld times", rank_diffs);
    CHECK(returned > 0 && ties > 0, "the random cases exercise results and ties");
    free(got); free(want); free(out); free(ref); free(fact);
    memory_free(&m);
}

// A dense bank: every slot holds query terms, more than memory.c's pass-1 record buffer
// (4096 ints) can hold, so the scores come from its second pass over the tokens.
static void test_bm25_dense(void) {
    enum { CAP = 1000, SL = 8 };
    Rng rng;
    rng_seed(&rng, 11);
    MemoryBank m;
    if (memory_init(&m, CAP, SL)) { CHECK(0, "init"); return; }
    int fact[SL];
    for (int s = 0; s < CAP; s++) {
        int n = 1 + (int)rng_below(&rng, SL);
        for (int j = 0; j < n; j++) fact[j] = (int)rng_below(&rng, 6);
        insert(&m, fact, n);
    }
    static double got[CAP], want[CAP];
    static int out[CAP], ref[CAP];
    int q[] = {0, 1, 2, 3, 4, 5};
    memory_bm25_scores(&m, q, 6, NULL, 0, got);
    brute_scores(&m, q, 6, NULL, 0, want);
    double max_err = 0;
    for (int s = 0; s < CAP; s++) max_err = fmax(max_err, fabs(got[s] - want[s]));
    long diffs = 0;
    for (int k = 1; k <= CAP; k *= 10) {
        int n = memory_retrieve(&m, q, 6, k, out), nr = brute_topk(want, CAP, k, ref);
        diffs += n != nr;
        for (int i = 0; i < n && i < nr; i++) diffs += out[i] != ref[i];
    }
    printf("bm25 dense cap=%d: max |score - brute| %.3g, ranking differences %ld\n", CAP, max_err,
           diffs);
    CHECK(max_err <= 1e-12, "dense BM25 differs from brute force by %.3g", max_err);
    CHECK(diffs == 0, "dense rankings differ %ld times", diffs);
    memory_free(&m);
}

// ---------------------------------------------------------------------------------------------
// Splicing a session (memory_splice): hand cases for each rule, then the identity property.

// Writes fact {a, b} (b = 0: a one-word fact) with op kind into bank m in `session`.
static void put(MemoryBank *m, OpKind kind, int slot, int a, int b, int session) {
    int fact[2] = {a, b};
    MemoryOp op = {.kind = kind, .slot = slot, .fact = fact, .fact_len = b ? 2 : 1,
                   .evidence = DIA_CODE(session, 1)};
    CHECK(memory_apply(m, &op, session, NULL) == 0, "hand op %d on slot %d", (int)kind, slot);
}

// Slot s of m holds the fact {a, b} written in `session` (a = 0: the slot is free).
static void want_slot(const char *what, const MemoryBank *m, int s, int a, int b, int session) {
    const int *row = m->tokens + (size_t)s * m->slot_len;
    int len = a == 0 ? 0 : b ? 2 : 1;
    int ok = m->alive[s] == (a != 0) && m->len[s] == len && (a == 0 || row[0] == a) &&
             (len < 2 || row[1] == b) && (a == 0 || m->session[s] == session);
    CHECK(ok, "splice, %s: slot %d holds alive %d len %d [%d %d] s%d, want [%d %d] s%d", what, s,
          m->alive[s], m->len[s], row[0], m->slot_len > 1 ? row[1] : 0, m->session[s], a, b,
          session);
}

// Source: session 1 writes A = {1,2}, B = {3,4}, C = {5} (slots 0-2); session t = 2 updates A to
// {1,9}, inserts D = {6} (slot 3) and G = {11} (slot 4), deletes C; session 3 updates D to {6,7}
// and inserts E = {8} into slot 2 (freed in session 2). Rerun of session 2 from the same start:
// keeps A and C, updates B to {3,9}, deletes nothing, inserts D = {6} (the source's D) and
// F = {10}. Spliced: A as the rerun left it; B', the rerun's update; E and D' from session 3 in
// their slots (D' supersedes the rerun's D, which IS the source's D); C moved out of slot 2 (the
// source freed it in session 2 and reused the slot later) to the first free slot; F, a new
// memory, after it; G gone (only the source inserted it).
static void test_splice_hand(void) {
    MemoryBank before, src_after, src_final, rerun, out, small;
    CHECK(!memory_init(&before, 8, 4) && !memory_init(&src_after, 8, 4) &&
          !memory_init(&src_final, 8, 4) && !memory_init(&rerun, 8, 4) &&
          !memory_init(&out, 8, 4) && !memory_init(&small, 4, 4), "splice banks");
    put(&before, OP_INSERT, -1, 1, 2, 1);
    put(&before, OP_INSERT, -1, 3, 4, 1);
    put(&before, OP_INSERT, -1, 5, 0, 1);
    memory_copy(&src_after, &before);
    put(&src_after, OP_UPDATE, 0, 1, 9, 2);
    put(&src_after, OP_INSERT, -1, 6, 0, 2);  // slot 3
    put(&src_after, OP_INSERT, -1, 11, 0, 2); // slot 4
    put(&src_after, OP_DELETE, 2, 0, 0, 2);
    memory_copy(&src_final, &src_after);
    put(&src_final, OP_UPDATE, 3, 6, 7, 3);
    put(&src_final, OP_INSERT, -1, 8, 0, 3);  // slot 2, freed in session 2
    memory_copy(&rerun, &before);
    put(&rerun, OP_UPDATE, 1, 3, 9, 2);
    put(&rerun, OP_INSERT, -1, 6, 0, 2);      // slot 3
    put(&rerun, OP_INSERT, -1, 10, 0, 2);     // slot 4
    CHECK(memory_splice(&out, &before, &src_after, &src_final, &rerun, 2) == 0,
          "splice: nothing dropped");
    want_slot("A kept by the rerun", &out, 0, 1, 2, 1);
    want_slot("B updated by the rerun", &out, 1, 3, 9, 2);
    want_slot("E written later", &out, 2, 8, 0, 3);
    want_slot("D' written later, over the shared D", &out, 3, 6, 7, 3);
    want_slot("C moved out of a slot reused later", &out, 4, 5, 0, 1);
    want_slot("F, the rerun's own insert", &out, 5, 10, 0, 2);
    want_slot("G, only the source's", &out, 6, 0, 0, 0);
    CHECK(memory_alive_count(&out) == 6, "splice: %d memories, want 6", memory_alive_count(&out));
    // a rerun that deletes B, which the source left alone: B is gone at the end
    memory_copy(&rerun, &before);
    put(&rerun, OP_DELETE, 1, 0, 0, 2);
    CHECK(memory_splice(&out, &before, &src_after, &src_final, &rerun, 2) == 0, "splice 2");
    want_slot("B deleted by the rerun, C moved into its free slot", &out, 1, 5, 0, 1);
    want_slot("A as before", &out, 0, 1, 2, 1);
    CHECK(memory_alive_count(&out) == 4, "splice 2: %d memories, want A C E D'",
          memory_alive_count(&out));
    // no room: a full bank drops what has no slot and says how many
    for (int i = 0; i < 8; i++)
        put(&src_final, src_final.alive[i] ? OP_UPDATE : OP_INSERT, i, 20 + i, 0, 3);
    memory_copy(&rerun, &before);
    put(&rerun, OP_INSERT, -1, 10, 0, 2);
    // (C as well: the rerun kept it, its slot is taken and there is no other)
    CHECK(memory_splice(&out, &before, &src_after, &src_final, &rerun, 2) == 2,
          "splice into a full bank drops the rerun's two memories without a slot (C and F)");
    CHECK(memory_splice(&small, &before, &src_after, &src_final, &rerun, 2) == -1,
          "splice: a shape mismatch is refused");
    memory_free(&before), memory_free(&src_after), memory_free(&src_final);
    memory_free(&rerun), memory_free(&out), memory_free(&small);
}

// Whatever a source trajectory did, splicing in a rerun that did exactly what the source did in
// session t gives the source's final bank byte for byte.
static void test_splice_identity(void) {
    enum { CAP = 10, LEN = 3, S = 6, TRIALS = 300 };
    Rng rng;
    rng_seed(&rng, 99);
    MemoryBank bank, out, snaps[S + 1];
    CHECK(!memory_init(&bank, CAP, LEN) && !memory_init(&out, CAP, LEN), "identity banks");
    for (int s = 0; s <= S; s++) CHECK(!memory_init(&snaps[s], CAP, LEN), "snapshot bank %d", s);
    size_t bytes = memory_snapshot_bytes(&bank);
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    int fact_buf[REF_MAXLEN + 8], diffs = 0, busy = 0;
    for (int trial = 0; trial < TRIALS && a && b; trial++) {
        memory_clear(&bank);
        memory_copy(&snaps[0], &bank);
        for (int s = 1; s <= S; s++) {
            int n_ops = (int)rng_below(&rng, 5);
            for (int i = 0; i < n_ops; i++) {
                MemoryOp op = random_op(&rng, &bank, 8, fact_buf);
                memory_apply(&bank, &op, s, NULL);
            }
            memory_copy(&snaps[s], &bank);
        }
        int t = 1 + (int)rng_below(&rng, S);
        busy += memcmp(snaps[t].alive, snaps[t - 1].alive, CAP) != 0;
        memory_splice(&out, &snaps[t - 1], &snaps[t], &bank, &snaps[t], t);
        memory_snapshot(&out, a);
        memory_snapshot(&bank, b);
        diffs += memcmp(a, b, bytes) != 0;
    }
    CHECK(a && b && diffs == 0, "splicing a session back into its own trajectory changed %d of %d "
          "final banks", diffs, TRIALS);
    CHECK(busy > TRIALS / 4, "the random trajectories insert or delete in the spliced session "
          "(%d of %d)", busy, TRIALS);
    free(a), free(b);
    memory_free(&bank), memory_free(&out);
    for (int s = 0; s <= S; s++) memory_free(&snaps[s]);
}

int main(void) {
    test_property();
    test_hand_ops();
    test_dump();
    test_bm25_hand();
    test_bm25_random(24, 8, 300, 8, 7);
    test_bm25_random(200, 24, 30, 30, 8);
    test_bm25_random(600, 6, 4, 600, 9);  // k beyond the top-k stack buffer
    test_bm25_dense();
    test_splice_hand();
    test_splice_identity();
    return check_summary("test_memory");
}
