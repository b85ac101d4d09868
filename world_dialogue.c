// world_dialogue.c: the real-dialogue world as a World (world.h; docs/design.md "Worlds", the
// pieces in dialogue.h / docs/dialogue.md). A pretrained chat backbone plays both roles through
// its BPE tokenizer and chat template, writes JSON, and a frozen copy of a backbone answers the
// questions from the bank. There is no teacher (no oracle, no warm start from traces: start from
// a pretrained --init) and no gold grammar (no --mistakes); insert-only stores the gold
// observations where the file has them.
//
// The tokenizer is the checkpoint's: WorldArgs.tokenizer_path, else "<checkpoint stem>.tok"
// (make smollm2 writes out/smollm2.bin + out/smollm2.tok), else "tokenizer.tok" in the
// checkpoint's directory (what a training run writes beside its checkpoints).
#include "world_dialogue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dialogue.h"
#include "files.h"

typedef struct {
    Bpe *tok;
    Dialogue d;
    int slot_len;             // tokens per slot (dialogue_bank_size over the data)
    double tokens_per_word;   // BPE tokens per whitespace word of the data (compression penalty)
    float rho;
    const ModelBackend *abe;  // the frozen answerer
    Model *answerer;
    FILE *progress;           // answering progress (NULL: quiet)
} DialogueState;

static void wd_bank_shape(const void *s, const Episode *ep, int *cap, int *slot_len) {
    // One slot per turn or gold fact of this conversation (store-turns writes a slot per turn;
    // a policy that writes more overflows, which is counted), rounded up to a multiple of 64.
    int turns = 0, gold = 0;
    for (int i = 0; i < ep->n_sessions; i++) {
        turns += ep->sessions[i].n_turns;
        gold += ep->gold ? ep->n_gold[i] : 0;
    }
    int n = turns > gold ? turns : gold;
    *cap = ((n > 64 ? n : 64) + 63) / 64 * 64;
    *slot_len = ((const DialogueState *)s)->slot_len;
}
static int wd_num_chunks(const void *s, const Episode *ep, int session) {
    return dialogue_num_chunks(&((const DialogueState *)s)->d, ep, session);
}

// ids -> out[0..max); a prompt longer than max is refused (0 tokens: the rollout then has an
// empty prompt, which the model still answers; the message says which chunk).
static int copy_ids(const BpeIds *ids, int *out, int max, const char *what) {
    if ((long)ids->n > max) {
        fprintf(stderr, "world dialogue: the %s prompt has %zu tokens, more than the %d that fit: "
                        "cut to its last %d\n", what, ids->n, max, max);
        size_t off = ids->n - (size_t)max;
        for (int i = 0; i < max; i++) out[i] = ids->ids[off + (size_t)i];
        return max;
    }
    for (size_t i = 0; i < ids->n; i++) out[i] = ids->ids[i];
    return (int)ids->n;
}

