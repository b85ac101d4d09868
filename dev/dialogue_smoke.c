// dev/dialogue_smoke.c: a pretrained backbone as the real-dialogue world's extractor (and, with
// --manage, manager and frozen answerer) on one LoCoMo conversation, to see what it writes and
// how much of it parses. Not a test: it needs a checkpoint and the LoCoMo file, neither of which
// the repository holds.
//
//   make smollm2 && make build/rel/dev/dialogue_smoke.o, then link it with the CORE_SRC objects
//   (gcc -O3 -march=native -fopenmp build/rel/dev/dialogue_smoke.o build/rel/<core>.o $(LIBS))
//   build/rel/dev/dialogue_smoke out/smollm2.bin ../shared/data/locomo-trainval.json
//       [--conv conv-43] [--sessions 1] [--manage] [--max-new 256] [--verbose]
//
// Per session: every chunk's extractor prompt goes into one batched sample() call (greedy); the
// facts parsed from each are printed. With --manage, each chunk's facts then go to the manager
// (one call per chunk: chunk c retrieves from the bank chunk c-1 left) and its ops are applied;
// after the last session the frozen answerer (the same checkpoint) answers the questions
// answerable by then.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dialogue.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const ModelBackend *be;
    Model *m;
    int maxT;
} Backbone;

// Greedy samples for n prompts; out (n, max_new), len (n).
static int run(const Backbone *b, const Dialogue *d, BpeIds *p, int n, int max_new, int *out,
               int *len) {
    if (n < 1 || n > 64 || max_new < 1) return -1;
    int stride = 1;
    for (int i = 0; i < n; i++) {
        if ((int)p[i].n + max_new > b->maxT) {
            fprintf(stderr, "dialogue_smoke: prompt %d has %zu tokens, too long\n", i, p[i].n);
            return -1;
        }
        if ((int)p[i].n > stride) stride = (int)p[i].n;
    }
    int *prompts = calloc((size_t)n * (size_t)stride, sizeof(int));
    int *plen = calloc((size_t)n, sizeof(int));
    float *logp = malloc(sizeof(float) * (size_t)n * (size_t)max_new);
    if (!prompts || !plen || !logp) return -1;
    for (int i = 0; i < n; i++) {
        plen[i] = (int)p[i].n;
        for (size_t t = 0; t < p[i].n; t++) prompts[(size_t)i * stride + t] = p[i].ids[t];
    }
    SampleRequest req = {.n = n, .prompts = prompts, .prompt_stride = stride, .prompt_len = plen,
                         .max_new = max_new, .temperature = 0, .top_p = 1, .stop = d->stop,
                         .n_stop = d->n_stop, .seed = 1};
    SampleResult res = {.tokens = out, .logp = logp, .len = len};
    int rc = b->be->sample(b->m, &req, &res);
    free(prompts), free(plen), free(logp);
    return rc;
}

