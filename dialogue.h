// dialogue.h: the real-dialogue world's pieces (docs/dialogue.md): the prompts a pretrained chat
// backbone sees as extractor and manager, the parsers of what it writes (JSON), retrieval for the
// manager, the frozen answerer, and bank sizing from the data.
//
// One backbone plays both roles; the role is in the system prompt. Every prompt goes through the
// backbone's chat template (bpe_chat: ChatML for SmolLM2 / Qwen2.5); dialogue text and memories
// are data inside a user message, and the ids of special tokens can only come from the template
// (the rendered text is re-encoded so that the template's tokens are special, while what the
// dialogue says is encoded with bpe_encode_ordinary semantics: see dialogue_prompt.c).
//
// Per (episode, session, chunk) a world calls, in this order:
//   dialogue_num_chunks                  chunks of a session (paper: 6 per session)
//   dialogue_extract_prompt              the chunk's turns (speaker, dia_id, session date) ->
//                                        prompt ids; the model answers
//                                        {"facts": [{"speaker", "dia_id", "fact"}]}
//   dialogue_parse_extract               output ids -> Fact records (BPE ids of the fact text,
//                                        evidence = the DIA_CODE of a turn of the chunk)
//   dialogue_manage_prompt               retrieval (BM25, top retrieve_k per fact, max_shown in
//                                        all, deduplicated) + the facts -> prompt ids and the
//                                        Shown table (shown id K -> bank slot); the model answers
//                                        {"operations": [{"op": "INSERT", "content": ...},
//                                        {"op": "UPDATE", "id": K, "content": ...},
//                                        {"op": "DELETE", "id": K}]}; [] is NOOP
//   dialogue_parse_manage                output ids -> MemoryOp (slots resolved through Shown;
//                                        fact tokens held in a DialogueOps)
// and after the last session of an episode:
//   dialogue_answer_episode              the frozen answerer: one sample() call per batch of
//                                        questions, greedy; F1 / BLEU-1 / EM per question
//                                        (score_answer, SQuAD normalisation) and M-Fail
//
// Never fatal on model output: malformed JSON, wrong types, unknown or huge ids, dia_ids that are
// not in the chunk, over-long facts, nested junk are counted (n_invalid: items skipped;
// malformed: the output held no complete JSON object with the expected list) and skipped.
//
// Retrieval is BM25 over BPE ids (memory.c's memory_bm25_scores, a stop mask over punctuation,
// special tokens and common English function words), not the embedding model the paper uses:
// there is no embedding model in C here, BM25 costs microseconds per query on a bank of a few
// hundred slots, and it is deterministic (the same bank and query give the same slots on every
// machine, which the trainer's exact resume relies on).
//
// A memory's speaker and date are not stored in the bank: the speaker is the one of the turn its
// evidence dia_id names, the date that of the session it was written in (MemoryBank.session).
// A slot carries one dia_id (an UPDATE replaces it with the new fact's); the paper's memories
// carry a list.
#ifndef MEMR2_DIALOGUE_H
#define MEMR2_DIALOGUE_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"
#include "world.h"  // Episode, Fact, Shown, QAScore
#include "memory.h"
#include "model.h"

#define DIALOGUE_FACT_MAX 64          // = sizeof Fact.tokens / sizeof(int)
#define DIALOGUE_MAX_OPS 32           // operations kept from one manager output
#define DIALOGUE_MAX_TURN_CHARS 2000  // bytes of one turn shown to the extractor (cut at UTF-8)

typedef struct {
    int chunks_per_session;  // paper: 6
    int max_chunk_turns;     // more chunks when a session is longer than chunks * this
    int max_facts;           // facts kept per chunk (extra ones count as invalid)
    int fact_max_tokens;     // BPE tokens of a fact or memory content (<= DIALOGUE_FACT_MAX);
                             // longer ones are invalid
    int retrieve_k;          // memories retrieved per fact (paper: 5)
    int max_shown;           // memories shown to the manager (paper: 25; <= MAX_SHOWN_SLOTS)
    int answer_k;            // memories per speaker the answerer reads (paper: 30)
    int answer_max_new;      // tokens of one answer
    int answer_batch;        // questions per sample() call (0: all of an episode's in one)
} DialogueConfig;