static int wd_extract_prompt(const void *s, const Episode *ep, int session, int chunk, int *out,
                             int max) {
    const DialogueState *st = s;
    BpeIds ids = {0};
    char err[512];
    int n = 0;
    if (dialogue_extract_prompt(&st->d, ep, session, chunk, &ids, err, sizeof err) != 0)
        fprintf(stderr, "world dialogue: %s\n", err);
    else
        n = copy_ids(&ids, out, max, "extract");
    bpe_ids_free(&ids);
    return n;
}
static int wd_parse_extract(const void *s, const Episode *ep, int session, int chunk,
                            const int *gen, int len, Fact *facts, int max, int *malformed) {
    int invalid = 0;
    return dialogue_parse_extract(&((const DialogueState *)s)->d, ep, session, chunk, gen, len,
                                  facts, max, &invalid, malformed);
}
static int wd_manage_prompt(const void *s, const Episode *ep, const MemoryBank *bank,
                            const Fact *facts, int n_facts, Shown *shown, int *out, int max) {
    const DialogueState *st = s;
    BpeIds ids = {0};
    char err[512];
    int n = 0;
    shown->n = 0;
    if (dialogue_manage_prompt(&st->d, ep, bank, facts, n_facts, shown, &ids, err, sizeof err))
        fprintf(stderr, "world dialogue: %s\n", err);
    else
        n = copy_ids(&ids, out, max, "manage");
    bpe_ids_free(&ids);
    return n;
}
static int wd_parse_manage(const void *s, const int *gen, int len, const Fact *facts,
                           int n_facts, const Shown *shown, MemoryOp *ops, int max,
                           int *fact_store, int *n_invalid, int *malformed) {
    DialogueOps *dops = malloc(sizeof *dops);
    int bad = 0, invalid = 0, n = 0;
    if (!dops) {
        fprintf(stderr, "world dialogue: out of memory parsing a manager output\n");
        if (n_invalid) *n_invalid = 0;
        if (malformed) *malformed = 1;
        return 0;
    }
    dialogue_parse_manage(&((const DialogueState *)s)->d, gen, len, facts, n_facts, shown, dops,
                          &invalid, &bad);
    for (int i = 0; i < dops->n && n < max; i++, n++) {
        ops[n] = dops->op[i];
        int fl = ops[n].fact_len < FACT_MAX_TOKENS ? ops[n].fact_len : FACT_MAX_TOKENS;
        if (ops[n].fact && fl > 0) {
            int *dst = fact_store + (size_t)n * FACT_MAX_TOKENS;
            memcpy(dst, ops[n].fact, sizeof(int) * (size_t)fl);
            ops[n].fact = dst;
            ops[n].fact_len = fl;
        }
    }
    invalid += dops->n - n;  // ops beyond what the caller has room for
    free(dops);
    if (n_invalid) *n_invalid = invalid;
    if (malformed) *malformed = bad;
    return n;
}
static int wd_answer(const void *s, const MemoryBank *bank, const Episode *ep, int session,
                     const int *qidx, int nq, QAScore *scores) {
    const DialogueState *st = s;
    QAScore *all = malloc(sizeof(QAScore) * (size_t)(ep->n_qa > 0 ? ep->n_qa : 1));
    DialogueAnswerStats as;
    char err[512];
    if (!all) {
        fprintf(stderr, "world dialogue: out of memory for %d answers\n", ep->n_qa);
        return -1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (nq > 0 && dialogue_answer_episode(&st->d, st->abe, st->answerer, ep, bank, session, all,
                                          NULL, &as, err, sizeof err) != 0) {
        fprintf(stderr, "world dialogue: the answerer: %s\n", err);
        free(all);
        return -1;
    }
    for (int i = 0; i < nq; i++) scores[i] = all[qidx[i]];
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st->progress && nq > 0)
        fprintf(st->progress, "answered %d questions of %s after %d sessions in %.0f s\n", nq,
                ep->sample_id ? ep->sample_id : "?", session,
                (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(all);
    return 0;
}
static long count_words(const char *t) {
    long n = 0;
    for (int in = 0; t && *t; t++) {
        int sp = *t == ' ' || *t == '\n' || *t == '\t' || *t == '\r';
        n += !sp && !in;
        in = !sp;
    }
    return n;
}
static long wd_words_seen(const void *s, const Episode *ep, int session) {
    (void)s;
    long n = 0;
    for (int i = 1; i <= session && i <= ep->n_sessions; i++)
        for (int t = 0; t < ep->sessions[i - 1].n_turns; t++)
            n += count_words(ep->sessions[i - 1].turns[t].text);
    return n;
}
// The bank holds BPE tokens: its words are estimated as tokens / (tokens per word of the data).
static double wd_compression_penalty(const void *s, const MemoryBank *bank, long words_seen) {
    const DialogueState *st = s;
    if (words_seen <= 0) return 0.0;
    double words = (double)memory_words(bank) / (st->tokens_per_word > 0 ? st->tokens_per_word : 1);
    double x = (words - st->rho * (double)words_seen) / words_seen;
    return x > 0 ? x : 0.0;
}
static int wd_encode(const void *s, const char *text, int *out, int max) {
    const DialogueState *st = s;
    BpeIds ids = {0};
    char err[256];
    int n = 0;
    if (text && bpe_encode_ordinary(st->tok, text, strlen(text), &ids, err, sizeof err) == 0)
        for (; n < max && (size_t)n < ids.n; n++) out[n] = ids.ids[n];
    bpe_ids_free(&ids);
    return n;
}
// One token's bytes for bank dumps (a token may be part of a UTF-8 character: printed as is).
static const char *wd_token_text(void *s, int id) {
    DialogueState *st = s;
    size_t len = 0;
    const char *b = bpe_token_bytes(st->tok, id, &len);
    return b ? b : "?";
}
static void wd_destroy(World *w) {
    DialogueState *st = w->state;
    if (st) {
        if (st->answerer) st->abe->destroy(st->answerer);
        dialogue_free(&st->d);
        bpe_free(st->tok);
        free(st);
    }
    memset(w, 0, sizeof *w);
}

// The tokenizer beside a checkpoint (see the top of the file); 0 and the path, or -1.
static int find_tokenizer(const WorldArgs *a, char *path, size_t n) {
    if (a->tokenizer_path) return snprintf(path, n, "%s", a->tokenizer_path), 0;
    if (!a->checkpoint) return -1;
    snprintf(path, n, "%s", a->checkpoint);
    char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash)) snprintf(dot, n - (size_t)(dot - path), ".tok");
    if (access(path, R_OK) == 0) return 0;
    snprintf(path, n, "%s", a->checkpoint);
    slash = strrchr(path, '/');
    size_t off = slash ? (size_t)(slash + 1 - path) : 0;
    snprintf(path + off, n - off, "tokenizer.tok");
    return access(path, R_OK) == 0 ? 0 : -1;
}