int main(int argc, char **argv) {
    const char *conv = "conv-43";
    int sessions = 1, manage = 0, max_new = 256, verbose = 0;
    static const struct option longs[] = {{"conv", required_argument, 0, 'c'},
                                          {"sessions", required_argument, 0, 's'},
                                          {"manage", no_argument, 0, 'm'},
                                          {"max-new", required_argument, 0, 'n'},
                                          {"verbose", no_argument, 0, 'v'},
                                          {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (o == 'c') conv = optarg;
        else if (o == 's') sessions = atoi(optarg);
        else if (o == 'm') manage = 1;
        else if (o == 'n') max_new = atoi(optarg);
        else if (o == 'v') verbose = 1;
        else return 2;
    }
    if (argc - optind != 2 || sessions < 1 || max_new < 1) {
        fprintf(stderr, "usage: dialogue_smoke CKPT LOCOMO.json [--conv ID] [--sessions N] "
                        "[--manage] [--max-new N] [--verbose]\n");
        return 2;
    }
    char err[512], tokpath[1024];
    ModelConfig cfg;
    float *params = NULL;
    if (checkpoint_load(argv[optind], &cfg, &params, err, sizeof err)) {
        fprintf(stderr, "dialogue_smoke: %s\n", err);
        return 1;
    }
    snprintf(tokpath, sizeof tokpath, "%s", argv[optind]);
    char *dot = strrchr(tokpath, '.');
    if (dot) strcpy(dot, ".tok");
    Bpe *tok = bpe_load(tokpath, err, sizeof err);
    if (!tok || bpe_hash(tok) != cfg.tokenizer_hash) {
        fprintf(stderr, "dialogue_smoke: %s\n", tok ? "tokenizer hash mismatch" : err);
        return 1;
    }
    Dataset ds;
    if (dataset_load(argv[optind + 1], &ds, err, sizeof err)) {
        fprintf(stderr, "dialogue_smoke: %s\n", err);
        return 1;
    }
    const Episode *ep = NULL;
    for (int e = 0; e < ds.n; e++)
        if (strcmp(ds.episodes[e].sample_id, conv) == 0) ep = &ds.episodes[e];
    if (!ep) {
        fprintf(stderr, "dialogue_smoke: no conversation %s\n", conv);
        return 1;
    }
    if (sessions > ep->n_sessions) sessions = ep->n_sessions;
    DialogueConfig dc;
    dialogue_config_default(&dc);
    DialogueBankSize bs;
    if (dialogue_bank_size(&ds, tok, 20, &bs, err, sizeof err)) {
        fprintf(stderr, "dialogue_smoke: %s\n", err);
        return 1;
    }
    dc.fact_max_tokens = bs.slot_len;
    Dialogue d;
    if (dialogue_init(&d, tok, &dc, err, sizeof err)) {
        fprintf(stderr, "dialogue_smoke: %s\n", err);
        return 1;
    }
    printf("bank: cap %d slot_len %d (max turns %d, %.2f BPE tokens per word)\n", bs.cap,
           bs.slot_len, bs.max_turns, bs.tokens_per_word);
    Backbone b = {.be = cpu_backend_for(&cfg), .maxT = cfg.maxT};
    b.m = b.be->create(&cfg, 8, 1);
    if (!b.m) return 1;
    b.be->set_params(b.m, params);
    free(params);
    MemoryBank bank;
    if (memory_init(&bank, bs.cap, bs.slot_len)) return 1;
    MemoryStats ms = {0};
    int outputs = 0, malformed = 0, facts_total = 0, invalid = 0, m_out = 0, m_mal = 0;
    double t_extract = 0, t_manage = 0;
    for (int s = 1; s <= sessions; s++) {
        int nc = dialogue_num_chunks(&d, ep, s);
        BpeIds p[64] = {{0}};
        int *gen = malloc(sizeof(int) * (size_t)nc * max_new), len[64];
        for (int c = 0; c < nc; c++)
            if (dialogue_extract_prompt(&d, ep, s, c, &p[c], err, sizeof err)) {
                fprintf(stderr, "dialogue_smoke: %s\n", err);
                return 1;
            }
        double t0 = now();
        if (!gen || run(&b, &d, p, nc, max_new, gen, len)) return 1;
        t_extract += now() - t0;
        printf("== %s session %d (%s): %d chunks, extractor %.1f s\n", conv, s,
               ep->sessions[s - 1].date_time ? ep->sessions[s - 1].date_time : "?", nc,
               now() - t0);
        for (int c = 0; c < nc; c++) {
            Fact f[32];
            int inv, mal;
            int n = dialogue_parse_extract(&d, ep, s, c, gen + (size_t)c * max_new, len[c], f, 32,
                                           &inv, &mal);
            outputs++, malformed += mal, facts_total += n, invalid += inv;
            char *raw = dialogue_decode(&d, gen + (size_t)c * max_new, len[c]);
            int t0c, t1c;
            dialogue_chunk_turns(&d, ep, s, c, &t0c, &t1c);
            printf("-- chunk %d (turns %d-%d, prompt %zu tokens, %d generated): %d facts, %d "
                   "invalid, malformed %d\n", c, t0c + 1, t1c, p[c].n, len[c], n, inv, mal);
            if (verbose || n == 0) printf("   raw: %s\n", raw ? raw : "(decode failed)");
            free(raw);
            for (int k = 0; k < n; k++) {
                char *t = dialogue_decode(&d, f[k].tokens, f[k].len);
                printf("   D%d:%d  %s\n", DIA_SESSION(f[k].evidence), DIA_TURN(f[k].evidence),
                       t ? t : "?");
                free(t);
            }
            if (manage && n > 0) {
                Shown sh;
                BpeIds mp = {0};
                int mg[1024], ml;
                if (max_new > 1024 ||
                    dialogue_manage_prompt(&d, ep, &bank, f, n, &sh, &mp, err, sizeof err))
                    return 1;
                double t1 = now();
                if (run(&b, &d, &mp, 1, max_new, mg, &ml)) return 1;
                t_manage += now() - t1;
                DialogueOps ops;
                int mi, mm;
                dialogue_parse_manage(&d, mg, ml, f, n, &sh, &ops, &mi, &mm);
                m_out++, m_mal += mm;
                ms.invalid += mi;
                for (int k = 0; k < ops.n; k++) memory_apply(&bank, &ops.op[k], s, &ms);
                char *mr = dialogue_decode(&d, mg, ml);
                printf("   manager (%zu prompt tokens, %d shown): %d ops, %d invalid, malformed "
                       "%d\n", mp.n, sh.n, ops.n, mi, mm);
                if (verbose || mm) printf("   raw: %s\n", mr ? mr : "?");
                free(mr);
                bpe_ids_free(&mp);
            }
        }
        for (int c = 0; c < nc; c++) bpe_ids_free(&p[c]);
        free(gen);
    }
    printf("extractor: %d outputs, parseable %d / %d = %.2f, %d facts, %d invalid items, %.1f s\n",
           outputs, outputs - malformed, outputs,
           outputs ? (double)(outputs - malformed) / outputs : 0.0, facts_total, invalid,
           t_extract);
    if (manage) {
        printf("manager: %d outputs, parseable %.2f, inserts %d updates %d deletes %d noops %d "
               "invalid %d overflow %d, bank %d memories, %.1f s\n",
               m_out, m_out ? (double)(m_out - m_mal) / m_out : 0.0, ms.inserts, ms.updates,
               ms.deletes, ms.noops, ms.invalid, ms.overflow, memory_alive_count(&bank), t_manage);
        QAScore sc[512];
        char *pred[512];
        DialogueAnswerStats st;
        double t2 = now();
        if (ep->n_qa > 512 ||
            dialogue_answer_episode(&d, b.be, b.m, ep, &bank, sessions, sc, pred, &st, err,
                                    sizeof err)) {
            fprintf(stderr, "dialogue_smoke: %s\n", err);
            return 1;
        }
        for (int q = 0; q < ep->n_qa; q++) {
            if (!pred[q]) continue;
            if (verbose) printf("   Q: %s | gold: %s | pred: %s | F1 %.2f\n", ep->qa[q].question,
                                ep->qa[q].answer, pred[q], sc[q].f1);
            free(pred[q]);
        }
        int nq = st.questions ? st.questions : 1;
        printf("answerer: %d questions, F1 %.3f BLEU-1 %.3f EM %.3f, M-Fail %ld / %ld, longest "
               "prompt %d tokens, %.1f s\n", st.questions, st.f1 / nq, st.bleu1 / nq, st.em / nq,
               st.mfail_missing, st.mfail_total, st.prompt_tokens_max, now() - t2);
    }
    memory_free(&bank);
    b.be->destroy(b.m);
    dialogue_free(&d);
    bpe_free(tok);
    dataset_free(&ds);
    return 0;
}
