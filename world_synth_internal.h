// world_synth_internal.h: what world_synth.c shares with world_synth_teacher.c (the grammar's
// fact parser and the chunk helpers). Not part of the world's contract (world_synth.h).
#ifndef MEMR2_WORLD_SYNTH_INTERNAL_H
#define MEMR2_WORLD_SYNTH_INTERNAL_H

#include "world_synth.h"

// A canonical fact of data/grammar.h, as pointers into the words it was parsed from.
typedef struct {
    int type, attr;               // GR_SET / GR_CHANGE / GR_END; index into GR_ATTRS
    const char *p, *v, *o;        // person, value (NULL for END), old value (CHANGE, END)
} ParsedFact;

// Parse the words w[0..n) as a canonical fact; 1 if they are one.
int synth_parse_fact(const char *const *w, int n, ParsedFact *f);
// The value a fact asserts now (NULL for an END).
const char *synth_fact_current(const ParsedFact *f);
// The words of a bank slot / of token ids (pointers into the vocabulary); returns the count.
int synth_slot_words(const Vocab *v, const MemoryBank *m, int slot, const char **w, int max);
int synth_ids_words(const Vocab *v, const int *ids, int n, const char **w, int max);
// Turns [*t0, *t1) of a chunk; 0 if the chunk does not exist.
int synth_chunk_range(const Env *env, const Episode *ep, int session, int chunk, int *t0,
                      int *t1);
// Tokens of one fact: the slot length, within Fact.tokens.
int synth_fact_cap(const Env *env);

#endif