void dialogue_config_default(DialogueConfig *c);

typedef struct {
    const Bpe *tok;          // not owned
    DialogueConfig cfg;
    uint8_t *stop_mask;      // (n_vocab) 1 for ids BM25 ignores
    int n_vocab;
    int stop[4];             // generation stop tokens (<|im_end|>, <|endoftext|>, eos)
    int n_stop;
} Dialogue;

// 0, or -1 with a message in err (no chat template, a config field out of range, memory).
int dialogue_init(Dialogue *d, const Bpe *tok, const DialogueConfig *cfg, char *err,
                  size_t errlen);
void dialogue_free(Dialogue *d);

// ---- chunks ----------------------------------------------------------------------------------
// Chunks of session `session` (1-based): min(chunks_per_session, turns), more if a chunk would
// exceed max_chunk_turns; 0 for an empty or missing session. Chunk c holds turns [*t0, *t1).
int dialogue_num_chunks(const Dialogue *d, const Episode *ep, int session);
void dialogue_chunk_turns(const Dialogue *d, const Episode *ep, int session, int chunk, int *t0,
                          int *t1);
// The dia_id shown for turn t (0-based) of a session: the file's, or D<s>:<t+1> if unreadable.
int dialogue_turn_dia(const Episode *ep, int session, int t);
// The turn a DIA_CODE names, or NULL.
const Turn *dialogue_find_turn(const Episode *ep, int dia);

// ---- prompts ---------------------------------------------------------------------------------
// The rendered chat text (malloc'd; tests compare it with golden files) and its ids (appended
// to *out, which the caller zero-initialises and frees). 0, or -1 with a message in err.
int dialogue_extract_text(const Dialogue *d, const Episode *ep, int session, int chunk,
                          char **text, char *err, size_t errlen);
int dialogue_extract_prompt(const Dialogue *d, const Episode *ep, int session, int chunk,
                            BpeIds *out, char *err, size_t errlen);

// Retrieval for the manager: per fact the top retrieve_k alive slots by BM25 (score > 0; slots
// of the other speaker skipped), deduplicated, at most max_shown in all, in order of first
// retrieval. Fills *shown; returns shown->n.
int dialogue_retrieve(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                      const Fact *facts, int n_facts, Shown *shown);
// Retrieves (dialogue_retrieve), fills *shown and renders the manager prompt.
int dialogue_manage_text(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Fact *facts, int n_facts, Shown *shown, char **text, char *err,
                         size_t errlen);
int dialogue_manage_prompt(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                           const Fact *facts, int n_facts, Shown *shown, BpeIds *out, char *err,
                           size_t errlen);

// ---- parsing model output --------------------------------------------------------------------
// The first JSON object of text[0..len) that has `key` (junk, markdown fences, NUL bytes around
// it are skipped); a truncated tail is cut back to the last complete element and closed
// (*repaired = 1). NULL if there is none. The caller frees with cJSON_Delete. Exposed for tests.
struct cJSON;
struct cJSON *dialogue_find_json(const char *text, size_t len, const char *key, int *repaired);

// Extractor output (text, or ids decoded with the stop token dropped) -> at most max facts.
// Returns the number of facts; *n_invalid counts items skipped; *malformed is 1 when no complete
// object with a "facts" list was found (a repaired truncation keeps what parsed).
int dialogue_parse_extract_text(const Dialogue *d, const Episode *ep, int session, int chunk,
                                const char *text, size_t len, Fact *facts, int max,
                                int *n_invalid, int *malformed);
int dialogue_parse_extract(const Dialogue *d, const Episode *ep, int session, int chunk,
                           const int *gen, int n, Fact *facts, int max, int *n_invalid,
                           int *malformed);

