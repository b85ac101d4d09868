// env.h: the world the memory agent lives in.
//
//   episodes   LoCoMo-format JSON (conversation sessions + QA + optional gold observations),
//              loaded with cJSON, robust to real LoCoMo quirks
//   tokenizer  word-level vocabulary (stb_ds hash map) built from the data plus special tokens
//   prompts    what the EXTRACT and MANAGE roles see, and parsers for what they write
//   teacher    gold extractor output and oracle manager operations, with a noise knob
//   answerer   a frozen, non-learned reader of the bank; F1 / BLEU-1 / EM, compression, M-Fail
//   baselines  none, store-turns, insert-only, oracle: whole episodes without a model
//
// Token-level formats (ids of the special tokens are fixed, see SpecialToken):
//   extract prompt:  <extract> <t0> speaker : text <t1> speaker : text ... <out>
//   extract output:  <t1> fact words <sep> <t3> fact words <sep> ... <eos>     (<eos> alone: none)
//   manage prompt:   <manage> <m0> slot words <m1> slot words ... <facts> <t1> fact <sep> ... <out>
//   manage output:   <ins> <t1> fact words <sep>  <upd> <m0> <t1> fact words <sep>
//                    <del> <m2> <sep>  <noop> <sep> ... <eos>
// <tK> names the K-th turn of the chunk (so every fact carries its source dia_id) and <mK> the
// K-th retrieved slot shown to the manager.
#ifndef MEMR2_ENV_H
#define MEMR2_ENV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "memory.h"
#include "rng.h"

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

// ---------------------------------------------------------------------------------------------
// Tokenizer
enum {
    TOK_PAD = 0, TOK_UNK, TOK_EOS, TOK_EXTRACT, TOK_MANAGE, TOK_OUT, TOK_SEP, TOK_FACTS,
    TOK_INSERT, TOK_UPDATE, TOK_DELETE, TOK_NOOP,
    TOK_TURN0,                          // <t0> .. <t{MAX_CHUNK_TURNS-1}>
    TOK_SLOT0 = TOK_TURN0 + 16,         // <m0> .. <m{MAX_SHOWN_SLOTS-1}>
    TOK_FIRST_WORD = TOK_SLOT0 + 32,
};
#define MAX_CHUNK_TURNS 16
#define MAX_SHOWN_SLOTS 32

typedef struct Vocab Vocab;

// Build from every word of a dataset (lower-cased, punctuation split off), most frequent first
// after the special tokens, capped at max_size (rest -> <unk>).
Vocab *vocab_build(const Dataset *ds, int max_size);
int vocab_save(const Vocab *v, const char *path, char *err, size_t errlen);
// Checks everything it reads (header numbers, special tokens, empty, repeated or over-long
// words, NUL bytes, words beyond the header's size); NULL with a message naming the file.
Vocab *vocab_load(const char *path, char *err, size_t errlen);
// What the token ids mean, as a number: FNV-1a 64 over the words in id order (never 0).
// Checkpoints record it (ModelConfig.tokenizer_hash) so the trainer can refuse a checkpoint
// paired with another vocabulary.
uint64_t vocab_hash(const Vocab *v);
void vocab_free(Vocab *v);
int vocab_size(const Vocab *v);
const char *vocab_word(const Vocab *v, int id);
// Tokenize text; returns the number of ids written (at most max).
int vocab_encode(const Vocab *v, const char *text, int *out, int max);
// Ids back to space-separated words (for dumps and the answerer); returns bytes written.
int vocab_decode(const Vocab *v, const int *ids, int n, char *out, size_t outlen);
// (size) 1 for the ids retrieval ignores: special tokens, punctuation, stop words.
const uint8_t *vocab_stop_mask(const Vocab *v);
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

typedef struct {
    EnvConfig cfg;
    const Vocab *vocab;
} Env;

typedef struct {
    int tokens[64];
    int len;
    int evidence;         // DIA_CODE of the source turn
    int turn;             // K of its <tK> within the chunk (set by env_parse_extract)
} Fact;

