// memory.h: the agent's external memory bank and the operations the manager role applies to it.
//
// The bank is structure-of-arrays with a fixed capacity and no pointers inside, so a snapshot
// is a memcpy of five arrays into a caller-owned buffer and a restore is a memcpy back. That is
// what makes LoGo-GRPO's local rerollouts cheap: G rollouts x H sessions of snapshots are a few
// megabytes (memory_snapshot_bytes() says exactly how many: cap * (4 * slot_len + 13) bytes; the
// default bank, cap 256 x slot_len 24, is 27,904 bytes, and G = 8 x H = 32 snapshots 7,143,424
// bytes = 6.8 MiB).
//
// Operations (the manager's output after parsing):
//   INSERT <fact>       write the fact into the first free slot
//   UPDATE <id> <fact>  overwrite retrieved slot <id> (an index into the retrieval shown to the
//                       manager, resolved to a bank slot by the caller) with the fact
//   DELETE <id>         free retrieved slot <id>
//   NOOP                nothing
// Overflow, bad ids and empty facts are counted in MemoryStats and skipped: never fatal.
#ifndef MEMR2_MEMORY_H
#define MEMR2_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// dia_id "D<s>:<t>" packed into one int; 0 means "unknown".
#define DIA_CODE(session, turn) ((session) * 1000 + (turn))
#define DIA_SESSION(code) ((code) / 1000)
#define DIA_TURN(code) ((code) % 1000)

typedef struct {
    int cap;       // number of slots
    int slot_len;  // max tokens per slot
    int *tokens;   // (cap, slot_len) token ids
    int *len;      // (cap) tokens used in the slot
    int *session;  // (cap) session in which the slot was last written
    int *evidence; // (cap) DIA_CODE of the turn the fact came from
    uint8_t *alive;// (cap) 1 if the slot holds a memory
} MemoryBank;

typedef struct {
    int inserts, updates, deletes, noops;
    int invalid;   // unparsable ops, bad ids, empty facts
    int overflow;  // INSERTs refused because the bank was full
} MemoryStats;

typedef enum { OP_INSERT, OP_UPDATE, OP_DELETE, OP_NOOP } OpKind;

typedef struct {
    OpKind kind;
    int slot;          // bank slot for UPDATE / DELETE (already resolved), else -1
    const int *fact;   // fact tokens for INSERT / UPDATE (not owned)
    int fact_len;
    int evidence;      // DIA_CODE of the fact's source turn, 0 if unknown
} MemoryOp;

// Allocate / free a bank. Returns -1 (message on stderr) if allocation fails.
int memory_init(MemoryBank *m, int cap, int slot_len);
void memory_free(MemoryBank *m);
void memory_clear(MemoryBank *m);
// Copy the contents of src into dst (same cap and slot_len, else -1 with a message).
int memory_copy(MemoryBank *dst, const MemoryBank *src);
// The slot the next INSERT would fill, or -1 when the bank is full.
int memory_first_free(const MemoryBank *m);

// Apply one op in session `session`; updates stats (may be NULL). Facts longer than slot_len are
// truncated. Invalid: an empty fact (fact NULL or fact_len <= 0) for INSERT / UPDATE, an UPDATE or
// DELETE of a slot that is out of range or not alive, a kind outside OpKind; validity is checked
// before capacity (an empty INSERT into a full bank is invalid, not overflow). A write records
// `session` and op->evidence; freed slots and unused tails are zeroed, so equal banks are
// byte-equal. Returns 0 if applied, -1 if counted as invalid or overflow.
int memory_apply(MemoryBank *m, const MemoryOp *op, int session, MemoryStats *stats);

// Splicing one session into a trajectory (LoGo-GRPO's splice local reward, docs/design.md):
// the bank a source rollout would END with had its session t gone as a rerun of t played it.
//   before      the source's bank before session t (after t - 1), where the rerun started
//   src_after   the source's bank after session t
//   src_final   the source's final bank (after its last session)
//   rerun_after the rerun's bank after session t
// out (same shape, overwritten) = src_final with the source's session-t writes replaced by the
// rerun's. Slots are told apart by the session that last wrote them, so:
//   - what the source wrote or deleted after t stays as it is (its later sessions win a clash);
//   - every memory from before t that the source did not touch after t takes the rerun's
//     version (kept, updated or deleted);
//   - a memory the rerun inserted that equals one the source inserted in t (same tokens) IS that
//     memory: it ends as the source's did (superseded or deleted later, or kept); any other
//     rerun insert survives to the end, in its own slot if free, else in the first free one.
// With rerun_after equal to src_after, out equals src_final byte for byte. Returns the number of
// rerun memories that found no free slot (dropped), or -1 on a shape mismatch (stderr).
int memory_splice(MemoryBank *out, const MemoryBank *before, const MemoryBank *src_after,
                  const MemoryBank *src_final, const MemoryBank *rerun_after, int t);

// Snapshots: a caller-owned buffer of memory_snapshot_bytes() bytes.
size_t memory_snapshot_bytes(const MemoryBank *m);
void memory_snapshot(const MemoryBank *m, void *buf);
void memory_restore(MemoryBank *m, const void *buf);

// Retrieval: the indices of the top-k alive slots for a query (BM25 over token ids, with
// document frequencies from the bank itself); ties go to the lower slot index. Returns the
// number found (<= k). `out` has room for k ints.
// BM25 with k1 = 1.2, b = 0.75 and idf = ln(1 + (N - n + 0.5) / (n + 0.5)); each distinct query
// term counts once; only slots with a positive score are returned. No allocation per call for
// k <= 256 (about 40 KiB of stack) and no shared state: threads may retrieve from one bank at
// the same time.
int memory_retrieve(const MemoryBank *m, const int *query, int query_len, int k, int *out);
// The same with some token ids ignored (stop words, special tokens): ignore[id] != 0 for
// 0 <= id < ignore_n removes id from the query and from every slot (document lengths included).
// ignore may be NULL. Query terms beyond the first MEMORY_QUERY_MAX_TERMS distinct ones are
// ignored.
#define MEMORY_QUERY_MAX_TERMS 512
int memory_retrieve_masked(const MemoryBank *m, const int *query, int query_len,
                           const uint8_t *ignore, int ignore_n, int k, int *out);
// Every slot's BM25 score (0 for dead slots and slots sharing no term) into scores (cap).
void memory_bm25_scores(const MemoryBank *m, const int *query, int query_len,
                        const uint8_t *ignore, int ignore_n, double *scores);

int memory_alive_count(const MemoryBank *m);
// Total tokens stored in alive slots (the "words" of the compression penalty).
long memory_words(const MemoryBank *m);

// A readable dump: one line per alive slot, "[slot] s<session> D<s>:<t>  words...". word(ctx, id)
// gives a token's text (NULL function or NULL result prints <id>).
void memory_dump(const MemoryBank *m, FILE *f, const char *(*word)(void *ctx, int id), void *ctx);

#endif