// Parsed manager operations; op[i].fact points into tokens[i].
typedef struct {
    MemoryOp op[DIALOGUE_MAX_OPS];
    int tokens[DIALOGUE_MAX_OPS][DIALOGUE_FACT_MAX];
    int n;
} DialogueOps;

// Manager output -> ops (an empty list gives one OP_NOOP). An INSERT / UPDATE's evidence is its
// "dia_id" when that is one of the facts', else the fact sharing the most tokens with its
// content (0 without facts). Ids: integers in [0, shown->n); anything else is invalid.
// Returns ops->n.
int dialogue_parse_manage_text(const Dialogue *d, const char *text, size_t len,
                               const Fact *facts, int n_facts, const Shown *shown,
                               DialogueOps *ops, int *n_invalid, int *malformed);
int dialogue_parse_manage(const Dialogue *d, const int *gen, int n, const Fact *facts,
                          int n_facts, const Shown *shown, DialogueOps *ops, int *n_invalid,
                          int *malformed);

// Generated ids -> text (malloc'd), dropping a final stop token and ids out of range.
char *dialogue_decode(const Dialogue *d, const int *gen, int n);

// ---- the frozen answerer ---------------------------------------------------------------------
// The answerer's prompt for question q on `bank`: per speaker the top answer_k memories by BM25
// on the question (ties and zero scores by slot), grouped by session with its date; fewer when
// the prompt would exceed max_tokens ids (the rest of the model's context is the answer's).
int dialogue_answer_text(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                         const Question *q, int max_tokens, char **text, char *err,
                         size_t errlen);
int dialogue_answer_prompt(const Dialogue *d, const Episode *ep, const MemoryBank *bank,
                           const Question *q, int max_tokens, BpeIds *out, char *err,
                           size_t errlen);
// The answer in a model's output: the text inside <answer>...</answer> (or after an unclosed
// <answer>), else the first non-empty line; trimmed. Returns its length.
size_t dialogue_extract_answer(const char *text, char *out, size_t outlen);

typedef struct {
    int questions;                    // answered (active after `sessions`)
    double f1, bleu1, em;             // sums over the answered questions
    long mfail_missing, mfail_total;  // distinct evidence dia_ids of those questions carried
                                      // by no alive slot / in all
    int prompt_tokens_max;            // longest prompt, for the caller's context checks
    long gen_tokens;                  // tokens generated, and FNV-1a 64 over them in question
    uint64_t gen_hash;                // order (batching must not change what is generated)
} DialogueAnswerStats;

// Answers every question of ep active after `sessions` sessions (question_active) with the
// frozen model (greedy, answer_batch questions per sample() call). scores and preds (either may
// be NULL) have ep->n_qa entries; preds[i] is malloc'd (NULL for inactive questions), the caller
// frees. 0, or -1 with a message in err.
int dialogue_answer_episode(const Dialogue *d, const ModelBackend *be, Model *model,
                            const Episode *ep, const MemoryBank *bank, int sessions,
                            QAScore *scores, char **preds, DialogueAnswerStats *st, char *err,
                            size_t errlen);

// ---- bank sizing -----------------------------------------------------------------------------
typedef struct {
    int cap;              // slots: the most turns or gold facts of one conversation, rounded
                          // up to a multiple of 64 (store-turns writes one slot per turn)
    int slot_len;         // tokens: max_words words at the data's BPE tokens per word, + 25%,
                          // rounded up to a multiple of 8, in [16, DIALOGUE_FACT_MAX]
    int max_turns, max_gold;  // the largest conversation's turns and gold facts
    double tokens_per_word;   // BPE tokens per whitespace word over every turn
} DialogueBankSize;

// 0, or -1 with a message (empty data, tokenizer failure).
int dialogue_bank_size(const Dataset *ds, const Bpe *tok, int max_words, DialogueBankSize *out,
                       char *err, size_t errlen);

#endif