// Shown slots: the bank slot behind each <mK>.
typedef struct {
    int slot[MAX_SHOWN_SLOTS];
    int n;
} Shown;

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

// Systematic teacher mistakes: the warm start's designed flaws (README, "The default run").
// Each is a rule over what the role sees (the fact's attribute, who says it), so a model that
// imitates the teacher reproduces it under greedy decoding, unlike random noise that greedy
// decoding averages away; and each costs reward only through later questions. Bit a of a mask
// (1u << a) turns the flaw on for attribute a of data/grammar.h (0 city .. 6 partner).
typedef struct {
    unsigned skip_third;  // extractor: omits facts about a third party (not the speaker)
    unsigned dup_change;  // manager: INSERTs a changed value as a new memory instead of UPDATE
    unsigned keep_ended;  // manager: NOOP on a fact that ends a value (the stale value stays)
} TeacherFlaws;
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
// The frozen answerer and the scores
typedef struct {
    double f1, bleu1, em;
} QAScore;

// SQuAD-normalised token F1, BLEU-1 (with brevity penalty) and exact match of two strings.
QAScore score_answer(const char *pred, const char *gold);
// Answer one question from the bank (pred gets the answer text) and score it.
QAScore env_answer(const Env *env, const MemoryBank *bank, const Episode *ep, const Question *q,
                   char *pred, size_t predlen);
// Words of the dialogue up to and including session s (the "words seen" of the penalty).
long env_words_seen(const Env *env, const Episode *ep, int session);
// c(M) = max(0, (words(M) - rho * words_seen) / words_seen); the reward subtracts lambda * c.
double env_compression_penalty(const Env *env, const MemoryBank *bank, long words_seen);

// ---------------------------------------------------------------------------------------------
// Evaluation of whole episodes
// POLICY_TEACHER: the warm start's flawed teacher (teacher_flaws_default) acting alone.
typedef enum {
    POLICY_NONE, POLICY_STORE_TURNS, POLICY_INSERT_ONLY, POLICY_ORACLE, POLICY_TEACHER
} BaselinePolicy;

typedef struct {
    int episodes, sessions, questions;
    double f1, bleu1, em;      // means over questions
    double mfail;              // share of gold evidence dia_ids never written to any slot
    double mem_words;          // mean words in the final bank
    MemoryStats ops;           // summed over episodes
    int malformed;             // unparsable role outputs (model policies)
    int outputs;               // role outputs produced (model policies; 0 for baselines)
    int per_cat_n[8];          // per-category counts and F1 sums (category 0..7)
    double per_cat_f1[8];
    long mfail_missing, mfail_total;  // M-Fail counts (distinct evidence ids per episode)
    int questions_skipped, evidence_skipped;  // copied from the Dataset by eval_baseline
} EvalResult;

// Tracks which dia_ids were ever written to a slot (for M-Fail). Sized from the episode.
typedef struct {
    uint8_t *written;
    int n;
} WrittenSet;
int written_init(WrittenSet *w, const Episode *ep);
void written_free(WrittenSet *w);
void written_mark(WrittenSet *w, int dia);
// Adds this episode's questions (answered on `bank` after `sessions` sessions) to *r.
void eval_add_episode(const Env *env, const Episode *ep, int sessions, const MemoryBank *bank,
                      const WrittenSet *w, EvalResult *r);
void eval_finish(EvalResult *r);
// The summary line of DESIGN.md section 8 (per-category lines before it).
void eval_print(const EvalResult *r, const char *policy, FILE *f);

int baseline_policy_parse(const char *name, BaselinePolicy *p);
// Runs sessions 1..sessions of every episode with a baseline; *r is reset, filled and finished
// (eval_finish) here.
int eval_baseline(const Env *env, const Dataset *ds, BaselinePolicy p, int sessions,
                  EvalResult *r);

#endif
