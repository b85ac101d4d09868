// world.h: what the trainer, the rollouts and the evaluation need from a world.
//
// A world is the environment the memory agent lives in: how a session is cut into chunks, what
// the EXTRACT and MANAGE roles are shown (token prompts) and how their outputs are read (facts,
// memory operations), who answers the questions from a bank, and what a perfect (or flawed)
// teacher would have written. Two worlds implement it (docs/design.md, "Worlds"):
//   synth     the synthetic grammar world, word-level vocabulary, rule-based answerer and
//             teacher (world_synth.h; `--world synth`, the default)
//   dialogue  real LoCoMo dialogue with a pretrained backbone's BPE tokenizer and chat template,
//             JSON role outputs and a frozen LLM answerer (`--world dialogue`)
// rollout.c, grpo.c, credit.c, eval.c and train.c see only this struct: a table of function
// pointers over an opaque state, in the style of ModelBackend (model.h). Call through the
// world_* wrappers below.
#ifndef MEMR2_WORLD_H
#define MEMR2_WORLD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/locomo.h"
#include "memory.h"
#include "model.h"
#include "rng.h"

// Limits shared by every world (the synthetic vocabulary reserves <t0>..<t15> and <m0>..<m31>).
#define MAX_CHUNK_TURNS 16  // turns of one chunk
#define MAX_SHOWN_SLOTS 32  // retrieved slots shown to the manager
#define FACT_MAX_TOKENS 64  // tokens of one extracted fact (BPE facts of ~20 words fit)
#define MAX_CHUNK_FACTS (MAX_CHUNK_TURNS * 2)  // facts of one chunk a rollout keeps

// One extracted fact. Plain arrays (no pointers), so a chunk's facts copy with memcpy.
typedef struct {
    int tokens[FACT_MAX_TOKENS];
    int len;
    int evidence;         // DIA_CODE of the source turn
    int turn;             // K of its source turn within the chunk (set by the extract parser)
} Fact;

// Shown slots: the bank slot behind each retrieved memory the manager saw (<mK> / id K).
typedef struct {
    int slot[MAX_SHOWN_SLOTS];
    int n;
} Shown;

// Systematic teacher mistakes (the synthetic world's warm start, world_synth.h): bit a of a mask
// turns the flaw on for attribute a of data/grammar.h. A world without a teacher ignores them.
typedef struct {
    unsigned skip_third;  // extractor: omits facts about a third party (not the speaker)
    unsigned dup_change;  // manager: INSERTs a changed value as a new memory instead of UPDATE
    unsigned keep_ended;  // manager: NOOP on a fact that ends a value (the stale value stays)
} TeacherFlaws;

// SQuAD-style scores of one answer (eval.h: score_answer).
typedef struct {
    double f1, bleu1, em;
} QAScore;

typedef struct World World;
struct MistakeCounts;  // mistakes.h
struct TurnBuffer;     // rollout.h

struct World {
    const char *name;
    void *state;
    // token ids the trainer needs: what ends a role output, what pads a row
    int stop_token, pad_token;
    // model vocabulary and its hash (ModelConfig.V, .tokenizer_hash of every checkpoint)
    int vocab_size;
    uint64_t tokenizer_hash;
    // room per role output (tokens the model may generate)
    int max_new_extract, max_new_manage;
    // the teacher's default designed flaws (all zero where the world has none)
    TeacherFlaws default_flaws;

    // Bank shape for an episode: slots and tokens per slot.
    void (*bank_shape)(const void *s, const Episode *ep, int *cap, int *slot_len);
    int (*num_chunks)(const void *s, const Episode *ep, int session);  // session 1-based
    // Prompt builders return the number of tokens written (at most max).
    int (*extract_prompt)(const void *s, const Episode *ep, int session, int chunk, int *out,
                          int max);
    // Facts of an extractor output (<= max); *malformed = 1 if it broke the format.
    int (*parse_extract)(const void *s, const Episode *ep, int session, int chunk,
                         const int *gen, int len, Fact *facts, int max, int *malformed);
    // Retrieves for the facts from the bank, fills *shown, writes the manager prompt.
    int (*manage_prompt)(const void *s, const Episode *ep, const MemoryBank *bank,
                         const Fact *facts, int n_facts, Shown *shown, int *out, int max);
    // Ops of a manager output (bank slots resolved through *shown); bad ops in *n_invalid. An
    // op's fact points into gen or into fact_store (room for max * FACT_MAX_TOKENS ids), so
    // the ops live as long as both.
    int (*parse_manage)(const void *s, const int *gen, int len, const Fact *facts, int n_facts,
                        const Shown *shown, MemoryOp *ops, int max, int *fact_store,
                        int *n_invalid, int *malformed);
    // Teacher outputs (flaws NULL and noise 0: the oracle). NULL, or a return of -1: no teacher.
    int (*teacher_extract)(const void *s, const Episode *ep, int session, int chunk,
                           const TeacherFlaws *flaws, float noise, Rng *rng, int *out, int max);
    int (*teacher_manage)(const void *s, const Episode *ep, const MemoryBank *bank,
                          const Fact *facts, int n_facts, const Shown *shown,
                          const TeacherFlaws *flaws, float noise, Rng *rng, int *out, int max);
    // Scores of questions qidx[0..nq) of ep (all active after `session` sessions) answered
    // from bank (scores[i] for qidx[i]). Returns 0, or -1 (message on stderr).
    int (*answer)(const void *s, const MemoryBank *bank, const Episode *ep, int session,
                  const int *qidx, int nq, QAScore *scores);
    // Words of the dialogue up to and including session s; the compression penalty
    // c(M) = max(0, (words(M) - rho * seen) / seen) (the reward subtracts lambda * c).
    long (*words_seen)(const void *s, const Episode *ep, int session);
    double (*compression_penalty)(const void *s, const MemoryBank *bank, long words_seen);
    // What store-turns / insert-only store: text as tokens (at most max).
    int (*encode)(const void *s, const char *text, int *out, int max);
    // A token as text, for bank dumps (never NULL).
    const char *(*token_text)(void *s, int id);
    // Mistakes against the gold world of session s of a recorded rollout (mistakes.h). NULL:
    // the world has no gold grammar to judge with.
    int (*session_mistakes)(const void *s, const Episode *ep, int session,
                            const struct TurnBuffer *tb, int lane, const MemoryBank *bank,
                            struct MistakeCounts *mc);
    void (*destroy)(World *w);
};

