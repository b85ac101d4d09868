// memory.c: the agent's external memory bank (see memory.h for the contract and the op grammar).
//
// Layout. One allocation holds the five arrays back to back:
//   tokens (cap, slot_len) int | len (cap) int | session (cap) int | evidence (cap) int | alive (cap) u8
// Free slots are kept canonical (all zero), and the unused tail of a live slot is zero too, so
// two banks that hold the same memories are byte-identical: tests compare banks with memcmp and a
// snapshot taken twice gives the same bytes.
//
// Snapshot size. memory_snapshot_bytes() = cap * (4 * slot_len + 13) bytes. For the default bank
// (cap 256, slot_len 24) that is 256 * 109 = 27,904 bytes (27.25 KiB); LoGo-GRPO's G = 8 rollouts
// x H = 32 sessions of snapshots cost 256 * 27,904 = 7,143,424 bytes (6.8 MiB).
//
// Retrieval is Okapi BM25 with k1 = 1.2, b = 0.75 over token ids, the documents being the alive
// slots and the document frequencies counted in the bank itself. The IDF is the non-negative
// form used by Lucene, idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)): the classic
// ln((N - n_t + 0.5) / (n_t + 0.5)) goes negative for a term in more than half the slots, which
// on a bank of a handful of slots would rank a slot *below* one that shares nothing with the
// query. Each distinct query term counts once (a fact that repeats a word does not weigh it
// twice). Ignored token ids (stop words, special tokens) are treated as if deleted from the query
// and from every slot, so they change neither the scores nor the document lengths.
//
// Speed. The manager retrieves for every extracted fact and the answerer for every question, so
// retrieval runs ~1e5 times per training run on banks of ~200 slots. It allocates nothing: the
// query's distinct terms go into a small open-addressing table on the stack, fronted by a
// 4096-bit Bloom filter so that the common case (a slot token that is not in the query) costs one
// bit test. One pass over the bank's tokens counts lengths and document frequencies and records
// the few slots that hold query terms; the scores are then computed from those records.
#include "memory.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM25_K1 1.2
#define BM25_B 0.75

// ---------------------------------------------------------------------------------------------
// Allocation

// Largest bank accepted: token positions are indexed with int.
#define MEMORY_MAX_TOKENS ((size_t)1 << 30)

static size_t bank_tokens(const MemoryBank *m) { return (size_t)m->cap * (size_t)m->slot_len; }

size_t memory_snapshot_bytes(const MemoryBank *m) {
    return bank_tokens(m) * sizeof(int) + (size_t)m->cap * (3 * sizeof(int) + sizeof(uint8_t));
}

int memory_init(MemoryBank *m, int cap, int slot_len) {
    memset(m, 0, sizeof(*m));
    if (cap <= 0 || slot_len <= 0 || (size_t)cap * (size_t)slot_len > MEMORY_MAX_TOKENS) {
        fprintf(stderr, "memory_init: bad bank shape cap=%d slot_len=%d (need cap, slot_len > 0 "
                        "and cap * slot_len <= %zu)\n", cap, slot_len, MEMORY_MAX_TOKENS);
        return -1;
    }
    m->cap = cap;
    m->slot_len = slot_len;
    size_t bytes = memory_snapshot_bytes(m);
    // calloc: the bank starts empty and canonical (every byte zero).
    int *block = calloc(1, bytes);
    if (!block) {
        fprintf(stderr, "memory_init: out of memory allocating %zu bytes (cap=%d slot_len=%d)\n",
                bytes, cap, slot_len);
        m->cap = m->slot_len = 0;
        return -1;
    }
    size_t nt = bank_tokens(m), c = (size_t)cap;
    m->tokens = block;                       // (cap, slot_len)
    m->len = block + nt;                     // (cap)
    m->session = block + nt + c;             // (cap)
    m->evidence = block + nt + 2 * c;        // (cap)
    m->alive = (uint8_t *)(block + nt + 3 * c);  // (cap)
    return 0;
}

void memory_free(MemoryBank *m) {
    free(m->tokens);  // the start of the one block
    memset(m, 0, sizeof(*m));
}

