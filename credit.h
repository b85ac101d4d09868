// credit.h: a turn's true mistakes against the oracle (the world's noise-free teacher), for the
// credit-quality metric of docs/design.md: the correlation of each turn's advantage with minus
// its mistakes says whether the reward pointed at the turns that were actually wrong.
//
// A mistake is one step of the smallest edit that turns the policy's output into the oracle's,
// counting outputs as multisets of items:
//   extractor: items are facts (source turn, tokens); mistakes = max(missing, extra), so a
//              wrong fact in place of a right one is 1, a dropped or an invented fact 1 each;
//   manager:   items are ops (kind, target slot, fact tokens) parsed on the same bank, facts and
//              shown slots the policy saw; ops the parser rejected (invalid) count as extra.
// An output that breaks the grammar adds 1. Unknown (-1) when the episode has no gold facts
// (real LoCoMo without observations) or the world has no teacher: no oracle to compare with.
#ifndef MEMR2_CREDIT_H
#define MEMR2_CREDIT_H

#include "memory.h"
#include "world.h"

// Mistakes of an extractor output gen[0..len) for chunk `chunk` of session `session` (1-based).
int credit_extract_mistakes(const World *env, const Episode *ep, int session, int chunk,
                            const int *gen, int len);

// Mistakes of a manager output gen[0..len), given the bank BEFORE the output was applied and
// the facts and shown slots of its prompt.
int credit_manage_mistakes(const World *env, const Episode *ep, const MemoryBank *bank,
                           const Fact *facts, int n_facts, const Shown *shown, const int *gen,
                           int len);

#endif