// The frozen answerer: a copy of a checkpoint's weights on the backend its config asks for.
static int load_answerer(DialogueState *st, const WorldArgs *a, const char *path) {
    ModelConfig c;
    float *p = NULL;
    char err[1024];
    if (checkpoint_load(path, &c, &p, err, sizeof err) != 0) {
        fprintf(stderr, "error: the answerer: %s\n", err);
        return -1;
    }
    // The answerer reads prompts in the policy's tokens: a different vocabulary would answer
    // nonsense without an error.
    if (c.V != bpe_vocab_size(st->tok) ||
        (c.tokenizer_hash && c.tokenizer_hash != bpe_hash(st->tok))) {
        fprintf(stderr, "error: the answerer %s: its vocabulary (%d tokens, tokenizer hash %016llx) "
                        "is not the backbone tokenizer's (%d tokens, hash %016llx)\n", path, c.V,
                (unsigned long long)c.tokenizer_hash, bpe_vocab_size(st->tok),
                (unsigned long long)bpe_hash(st->tok));
        free(p);
        return -1;
    }
    st->abe = a->backend_for ? a->backend_for(&c) : cpu_backend_for(&c);
    int B = a->answerer_batch > 0 ? a->answerer_batch : 8;
    st->answerer = st->abe->create(&c, B, a->seed);
    if (st->answerer) st->abe->set_params(st->answerer, p);
    free(p);
    if (!st->answerer) fprintf(stderr, "error: the answerer %s: cannot create the model\n", path);
    else if (a->progress)
        fprintf(a->progress, "answerer: %s (%zu parameters, frozen)\n", path,
                config_num_params(&c));
    return st->answerer ? 0 : -1;
}

int world_dialogue_open(World *w, const WorldArgs *a) {
    memset(w, 0, sizeof *w);
    char tpath[4096], err[1024];
    if (find_tokenizer(a, tpath, sizeof tpath) != 0) {
        fprintf(stderr, "error: --world dialogue needs the backbone's tokenizer: none beside %s "
                        "(<stem>.tok or tokenizer.tok)\n", a->checkpoint ? a->checkpoint : "(no "
                        "checkpoint: give --init or --eval CKPT)");
        return -1;
    }
    DialogueState *st = calloc(1, sizeof *st);
    if (!st) return -1;
    w->state = st;
    w->destroy = wd_destroy;
    st->tok = bpe_load(tpath, err, sizeof err);
    if (!st->tok) {
        fprintf(stderr, "error: %s\n", err);
        goto fail;
    }
    DialogueConfig dc;
    dialogue_config_default(&dc);
    if (a->answerer_batch > 0) dc.answer_batch = a->answerer_batch;
    if (dialogue_init(&st->d, st->tok, &dc, err, sizeof err) != 0) {
        fprintf(stderr, "error: --world dialogue: %s\n", err);
        goto fail;
    }
    st->slot_len = 48, st->tokens_per_word = 1.3;
    if (a->vocab_data && a->vocab_data->n > 0) {
        DialogueBankSize bs;
        if (dialogue_bank_size(a->vocab_data, st->tok, 20, &bs, err, sizeof err) != 0) {
            fprintf(stderr, "error: --world dialogue: %s\n", err);
            goto fail;
        }
        st->slot_len = bs.slot_len, st->tokens_per_word = bs.tokens_per_word;
    }
    st->rho = a->rho >= 0 ? a->rho : 0.7f;
    st->progress = a->progress;
    const char *apath = a->answerer_path ? a->answerer_path : a->checkpoint;
    if (!apath) {
        fprintf(stderr, "error: --world dialogue needs a frozen answerer (a checkpoint)\n");
        goto fail;
    }
    if (load_answerer(st, a, apath) != 0) goto fail;
    if (a->save_tokenizer) {  // the run's checkpoints find it beside them
        FILE *f = fopen(tpath, "rb");
        char *buf = NULL;
        long len = -1;
        if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
            (buf = malloc((size_t)len + 1)) && fread(buf, 1, (size_t)len, f) == (size_t)len) {
            if (f) fclose(f);
            f = NULL;
            int rc = write_text_file(a->save_tokenizer, buf, (size_t)len);
            free(buf);
            if (rc != 0) goto fail;
        } else {
            if (f) fclose(f);
            free(buf);
            fprintf(stderr, "error: cannot read %s\n", tpath);
            goto fail;
        }
    }
    w->name = "dialogue";
    w->stop_token = st->d.n_stop > 0 ? st->d.stop[0] : bpe_eos(st->tok);
    w->pad_token = 0;
    w->vocab_size = bpe_vocab_size(st->tok);
    w->tokenizer_hash = bpe_hash(st->tok);
    w->max_new_extract = 256, w->max_new_manage = 256;  // JSON for a chunk of ~5 turns
    w->bank_shape = wd_bank_shape, w->num_chunks = wd_num_chunks;
    w->extract_prompt = wd_extract_prompt, w->parse_extract = wd_parse_extract;
    w->manage_prompt = wd_manage_prompt, w->parse_manage = wd_parse_manage;
    w->answer = wd_answer, w->words_seen = wd_words_seen;
    w->compression_penalty = wd_compression_penalty, w->encode = wd_encode;
    w->token_text = wd_token_text;
    return 0;
fail:
    wd_destroy(w);
    return -1;
}
