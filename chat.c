// chat.c: talk to a pretrained Llama-family checkpoint (llama2.c's run.c, memr2 style).
//
//   make smollm2 && make chat
//   ./chat out/smollm2.bin "What is the capital of France?"
//   ./chat out/smollm2.bin            # a conversation: one user turn per line of stdin
//
// The prompt goes through the model's chat template (bpe.h: ChatML, with the tokenizer's
// default system message unless --system is given), the CPU backend for the checkpoint's
// architecture prefills it and decodes greedily (or with --temperature / --top-p / --seed)
// until <|im_end|> or --max-new tokens; the answer is printed to stdout, timings to stderr.
// The tokenizer file beside the checkpoint (NAME.tok for NAME.bin, or --tok) must be the one the
// checkpoint was made with: its hash is recorded in the checkpoint (model.h) and a mismatch is
// refused, since ids from another vocabulary would be silently meaningless.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "bpe.h"
#include "model.h"

typedef struct {
    const char *ckpt, *tok, *prompt, *system;
    float temperature, top_p;
    unsigned long long seed;
    int max_new;
} ChatArgs;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./chat CHECKPOINT [PROMPT] [options]\n"
            "  Answers PROMPT with the checkpoint (e.g. out/smollm2.bin from `make smollm2`);\n"
            "  without PROMPT, reads one user turn per line of stdin and keeps the conversation.\n"
            "  --tok FILE          tokenizer file (default: CHECKPOINT with .bin -> .tok)\n"
            "  --system TEXT       system message (default: the tokenizer's own)\n"
            "  --temperature T     0 = greedy (default 0)\n"
            "  --top-p P           nucleus mass in (0, 1] (default 1)\n"
            "  --seed S            sampling seed (default 1)\n"
            "  --max-new N         new tokens per answer (default 256)\n"
            "  -h, --help          this text\n");
}