void memory_clear(MemoryBank *m) {
    if (m->cap <= 0) return;  // a bank whose init failed: no arrays
    memset(m->tokens, 0, bank_tokens(m) * sizeof(int));
    memset(m->len, 0, (size_t)m->cap * sizeof(int));
    memset(m->session, 0, (size_t)m->cap * sizeof(int));
    memset(m->evidence, 0, (size_t)m->cap * sizeof(int));
    memset(m->alive, 0, (size_t)m->cap);
}

int memory_copy(MemoryBank *dst, const MemoryBank *src) {
    if (dst->cap != src->cap || dst->slot_len != src->slot_len) {
        fprintf(stderr, "memory_copy: shape mismatch (cap %d vs %d, slot_len %d vs %d)\n",
                dst->cap, src->cap, dst->slot_len, src->slot_len);
        return -1;
    }
    if (src->cap <= 0) return 0;
    memcpy(dst->tokens, src->tokens, bank_tokens(src) * sizeof(int));
    memcpy(dst->len, src->len, (size_t)src->cap * sizeof(int));
    memcpy(dst->session, src->session, (size_t)src->cap * sizeof(int));
    memcpy(dst->evidence, src->evidence, (size_t)src->cap * sizeof(int));
    memcpy(dst->alive, src->alive, (size_t)src->cap);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Operations

// Writes a (non-empty) fact into slot s, truncated to slot_len, with a zeroed tail.
static void write_slot(MemoryBank *m, int s, const int *fact, int fact_len, int session,
                       int evidence) {
    int n = fact_len < m->slot_len ? fact_len : m->slot_len;
    int *row = m->tokens + (size_t)s * m->slot_len;
    memcpy(row, fact, (size_t)n * sizeof(int));
    memset(row + n, 0, (size_t)(m->slot_len - n) * sizeof(int));
    m->len[s] = n;
    m->session[s] = session;
    m->evidence[s] = evidence;
    m->alive[s] = 1;
}

static void free_slot(MemoryBank *m, int s) {
    memset(m->tokens + (size_t)s * m->slot_len, 0, (size_t)m->slot_len * sizeof(int));
    m->len[s] = m->session[s] = m->evidence[s] = 0;
    m->alive[s] = 0;
}

int memory_first_free(const MemoryBank *m) {
    if (m->cap <= 0) return -1;
    const uint8_t *a = memchr(m->alive, 0, (size_t)m->cap);
    return a ? (int)(a - m->alive) : -1;
}

// Validity is checked before capacity: an empty INSERT into a full bank is invalid, not overflow.
int memory_apply(MemoryBank *m, const MemoryOp *op, int session, MemoryStats *stats) {
    MemoryStats dummy = {0};
    if (!stats) stats = &dummy;
    if (!op) { stats->invalid++; return -1; }
    int has_fact = op->fact != NULL && op->fact_len > 0;
    int slot_ok = op->slot >= 0 && op->slot < m->cap && m->alive[op->slot];
    switch (op->kind) {
    case OP_INSERT: {
        if (!has_fact) { stats->invalid++; return -1; }
        int s = memory_first_free(m);
        if (s < 0) { stats->overflow++; return -1; }
        write_slot(m, s, op->fact, op->fact_len, session, op->evidence);
        stats->inserts++;
        return 0;
    }
    case OP_UPDATE:
        if (!has_fact || !slot_ok) { stats->invalid++; return -1; }
        write_slot(m, op->slot, op->fact, op->fact_len, session, op->evidence);
        stats->updates++;
        return 0;
    case OP_DELETE:
        if (!slot_ok) { stats->invalid++; return -1; }
        free_slot(m, op->slot);
        stats->deletes++;
        return 0;
    case OP_NOOP:
        stats->noops++;
        return 0;
    }
    stats->invalid++;  // an OpKind outside the enum
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Splicing a session (contract in memory.h)

static void copy_slot(MemoryBank *dst, int d, const MemoryBank *src, int s) {
    memcpy(dst->tokens + (size_t)d * dst->slot_len, src->tokens + (size_t)s * src->slot_len,
           (size_t)src->slot_len * sizeof(int));
    dst->len[d] = src->len[s];
    dst->session[d] = src->session[s];
    dst->evidence[d] = src->evidence[s];
    dst->alive[d] = 1;
}

static int same_fact(const MemoryBank *a, int i, const MemoryBank *b, int j) {
    return a->len[i] == b->len[j] &&
           memcmp(a->tokens + (size_t)i * a->slot_len, b->tokens + (size_t)j * b->slot_len,
                  (size_t)a->len[i] * sizeof(int)) == 0;
}

// Puts rerun slot s into out at slot `want` if it is free, else the first free slot.
static int place_slot(MemoryBank *out, int want, const MemoryBank *rerun, int s) {
    int d = !out->alive[want] ? want : memory_first_free(out);
    if (d < 0) return -1;
    copy_slot(out, d, rerun, s);
    return 0;
}

int memory_splice(MemoryBank *out, const MemoryBank *before, const MemoryBank *src_after,
                  const MemoryBank *src_final, const MemoryBank *rerun_after, int t) {
    const MemoryBank *in[4] = {before, src_after, src_final, rerun_after};
    for (int b = 0; b < 4; b++) {
        if (in[b]->cap != out->cap || in[b]->slot_len != out->slot_len) {
            fprintf(stderr, "memory_splice: bank %d has shape cap %d slot_len %d, want %d %d\n",
                    b, in[b]->cap, in[b]->slot_len, out->cap, out->slot_len);
            return -1;
        }
    }
    const int cap = out->cap;
    memory_clear(out);
    // the source's later sessions: every slot they wrote stays where it is
    for (int j = 0; j < cap; j++)
        if (src_final->alive[j] && src_final->session[j] > t) copy_slot(out, j, src_final, j);
#define LATER(j) (src_final->alive[j] && src_final->session[j] > t)     // rewritten after t
#define GONE(j) (!src_final->alive[j] && src_after->alive[j])           // deleted after t
    // memories from before t, as the rerun left them, unless the source's later sessions
    // rewrote or deleted them; one the source freed in t and reused later moves elsewhere
    // (pending[j] = 1: rerun slot j still needs a slot of its own, placed last)
    size_t n = (size_t)(cap > 0 ? cap : 1);
    uint8_t *taken = calloc(n, 1), *pending = calloc(n, 1);
    if (!taken || !pending) {
        free(taken), free(pending);
        fprintf(stderr, "memory_splice: out of memory (%d slots)\n", cap);
        return -1;
    }
    for (int j = 0; j < cap; j++) {
        if (!before->alive[j] || !rerun_after->alive[j] || GONE(j)) continue;
        if (!LATER(j)) copy_slot(out, j, rerun_after, j);
        else if (!src_after->alive[j]) pending[j] = 1;
    }
    // the rerun's inserts: one equal to a source insert of t (the same slot preferred) shares
    // that memory's fate; the others are new memories
    for (int j = 0; j < cap; j++) {
        if (before->alive[j] || !rerun_after->alive[j]) continue;
        int i = -1;
        if (src_after->alive[j] && !taken[j] && same_fact(rerun_after, j, src_after, j)) i = j;
        for (int k = 0; k < cap && i < 0; k++)
            if (!before->alive[k] && src_after->alive[k] && !taken[k] &&
                same_fact(rerun_after, j, src_after, k))
                i = k;
        if (i < 0) {
            pending[j] = 1;
            continue;
        }
        taken[i] = 1;
        if (!LATER(i) && !GONE(i)) copy_slot(out, i, rerun_after, j);
    }
    int dropped = 0;
    for (int j = 0; j < cap; j++)
        if (pending[j] && place_slot(out, j, rerun_after, j) != 0) dropped++;
    free(taken), free(pending);
#undef LATER
#undef GONE
    return dropped;
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the five arrays in layout order, so a snapshot of a bank from memory_init is an
// image of its block (each array is still copied on its own so any bank struct works).

void memory_snapshot(const MemoryBank *m, void *buf) {
    if (m->cap <= 0) return;
    unsigned char *p = buf;
    size_t nt = bank_tokens(m) * sizeof(int), c = (size_t)m->cap * sizeof(int);
    memcpy(p, m->tokens, nt); p += nt;
    memcpy(p, m->len, c); p += c;
    memcpy(p, m->session, c); p += c;
    memcpy(p, m->evidence, c); p += c;
    memcpy(p, m->alive, (size_t)m->cap);
}

void memory_restore(MemoryBank *m, const void *buf) {
    if (m->cap <= 0) return;
    const unsigned char *p = buf;
    size_t nt = bank_tokens(m) * sizeof(int), c = (size_t)m->cap * sizeof(int);
    memcpy(m->tokens, p, nt); p += nt;
    memcpy(m->len, p, c); p += c;
    memcpy(m->session, p, c); p += c;
    memcpy(m->evidence, p, c); p += c;
    memcpy(m->alive, p, (size_t)m->cap);
}

// ---------------------------------------------------------------------------------------------
// Retrieval (BM25)

// Query-term table: distinct query terms, open addressing with linear probing. HSIZE_MAX is
// twice MEMORY_QUERY_MAX_TERMS so the table is at most half full.
#define HSIZE_MAX (2 * MEMORY_QUERY_MAX_TERMS)
#define BLOOM_BITS 4096
// Pass-1 records of the slots that hold query terms (ints, 16 KiB of stack); a bank with more
// hits than this is scored by a second pass over its tokens instead.
#define HITS_STACK 4096

typedef struct {
    int nq;                              // distinct terms
    int hbits;                           // log2 of the table size in use
    int key[HSIZE_MAX];                  // token id per cell
    short idx[HSIZE_MAX];                // term index per cell, -1 = empty
    uint64_t bloom[BLOOM_BITS / 64];     // bit (hash >> 20) set for every term
    int df[MEMORY_QUERY_MAX_TERMS];      // slots containing term t
    int tf[MEMORY_QUERY_MAX_TERMS];      // occurrences of t in the slot being scanned
    double idf[MEMORY_QUERY_MAX_TERMS];
} QueryTable;

static inline uint32_t term_hash(int id) { return (uint32_t)id * 0x9E3779B1u; }

static inline int is_ignored(int id, const uint8_t *ignore, int ignore_n) {
    return ignore && id >= 0 && id < ignore_n && ignore[id];
}

// Term index of token id, or -1.
static inline int qt_find(const QueryTable *q, int id) {
    uint32_t h = term_hash(id);
    uint32_t b = h >> 20;  // top 12 bits: the Bloom bit
    if (!(q->bloom[b >> 6] >> (b & 63) & 1)) return -1;
    uint32_t mask = (1u << q->hbits) - 1;
    for (uint32_t c = h >> (32 - q->hbits);; c = (c + 1) & mask) {
        if (q->idx[c] < 0) return -1;
        if (q->key[c] == id) return q->idx[c];
    }
}

static void qt_build(QueryTable *q, const int *query, int query_len, const uint8_t *ignore,
                     int ignore_n) {
    int want = query_len < MEMORY_QUERY_MAX_TERMS ? query_len : MEMORY_QUERY_MAX_TERMS;
    q->hbits = 4;
    while ((1 << q->hbits) < 2 * want) q->hbits++;
    uint32_t size = 1u << q->hbits, mask = size - 1;
    memset(q->idx, 0xff, size * sizeof(short));
    memset(q->bloom, 0, sizeof(q->bloom));
    q->nq = 0;
    for (int i = 0; i < query_len && q->nq < MEMORY_QUERY_MAX_TERMS; i++) {
        int id = query[i];
        if (is_ignored(id, ignore, ignore_n)) continue;
        uint32_t h = term_hash(id), c = h >> (32 - q->hbits);
        while (q->idx[c] >= 0 && q->key[c] != id) c = (c + 1) & mask;
        if (q->idx[c] >= 0) continue;  // repeated term
        q->key[c] = id;
        q->idx[c] = (short)q->nq;
        q->bloom[(h >> 20) >> 6] |= 1ull << ((h >> 20) & 63);
        q->df[q->nq] = 0;
        q->tf[q->nq] = 0;
        q->nq++;
    }
}

// Where the per-slot scores go: either every slot's score into `scores` (cap), or a running
// top-k list (out, top) kept sorted by score descending, ties by slot ascending.
typedef struct {
    double *scores;  // (cap) or NULL
    int k, n;
    int *out;        // (k)
    double *top;     // (k)
} ScoreSink;

static inline void sink_push(ScoreSink *s, int slot, double score) {
    if (s->scores) { s->scores[slot] = score; return; }
    if (!(score > 0.0)) return;
    if (s->n == s->k && !(score > s->top[s->n - 1])) return;  // equal: the earlier slot stays
    int p = s->n < s->k ? s->n++ : s->n - 1;
    // Slots arrive in increasing order, so strictly-greater is the right shift condition.
    while (p > 0 && s->top[p - 1] < score) {
        s->top[p] = s->top[p - 1];
        s->out[p] = s->out[p - 1];
        p--;
    }
    s->top[p] = score;
    s->out[p] = slot;
}

// The query terms in slot s: their term indices into touched (sorted, so that a score sums in
// term order and does not depend on the order of words in the slot: two slots with the same
// words tie exactly, and ties go to the lower slot), their counts in q->tf (the caller resets
// them), and the slot's length without ignored tokens in *dl. Returns the number of terms.
static inline int slot_terms(const MemoryBank *m, int s, QueryTable *q, const uint8_t *ignore,
                             int ignore_n, int *touched, int *dl) {
    const int *row = m->tokens + (size_t)s * m->slot_len;
    int n = m->len[s], nt = 0;
    // Most slots share nothing with the query: a branch-free scan of the Bloom bits (and the
    // ignored count) settles them without the per-token branches of the loop below.
    uint64_t any = 0;
    int n_ignored = 0;
    for (int j = 0; j < n; j++) {
        uint32_t b = term_hash(row[j]) >> 20;
        any |= q->bloom[b >> 6] >> (b & 63);
        if (ignore) n_ignored += (uint32_t)row[j] < (uint32_t)ignore_n ? ignore[row[j]] != 0 : 0;
    }
    *dl = n - n_ignored;
    if (!(any & 1)) return 0;
    *dl = n;
    for (int j = 0; j < n; j++) {
        int id = row[j];
        if (ignore && is_ignored(id, ignore, ignore_n)) { (*dl)--; continue; }
        int t = qt_find(q, id);
        if (t >= 0 && q->tf[t]++ == 0) touched[nt++] = t;
    }
    for (int i = 1; i < nt; i++)
        for (int j = i; j > 0 && touched[j - 1] > touched[j]; j--) {
            int tmp = touched[j]; touched[j] = touched[j - 1]; touched[j - 1] = tmp;
        }
    return nt;
}

static inline double bm25_term(double idf, int tf, double norm) {
    return idf * (double)tf * (BM25_K1 + 1.0) / ((double)tf + norm);
}

// Scores every alive slot sharing a term with the query and hands each to the sink in slot order.
static void bm25(const MemoryBank *m, const int *query, int query_len, const uint8_t *ignore,
                 int ignore_n, ScoreSink *sink) {
    if (ignore_n <= 0) ignore = NULL;  // the mask is read only below ignore_n
    QueryTable q;
    qt_build(&q, query, query_len, ignore, ignore_n);

    // Pass 1: N, average document length (ignored tokens removed), document frequencies, and a
    // record of each slot that holds a query term: slot, dl, nt, then nt (term, tf) pairs.
    int N = 0;
    long total_len = 0;
    int touched[MEMORY_QUERY_MAX_TERMS];
    int rec[HITS_STACK], nrec = 0, rec_full = 0;
    for (int s = 0; s < m->cap; s++) {
        if (!m->alive[s]) continue;
        int dl, nt = slot_terms(m, s, &q, ignore, ignore_n, touched, &dl);
        N++;
        total_len += dl;
        if (nt == 0) continue;
        if (nrec + 3 + 2 * nt > HITS_STACK) rec_full = 1;
        if (!rec_full) {
            rec[nrec++] = s;
            rec[nrec++] = dl;
            rec[nrec++] = nt;
        }
        for (int i = 0; i < nt; i++) {
            int t = touched[i];
            q.df[t]++;
            if (!rec_full) {
                rec[nrec++] = t;
                rec[nrec++] = q.tf[t];
            }
            q.tf[t] = 0;
        }
    }
    if (sink->scores)
        for (int s = 0; s < m->cap; s++) sink->scores[s] = 0.0;
    int any = 0;
    for (int t = 0; t < q.nq; t++) {
        q.idf[t] = log(1.0 + ((double)N - q.df[t] + 0.5) / ((double)q.df[t] + 0.5));
        any |= q.df[t] > 0;
    }
    if (!any) return;  // no slot shares a term with the query (also covers N == 0)
    double avgdl = (double)total_len / N;  // > 0: some slot holds a query term

    // Pass 2: scores, from the records, or (when they did not fit) from the bank again.
    if (!rec_full) {
        for (int r = 0; r < nrec;) {
            int s = rec[r], dl = rec[r + 1], nt = rec[r + 2];
            const int *pairs = rec + r + 3;
            r += 3 + 2 * nt;
            double norm = BM25_K1 * (1.0 - BM25_B + BM25_B * (double)dl / avgdl);
            double score = 0.0;
            for (int i = 0; i < nt; i++)
                score += bm25_term(q.idf[pairs[2 * i]], pairs[2 * i + 1], norm);
            sink_push(sink, s, score);
        }
        return;
    }
    for (int s = 0; s < m->cap; s++) {
        if (!m->alive[s]) continue;
        int dl, nt = slot_terms(m, s, &q, ignore, ignore_n, touched, &dl);
        if (nt == 0) continue;
        double norm = BM25_K1 * (1.0 - BM25_B + BM25_B * (double)dl / avgdl);
        double score = 0.0;
        for (int i = 0; i < nt; i++) {
            int t = touched[i];
            score += bm25_term(q.idf[t], q.tf[t], norm);
            q.tf[t] = 0;
        }
        sink_push(sink, s, score);
    }
}

void memory_bm25_scores(const MemoryBank *m, const int *query, int query_len,
                        const uint8_t *ignore, int ignore_n, double *scores) {
    ScoreSink sink = {.scores = scores};
    bm25(m, query, query_len, ignore, ignore_n, &sink);
}

// Top-k scores live on the stack up to this k; a larger k (rare: it means "most of the bank")
// costs one allocation per call.
#define TOPK_STACK 256

int memory_retrieve_masked(const MemoryBank *m, const int *query, int query_len,
                           const uint8_t *ignore, int ignore_n, int k, int *out) {
    if (k > m->cap) k = m->cap;
    if (k <= 0 || !query || query_len <= 0) return 0;
    double stack_top[TOPK_STACK];
    double *top = stack_top;
    if (k > TOPK_STACK) {
        top = malloc((size_t)k * sizeof(double));
        if (!top) {
            fprintf(stderr, "memory_retrieve: out of memory for k=%d\n", k);
            return 0;
        }
    }
    ScoreSink sink = {.scores = NULL, .k = k, .n = 0, .out = out, .top = top};
    bm25(m, query, query_len, ignore, ignore_n, &sink);
    if (top != stack_top) free(top);
    return sink.n;
}

int memory_retrieve(const MemoryBank *m, const int *query, int query_len, int k, int *out) {
    return memory_retrieve_masked(m, query, query_len, NULL, 0, k, out);
}

// ---------------------------------------------------------------------------------------------
// Counters and the text dump

int memory_alive_count(const MemoryBank *m) {
    int n = 0;
    for (int s = 0; s < m->cap; s++) n += m->alive[s] != 0;
    return n;
}

long memory_words(const MemoryBank *m) {
    long n = 0;
    for (int s = 0; s < m->cap; s++)
        if (m->alive[s]) n += m->len[s];
    return n;
}

void memory_dump(const MemoryBank *m, FILE *f, const char *(*word)(void *ctx, int id),
                 void *ctx) {
    fprintf(f, "memory: %d/%d slots alive, %ld words\n", memory_alive_count(m), m->cap,
            memory_words(m));
    for (int s = 0; s < m->cap; s++) {
        if (!m->alive[s]) continue;
        fprintf(f, "[%3d] s%-2d ", s, m->session[s]);
        char ev[32];
        if (m->evidence[s] > 0)
            snprintf(ev, sizeof(ev), "D%d:%d", DIA_SESSION(m->evidence[s]),
                     DIA_TURN(m->evidence[s]));
        else
            snprintf(ev, sizeof(ev), "D?");
        fprintf(f, "%-8s", ev);
        const int *row = m->tokens + (size_t)s * m->slot_len;
        for (int j = 0; j < m->len[s]; j++) {
            const char *w = word ? word(ctx, row[j]) : NULL;
            if (w) fprintf(f, " %s", w);
            else fprintf(f, " <%d>", row[j]);
        }
        fputc('\n', f);
    }
}
