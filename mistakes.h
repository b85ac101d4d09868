// mistakes.h: what a policy gets wrong against the gold world, session by session.
//
//   ./train_cpu --eval POLICY -d FILE --mistakes     (POLICY: oracle, teacher or a checkpoint)
//
// The warm start is meant to carry the teacher's systematic flaws (world.h, TeacherFlaws) and
// nothing else; these counts show whether it does (README, "The default run"). From the role
// outputs a rollout recorded and the bank after each session, per session t of each episode:
//   extraction  gold facts of session t never written by the extractor (first-person facts and
//               facts about a third party apart), and extractor facts that match no gold fact
//               of the session: with the right attribute and value but the wrong person
//               ("wrong speaker"), or anything else
//   management  for each CHANGE the extractor did write: the new value is in the bank after t
//               but the old one is still asserted beside it (a duplicate instead of an UPDATE),
//               or the new value is missing (a skipped UPDATE); for each END it wrote: the old
//               value is still asserted after t (no UPDATE to "no longer", no DELETE); for
//               each restatement it wrote (a SET of the value a slot from before t holds): a
//               new slot asserting it again, written in t (the oracle writes NOOP), which
//               outranks the older slot under BM25 and goes stale at the next change
// Only the synthetic world's canonical facts (data/grammar.h) are understood.
#ifndef MEMR2_MISTAKES_H
#define MEMR2_MISTAKES_H

#include <stdio.h>

#include "memory.h"
#include "rollout.h"
#include "world.h"

struct Env;  // world_synth.h: the synthetic world these counts understand

typedef struct MistakeCounts {
    long facts, facts_first, facts_third;        // gold facts of the session
    long missed, missed_first, missed_third;     // ... never extracted
    long extracted, wrong_speaker, wrong_other;  // extractor facts; those matching no gold fact
    long changes, dup, stale;                    // CHANGE facts extracted; management errors
    long ends, missing_end;                      // END facts extracted; the old value stays
    long restates, restate_dup;                  // restatements extracted; written anew
} MistakeCounts;

// Adds session s of lane `lane` of a recorded rollout: tb holds its extractor outputs (turns with
// .lane == lane, .session == s, .role == ROLE_EXTRACT), bank is its bank after session s.
// Returns 0, or -1 if out of memory.
int mistakes_add_session(const struct Env *env, const Episode *ep, int s, const TurnBuffer *tb, int lane,
                         const MemoryBank *bank, MistakeCounts *mc);
void mistakes_sum(MistakeCounts *into, const MistakeCounts *x);
// One line of rates: "mistakes policy=P sessions=A-B facts=N missed=X ... missing_end=X".
void mistakes_print(const MistakeCounts *mc, const char *policy, int first, int last, FILE *f);

#endif
