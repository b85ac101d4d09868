// world_synth.h: the synthetic world (docs/design.md, "Worlds"): the grammar of data/grammar.h,
// the word-level vocabulary (vocab.h), the two roles' token prompts and their parsers, the
// teacher (gold extraction and the oracle manager, with designed flaws and a noise knob) and
// the frozen rule-based answerer. world_synth_open (called by world_open, world.c) wraps it as
// a World; the trainer and the rollouts see only that.
//
// Token-level formats: vocab.h.
#ifndef MEMR2_WORLD_SYNTH_H
#define MEMR2_WORLD_SYNTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/locomo.h"
#include "memory.h"
#include "rng.h"
#include "vocab.h"
#include "world.h"

// The key "person|attribute" of a fact in the synthetic grammar (data/grammar.h), as the oracle
// and the answerer read it. Returns 1 and fills key (and *ends: 1 for "no longer" facts), or 0 if
// the tokens are not a canonical fact.
int env_fact_key(const Vocab *v, const int *ids, int n, char *key, size_t keylen, int *ends);


// ---------------------------------------------------------------------------------------------
// Environment configuration and the two roles' prompts
typedef struct {
    int chunk_turns;      // turns per chunk (<= MAX_CHUNK_TURNS)
    int retrieve_k;       // slots retrieved per fact
    int max_shown;        // slots shown to the manager (<= MAX_SHOWN_SLOTS)
    int bank_cap;         // memory slots
    int slot_len;         // tokens per slot (also the max fact length)
    int max_facts;        // facts per chunk kept from the extractor
    int answer_k;         // slots the answerer reads per question
    float rho, lambda;    // compression penalty: reward -= lambda * max(0, (words - rho*seen) / seen)
} EnvConfig;

void env_config_default(EnvConfig *c);

typedef struct Env {
    EnvConfig cfg;
    const Vocab *vocab;
} Env;

int env_num_chunks(const Env *env, const Episode *ep, int session);  // session is 1-based
// Prompt builders return the number of tokens written (at most max).
int env_extract_prompt(const Env *env, const Episode *ep, int session, int chunk, int *out,
                       int max);
// Parse an extractor output (stops at <eos>). Returns the number of facts (<= cfg.max_facts);
// *malformed is set to 1 when the output did not follow the grammar (what parsed is kept).
int env_parse_extract(const Env *env, const Episode *ep, int session, int chunk, const int *gen,
                      int len, Fact *facts, int max, int *malformed);
// Retrieves for the facts from the bank, fills *shown, writes the manager prompt.
int env_manage_prompt(const Env *env, const MemoryBank *bank, const Fact *facts, int n_facts,
                      Shown *shown, int *out, int max);
// Parse a manager output into ops (bank slots resolved through *shown; op.fact points into
// gen). Returns the number of ops; counts bad ones in *n_invalid; *malformed as above.
int env_parse_manage(const Env *env, const int *gen, int len, const Fact *facts, int n_facts,
                     const Shown *shown, MemoryOp *ops, int max, int *n_invalid, int *malformed);

// Teacher traces for the supervised warm start. With noise > 0, each fact is dropped with
// probability noise and each op replaced by a wrong one (e.g. UPDATE -> INSERT, DELETE -> NOOP)
// with probability noise. Return the number of output tokens written (ending in <eos>).
// These two are the oracle when noise is 0 (no flaws).
int env_teacher_extract(const Env *env, const Episode *ep, int session, int chunk, float noise,
                        Rng *rng, int *out, int max);
int env_teacher_manage(const Env *env, const Episode *ep, const MemoryBank *bank,
                       const Fact *facts, int n_facts, const Shown *shown, float noise, Rng *rng,
                       int *out, int max);

// Systematic teacher mistakes (TeacherFlaws, world.h): the warm start's designed flaws (README,
// "The default run"). Each is a rule over what the role sees (the fact's attribute, who says
// it), so a model that imitates the teacher reproduces it under greedy decoding, unlike random
// noise that greedy decoding averages away; and each costs reward only through later questions.
// Bit a of a mask (1u << a) turns the flaw on for attribute a of data/grammar.h (0 city .. 6
// partner).
// The default run's flaws: third-party pets and hobbies skipped; changes of city, job, car and
// partner inserted as duplicates; ends of employer, pet, car and hobby ignored.
TeacherFlaws teacher_flaws_default(void);
// The teacher with flaws (NULL: none) and noise.
int env_teacher_extract_flawed(const Env *env, const Episode *ep, int session, int chunk,
                               const TeacherFlaws *flaws, float noise, Rng *rng, int *out,
                               int max);
int env_teacher_manage_flawed(const Env *env, const Episode *ep, const MemoryBank *bank,
                              const Fact *facts, int n_facts, const Shown *shown,
                              const TeacherFlaws *flaws, float noise, Rng *rng, int *out, int max);

// A canonical fact of the synthetic grammar (data/grammar.h) parsed from token ids: type
// GR_SET / GR_CHANGE / GR_END, attribute, person, value (SET, CHANGE) and old value (CHANGE,
// END). Returns 1, or 0 if the ids are not a canonical fact.
typedef struct {
    int type, attr;
    char p[32], v[32], o[32];
} EnvFact;
int env_parse_fact(const Vocab *v, const int *ids, int n, EnvFact *f);

// ---------------------------------------------------------------------------------------------
// The frozen answerer
// Answer one question from the bank (pred gets the answer text) and score it (score_answer).
QAScore env_answer(const Env *env, const MemoryBank *bank, const Episode *ep, const Question *q,
                   char *pred, size_t predlen);
// Words of the dialogue up to and including session s (the "words seen" of the penalty).
long env_words_seen(const Env *env, const Episode *ep, int session);
// c(M) = max(0, (words(M) - rho * words_seen) / words_seen); the reward subtracts lambda * c.
double env_compression_penalty(const Env *env, const MemoryBank *bank, long words_seen);

// ---------------------------------------------------------------------------------------------
// The synthetic world as a World (world.h). The Env is copied into a state the World owns; the
// vocabulary stays the caller's unless own_vocab (then world_close frees it).
int world_synth_open(World *w, const Env *env, Vocab *vocab, int own_vocab);
// The same over the caller's Env (and its vocabulary), which must outlive w; nothing is
// allocated (world_close does nothing). For tests and tools that hold an Env already.
void world_synth_wrap(World *w, const Env *env);

#endif