static int parse_num(const char *s, double lo, double hi, const char *flag, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "chat: %s %s: expected a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

// 0: run, 1: help printed, -1: bad arguments (message printed).
static int parse_args(int argc, char **argv, ChatArgs *a) {
    *a = (ChatArgs){.temperature = 0.0f, .top_p = 1.0f, .seed = 1, .max_new = 256};
    static const struct option longs[] = {
        {"tok", required_argument, 0, 't'},        {"system", required_argument, 0, 's'},
        {"temperature", required_argument, 0, 'T'}, {"top-p", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 'S'},       {"max-new", required_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 't': a->tok = optarg; break;
        case 's': a->system = optarg; break;
        case 'T':
            if (parse_num(optarg, 0, 100, "--temperature", &v)) return -1;
            a->temperature = (float)v;
            break;
        case 'p':
            if (parse_num(optarg, 1e-6, 1, "--top-p", &v)) return -1;
            a->top_p = (float)v;
            break;
        case 'S':
            if (parse_num(optarg, 0, 9007199254740992.0, "--seed", &v)) return -1;
            a->seed = (unsigned long long)v;
            break;
        case 'n':
            if (parse_num(optarg, 1, 1 << 20, "--max-new", &v)) return -1;
            a->max_new = (int)v;
            break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;  // getopt printed the reason
        }
    }
    int rest = argc - optind;
    if (rest < 1 || rest > 2) {
        usage(stderr);
        return -1;
    }
    a->ckpt = argv[optind];
    a->prompt = rest == 2 ? argv[optind + 1] : NULL;
    return 0;
}

// NAME.bin -> NAME.tok (else PATH.tok); malloc'd.
static char *tokenizer_beside(const char *ckpt) {
    size_t n = strlen(ckpt);
    char *s = malloc(n + 5);
    if (!s) return NULL;
    memcpy(s, ckpt, n + 1);
    if (n >= 4 && strcmp(s + n - 4, ".bin") == 0) s[n - 4] = '\0';
    strcat(s, ".tok");
    return s;
}

typedef struct {
    const ModelBackend *be;
    Model *model;
    const ModelConfig *cfg;
    Bpe *tok;
    int stop[3];
    int n_stop;
} Chat;

// One answer to the conversation msgs[0..n): malloc'd UTF-8 text in *answer.
static int chat_answer(Chat *ch, const ChatArgs *a, const BpeMessage *msgs, int n,
                       char **answer) {
    char err[512];
    BpeIds ids = {0};
    if (bpe_chat(ch->tok, msgs, n, 1, &ids, err, sizeof err)) {
        fprintf(stderr, "chat: %s\n", err);
        return -1;
    }
    int maxT = ch->cfg->maxT, plen = (int)ids.n;
    if (plen >= maxT) {
        fprintf(stderr, "chat: the prompt is %d tokens, the checkpoint allows %d positions\n",
                plen, maxT);
        bpe_ids_free(&ids);
        return -1;
    }
    int max_new = a->max_new < maxT - plen ? a->max_new : maxT - plen;
    int *toks = malloc(sizeof(int) * (size_t)max_new);
    float *logp = malloc(sizeof(float) * (size_t)max_new);
    int *prompt = malloc(sizeof(int) * (size_t)plen);
    int len = 0, rc = -1;
    if (!toks || !logp || !prompt) {
        fprintf(stderr, "chat: out of memory\n");
        goto done;
    }
    for (int i = 0; i < plen; i++) prompt[i] = ids.ids[i];
    SampleRequest req = {.n = 1, .prompts = prompt, .prompt_stride = plen, .prompt_len = &plen,
                         .max_new = max_new, .temperature = a->temperature, .top_p = a->top_p,
                         .stop = ch->stop, .n_stop = ch->n_stop, .seed = a->seed};
    SampleResult res = {.tokens = toks, .logp = logp, .len = &len};
    double t0 = now_seconds();
    if (ch->be->sample(ch->model, &req, &res)) {
        fprintf(stderr, "chat: sampling failed\n");
        goto done;
    }
    double dt = now_seconds() - t0;
    int shown = len;  // the stop token is emitted by the sampler; it is not part of the text
    if (shown > 0)
        for (int s = 0; s < ch->n_stop; s++)
            if (toks[shown - 1] == ch->stop[s]) {
                shown--;
                break;
            }
    int32_t *out32 = malloc(sizeof(int32_t) * (size_t)(shown > 0 ? shown : 1));
    if (!out32) {
        fprintf(stderr, "chat: out of memory\n");
        goto done;
    }
    for (int i = 0; i < shown; i++) out32[i] = toks[i];
    size_t olen;
    rc = bpe_decode(ch->tok, out32, (size_t)shown, answer, &olen, err, sizeof err);
    free(out32);
    if (rc) fprintf(stderr, "chat: %s\n", err);
    fprintf(stderr, "chat: %d prompt tokens, %d new tokens in %.2f s (%.1f tokens/s, both)\n",
            plen, len, dt, dt > 0 ? (plen + len) / dt : 0.0);
done:
    free(toks);
    free(logp);
    free(prompt);
    bpe_ids_free(&ids);
    return rc;
}

// Loads the checkpoint and its tokenizer (hashes must agree) and creates the model.
static int chat_open(Chat *ch, const ChatArgs *a, ModelConfig *cfg) {
    char err[512];
    float *params = NULL;
    if (checkpoint_load(a->ckpt, cfg, &params, err, sizeof err)) {
        fprintf(stderr, "chat: %s\n", err);
        return -1;
    }
    char *tokpath = a->tok ? NULL : tokenizer_beside(a->ckpt);
    const char *tp = a->tok ? a->tok : tokpath;
    int rc = -1;
    if (!tp) {
        fprintf(stderr, "chat: out of memory\n");
        goto done;
    }
    ch->tok = bpe_load(tp, err, sizeof err);
    if (!ch->tok) {
        fprintf(stderr, "chat: %s\n", err);
        goto done;
    }
    if (cfg->tokenizer_hash != bpe_hash(ch->tok)) {
        fprintf(stderr,
                "chat: %s was made with tokenizer %016llx but %s is %016llx: refusing a "
                "mismatched tokenizer (re-run the importer that wrote both)\n",
                a->ckpt, (unsigned long long)cfg->tokenizer_hash, tp,
                (unsigned long long)bpe_hash(ch->tok));
        goto done;
    }
    if (bpe_vocab_size(ch->tok) > cfg->V) {
        fprintf(stderr, "chat: %s has %d tokens, the checkpoint's vocabulary only %d\n", tp,
                bpe_vocab_size(ch->tok), cfg->V);
        goto done;
    }
    const char *stops[] = {"<|im_end|>", "<|endoftext|>"};
    for (int s = 0; s < 2; s++) {
        int id = bpe_special_id(ch->tok, stops[s]);
        if (id >= 0) ch->stop[ch->n_stop++] = id;
    }
    int eos = bpe_eos(ch->tok), known = 0;
    for (int s = 0; s < ch->n_stop; s++) known |= ch->stop[s] == eos;
    if (eos >= 0 && !known) ch->stop[ch->n_stop++] = eos;
    ch->be = cpu_backend_for(cfg);
    ch->model = ch->be->create(cfg, 1, a->seed);
    if (!ch->model) goto done;  // create printed why
    ch->be->set_params(ch->model, params);
    ch->cfg = ch->be->config(ch->model);
    rc = 0;
done:
    free(params);
    free(tokpath);
    return rc;
}

// Interactive: each stdin line is a user turn; the history grows until EOF.
static int chat_loop(Chat *ch, const ChatArgs *a) {
    int cap = 64, n = 0, rc = 0;
    BpeMessage *msgs = malloc(sizeof(BpeMessage) * (size_t)cap);
    char **owned = calloc((size_t)cap, sizeof(char *));
    if (!msgs || !owned) {
        fprintf(stderr, "chat: out of memory\n");
        free(msgs);
        free(owned);
        return -1;
    }
    if (a->system) msgs[n++] = (BpeMessage){"system", a->system};
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    fprintf(stderr, "chat: one message per line, Ctrl-D to end\n> ");
    while ((got = getline(&line, &lcap, stdin)) > 0) {
        if (line[got - 1] == '\n') line[got - 1] = '\0';
        if (n + 2 > cap) {
            fprintf(stderr, "chat: the conversation is full (%d messages)\n", cap);
            break;
        }
        owned[n] = strdup(line);
        if (!owned[n]) {
            rc = -1;
            break;
        }
        msgs[n] = (BpeMessage){"user", owned[n]};
        n++;
        char *ans = NULL;
        if (chat_answer(ch, a, msgs, n, &ans)) {
            rc = -1;
            break;
        }
        printf("%s\n", ans);
        fflush(stdout);
        owned[n] = ans;
        msgs[n] = (BpeMessage){"assistant", ans};
        n++;
        fprintf(stderr, "> ");
    }
    free(line);
    for (int i = 0; i < cap; i++) free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

int main(int argc, char **argv) {
    ChatArgs a;
    int pr = parse_args(argc, argv, &a);
    if (pr) return pr > 0 ? 0 : 2;
    Chat ch = {0};
    ModelConfig cfg;
    int rc = 1;
    if (chat_open(&ch, &a, &cfg)) goto done;
    if (a.prompt) {
        BpeMessage msgs[2];
        int n = 0;
        if (a.system) msgs[n++] = (BpeMessage){"system", a.system};
        msgs[n++] = (BpeMessage){"user", a.prompt};
        char *ans = NULL;
        if (chat_answer(&ch, &a, msgs, n, &ans)) goto done;
        printf("%s\n", ans);
        free(ans);
    } else if (chat_loop(&ch, &a)) {
        goto done;
    }
    rc = 0;
done:
    if (ch.model) ch.be->destroy(ch.model);
    bpe_free(ch.tok);
    return rc;
}
