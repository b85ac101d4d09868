// bpe.h: byte-level BPE tokenizer (GPT-2 / SmolLM2 / Llama-3 / Qwen2 style), equal to Hugging
// Face `tokenizers` on the same vocabulary, merges and pre-tokenizer.
//
//   encode   special tokens first (leftmost-longest match), then the model's pre-tokenizer
//            (PCRE2 regexes, UTF + UCP, JIT when available), then BPE by merge rank on the
//            bytes of each piece
//   decode   ids -> the exact bytes they stand for (UTF-8 when the ids came from encode)
//   chat     the ChatML template of SmolLM2-Instruct / Qwen2.5-Instruct:
//            "<|im_start|>role\ncontent<|im_end|>\n" per message, a default system message when
//            the first message is not one, then "<|im_start|>assistant\n"
//
// Tokenizer files (.tok) are written by dev/tokenizer_export.py from a GGUF (SmolLM2) or a
// Hugging Face tokenizer.json; see README "Tokenizer". Build: link bpe.o with -lpcre2-8
// -lunistring.
//
// File format, version 1, all integers little-endian uint32:
//   magic "memr2tok" (8 bytes), version (=1)
//   n_vocab, n_merges, n_special, flags (bit 0: ignore_merges, a piece that is itself a vocabulary
//                                        entry is emitted whole, as Llama-3 does;
//                                        bit 1: text between special tokens is normalised to NFC
//                                        first, as Qwen2.5's tokenizer.json says)
//   bos_id, eos_id                      (0xFFFFFFFF when the model has none)
//   pre:    len, bytes                  pre-tokenizer name: "smollm", "gpt2", "llama-bpe", "qwen2"
//   chat:   len, bytes                  chat template kind: "chatml" or "" (none)
//   system: len, bytes                  default system message of the chat template ("" = none)
//   vocab:  n_vocab x (len, bytes)      id -> the bytes it decodes to (raw, not GPT-2 unicode)
//   merges: n_merges x (left, right, result)   rank = index;
//                                       bytes(result) = bytes(left) + bytes(right)
//   added:  n_special x id              added tokens, matched in the text before pre-tokenization;
//                                       id | BPE_ADDED_PLAIN for one that is not special (HF
//                                       special=false, GGUF USER_DEFINED): bpe_encode_ordinary
//                                       still matches those, as HF does
// and nothing after. bpe_hash() is FNV-1a 64 over the whole file's bytes, so a checkpoint can
// record which tokenizer it was trained with.
#ifndef MEMR2_BPE_H
#define MEMR2_BPE_H

#include <stddef.h>
#include <stdint.h>

#define BPE_MAGIC "memr2tok"
#define BPE_VERSION 1u
#define BPE_NONE 0xFFFFFFFFu
#define BPE_FLAG_IGNORE_MERGES 1u
#define BPE_FLAG_NFC 2u
#define BPE_ADDED_PLAIN 0x80000000u

typedef struct Bpe Bpe;

// A growable list of token ids; zero-initialise, free with bpe_ids_free.
typedef struct {
    int32_t *ids;
    size_t n, cap;
} BpeIds;

typedef struct {
    const char *role;     // "system", "user", "assistant"
    const char *content;  // UTF-8, NUL-terminated
} BpeMessage;

// Loads a .tok file. NULL on any error, with a message naming the file and what was wrong in err.
Bpe *bpe_load(const char *path, char *err, size_t errlen);
// The same from bytes in memory (e.g. a tokenizer stored inside a checkpoint); name is what
// messages call it. The bytes are copied.
Bpe *bpe_load_mem(const void *data, size_t len, const char *name, char *err, size_t errlen);
void bpe_free(Bpe *t);

int bpe_vocab_size(const Bpe *t);
uint64_t bpe_hash(const Bpe *t);         // FNV-1a 64 of the file bytes
const char *bpe_pre_name(const Bpe *t);  // e.g. "smollm"
int bpe_bos(const Bpe *t);               // -1 when none
int bpe_eos(const Bpe *t);               // -1 when none
// The id of a special token given its text, e.g. "<|im_end|>"; -1 when there is none.
int bpe_special_id(const Bpe *t, const char *text);

// Appends the ids of text[0..len) to out. 0 on success, -1 on error (out of memory, regex
// failure) with a message in err. Invalid UTF-8 is never a crash: bytes that are not valid
// UTF-8 become pieces of their own and are encoded byte by byte.
int bpe_encode(const Bpe *t, const char *text, size_t len, BpeIds *out, char *err, size_t errlen);

// The same, but special tokens written in the text are encoded as ordinary text (HF's
// encode_special_tokens = true): for user or dialogue text that must not inject <|im_end|>.
int bpe_encode_ordinary(const Bpe *t, const char *text, size_t len, BpeIds *out, char *err,
                        size_t errlen);

// The bytes of one id (not NUL-terminated) and their length; NULL for an id out of range.
const char *bpe_token_bytes(const Bpe *t, int id, size_t *len);
// Decodes ids into a malloc'd NUL-terminated buffer (*out, length *out_len). 0 on success, -1 on
// an id out of range or out of memory (message in err).
int bpe_decode(const Bpe *t, const int32_t *ids, size_t n, char **out, size_t *out_len, char *err,
               size_t errlen);

// The chat template rendered to text (malloc'd, NUL-terminated): messages, plus the assistant
// header when add_generation_prompt. -1 when the tokenizer has no chat template.
int bpe_chat_render(const Bpe *t, const BpeMessage *msgs, int n, int add_generation_prompt,
                    char **out, char *err, size_t errlen);
// The same, encoded (special tokens in the template become their ids): appends to out.
int bpe_chat(const Bpe *t, const BpeMessage *msgs, int n, int add_generation_prompt, BpeIds *out,
             char *err, size_t errlen);

void bpe_ids_free(BpeIds *ids);

#endif
