// vocab.h: the synthetic world's word-level tokenizer: a vocabulary (stb_ds hash map) built
// from the data, plus the special tokens of the roles' formats.
//
// Token-level formats (ids of the special tokens are fixed, see the enum below):
//   extract prompt:  <extract> <t0> speaker : text <t1> speaker : text ... <out>
//   extract output:  <t1> fact words <sep> <t3> fact words <sep> ... <eos>     (<eos> alone: none)
//   manage prompt:   <manage> <m0> slot words <m1> slot words ... <facts> <t1> fact <sep> ... <out>
//   manage output:   <ins> <t1> fact words <sep>  <upd> <m0> <t1> fact words <sep>
//                    <del> <m2> <sep>  <noop> <sep> ... <eos>
// <tK> names the K-th turn of the chunk (so every fact carries its source dia_id) and <mK> the
// K-th retrieved slot shown to the manager.
#ifndef MEMR2_VOCAB_H
#define MEMR2_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "data/locomo.h"
#include "world.h"  // MAX_CHUNK_TURNS, MAX_SHOWN_SLOTS: the <tK> and <mK> tokens cover them

#define VOCAB_MAX_WORD 64  // longer words are cut (tokenizer)

enum {
    TOK_PAD = 0, TOK_UNK, TOK_EOS, TOK_EXTRACT, TOK_MANAGE, TOK_OUT, TOK_SEP, TOK_FACTS,
    TOK_INSERT, TOK_UPDATE, TOK_DELETE, TOK_NOOP,
    TOK_TURN0,                          // <t0> .. <t{MAX_CHUNK_TURNS-1}>
    TOK_SLOT0 = TOK_TURN0 + MAX_CHUNK_TURNS,  // <m0> .. <m{MAX_SHOWN_SLOTS-1}>
    TOK_FIRST_WORD = TOK_SLOT0 + MAX_SHOWN_SLOTS,
};

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
// Tokens of text as the tokenizer cuts it (the "words" of the compression penalty).
int vocab_count_tokens(const char *text);
// 1 for the words retrieval ignores: empty, punctuation, function words.
int vocab_is_stop_word(const char *w);

#endif
