// data/locomo.h: LoCoMo-format episodes (conversation sessions + QA + optional gold
// observations), loaded with cJSON, robust to the real files' quirks. The synthetic generator
// beside it (data/gen_episodes.c) writes the same format.
#ifndef MEMR2_LOCOMO_H
#define MEMR2_LOCOMO_H

#include <stddef.h>

// ---------------------------------------------------------------------------------------------
// Episodes
typedef struct {
    char *speaker;
    char *text;      // for real LoCoMo, an image caption is appended as "[image: ...]"
    int dia;         // DIA_CODE(session, turn), 0 if the dia_id was unreadable
} Turn;

typedef struct {
    Turn *turns;
    int n_turns;
    char *date_time; // may be NULL
} Session;

typedef struct {
    char *question;
    char *answer;    // numbers converted to text
    int *evidence;   // DIA_CODEs (malformed ids dropped)
    int n_evidence;
    int category;
    int last_session;// max session over the evidence: answerable after this session
    int valid_until; // last session at which the answer still holds (generator's
                     // "memr2_valid_until"; absent, e.g. real LoCoMo: QUESTION_FOREVER)
} Question;
#define QUESTION_FOREVER (1 << 30)
// Is q asked on the bank after `session` sessions? last_session <= session <= valid_until.
// (gen_episodes writes only questions valid to the end unless --all-states is given.)
int question_active(const Question *q, int session);

// A gold fact from the `observation` field, plus the generator's structured annotation when
// present (real LoCoMo has none: key == NULL).
typedef struct {
    char *text;
    int dia;
    char *key;       // "subject|attribute": facts with the same key supersede each other
    int ends;        // 1 if the fact ends the attribute ("sold my car"): the oracle DELETEs
} GoldFact;

typedef struct {
    char *sample_id;
    char *speaker_a, *speaker_b;
    Session *sessions;   // sessions[0] is session 1
    int n_sessions;
    GoldFact **gold;     // (n_sessions) arrays of n_gold[s] facts; NULL if no observation
    int *n_gold;
    Question *qa;
    int n_qa;
} Episode;

typedef struct {
    Episode *episodes;
    int n;
    int questions_skipped;  // no answer, no usable evidence, ...
    int evidence_skipped;   // malformed evidence ids
} Dataset;

// Returns 0, or -1 with a message naming the file and the position (sample index, session,
// field) of what was wrong in err.
int dataset_load(const char *path, Dataset *ds, char *err, size_t errlen);
void dataset_free(Dataset *ds);

#endif