// Frees what the world owns (state, tokenizer); safe on a zeroed World.
static inline void world_close(World *w) {
    if (w && w->destroy) w->destroy(w);
}
static inline void world_bank_shape(const World *w, const Episode *ep, int *cap, int *slot_len) {
    w->bank_shape(w->state, ep, cap, slot_len);
}
static inline int world_num_chunks(const World *w, const Episode *ep, int session) {
    return w->num_chunks(w->state, ep, session);
}
static inline int world_extract_prompt(const World *w, const Episode *ep, int session, int chunk,
                                       int *out, int max) {
    return w->extract_prompt(w->state, ep, session, chunk, out, max);
}
static inline int world_parse_extract(const World *w, const Episode *ep, int session, int chunk,
                                      const int *gen, int len, Fact *facts, int max,
                                      int *malformed) {
    return w->parse_extract(w->state, ep, session, chunk, gen, len, facts, max, malformed);
}
static inline int world_manage_prompt(const World *w, const Episode *ep, const MemoryBank *bank,
                                      const Fact *facts, int n_facts, Shown *shown, int *out,
                                      int max) {
    return w->manage_prompt(w->state, ep, bank, facts, n_facts, shown, out, max);
}
static inline int world_parse_manage(const World *w, const int *gen, int len, const Fact *facts,
                                     int n_facts, const Shown *shown, MemoryOp *ops, int max,
                                     int *fact_store, int *n_invalid, int *malformed) {
    return w->parse_manage(w->state, gen, len, facts, n_facts, shown, ops, max, fact_store,
                           n_invalid, malformed);
}
static inline int world_teacher_extract(const World *w, const Episode *ep, int session,
                                        int chunk, const TeacherFlaws *flaws, float noise,
                                        Rng *rng, int *out, int max) {
    if (!w->teacher_extract) return -1;
    return w->teacher_extract(w->state, ep, session, chunk, flaws, noise, rng, out, max);
}
static inline int world_teacher_manage(const World *w, const Episode *ep, const MemoryBank *bank,
                                       const Fact *facts, int n_facts, const Shown *shown,
                                       const TeacherFlaws *flaws, float noise, Rng *rng,
                                       int *out, int max) {
    if (!w->teacher_manage) return -1;
    return w->teacher_manage(w->state, ep, bank, facts, n_facts, shown, flaws, noise, rng, out,
                             max);
}
static inline int world_answer(const World *w, const MemoryBank *bank, const Episode *ep,
                               int session, const int *qidx, int nq, QAScore *scores) {
    return w->answer(w->state, bank, ep, session, qidx, nq, scores);
}
static inline long world_words_seen(const World *w, const Episode *ep, int session) {
    return w->words_seen(w->state, ep, session);
}
static inline double world_compression_penalty(const World *w, const MemoryBank *bank,
                                               long words_seen) {
    return w->compression_penalty(w->state, bank, words_seen);
}
static inline int world_encode(const World *w, const char *text, int *out, int max) {
    return w->encode(w->state, text, out, max);
}

// ---------------------------------------------------------------------------------------------
// Which dia_ids were ever written to a slot (M-Fail), sized from the episode (eval.c).
typedef struct {
    uint8_t *written;
    int n;
} WrittenSet;
int written_init(WrittenSet *w, const Episode *ep);
void written_free(WrittenSet *w);
void written_mark(WrittenSet *w, int dia);

// ---------------------------------------------------------------------------------------------
// Making a world from the command line's choice (world.c). `name`: "synth" or "dialogue".
typedef struct {
    const char *name;          // NULL: "synth"
    // synth: the vocabulary is built from vocab_data (up to vocab_max words) unless vocab_path
    // names one to load; save_vocab (non-NULL) writes it there.
    const Dataset *vocab_data;
    int vocab_max;
    const char *vocab_path, *save_vocab;
    const char *context;       // prefix of the message when vocab_path cannot be read
    float rho, lambda;         // compression penalty (<0: the world's default)
    // dialogue: the policy's checkpoint (its tokenizer is found beside it unless tokenizer_path
    // names it), the frozen answerer's checkpoint (NULL: the policy's), questions per answerer
    // call, the backend for a config (the program's: CPU or GPU), where to keep a copy of the
    // tokenizer for the run's checkpoints (NULL: nowhere), answering progress (NULL: quiet)
    const char *checkpoint, *tokenizer_path, *answerer_path;
    int answerer_batch;
    const ModelBackend *(*backend_for)(const ModelConfig *cfg);
    const char *save_tokenizer;
    FILE *progress;
    uint64_t seed;
} WorldArgs;
// Returns 0, or -1 with a message (the file and what was wrong) on stderr.
int world_open(World *w, const WorldArgs *a);

#endif
