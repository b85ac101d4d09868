// train.c: the memr2 program. Trains one small transformer to play two roles, fact EXTRACTOR
// and memory MANAGER, over long multi-session dialogues with LoGo-GRPO, then evaluates it.
//
//   make train_cpu && ./train_cpu            default run: data, warm start, curriculum, eval
//   ./train_cpu --eval POLICY -d FILE        evaluate a baseline or a checkpoint
//   ./train_cpu --help                       every flag
//
// Reading order for one training step: main -> run_training -> run_curriculum -> rl_step, which
//   1-4. calls grpo_collect (grpo.c): G memory lineages rolled out through H sessions, their
//        final banks scored, picked sessions re-run K times from snapshots, and every turn
//        given its global or local advantage           (rollout.c, world.h, memory.c, model)
//   5.   runs PPO epochs: forward -> grpo_rows_grad (grpo.c) -> backward -> AdamW
//                                                       (model.c / kernels.cu)
// The same file builds train_cpu (model.c backend) and train_gpu (kernels.cu backend).
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <stb/stb_ds.h>

#include "dist.h"
#include "eval.h"
#include "files.h"
#include "grpo.h"
#include "memory.h"
#include "model.h"
#include "rng.h"
#include "rollout.h"
#include "runstate.h"
#include "stats.h"
#include "world.h"

// The backend for a config's architecture (GPT-2 or the Llama family), on the CPU in
// train_cpu and on a GPU in train_gpu: a checkpoint's config picks its own.
static const ModelBackend *backend_for(const ModelConfig *cfg) {
#ifdef MEMR2_GPU
    return gpu_backend_for(cfg);
#else
    return cpu_backend_for(cfg);
#endif
}

// ---------------------------------------------------------------------------------------------
// Options

typedef enum { ALGO_LOGO, ALGO_GRPO, ALGO_SFT } Algo;

// The smallest context the roles fit in: the manager may write 64 tokens (model_actor) after a
// prompt of at least 3 (env_manage_prompt). Checked at parse time, so that a run does not fail
// after its warm start.
#define MIN_MAX_SEQ (64 + 3)

typedef struct {
    // data
    const char *train_path, *val_path, *test_path;
    int gen_train, gen_val, gen_test, gen_sessions;  // default data, made if absent
    const char *out_dir;
    const char *init_path;     // start from this checkpoint instead of a warm start
    const char *answerer_path; // dialogue: the frozen answerer (NULL: the --init checkpoint)
    const char *world;         // world.h: synth (default) | dialogue
    uint64_t seed;
    // model
    int layers, heads, channels, max_seq, max_batch, vocab_max;
    // warm start
    int sft_steps;
    float sft_lr, teacher_noise;
    int sft_batch;
    int teacher_flaws;         // 1: the teacher's systematic flaws (world.h, TeacherFlaws)
    // RL
    Algo algo;
    int direct;                // no curriculum: all RL steps at the last horizon
    int stage_steps[3];        // steps at 8, 16, 32 sessions
    int horizons[3];
    float lr;
    int turns_per_update;
    int eval_every, val_episodes;
    int select_best;           // 1: each stage ends on its best-validation policy; 0: its last
    GrpoConfig grpo;
    AdamWConfig adamw;
    // evaluation
    const char *eval_policy;   // non-NULL: evaluate only
    const char *eval_data;
    int eval_sessions[EVAL_MAX_HORIZONS];  // --sessions: n_eval_sessions rising horizons
    int n_eval_sessions;                   // 0: 8, 16 and 32 (those the data has)
    int eval_episodes;         // 0: all episodes of the file
    int test_episodes;
    int test_sessions;         // 0: the final table at 8, 16 and 32 (those the data has); H: at H only
    int show_bank;             // --eval: print the first episode's final bank
    int mistakes;              // --eval: per-session mistakes against the gold world
    int quiet;
    // resume (README "Outputs and resume")
    const char *resume_dir;    // continue the run saved in this directory
    int overwrite;             // start over in an output directory that holds a run
    int save_every;            // warm-start steps between state saves (RL: every step)
} Options;

static void options_default(Options *o) {
    memset(o, 0, sizeof *o);
    o->train_path = "data/train.json";
    o->val_path = "data/val.json";
    o->test_path = "data/test.json";
    // 48 test episodes: 8 overstated one run's F1 gain about five-fold (issue 8)
    o->gen_train = 64, o->gen_val = 16, o->gen_test = 48, o->gen_sessions = 32;
    o->out_dir = "out";
    o->world = "synth";
    o->seed = 1;
    o->layers = 4, o->heads = 4, o->channels = 128, o->max_seq = 256, o->max_batch = 32;
    o->vocab_max = 4096;
    o->sft_steps = 3000, o->sft_lr = 2e-3f, o->teacher_noise = 0.0f, o->sft_batch = 32;
    o->teacher_flaws = 1;
    o->algo = ALGO_LOGO;
    o->stage_steps[0] = 16, o->stage_steps[1] = 8, o->stage_steps[2] = 4;
    o->horizons[0] = 8, o->horizons[1] = 16, o->horizons[2] = 32;
    o->lr = 3e-5f;
    o->turns_per_update = 128;
    o->eval_every = 2, o->val_episodes = 16;
    grpo_config_default(&o->grpo);
    o->adamw = (AdamWConfig){.lr = 0, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                             .weight_decay = 0.0f, .grad_clip = 1.0f};
    o->test_episodes = 48;
    o->save_every = 100;
}

static void usage(FILE *f, const char *prog) {
    Options d;
    options_default(&d);
    fprintf(f,
"usage: %s [options]              train (warm start + LoGo-GRPO curriculum) and evaluate\n"
"       %s --eval POLICY -d FILE [--sessions H[,H,H]]\n"
"\n"
"With no flags: makes the synthetic data if absent (data/*.json), warm-starts on the flawed\n"
"teacher's traces, runs the curriculum 8 -> 16 -> 32 sessions, evaluates on the test episodes\n"
"and writes out/ (log.jsonl, vocab.txt, sft.bin, best_h*.bin, final.bin, eval.md, curve.png).\n"
"\n"
"evaluation:\n"
"  --eval POLICY        none | store-turns | insert-only | oracle | teacher (the warm start's\n"
"                       flawed teacher) | CHECKPOINT.bin (greedy)\n"
"  -d, --data FILE      LoCoMo-format episodes to evaluate (default %s)\n"
"  --sessions H[,H,H]   horizons, rising (one pass of the policy serves them all); default:\n"
"                       8, 16 and 32 (those the data has)\n"
"  --episodes N         only the first N episodes of the file\n"
"  --show-bank          also print the first episode's bank after the last horizon\n"
"  --mistakes           per-session mistakes against the gold world instead (oracle, teacher\n"
"                       or a checkpoint): missed facts, wrong speaker, duplicate instead of\n"
"                       update, missing end; sessions 1-8, 9-16, 17-32, 33-64\n"
"data:\n"
"  --train FILE, --val FILE, --test FILE   (defaults %s %s %s)\n"
"  --seed S             one seed drives data, initialisation, sampling (default %llu)\n"
"  -o, --out DIR        output directory, made with its parents (default %s)\n"
"  --init CKPT          start from this checkpoint (same vocabulary) instead of a warm start\n"
"  --world W            synth (the synthetic grammar world) | dialogue (real LoCoMo dialogue,\n"
"                       a pretrained --init; docs/design.md \"Worlds\") (default synth)\n"
"  --answerer CKPT      dialogue: the frozen answerer's checkpoint, with the --init tokenizer\n"
"                       (default: the --init checkpoint itself)\n"
"  --resume DIR         continue the killed run saved in DIR (its flags come from DIR/run.args;\n"
"                       run it from the same working directory; only -q may be added)\n"
"  --overwrite          start over in an -o directory that already holds a run\n"
"  --save-every N       warm-start steps between saves of DIR/state.bin (default %d; RL: every\n"
"                       step)\n"
"model:\n"
"  --layers L --heads NH --channels C --max-seq T --max-batch B   (default %d %d %d %d %d)\n"
"warm start:\n"
"  --sft-steps N        supervised steps on teacher traces (default %d)\n"
"  --sft-lr X           (default %g)    --sft-batch B (default %d)\n"
"  --teacher-noise X    share of teacher facts dropped / ops swapped at random (default %g)\n"
"  --teacher-flaws F    default | none: the teacher's systematic mistakes (default: default)\n"
"reinforcement learning:\n"
"  --algo A             logo | grpo (local branch off) | sft (stop after warm start) (logo)\n"
"  --direct             no curriculum: all RL steps at the last horizon\n"
"  --stage-steps a,b,c  RL steps per curriculum stage (default %d,%d,%d)\n"
"  --horizons a,b,c     the stages' sessions, non-decreasing (default 8,16,32; --direct trains\n"
"                       at the last; real dialogue on a CPU wants a short one like 1,2,4)\n"
"  --lr X               RL learning rate (default %g)\n"
"  --G N                global rollouts (default %d)    --K N   local rerollouts (default %d)\n"
"  --p-local X          probability a session gets a local group (default %g)\n"
"  --omega X            weight of local turns (default %g)\n"
"  --lookahead N        sessions a local rerun plays on, unrecorded, before it is scored, so\n"
"                       its reward sees what its writes cost later; a group's reruns share one\n"
"                       sampling stream there (default %d, the paper's)\n"
"  --local-reward MODE  rerun (a rerun's own bank after its session, the paper's) | splice\n"
"                       (its source rollout's final bank with that session as the rerun\n"
"                       played it, scored at the horizon; no --lookahead) (rerun)\n"
"  --reward MODE        session (per-session evidence attribution) | trajectory (session)\n"
"  --beta-kl X --beta-ent X --eps-clip X --dual-clip X   (default %g %g %g %g)\n"
"  --ppo-epochs N       (default %d; 0: measure each step's rewards, advantages and credit\n"
"                       quality without updating)    --turns-per-update N (default %d)\n"
"  --lambda X --rho X   compression penalty (default %g %g)\n"
"  --zero-adv MODE      dilute (turns with advantage 0 count in the loss's mean, the paper's)\n"
"                       | skip (they stay out of the update) (default %s)\n"
"  --eval-every N       validation every N RL steps (default %d)\n"
"  --select WHICH       last | best: the policy a stage ends on, seeding the next stage and\n"
"                       reported (default last: best-of-validation on few episodes picks noise)\n"
"  --val-episodes N     (default %d)    --test-episodes N (default %d)\n"
"  --test-sessions H    the final table at horizon H only (default: 8, 16 and 32, those the\n"
"                       test data has; a short experiment at one horizon costs less)\n"
"  -q, --quiet          no progress lines\n"
"  -h, --help\n",
            prog, prog, d.test_path, d.train_path, d.val_path, d.test_path,
            (unsigned long long)d.seed, d.out_dir, d.save_every, d.layers, d.heads, d.channels,
            d.max_seq, d.max_batch, d.sft_steps, d.sft_lr, d.sft_batch, d.teacher_noise, d.stage_steps[0],
            d.stage_steps[1], d.stage_steps[2], d.lr, d.grpo.G, d.grpo.K, d.grpo.p_local,
            d.grpo.omega, d.grpo.lookahead, d.grpo.beta_kl, d.grpo.beta_ent, d.grpo.eps_clip, d.grpo.dual_clip,
            d.grpo.ppo_epochs, d.turns_per_update, d.grpo.lambda, d.grpo.rho,
            d.grpo.zero_adv == ZERO_ADV_SKIP ? "skip" : "dilute", d.eval_every,
            d.val_episodes, d.test_episodes);
}

// Strict number parsing: the whole argument must be a number in range.
static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "error: %s wants an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

// "a,b,c": three counts in [0, 1000000], nothing else.
static int parse_counts3(const char *flag, const char *s, int *out) {
    char buf[64];
    int v[3];
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if ((i < 2) != (comma != NULL) || len == 0 || len >= sizeof buf) goto bad;
        memcpy(buf, p, len);
        buf[len] = 0;
        if (parse_int(flag, buf, 0, 1000000, &v[i]) != 0) return -1;
        p = comma ? comma + 1 : p + len;
    }
    memcpy(out, v, sizeof v);
    return 0;
bad:
    fprintf(stderr, "error: %s wants three counts like 8,4,2, got '%s'\n", flag, s);
    return -1;
}

// "a[,b[,c]]": 1 to EVAL_MAX_HORIZONS rising session counts in [1, 1000].
static int parse_horizons(const char *flag, const char *s, int *out, int *n) {
    char buf[16];
    const char *p = s;
    *n = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == EVAL_MAX_HORIZONS || len == 0 || len >= sizeof buf) goto bad;
        memcpy(buf, p, len);
        buf[len] = 0;
        if (parse_int(flag, buf, 1, 1000, &out[*n]) != 0) return -1;
        if (*n > 0 && out[*n] <= out[*n - 1]) goto bad;
        (*n)++;
        if (!comma) return 0;
        p = comma + 1;
    }
bad:
    fprintf(stderr, "error: %s wants 1 to %d rising session counts like 4,8, got '%s'\n", flag,
            EVAL_MAX_HORIZONS, s);
    return -1;
}

// A seed: decimal digits only (strtoull would take "-1" and wrap it), at most 2^64 - 1.
static int parse_seed(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno || *end) {
        fprintf(stderr, "error: --seed wants an integer in [0, 2^64-1], got '%s'\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "error: %s wants a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

enum {
    OPT_EVAL = 1000, OPT_SESSIONS, OPT_TRAIN, OPT_VAL, OPT_TEST, OPT_SEED, OPT_LAYERS, OPT_HEADS,
    OPT_CHANNELS, OPT_MAXSEQ, OPT_MAXBATCH, OPT_SFT_STEPS, OPT_SFT_LR, OPT_SFT_BATCH,
    OPT_NOISE, OPT_ALGO, OPT_DIRECT, OPT_STAGE_STEPS, OPT_LR, OPT_G, OPT_K, OPT_PLOCAL,
    OPT_OMEGA, OPT_REWARD, OPT_BKL, OPT_BENT, OPT_EPS, OPT_DUAL, OPT_EPOCHS, OPT_TPU,
    OPT_LAMBDA, OPT_RHO, OPT_ZERO_ADV, OPT_SELECT, OPT_EVAL_EVERY, OPT_VAL_EPISODES, OPT_TEST_EPISODES, OPT_TEST_SESSIONS, OPT_INIT, OPT_SHOW_BANK,
    OPT_RESUME, OPT_OVERWRITE, OPT_SAVE_EVERY, OPT_MISTAKES, OPT_FLAWS,
    OPT_WORLD, OPT_EPISODES, OPT_ANSWERER, OPT_HORIZONS, OPT_LOOKAHEAD, OPT_LOCAL_REWARD,
};

static int parse_options(int argc, char **argv, Options *o) {
    static const struct option longs[] = {
        {"eval", required_argument, 0, OPT_EVAL},
        {"data", required_argument, 0, 'd'},
        {"sessions", required_argument, 0, OPT_SESSIONS},
        {"train", required_argument, 0, OPT_TRAIN},
        {"val", required_argument, 0, OPT_VAL},
        {"test", required_argument, 0, OPT_TEST},
        {"seed", required_argument, 0, OPT_SEED},
        {"out", required_argument, 0, 'o'},
        {"layers", required_argument, 0, OPT_LAYERS},
        {"heads", required_argument, 0, OPT_HEADS},
        {"channels", required_argument, 0, OPT_CHANNELS},
        {"max-seq", required_argument, 0, OPT_MAXSEQ},
        {"max-batch", required_argument, 0, OPT_MAXBATCH},
        {"sft-steps", required_argument, 0, OPT_SFT_STEPS},
        {"sft-lr", required_argument, 0, OPT_SFT_LR},
        {"sft-batch", required_argument, 0, OPT_SFT_BATCH},
        {"teacher-noise", required_argument, 0, OPT_NOISE},
        {"algo", required_argument, 0, OPT_ALGO},
        {"direct", no_argument, 0, OPT_DIRECT},
        {"stage-steps", required_argument, 0, OPT_STAGE_STEPS},
        {"lr", required_argument, 0, OPT_LR},
        {"G", required_argument, 0, OPT_G},
        {"K", required_argument, 0, OPT_K},
        {"p-local", required_argument, 0, OPT_PLOCAL},
        {"omega", required_argument, 0, OPT_OMEGA},
        {"lookahead", required_argument, 0, OPT_LOOKAHEAD},
        {"local-reward", required_argument, 0, OPT_LOCAL_REWARD},
        {"reward", required_argument, 0, OPT_REWARD},
        {"beta-kl", required_argument, 0, OPT_BKL},
        {"beta-ent", required_argument, 0, OPT_BENT},
        {"eps-clip", required_argument, 0, OPT_EPS},
        {"dual-clip", required_argument, 0, OPT_DUAL},
        {"ppo-epochs", required_argument, 0, OPT_EPOCHS},
        {"turns-per-update", required_argument, 0, OPT_TPU},
        {"lambda", required_argument, 0, OPT_LAMBDA},
        {"rho", required_argument, 0, OPT_RHO},
        {"zero-adv", required_argument, 0, OPT_ZERO_ADV},
        {"select", required_argument, 0, OPT_SELECT},
        {"eval-every", required_argument, 0, OPT_EVAL_EVERY},
        {"val-episodes", required_argument, 0, OPT_VAL_EPISODES},
        {"test-episodes", required_argument, 0, OPT_TEST_EPISODES},
        {"test-sessions", required_argument, 0, OPT_TEST_SESSIONS},
        {"init", required_argument, 0, OPT_INIT},
        {"world", required_argument, 0, OPT_WORLD},
        {"answerer", required_argument, 0, OPT_ANSWERER},
        {"horizons", required_argument, 0, OPT_HORIZONS},
        {"episodes", required_argument, 0, OPT_EPISODES},
        {"show-bank", no_argument, 0, OPT_SHOW_BANK},
        {"resume", required_argument, 0, OPT_RESUME},
        {"overwrite", no_argument, 0, OPT_OVERWRITE},
        {"save-every", required_argument, 0, OPT_SAVE_EVERY},
        {"mistakes", no_argument, 0, OPT_MISTAKES},
        {"teacher-flaws", required_argument, 0, OPT_FLAWS},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, rc = 0;
    opterr = 1;
    optind = 0;  // glibc: rescan from argv[1] (parse_options also reads DIR/run.args on --resume)
    while ((c = getopt_long(argc, argv, "d:o:qh", longs, NULL)) != -1 && rc == 0) {
        switch (c) {
        case OPT_EVAL: o->eval_policy = optarg; break;
        case 'd': o->eval_data = optarg; break;
        case OPT_SESSIONS: rc = parse_horizons("--sessions", optarg, o->eval_sessions, &o->n_eval_sessions); break;
        case OPT_TRAIN: o->train_path = optarg; break;
        case OPT_VAL: o->val_path = optarg; break;
        case OPT_TEST: o->test_path = optarg; break;
        case OPT_SEED: rc = parse_seed(optarg, &o->seed); break;
        case 'o': o->out_dir = optarg; break;
        case OPT_LAYERS: rc = parse_int("--layers", optarg, 1, 64, &o->layers); break;
        case OPT_HEADS: rc = parse_int("--heads", optarg, 1, 64, &o->heads); break;
        case OPT_CHANNELS: rc = parse_int("--channels", optarg, 1, 4096, &o->channels); break;
        case OPT_MAXSEQ:
            rc = parse_int("--max-seq", optarg, MIN_MAX_SEQ, 4096, &o->max_seq);
            break;
        case OPT_MAXBATCH: rc = parse_int("--max-batch", optarg, 1, 1024, &o->max_batch); break;
        case OPT_SFT_STEPS: rc = parse_int("--sft-steps", optarg, 0, 1000000, &o->sft_steps); break;
        case OPT_SFT_LR: rc = parse_float("--sft-lr", optarg, 0, 1, &o->sft_lr); break;
        case OPT_SFT_BATCH: rc = parse_int("--sft-batch", optarg, 1, 4096, &o->sft_batch); break;
        case OPT_NOISE: rc = parse_float("--teacher-noise", optarg, 0, 1, &o->teacher_noise); break;
        case OPT_ALGO:
            if (!strcmp(optarg, "logo")) o->algo = ALGO_LOGO;
            else if (!strcmp(optarg, "grpo")) o->algo = ALGO_GRPO;
            else if (!strcmp(optarg, "sft")) o->algo = ALGO_SFT;
            else {
                fprintf(stderr, "error: --algo wants logo, grpo or sft, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_DIRECT: o->direct = 1; break;
        case OPT_STAGE_STEPS: rc = parse_counts3("--stage-steps", optarg, o->stage_steps); break;
        case OPT_LR: rc = parse_float("--lr", optarg, 0, 1, &o->lr); break;
        case OPT_G: rc = parse_int("--G", optarg, 1, 256, &o->grpo.G); break;
        case OPT_K: rc = parse_int("--K", optarg, 1, 256, &o->grpo.K); break;
        case OPT_PLOCAL: rc = parse_float("--p-local", optarg, 0, 1, &o->grpo.p_local); break;
        case OPT_OMEGA: rc = parse_float("--omega", optarg, 0, 100, &o->grpo.omega); break;
        case OPT_LOOKAHEAD:
            rc = parse_int("--lookahead", optarg, 0, 64, &o->grpo.lookahead);
            break;
        case OPT_LOCAL_REWARD:
            if (!strcmp(optarg, "rerun")) o->grpo.local_reward = LOCAL_REWARD_RERUN;
            else if (!strcmp(optarg, "splice")) o->grpo.local_reward = LOCAL_REWARD_SPLICE;
            else {
                fprintf(stderr, "error: --local-reward wants rerun or splice, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_REWARD:
            if (!strcmp(optarg, "session")) o->grpo.reward_mode = REWARD_PER_SESSION;
            else if (!strcmp(optarg, "trajectory")) o->grpo.reward_mode = REWARD_TRAJECTORY;
            else {
                fprintf(stderr, "error: --reward wants session or trajectory, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_BKL: rc = parse_float("--beta-kl", optarg, 0, 100, &o->grpo.beta_kl); break;
        case OPT_BENT: rc = parse_float("--beta-ent", optarg, 0, 100, &o->grpo.beta_ent); break;
        case OPT_EPS: rc = parse_float("--eps-clip", optarg, 0, 1, &o->grpo.eps_clip); break;
        case OPT_DUAL: rc = parse_float("--dual-clip", optarg, 1, 100, &o->grpo.dual_clip); break;
        case OPT_EPOCHS: rc = parse_int("--ppo-epochs", optarg, 0, 100, &o->grpo.ppo_epochs); break;
        case OPT_TPU: rc = parse_int("--turns-per-update", optarg, 1, 1 << 20, &o->turns_per_update); break;
        case OPT_LAMBDA: rc = parse_float("--lambda", optarg, 0, 100, &o->grpo.lambda); break;
        case OPT_RHO: rc = parse_float("--rho", optarg, 0, 100, &o->grpo.rho); break;
        case OPT_SELECT:
            if (!strcmp(optarg, "last")) o->select_best = 0;
            else if (!strcmp(optarg, "best")) o->select_best = 1;
            else {
                fprintf(stderr, "error: --select wants last or best, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_ZERO_ADV:
            if (!strcmp(optarg, "dilute")) o->grpo.zero_adv = ZERO_ADV_DILUTE;
            else if (!strcmp(optarg, "skip")) o->grpo.zero_adv = ZERO_ADV_SKIP;
            else {
                fprintf(stderr, "error: --zero-adv wants dilute or skip, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_EVAL_EVERY: rc = parse_int("--eval-every", optarg, 1, 1000000, &o->eval_every); break;
        case OPT_VAL_EPISODES: rc = parse_int("--val-episodes", optarg, 1, 100000, &o->val_episodes); break;
        case OPT_TEST_EPISODES: rc = parse_int("--test-episodes", optarg, 1, 100000, &o->test_episodes); break;
        case OPT_TEST_SESSIONS: rc = parse_int("--test-sessions", optarg, 1, 100000, &o->test_sessions); break;
        case OPT_INIT: o->init_path = optarg; break;
        case OPT_ANSWERER: o->answerer_path = optarg; break;
        case OPT_HORIZONS:
            rc = parse_counts3("--horizons", optarg, o->horizons);
            if (rc == 0 && (o->horizons[0] < 1 || o->horizons[1] < o->horizons[0] ||
                            o->horizons[2] < o->horizons[1])) {
                fprintf(stderr, "error: --horizons wants three non-decreasing session counts "
                                ">= 1, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case OPT_WORLD:
            o->world = optarg;
            if (strcmp(optarg, "synth") != 0 && strcmp(optarg, "dialogue") != 0) {
                fprintf(stderr, "error: --world %s: unknown world (synth, dialogue)\n", optarg);
                rc = -1;
            }
            break;
        case OPT_EPISODES: rc = parse_int("--episodes", optarg, 1, 1000000, &o->eval_episodes); break;
        case OPT_SHOW_BANK: o->show_bank = 1; break;
        case OPT_RESUME: o->resume_dir = optarg; break;
        case OPT_OVERWRITE: o->overwrite = 1; break;
        case OPT_SAVE_EVERY:
            rc = parse_int("--save-every", optarg, 1, 1000000, &o->save_every);
            break;
        case OPT_MISTAKES: o->mistakes = 1; break;
        case OPT_FLAWS:
            if (!strcmp(optarg, "default")) o->teacher_flaws = 1;
            else if (!strcmp(optarg, "none")) o->teacher_flaws = 0;
            else {
                fprintf(stderr, "error: --teacher-flaws wants default or none, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(stdout, argv[0]); exit(0);
        default: rc = -1; break;  // getopt printed the reason
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[optind]);
        rc = -1;
    }
    if (rc == 0 && o->grpo.local_reward == LOCAL_REWARD_SPLICE && o->grpo.lookahead > 0) {
        fprintf(stderr, "error: --local-reward splice scores every rerun at the horizon already; "
                        "it takes no --lookahead (got %d)\n", o->grpo.lookahead);
        rc = -1;
    }
    if (rc == 0 && o->algo == ALGO_GRPO) o->grpo.local = 0;
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Small helpers: time, files, the model's shape

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// An output or data directory, parents included (`-o runs/today/a` on a fresh clone).
static int ensure_dir(const char *path) {
    char err[1024];
    if (make_dirs(path, err, sizeof err) == 0) return 0;
    fprintf(stderr, "error: %s\n", err);
    return -1;
}

static void path_join(char *dst, size_t n, const char *dir, const char *name) {
    snprintf(dst, n, "%s/%s", dir, name);
}

// The generator sits next to this program (same build), whatever the working directory. It runs
// with an argument vector, never through a shell (a path is only ever a path), and writes to
// "<out>.tmp", renamed when it succeeded: a killed run leaves no half-written data file.
static int run_generator(uint64_t seed, int episodes, int sessions, const char *out_path) {
    char exe[4096], tmp[4096], a_seed[32], a_ep[16], a_ses[16], err[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || (size_t)n > sizeof exe - 16) {
        fprintf(stderr, "error: cannot find this program's directory (/proc/self/exe)\n");
        return -1;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    snprintf(slash ? slash + 1 : exe, sizeof exe - (size_t)(slash ? slash + 1 - exe : 0),
             "gen_episodes");
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out_path) >= (int)sizeof tmp) {
        fprintf(stderr, "error: path too long: %s\n", out_path);
        return -1;
    }
    snprintf(a_seed, sizeof a_seed, "%llu", (unsigned long long)seed);
    snprintf(a_ep, sizeof a_ep, "%d", episodes);
    snprintf(a_ses, sizeof a_ses, "%d", sessions);
    char *argv[] = {exe, "--seed", a_seed, "--episodes", a_ep, "--sessions", a_ses,
                    "-o", tmp, NULL};
    if (spawn_wait(argv, NULL, 0, NULL, NULL, 0, err, sizeof err) != 0) {
        fprintf(stderr, "error: making %s: %s; build the generator with `make gen_episodes`\n",
                out_path, err);
        remove(tmp);
        return -1;
    }
    if (rename(tmp, out_path) != 0) {
        fprintf(stderr, "error: %s: cannot rename %s into place: %s\n", out_path, tmp,
                strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

// Default data: three disjoint generator seeds derived from the run's seed.
static int ensure_default_data(const Options *o) {
    if (strchr(o->train_path, '/')) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", o->train_path);
        *strrchr(dir, '/') = 0;
        if (ensure_dir(dir) != 0) return -1;
    }
    struct { const char *path; int n; uint64_t seed; } sets[3] = {
        {o->train_path, o->gen_train, 1000 * o->seed + 1},
        {o->val_path, o->gen_val, 1000 * o->seed + 2},
        {o->test_path, o->gen_test, 1000 * o->seed + 3},
    };
    for (int i = 0; i < 3; i++) {
        if (file_exists(sets[i].path)) continue;
        printf("making %s (%d episodes, %d sessions)\n", sets[i].path, sets[i].n, o->gen_sessions);
        if (run_generator(sets[i].seed, sets[i].n, o->gen_sessions, sets[i].path) != 0) return -1;
    }
    return 0;
}

static int load_dataset_or_die(const char *path, Dataset *ds) {
    char err[1024];
    if (dataset_load(path, ds, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    return 0;
}

static int min_int(int a, int b) { return a < b ? a : b; }

static int max_sessions(const Dataset *ds) {
    int h = 0;
    for (int i = 0; i < ds->n; i++)
        if (ds->episodes[i].n_sessions > h) h = ds->episodes[i].n_sessions;
    return h;
}

// ---------------------------------------------------------------------------------------------
// Packing turns into (B, T) rows for the model.
//
// Row b holds one turn: its prompt and output tokens. targets[b,t] = tokens[b,t+1] only where
// t+1 is an output position, so the lm head runs only where the policy acted.

typedef struct {
    int *tokens;   // (maxB, maxT)
    int *targets;  // (maxB, maxT)
    float *logp;   // (maxB, maxT)
    float *ent;    // (maxB, maxT)
    float *dlogp;  // (maxB, maxT)
    float *dent;   // (maxB, maxT)
    int maxB, maxT;
    int pad;       // the world's padding token
} RowBatch;

static int row_batch_init(RowBatch *rb, int maxB, int maxT) {
    size_t n = (size_t)maxB * (size_t)maxT;
    rb->maxB = maxB, rb->maxT = maxT;
    rb->tokens = malloc(n * sizeof(int));
    rb->targets = malloc(n * sizeof(int));
    rb->logp = malloc(n * sizeof(float));
    rb->ent = malloc(n * sizeof(float));
    rb->dlogp = malloc(n * sizeof(float));
    rb->dent = malloc(n * sizeof(float));
    if (!rb->tokens || !rb->targets || !rb->logp || !rb->ent || !rb->dlogp || !rb->dent) {
        fprintf(stderr, "error: out of memory for a (%d, %d) batch\n", maxB, maxT);
        return -1;
    }
    return 0;
}

static void row_batch_free(RowBatch *rb) {
    free(rb->tokens), free(rb->targets), free(rb->logp), free(rb->ent), free(rb->dlogp),
        free(rb->dent);
}

// Fill rows with turns idx[0..n); returns T (the longest turn).
static int pack_turns(RowBatch *rb, const TurnBuffer *tb, const int *idx, int n) {
    int T = 1;
    for (int b = 0; b < n; b++) {
        const PolicyTurn *pt = &tb->turns[idx[b]];
        int len = pt->prompt_len + pt->out_len;
        if (len > T) T = len;
    }
    if (T > rb->maxT) T = rb->maxT;
    for (int b = 0; b < n; b++) {
        const PolicyTurn *pt = &tb->turns[idx[b]];
        const int *src = tb->tokens + pt->offset;
        int len = min_int(pt->prompt_len + pt->out_len, T);
        int *tok = rb->tokens + (size_t)b * T, *tgt = rb->targets + (size_t)b * T;
        for (int t = 0; t < T; t++) {
            tok[t] = t < len ? src[t] : rb->pad;
            tgt[t] = (t + 1 < len && t + 1 >= pt->prompt_len) ? src[t + 1] : -1;
        }
    }
    return T;
}

// ---------------------------------------------------------------------------------------------
// The whole training context

typedef struct {
    Options opt;
    World world;    // world.h: the environment (--world)
    const ModelBackend *be;  // the policy's backend (backend_for its config)
    Dataset train, val, test;
    Model *model;   // the policy
    Model *ref;     // pi_ref: the policy at the start of the stage (also holds SFT for eval)
    ModelConfig mcfg;
    Rng rng;
    RowBatch rows;
    FILE *log;
    char log_path[4096];
    int log_failed;      // a write to log.jsonl failed (reported once, fatal at the next save)
    int global_step;
    double t_start;
    // resume (README "Outputs and resume")
    int resuming;        // rs and ts hold the state loaded from state.bin
    RunState rs;
    TrainState ts;
    int warm_started;
    float *sft_params;   // the warm start's policy (the final table's "sft" row)
    CurvePoint *reward_pts, *val_pts;  // stb_ds arrays: the learning curve
    // data-parallel ranks (dist.h; docs/scaleout.md): every rank trains, rank 0 alone writes
    Dist *dist;
    int writer;
} Trainer;

// Writes one metrics line (JSON) to out/log.jsonl. `fields` is a preformatted "k":v list.
// A failed write (full disk) is remembered: the run stops at its next state save.
static void log_line(Trainer *tr, const char *fields) {
    if (!tr->log || tr->log_failed) return;
    if (fprintf(tr->log, "{\"step\":%d,\"time_s\":%.2f,%s}\n", tr->global_step,
                now_seconds() - tr->t_start, fields) < 0 || fflush(tr->log) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", tr->log_path, strerror(errno));
        tr->log_failed = 1;
    }
}

// The model as the actor, with the room per role output the world asks for.
static Actor model_actor(Trainer *tr, Model *m, float temperature, TurnBuffer *record) {
    return (Actor){.kind = ACTOR_MODEL, .be = tr->be, .model = m, .temperature = temperature,
                   .top_p = 1, .max_seq = m ? tr->be->config(m)->maxT : tr->mcfg.maxT,
                   .max_new_extract = tr->world.max_new_extract,
                   .max_new_manage = tr->world.max_new_manage, .record = record,
                   .dist = tr->dist, .progress = tr->opt.quiet || !tr->writer ? NULL : stderr};
}

// --show-bank: the first evaluation episode's bank goes to stdout.
static FILE *show_bank_file(const Trainer *tr) { return tr->opt.show_bank ? stdout : NULL; }

// ---------------------------------------------------------------------------------------------
// Saving and resuming (README "Outputs and resume"). DIR/state.bin holds the policy, its AdamW
// state, the RNG and where the run is; it is replaced atomically after every save point, so a
// kill at any moment leaves the last one whole. A resumed run redoes the work since that save
// with the same RNG draws and ends with the same bytes as a run that was never killed.

// rs carries the phase, position and the extra parameter copies; this adds the policy, its
// AdamW moments, the RNG, the step counter, the elapsed time and the log position.
static int save_run_state(Trainer *tr, RunState *rs) {
    if (!tr->writer) return 0;
    size_t np = tr->be->num_params(tr->model);
    float *buf = malloc(sizeof(float) * np * 3);
    int rc = -1;
    char path[4096], err[1024];
    if (!buf) {
        fprintf(stderr, "error: out of memory saving the run state\n");
        return -1;
    }
    if (tr->log_failed) goto done;  // log_line said which file
    // The state must point at the end of what is on disk, so flush before asking where that is.
    long pos = tr->log && fflush(tr->log) == 0 ? ftell(tr->log) : -1;
    if (pos < 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", tr->log_path, strerror(errno));
        goto done;
    }
    TrainState ts = {.mom = buf + np, .vel = buf + 2 * np};
    tr->be->get_params(tr->model, buf);
    tr->be->get_opt_state(tr->model, ts.mom, ts.vel, &ts.step);
    memcpy(ts.rng, tr->rng.s, sizeof ts.rng);
    rs->copy[RUN_PARAMS] = buf;
    rs->global_step = tr->global_step;
    rs->elapsed_s = now_seconds() - tr->t_start;
    rs->log_bytes = pos;
    rs->warm_started = tr->warm_started;
    rs->reward_pts = tr->reward_pts, rs->n_reward = (int32_t)arrlen(tr->reward_pts);
    rs->val_pts = tr->val_pts, rs->n_val = (int32_t)arrlen(tr->val_pts);
    RunStatePieces pieces;  // pointers into rs: its copies are written where they lie
    runstate_pieces(rs, np, &pieces);
    ts.blob_piece = pieces.piece;
    ts.blob_piece_bytes = pieces.bytes;
    ts.n_blob_pieces = pieces.n;
    path_join(path, sizeof path, tr->opt.out_dir, "state.bin");
    if (train_state_save(path, &tr->mcfg, &ts, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    rc = 0;
done:
    rs->copy[RUN_PARAMS] = NULL;
    rs->reward_pts = rs->val_pts = NULL;
    free(buf);
    return rc;
}

// Puts the saved policy, its AdamW state, the RNG, the step counter and the curve back.
static void restore_run_state(Trainer *tr) {
    RunState *rs = &tr->rs;
    tr->be->set_params(tr->model, rs->copy[RUN_PARAMS]);
    tr->be->set_opt_state(tr->model, tr->ts.mom, tr->ts.vel, tr->ts.step);
    memcpy(tr->rng.s, tr->ts.rng, sizeof tr->rng.s);
    tr->global_step = rs->global_step;
    tr->warm_started = rs->warm_started;
    arrsetlen(tr->reward_pts, 0);
    arrsetlen(tr->val_pts, 0);
    for (int i = 0; i < rs->n_reward; i++) arrput(tr->reward_pts, rs->reward_pts[i]);
    for (int i = 0; i < rs->n_val; i++) arrput(tr->val_pts, rs->val_pts[i]);
    if (rs->copy[RUN_SFT_PARAMS])
        memcpy(tr->sft_params, rs->copy[RUN_SFT_PARAMS],
               sizeof(float) * tr->be->num_params(tr->model));
}

// ---------------------------------------------------------------------------------------------
// Warm start: supervised training on the flawed teacher's traces (world.h, TeacherFlaws; both
// roles, loss on output tokens only). The traces come from the teacher acting through the same
// rollout path.

static float lr_schedule(float base, int step, int steps) {
    int warmup = steps / 10 + 1;
    if (step < warmup) return base * (float)(step + 1) / (float)warmup;
    float progress = (float)(step - warmup) / (float)(steps - warmup > 0 ? steps - warmup : 1);
    return base * (0.1f + 0.9f * 0.5f * (1.0f + cosf(3.14159265f * progress)));
}

static int sft_train(Trainer *tr) {
    const Options *o = &tr->opt;
    double t0 = now_seconds();
    TurnBuffer tb = {0};
    int n = tr->train.n, rc = -1, made = 0;
    Lane *lanes = calloc((size_t)n, sizeof *lanes);
    int *idx = malloc(sizeof(int) * (size_t)tr->rows.maxB);
    if (!lanes || !idx) goto done;
    for (int e = 0; e < n; e++, made++) {
        const Episode *ep = &tr->train.episodes[e];
        if (lane_init(&lanes[e], &tr->world, ep, 1, ep->n_sessions, 0) != 0) goto done;
    }
    Actor teacher = model_actor(tr, NULL, 0, &tb);
    teacher.kind = ACTOR_TEACHER;
    teacher.teacher_noise = o->teacher_noise;
    if (o->teacher_flaws) teacher.teacher_flaws = tr->world.default_flaws;
    if (rollout_run(&tr->world, lanes, n, &teacher, &tr->rng, NULL) != 0) goto done;
    int n_turns = turns_count(&tb);
    printf("warm start: %d teacher turns from %d episodes (noise %.2f, flaws %s), %d steps of "
           "%d\n", n_turns, n, o->teacher_noise, o->teacher_flaws ? "default" : "none",
           o->sft_steps, o->sft_batch);
    if (n_turns == 0) {
        fprintf(stderr, "error: the teacher produced no turns: is the training data empty?\n");
        goto done;
    }
    AdamWConfig adam = o->adamw;
    adam.weight_decay = 0.1f;
    long tokens = 0;
    // Resuming: the teacher's traces above came from the same RNG draws as the first time;
    // now the saved policy, optimizer and RNG take over.
    int first = 0;
    if (tr->resuming && tr->rs.phase == RUN_SFT) {
        restore_run_state(tr);
        first = tr->rs.sft_step;
        printf("resuming the warm start after step %d\n", first);
    }
    double t_train = now_seconds();
    for (int step = first; step < o->sft_steps; step++) {
        tr->be->zero_grad(tr->model);
        // The batch's turns first, so the loss normaliser (output tokens) is known.
        int *batch = malloc(sizeof(int) * (size_t)o->sft_batch);
        if (!batch) goto done;
        long out_tokens = 0;
        for (int i = 0; i < o->sft_batch; i++) {
            batch[i] = (int)rng_below(&tr->rng, (uint32_t)n_turns);
            out_tokens += tb.turns[batch[i]].out_len;
        }
        double loss = 0;
        int mine = dist_pick(tr->dist, batch, o->sft_batch);  // this rank's rows of the batch
        for (int s = 0; s < mine; s += tr->rows.maxB) {
            int B = min_int(tr->rows.maxB, mine - s);
            memcpy(idx, batch + s, sizeof(int) * (size_t)B);
            int T = pack_turns(&tr->rows, &tb, idx, B);
            if (tr->be->forward(tr->model, tr->rows.tokens, tr->rows.targets, B, T,
                                 tr->rows.logp, NULL) != 0) {
                free(batch);
                goto done;
            }
            for (size_t i = 0; i < (size_t)B * T; i++) {
                int has = tr->rows.targets[i] >= 0;
                loss -= has ? tr->rows.logp[i] : 0;
                tr->rows.dlogp[i] = has ? -1.0f / (float)(out_tokens > 0 ? out_tokens : 1) : 0;
                tokens += has;
            }
            tr->be->backward(tr->model, tr->rows.dlogp, NULL);
        }
        free(batch);
        dist_sum_double(tr->dist, &loss, 1);
        float lr = lr_schedule(o->sft_lr, step, o->sft_steps);
        float gnorm = dist_update(tr->dist, tr->be, tr->model, &adam, lr);
        loss /= (double)(out_tokens > 0 ? out_tokens : 1);
        tr->global_step++;
        char f[256];
        snprintf(f, sizeof f, "\"phase\":\"sft\",\"sft_loss\":%.5f,\"lr\":%.3g,\"grad_norm\":%.4f",
                 loss, lr, gnorm);
        log_line(tr, f);
        if ((step + 1) % o->save_every == 0 || step + 1 == o->sft_steps) {
            RunState rs = {.phase = RUN_SFT, .sft_step = step + 1};
            if (save_run_state(tr, &rs) != 0) goto done;
        }
        if (!o->quiet && (step % 20 == 0 || step + 1 == o->sft_steps)) {
            double el = now_seconds() - t_train;
            printf("\rwarm start step %4d/%d  loss %.4f  lr %.2e  %.0f out-tok/s  eta %.0fs   ",
                   step + 1, o->sft_steps, loss, lr, tokens / (el > 0 ? el : 1),
                   el / (step + 1 - first) * (o->sft_steps - step - 1));
            fflush(stdout);
        }
    }
    if (!o->quiet) printf("\n");
    printf("warm start done in %.1fs\n", now_seconds() - t0);
    rc = 0;
done:
    for (int e = 0; e < made; e++) lane_free(&lanes[e]);
    free(lanes);
    free(idx);
    turns_free(&tb);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// One LoGo-GRPO step: grpo_collect (grpo.c) makes the turns and their advantages; here the
// backend plumbing runs the PPO epochs over them.

typedef struct {
    GrpoStepStats g;   // what grpo_collect measured
    GrpoStats gs;      // the loss terms of the first PPO epoch (clipped: first and last)
    int turns_update;  // turns that entered the update (all, or those with A != 0: --zero-adv)
    double grad_norm;
    double train_s;
    long train_tokens;
} StepMetrics;

// Sorting turn indices by length keeps padding (wasted rows of the (B, T) batch) small. The key
// packs (length, index) into one integer, so the order is total and needs no context pointer.
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static int sort_turns_by_length(const TurnBuffer *tb, int *idx, int n) {
    int64_t *key = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!key) return -1;
    for (int i = 0; i < n; i++) {
        const PolicyTurn *pt = &tb->turns[idx[i]];
        key[i] = ((int64_t)(pt->prompt_len + pt->out_len) << 32) | (int64_t)idx[i];
    }
    qsort(key, (size_t)n, sizeof(int64_t), cmp_i64);
    for (int i = 0; i < n; i++) idx[i] = (int)(key[i] & 0xffffffff);
    free(key);
    return 0;
}

// logp of every output token of turns idx[0..n) under model m, into out (parallel to
// tb->tokens).
static int score_turns(Trainer *tr, Model *m, const TurnBuffer *tb, const int *idx, int n,
                       float *out) {
    int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!order) return -1;
    memcpy(order, idx, sizeof(int) * (size_t)n);
    sort_turns_by_length(tb, order, n);
    for (int s = 0; s < n; s += tr->rows.maxB) {
        int B = min_int(tr->rows.maxB, n - s);
        int T = pack_turns(&tr->rows, tb, order + s, B);
        if (tr->be->forward(m, tr->rows.tokens, tr->rows.targets, B, T, tr->rows.logp, NULL)) {
            free(order);
            return -1;
        }
        for (int b = 0; b < B; b++) {
            const PolicyTurn *pt = &tb->turns[order[s + b]];
            for (int l = 0; l < pt->out_len && pt->prompt_len - 1 + l < T; l++)
                out[pt->offset + pt->prompt_len + l] =
                    tr->rows.logp[(size_t)b * T + pt->prompt_len - 1 + l];
        }
    }
    free(order);
    return 0;
}

// A line per PROGRESS_EVERY_S seconds of a slow update (an LLM backbone: minutes per epoch);
// done / total count turns over all epochs, so the ETA covers the whole update; it is timed
// from t_epochs, after the reference scoring that t0 (the elapsed time) includes.
static void report_update(FILE *f, int epoch, int epochs, double done, double total, double t0,
                          double t_epochs, double *last) {
    double now = now_seconds();
    if (!f || now - *last < PROGRESS_EVERY_S || done <= 0) return;
    *last = now;
    fprintf(f, "update: epoch %d of %d, %.0f of %.0f turn passes, %.0f s elapsed, ETA %.0f s\n",
            epoch + 1, epochs, done, total, now - t0, (now - t_epochs) / done * (total - done));
    fflush(f);
}

// PPO epochs over the turns grpo_update_turns lets in: forward -> grpo_rows_grad -> backward ->
// AdamW, in minibatches of turns_per_update turns (each one optimiser update, loss = mean over it).
static int ppo_update(Trainer *tr, const TurnBuffer *tb, float lr, StepMetrics *sm) {
    const Options *o = &tr->opt;
    int n_all = turns_count(tb), rc = -1;
    size_t ntok = (size_t)arrlen(tb->tokens);
    float *ref_lp = calloc(ntok ? ntok : 1, sizeof(float));
    int *order = malloc(sizeof(int) * (size_t)(n_all ? n_all : 1));
    int *pick = malloc(sizeof(int) * (size_t)(n_all ? n_all : 1));  // this rank's share
    if (!ref_lp || !order || !pick) goto done;
    double t0 = now_seconds();
    int n = grpo_update_turns(&o->grpo, tb->turns, n_all, order);
    sm->turns_update = n;
    memcpy(pick, order, sizeof(int) * (size_t)n);
    int k = dist_pick(tr->dist, pick, n);
    if (k > 0 && score_turns(tr, tr->ref, tb, pick, k, ref_lp) != 0) goto done;
    dist_sum_float(tr->dist, ref_lp, ntok);  // each rank scored its share, zeros elsewhere
    double gn_sum = 0, last_report = t0, t_epochs = now_seconds();
    int updates = 0;
    FILE *progress = o->quiet || !tr->writer ? NULL : stderr;
    for (int epoch = 0; epoch < o->grpo.ppo_epochs && n > 0; epoch++) {
        for (int i = n - 1; i > 0; i--) {  // Fisher-Yates: fresh minibatches every epoch
            int j = (int)rng_below(&tr->rng, (uint32_t)(i + 1));
            int t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int mb = 0; mb < n; mb += o->turns_per_update) {
            int m = min_int(o->turns_per_update, n - mb);
            int *mbi = order + mb;
            sort_turns_by_length(tb, mbi, m);
            memcpy(pick, mbi, sizeof(int) * (size_t)m);
            int mine = dist_pick(tr->dist, pick, m);  // scale 1/m stays: the ranks' sum is the mean
            tr->be->zero_grad(tr->model);
            GrpoStats gs = {0};
            for (int s = 0; s < mine; s += tr->rows.maxB) {
                int B = min_int(tr->rows.maxB, mine - s);
                int T = pack_turns(&tr->rows, tb, pick + s, B);
                if (tr->be->forward(tr->model, tr->rows.tokens, tr->rows.targets, B, T,
                                     tr->rows.logp, tr->rows.ent) != 0)
                    goto done;
                if (grpo_rows_grad(&o->grpo, tb, ref_lp, pick + s, B, T, tr->rows.logp,
                                   tr->rows.ent, m, tr->rows.dlogp, tr->rows.dent, &gs) != 0)
                    goto done;
                for (int b = 0; b < B; b++)
                    sm->train_tokens += tb->turns[pick[s + b]].prompt_len + tb->turns[pick[s + b]].out_len;
                tr->be->backward(tr->model, tr->rows.dlogp, tr->rows.dent);
                // this rank's share of the minibatch stands for the whole of it
                double passed = (double)epoch * n + mb + (double)m * (s + B) / mine;
                report_update(progress, epoch, o->grpo.ppo_epochs, passed,
                              (double)o->grpo.ppo_epochs * n, t0, t_epochs, &last_report);
            }
            AdamWConfig adam = o->adamw;
            gn_sum += dist_update(tr->dist, tr->be, tr->model, &adam, lr);
            updates++;
            if (epoch == 0) {  // report the first pass: it measures the policy that acted
                sm->gs.loss += gs.loss, sm->gs.kl += gs.kl, sm->gs.entropy += gs.entropy;
                sm->gs.ratio += gs.ratio, sm->gs.clipped += gs.clipped;
                sm->gs.n_turns += gs.n_turns, sm->gs.n_tokens += gs.n_tokens;
            } else if (epoch == o->grpo.ppo_epochs - 1) {
                sm->gs.clipped += gs.clipped;  // clipping only bites after the first update
            }
        }
    }
    sm->grad_norm = updates ? gn_sum / updates : 0;
    grpo_stats_sum(tr->dist, &sm->gs, &sm->train_tokens);
    sm->train_s = now_seconds() - t0;
    rc = 0;
done:
    free(ref_lp);
    free(order);
    free(pick);
    return rc;
}

// One step on one training episode drawn at random: collect (grpo.c), then update.
static int rl_step(Trainer *tr, int H, float lr, StepMetrics *sm) {
    memset(sm, 0, sizeof *sm);
    const Episode *ep = &tr->train.episodes[rng_below(&tr->rng, (uint32_t)tr->train.n)];
    H = min_int(H, ep->n_sessions);
    TurnBuffer tb = {0};
    Actor actor = model_actor(tr, tr->model, 1.0f, &tb);  // sampled at temperature 1
    int rc = grpo_collect(&tr->opt.grpo, &tr->world, ep, H, &actor, &tr->rng, &tb, &sm->g);
    if (rc == 0) rc = ppo_update(tr, &tb, lr, sm);
    turns_free(&tb);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Validation, the curriculum, the final table

static double validate(Trainer *tr, Model *m, int H) {
    EvalResult res;
    int h = min_int(H, max_sessions(&tr->val));
    Actor greedy = model_actor(tr, m, 0.0f, NULL);
    if (eval_model(&tr->world, &greedy, &tr->val, tr->opt.val_episodes, &h, 1, tr->opt.seed,
                   show_bank_file(tr), &res, NULL) != 0)
        return -1;
    return res.f1;
}

static int save_params(Trainer *tr, Model *m, const char *name, float *scratch) {
    char path[4096], err[1024];
    path_join(path, sizeof path, tr->opt.out_dir, name);
    tr->be->get_params(m, scratch);
    if (!tr->writer) return 0;
    if (checkpoint_save(path, &tr->mcfg, scratch, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    return 0;
}

// The learning curve: curve.dat (the points) and curve.png. gnuplot runs without a shell and
// reads its script and the points from a pipe (inline data: no path ever enters the script);
// the PNG comes back on its stdout and is written atomically here. gnuplot is optional: without
// it curve.png is skipped with a warning. Returns -1 only when writing a file failed.
static int write_curve(Trainer *tr) {
    if (!tr->writer) return 0;
    const CurvePoint *series[2] = {tr->reward_pts, tr->val_pts};
    const char *titles[2] = {"with lines lw 2 title 'reward (train, mean over G)'",
                             "with linespoints lw 2 title 'validation F1 (greedy)'"};
    char dat[4096], png[4096], err[1024] = "";
    path_join(dat, sizeof dat, tr->opt.out_dir, "curve.dat");
    path_join(png, sizeof png, tr->opt.out_dir, "curve.png");
    char *text = NULL, *script = NULL, *image = NULL;
    size_t text_n = 0, script_n = 0, image_n = 0;
    FILE *t = open_memstream(&text, &text_n), *g = t ? open_memstream(&script, &script_n) : NULL;
    int rc = -1;
    if (!t || !g) {
        fprintf(stderr, "error: out of memory writing %s\n", dat);
        goto done;
    }
    fprintf(g, "set terminal png size 900,500\nset xlabel 'step'\nset ylabel 'value'\n"
               "set key bottom right\nset grid\nplot");
    for (int k = 0, first = 1; k < 2; k++)
        if (arrlen(series[k]) > 0) fprintf(g, "%s '-' %s", first ? "" : ",", titles[k]), first = 0;
    fprintf(g, "\n");
    for (int k = 0; k < 2; k++) {
        fprintf(t, "%s# step %s\n", k ? "\n\n" : "", k ? "val_f1" : "reward_mean");
        for (int i = 0; i < arrlen(series[k]); i++) {
            fprintf(t, "%g %g\n", series[k][i].step, series[k][i].value);
            fprintf(g, "%g %g\n", series[k][i].step, series[k][i].value);
        }
        if (arrlen(series[k]) > 0) fprintf(g, "e\n");
    }
    int bad = fclose(t) != 0;
    bad |= fclose(g) != 0;
    t = g = NULL;
    if (bad) {
        fprintf(stderr, "error: out of memory writing %s\n", dat);
        goto done;
    }
    if (write_text_file(dat, text, text_n) != 0) goto done;
    rc = 0;
    if (arrlen(series[0]) == 0 && arrlen(series[1]) == 0) goto done;
    char *argv[] = {"gnuplot", NULL};
    if (spawn_wait(argv, script, script_n, &image, &image_n, 1, err, sizeof err) != 0 ||
        image_n == 0) {
        fprintf(stderr, "warning: no %s: gnuplot failed or is missing (%s; apt-get install "
                        "gnuplot-nox); the curve's data is in %s\n", png,
                image_n == 0 && !err[0] ? "no output" : err, dat);
        goto done;
    }
    rc = write_text_file(png, image, image_n);
done:
    if (t) fclose(t);
    if (g) fclose(g);
    free(text), free(script), free(image);
    return rc;
}

// One RL step's line of log.jsonl (metric names of DESIGN section 6, plus the credit-quality
// metrics of docs/design.md).
static void log_rl_step(Trainer *tr, int stage, int H, const StepMetrics *sm, double dt,
                        double val_f1) {
    const Options *o = &tr->opt;
    const GrpoStepStats *g = &sm->g;
    int nt = sm->gs.n_turns ? sm->gs.n_turns : 1, nk = sm->gs.n_tokens ? sm->gs.n_tokens : 1;
    int turns = g->turns_global + g->turns_local;
    double zg = g->groups_global ? (double)g->zero_std_global / g->groups_global : 0;
    char cg[32], cl[32], ug[32], ul[32], zl[32], f[3072];
    snprintf(f, sizeof f,
             "\"phase\":\"rl\",\"stage\":%d,\"sessions\":%d,\"reward_mean\":%.5f,"
             "\"reward_std\":%.5f,\"frac_reward_zero_std\":%.4f,"
             "\"frac_zero_std_global\":%.4f,\"frac_zero_std_local\":%s,"
             "\"frac_nonzero_adv\":%.4f,\"credit_global\":%s,\"credit_local\":%s,"
             "\"credit_global_unit\":%s,\"credit_local_unit\":%s,"
             "\"adv_global_mean\":%.4f,\"adv_global_std\":%.4f,"
             "\"adv_local_mean\":%.4f,\"adv_local_std\":%.4f,\"local_groups\":%d,"
             "\"local_zero_std\":%d,\"turns_global\":%d,\"turns_local\":%d,\"turns_update\":%d,"
             "\"loss\":%.5f,\"kl\":%.6f,\"entropy\":%.4f,\"ratio\":%.4f,"
             "\"clip_frac\":%.4f,\"grad_norm\":%.4f,\"mem_words\":%.1f,"
             "\"ops_insert\":%d,\"ops_update\":%d,\"ops_delete\":%d,\"ops_noop\":%d,"
             "\"ops_invalid\":%d,\"tok_s_rollout\":%.0f,\"tok_s_rerollout\":%.0f,"
             "\"tok_s_train\":%.0f,\"rollout_tokens\":%ld,\"rerollout_tokens\":%ld,"
             "\"step_s\":%.2f%s%.4f",
             stage, H, g->reward_mean, g->reward_std, zg, zg,
             json_num(zl, sizeof zl,
                      g->groups_local ? (double)g->zero_std_local / g->groups_local : NAN, "%.4f"),
             turns ? (double)g->turns_nonzero / turns : 0.0,
             json_num(cg, sizeof cg, g->credit_global, "%.4f"),
             json_num(cl, sizeof cl, g->credit_local, "%.4f"),
             json_num(ug, sizeof ug, g->credit_global_unit, "%.4f"),
             json_num(ul, sizeof ul, g->credit_local_unit, "%.4f"), g->adv_global_mean,
             g->adv_global_std, g->adv_local_mean, g->adv_local_std, g->groups_local,
             g->zero_std_local, g->turns_global, g->turns_local, sm->turns_update, sm->gs.loss,
             sm->gs.kl / nk, sm->gs.entropy / nk, sm->gs.ratio / nt,
             (double)sm->gs.clipped / (nt * (o->grpo.ppo_epochs > 1 ? 2 : 1)), sm->grad_norm,
             g->mem_words, g->ops.inserts, g->ops.updates, g->ops.deletes, g->ops.noops,
             g->ops.invalid,
             (g->roll.prompt_tokens + g->roll.new_tokens) / (g->roll.seconds + 1e-9),
             (g->reroll.prompt_tokens + g->reroll.new_tokens) / (g->reroll.seconds + 1e-9),
             sm->train_tokens / (sm->train_s + 1e-9),
             (long)(g->roll.prompt_tokens + g->roll.new_tokens),
             (long)(g->reroll.prompt_tokens + g->reroll.new_tokens), dt,
             val_f1 >= 0 ? ",\"val_f1\":" : ",\"val_f1_pending\":", val_f1 >= 0 ? val_f1 : 0);
    log_line(tr, f);
}

static int run_curriculum(Trainer *tr) {
    const Options *o = &tr->opt;
    size_t np = tr->be->num_params(tr->model);
    float *best = malloc(sizeof(float) * np), *scratch = malloc(sizeof(float) * np);
    float *zeros = calloc(np, sizeof(float)), *ref = malloc(sizeof(float) * np);
    int rc = -1;
    if (!best || !scratch || !zeros || !ref) goto done;
    int n_stages = o->direct ? 1 : 3, total_steps = 0, done_steps = 0;
    for (int s = 0; s < 3; s++) total_steps += o->stage_steps[s];
    // Resuming inside the curriculum: the policy, moments and RNG are back (run_training);
    // a stage already started also gets its reference policy, best policy and best F1 back.
    const RunState *rs = tr->resuming && tr->rs.phase == RUN_RL ? &tr->rs : NULL;
    int first_stage = rs ? rs->stage : 0;
    if (rs) done_steps = rs->done_steps;
    double t_rl = now_seconds();
    for (int stage = first_stage; stage < n_stages; stage++) {
        int H = o->direct ? o->horizons[2] : o->horizons[stage];
        int steps = o->direct ? total_steps : o->stage_steps[stage];
        if (steps == 0) continue;
        char name[64];
        snprintf(name, sizeof name, "best_h%d.bin", H);
        double best_f1;
        int first_step = 0;
        if (rs && stage == first_stage && rs->stage_step > 0) {
            if (!rs->copy[RUN_BEST] || !rs->copy[RUN_REF] || rs->stage_step > steps) {
                fprintf(stderr, "error: %s/state.bin does not match this run's curriculum\n",
                        o->out_dir);
                goto done;
            }
            first_step = rs->stage_step;
            memcpy(best, rs->copy[RUN_BEST], sizeof(float) * np);
            memcpy(ref, rs->copy[RUN_REF], sizeof(float) * np);
            tr->be->set_params(tr->ref, ref);
            best_f1 = rs->best_f1;
            printf("stage %d: %d sessions, resuming after step %d of %d\n", stage + 1, H,
                   first_step, steps);
        } else {
            // pi_ref = the policy at the start of the stage; fresh optimizer moments
            tr->be->get_params(tr->model, best);
            memcpy(ref, best, sizeof(float) * np);
            tr->be->set_params(tr->ref, best);
            tr->be->set_opt_state(tr->model, zeros, zeros, 0);
            best_f1 = validate(tr, tr->model, H);
            if (best_f1 < 0) goto done;
            printf("stage %d: %d sessions, %d steps; validation F1 at start %.4f\n", stage + 1,
                   H, steps, best_f1);
            arrput(tr->val_pts, ((CurvePoint){(float)tr->global_step, (float)best_f1}));
            if (save_params(tr, tr->model, name, scratch) != 0) goto done;
        }
        for (int step = first_step; step < steps; step++) {
            StepMetrics sm;
            double t0 = now_seconds();
            if (rl_step(tr, H, o->lr, &sm) != 0) goto done;
            tr->global_step++;
            done_steps++;
            double dt = now_seconds() - t0;
            double val_f1 = -1;
            if ((step + 1) % o->eval_every == 0 || step + 1 == steps) {
                val_f1 = validate(tr, tr->model, H);
                if (val_f1 < 0) goto done;
                arrput(tr->val_pts, ((CurvePoint){(float)tr->global_step, (float)val_f1}));
                if (val_f1 >= best_f1) {  // on a tie, the policy that trained longer
                    best_f1 = val_f1;
                    tr->be->get_params(tr->model, best);
                    if (save_params(tr, tr->model, name, scratch) != 0) goto done;
                }
            }
            arrput(tr->reward_pts, ((CurvePoint){(float)tr->global_step, (float)sm.g.reward_mean}));
            log_rl_step(tr, stage + 1, H, &sm, dt, val_f1);
            RunState save = {.phase = RUN_RL, .stage = stage, .stage_step = step + 1,
                             .done_steps = done_steps, .best_f1 = best_f1,
                             .copy[RUN_BEST] = best, .copy[RUN_REF] = ref,
                             .copy[RUN_SFT_PARAMS] = tr->warm_started ? tr->sft_params : NULL};
            if (save_run_state(tr, &save) != 0) goto done;
            if (!o->quiet) {
                double el = now_seconds() - t_rl;
                int nt = sm.gs.n_turns ? sm.gs.n_turns : 1, nk = sm.gs.n_tokens ? sm.gs.n_tokens : 1;
                printf("stage %d (H=%d) step %3d/%d  reward %.3f±%.3f  zero-std %.2f  local %d  "
                       "kl %.4f  clip %.2f  credit %.2f/%.2f (units %.2f/%.2f)  %.1fs/step",
                       stage + 1, H, step + 1, steps, sm.g.reward_mean, sm.g.reward_std,
                       (double)sm.g.zero_std_global / (sm.g.groups_global ? sm.g.groups_global : 1),
                       sm.g.groups_local, sm.gs.kl / nk,
                       (double)sm.gs.clipped / (nt * (o->grpo.ppo_epochs > 1 ? 2 : 1)),
                       sm.g.credit_global, sm.g.credit_local, sm.g.credit_global_unit,
                       sm.g.credit_local_unit, dt);
                if (val_f1 >= 0) printf("  val F1 %.4f (best %.4f)", val_f1, best_f1);
                printf("  eta %.0fs\n", el / (done_steps - (rs ? rs->done_steps : 0)) *
                                             (total_steps - done_steps));
                fflush(stdout);
            }
        }
        // --select best: the best-validation checkpoint of the stage seeds the next one;
        // last (default): the policy as trained (best_h*.bin is kept either way)
        if (o->select_best) tr->be->set_params(tr->model, best);
        printf("stage %d done: best validation F1 %.4f (%s/%s); continuing from the %s policy\n",
               stage + 1, best_f1, o->out_dir, name, o->select_best ? "best" : "last");
        RunState next = {.phase = RUN_RL, .stage = stage + 1, .done_steps = done_steps,
                         .copy[RUN_SFT_PARAMS] = tr->warm_started ? tr->sft_params : NULL};
        if (stage + 1 < n_stages && save_run_state(tr, &next) != 0) goto done;
    }
    rc = 0;
done:
    free(best), free(scratch), free(zeros), free(ref);
    return rc;
}

// The final table (eval.h) of the warm start (in tr->ref) and the trained policy, greedy.
static int run_final_table(Trainer *tr, const float *sft_params) {
    if (sft_params) tr->be->set_params(tr->ref, sft_params);
    Actor sft = model_actor(tr, tr->ref, 0.0f, NULL);
    Actor trained = model_actor(tr, tr->model, 0.0f, NULL);
    FinalPolicies p = {.sft = sft_params ? &sft : NULL, .trained = &trained,
                       .seed = tr->opt.seed, .show_bank = show_bank_file(tr),
                       .horizon = tr->opt.test_sessions};
    return final_table(&tr->world, &p, &tr->test, tr->opt.test_episodes, tr->opt.test_path,
                       tr->writer ? tr->opt.out_dir : NULL);  // rank 0 alone writes
}

// ---------------------------------------------------------------------------------------------
// --eval: a baseline or a checkpoint on any LoCoMo-format file

// A checkpoint's tokenizer is the vocab.txt in the same directory (the synthetic world): token
// ids mean nothing without it (the order of words is by frequency in the data the run was
// trained on).
static void sibling_vocab_path(const char *ckpt_path, char *vpath, size_t n) {
    snprintf(vpath, n, "%s", ckpt_path);
    char *slash = strrchr(vpath, '/');
    size_t off = slash ? (size_t)(slash + 1 - vpath) : 0;
    snprintf(vpath + off, n - off, "vocab.txt");
}

// The world of --world (world.h: world_open), the one place a run makes it. Its vocabulary is
// vocab_path's when given (err_context prefixes the message if that cannot be read), else built
// from vocab_data; save_vocab (optional) keeps a copy for the run's directory.
// The real-dialogue world takes its tokenizer from beside `checkpoint` (the policy) and its
// frozen answerer from --init (the base model) or else that checkpoint.
static int open_world(Trainer *tr, const Dataset *vocab_data, const char *vocab_path,
                      const char *err_context, const char *save_vocab, int with_penalty,
                      const char *checkpoint) {
    const Options *o = &tr->opt;
    char tok_copy[4096];
    snprintf(tok_copy, sizeof tok_copy, "%s/tokenizer.tok", o->out_dir);
    WorldArgs a = {.name = o->world, .vocab_data = vocab_data, .vocab_max = o->vocab_max,
                   .vocab_path = vocab_path, .context = err_context,
                   .save_vocab = tr->writer ? save_vocab : NULL,
                   .rho = with_penalty ? o->grpo.rho : -1.0f,
                   .lambda = with_penalty ? o->grpo.lambda : -1.0f, .seed = o->seed,
                   .checkpoint = checkpoint,
                   .answerer_path = o->answerer_path ? o->answerer_path : o->init_path,
                   .answerer_batch = o->max_batch, .backend_for = backend_for,
                   .save_tokenizer = save_vocab ? tok_copy : NULL,
                   .progress = o->quiet ? NULL : stderr};
    return world_open(&tr->world, &a);
}

// The vocabulary must be the one the checkpoint was made with: same size and, when the
// checkpoint records it (tokenizer_hash != 0, README "Checkpoints"), the same hash. A hash of 0
// is a checkpoint from before hashes were recorded: accepted with a warning.
static int check_checkpoint_vocab(const char *ckpt_path, const ModelConfig *c, const World *w) {
    char vpath[4096];
    sibling_vocab_path(ckpt_path, vpath, sizeof vpath);
    if (w->vocab_size != c->V) {
        fprintf(stderr, "error: %s has %d words but the checkpoint %s expects V=%d\n", vpath,
                w->vocab_size, ckpt_path, c->V);
        return -1;
    }
    uint64_t h = w->tokenizer_hash;
    if (c->tokenizer_hash == 0) {
        fprintf(stderr, "warning: %s records no vocabulary hash (an older checkpoint): trusting "
                        "that %s is its vocabulary\n", ckpt_path, vpath);
    } else if (c->tokenizer_hash != h) {
        fprintf(stderr, "error: %s was made with another vocabulary than %s (hash %016llx in the "
                        "checkpoint, %016llx of the file): token ids would mean other words\n",
                ckpt_path, vpath, (unsigned long long)c->tokenizer_hash, (unsigned long long)h);
        return -1;
    }
    return 0;
}

static Model *create_model(const ModelConfig *cfg, int maxB, uint64_t seed) {
    const char *why = model_config_check(cfg);
    if (why) {
        fprintf(stderr, "error: bad model configuration: %s\n", why);
        return NULL;
    }
    return backend_for(cfg)->create(cfg, maxB, seed);
}

// --init of a Llama-family checkpoint: the run's model is that checkpoint's shape (the
// vocabulary fields are the world's, filled in after it opens). A GPT-2 checkpoint must match
// the model flags instead (warm_start checks).
static int init_shape(const char *ckpt_path, ModelConfig *mcfg) {
    ModelConfig c;
    float *p = NULL;
    char err[1024];
    if (checkpoint_load(ckpt_path, &c, &p, err, sizeof err) != 0) {
        fprintf(stderr, "error: --init: %s\n", err);
        return -1;
    }
    free(p);
    if (c.arch == ARCH_LLAMA) *mcfg = c;
    return 0;
}

static int run_eval(const Options *o, Dist *dist) {
    const char *path = o->eval_data ? o->eval_data : o->test_path;
    Dataset ds = {0};
    if (load_dataset_or_die(path, &ds) != 0) return 1;
    if (ds.n == 0) {  // a table of zeros would look like a result
        fprintf(stderr, "error: %s holds no episodes\n", path);
        dataset_free(&ds);
        return 1;
    }
    if (ds.questions_skipped || ds.evidence_skipped)
        printf("skipped %d questions that cannot be scored and %d malformed evidence ids in %s\n",
               ds.questions_skipped, ds.evidence_skipped, path);
    if (o->eval_episodes > 0 && ds.n > o->eval_episodes) ds.n = o->eval_episodes;
    int hs[EVAL_MAX_HORIZONS], nh = eval_horizons(&ds, o->eval_sessions, o->n_eval_sessions, hs);
    EvalResult res[3];
    int rc = 1;
    BaselinePolicy bp;
    Trainer tr = {.opt = *o, .dist = dist, .writer = dist_rank(dist) == 0};
    tr.be = backend_for(&tr.mcfg);
    if (baseline_policy_parse(o->eval_policy, &bp) == 0) {
        // Baselines need no model; the vocabulary only serves the prompts of the oracle.
        if (open_world(&tr, &ds, NULL, NULL, NULL, 0, o->init_path) != 0) goto done;
        if (o->mistakes) {
            if (bp != POLICY_ORACLE && bp != POLICY_TEACHER) {
                fprintf(stderr, "error: --mistakes wants oracle, teacher or a checkpoint\n");
                goto done;
            }
            Actor a = model_actor(&tr, NULL, 0, NULL);
            a.kind = ACTOR_TEACHER;
            if (bp == POLICY_TEACHER) a.teacher_flaws = tr.world.default_flaws;
            rc = report_mistakes(&tr.world, &ds, hs[nh - 1], &a, o->eval_policy, o->seed) == 0
                     ? 0 : 1;
            goto done;
        }
        for (int h = 0; h < nh; h++) {
            if (eval_baseline(&tr.world, &ds, bp, hs[h], &res[h]) != 0) goto done;
            eval_print(&res[h], o->eval_policy, stdout);
        }
        rc = 0;
        goto done;
    }
    // A checkpoint: its config from the header (which picks the backend), its vocabulary from
    // vocab.txt beside it.
    char err[1024], vpath[4096], ctx[4200];
    float *params = NULL;
    if (checkpoint_load(o->eval_policy, &tr.mcfg, &params, err, sizeof err) != 0) {
        fprintf(stderr, "error: --eval wants none, store-turns, insert-only, oracle or a "
                        "checkpoint file: %s\n", err);
        goto done;
    }
    tr.be = backend_for(&tr.mcfg);
    sibling_vocab_path(o->eval_policy, vpath, sizeof vpath);
    snprintf(ctx, sizeof ctx, "the vocabulary of %s: ", o->eval_policy);
    if (open_world(&tr, &ds, vpath, ctx, NULL, 0, o->eval_policy) != 0 ||
        check_checkpoint_vocab(o->eval_policy, &tr.mcfg, &tr.world) != 0) {
        free(params);
        goto done;
    }
    tr.model = create_model(&tr.mcfg, o->max_batch, o->seed);
    if (!tr.model) {
        free(params);
        goto done;
    }
    tr.be->set_params(tr.model, params);
    free(params);
    Actor a = model_actor(&tr, tr.model, 0.0f, NULL);  // greedy
    if (o->mistakes) {
        rc = report_mistakes(&tr.world, &ds, hs[nh - 1], &a, o->eval_policy, o->seed) == 0 ? 0 : 1;
        goto done;
    }
    if (eval_model(&tr.world, &a, &ds, ds.n, hs, nh, o->seed, show_bank_file(&tr), res, NULL) != 0)
        goto done;
    for (int h = 0; h < nh; h++) eval_print(&res[h], o->eval_policy, stdout);
    rc = 0;
done:
    if (tr.model) tr.be->destroy(tr.model);
    world_close(&tr.world);
    dataset_free(&ds);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The output directory of a run (README "Outputs and resume")

// What a run writes in its directory; a killed run may leave "<name>.tmp" files beside them.
static const char *const RUN_FILES[] = {"run.args", "state.bin", "log.jsonl", "vocab.txt",
                                        "sft.bin", "best_h", "final.bin", "eval.", "curve."};
#define MAX_ARGS_BYTES (1 << 20)

// A fresh run: refuses a directory that holds another run (its log would be lost) unless
// --overwrite, then records its own flags in run.args for --resume. A resumed run only clears
// the temporaries a kill left.
static int prepare_out_dir(const Options *o, int argc, char **argv) {
    char path[4096], err[1024];
    if (ensure_dir(o->out_dir) != 0) return -1;
    int stale =
        remove_stale_tmp(o->out_dir, RUN_FILES, (int)(sizeof RUN_FILES / sizeof *RUN_FILES));
    if (stale < 0) return -1;
    if (stale > 0) printf("removed %d unfinished temporary file(s) from %s\n", stale, o->out_dir);
    if (o->resume_dir) return 0;
    path_join(path, sizeof path, o->out_dir, "log.jsonl");
    char state[4096];
    path_join(state, sizeof state, o->out_dir, "state.bin");
    if ((file_exists(path) || file_exists(state)) && !o->overwrite) {
        fprintf(stderr, "error: %s already holds a run (%s): `--resume %s` continues it, "
                        "--overwrite starts over, or choose another -o DIR\n",
                o->out_dir, file_exists(path) ? path : state, o->out_dir);
        return -1;
    }
    if (remove(state) != 0 && errno != ENOENT) {
        fprintf(stderr, "error: cannot remove %s: %s\n", state, strerror(errno));
        return -1;
    }
    // run.args: the flags, NUL-terminated each, so --resume parses exactly the same ones.
    OutFile f;
    path_join(path, sizeof path, o->out_dir, "run.args");
    if (outfile_open(&f, path, err, sizeof err) == 0) {
        for (int i = 1; i < argc; i++) outfile_write(&f, argv[i], strlen(argv[i]) + 1);
        if (outfile_commit(&f, err, sizeof err) == 0) return 0;
    }
    fprintf(stderr, "error: %s\n", err);
    return -1;
}

// --resume DIR: the flags of the run saved in DIR (its run.args), parsed as at its start; the
// output directory is DIR wherever the run first wrote it. *buf keeps the strings alive.
static int options_from_run_dir(const char *dir, const char *prog, int quiet, Options *o,
                                char **buf, char ***args) {
    char path[4096];
    path_join(path, sizeof path, dir, "run.args");
    *buf = NULL, *args = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: --resume %s: no run to resume (%s: %s)\n", dir, path,
                strerror(errno));
        return -1;
    }
    char *b = malloc(MAX_ARGS_BYTES + 1);
    size_t n = b ? fread(b, 1, MAX_ARGS_BYTES + 1, f) : 0;
    int bad = !b || ferror(f) || n > MAX_ARGS_BYTES || (n > 0 && b[n - 1] != 0);
    fclose(f);
    if (bad) {
        fprintf(stderr, "error: --resume %s: %s is unreadable or not a list of flags\n", dir, path);
        free(b);
        return -1;
    }
    int argc = 1;
    for (size_t i = 0; i < n; i++) argc += b[i] == 0;
    char **argv = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!argv) {
        free(b);
        return -1;
    }
    argv[0] = (char *)prog;
    for (size_t i = 0, k = 1; i < n; i += strlen(b + i) + 1) argv[k++] = b + i;
    argv[argc] = NULL;
    options_default(o);
    if (parse_options(argc, argv, o) != 0 || o->eval_policy || o->resume_dir) {
        fprintf(stderr, "error: --resume %s: the flags in %s are not a training run's\n", dir,
                path);
        free(b), free(argv);
        return -1;
    }
    o->out_dir = dir;
    o->resume_dir = dir;
    o->quiet |= quiet;
    *buf = b, *args = argv;
    return 0;
}

// Opens log.jsonl: a fresh run starts it; a resumed one cuts it back to where its state was
// saved (the lines after that are written again) and appends.
static int open_log(Trainer *tr) {
    path_join(tr->log_path, sizeof tr->log_path, tr->opt.out_dir, "log.jsonl");
    if (tr->resuming) {
        struct stat st;
        if (stat(tr->log_path, &st) != 0 || st.st_size < tr->rs.log_bytes) {
            fprintf(stderr, "error: %s is shorter than its saved state says (%lld bytes): it "
                            "cannot be resumed\n", tr->log_path, (long long)tr->rs.log_bytes);
            return -1;
        }
        if (truncate(tr->log_path, (off_t)tr->rs.log_bytes) != 0) {
            fprintf(stderr, "error: cannot cut %s back: %s\n", tr->log_path, strerror(errno));
            return -1;
        }
    }
    tr->log = fopen(tr->log_path, tr->resuming ? "a" : "w");
    if (!tr->log) {
        fprintf(stderr, "error: cannot write %s: %s\n", tr->log_path, strerror(errno));
        return -1;
    }
    return 0;
}

// Loads DIR/state.bin when resuming (a run killed before its first save starts afresh).
static int load_run_state(Trainer *tr) {
    const Options *o = &tr->opt;
    char path[4096], err[1024];
    path_join(path, sizeof path, o->out_dir, "state.bin");
    if (train_state_load(path, &tr->mcfg, &tr->ts, err, sizeof err) != 0 ||
        runstate_decode(tr->ts.blob, tr->ts.blob_bytes, tr->be->num_params(tr->model), &tr->rs,
                        err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot resume from %s: %s\n", path, err);
        return -1;
    }
    tr->resuming = 1;
    if (tr->rs.phase == RUN_SFT && (o->init_path || tr->rs.sft_step > o->sft_steps)) {
        fprintf(stderr, "error: cannot resume from %s: its warm start does not match %s/run.args\n",
                path, o->out_dir);
        return -1;
    }
    tr->t_start = now_seconds() - tr->rs.elapsed_s;
    printf("resuming %s from step %d\n", o->out_dir, tr->rs.global_step);
    return 0;
}

// The warm start, or the policy of --init: what the curriculum starts from.
static int warm_start(Trainer *tr) {
    const Options *o = &tr->opt;
    char err[1024];
    if (o->init_path) {
        ModelConfig c;
        float *p = NULL;
        if (checkpoint_load(o->init_path, &c, &p, err, sizeof err) != 0) {
            fprintf(stderr, "error: --init: %s\n", err);
            return -1;
        }
        if (check_checkpoint_vocab(o->init_path, &c, &tr->world) != 0) {
            free(p);
            return -1;
        }
        c.tokenizer_hash = tr->mcfg.tokenizer_hash;  // checked just above (0: an old checkpoint)
        if (!model_config_equal(&c, &tr->mcfg)) {
            fprintf(stderr, "error: --init %s has V=%d T=%d L=%d NH=%d C=%d but this run wants "
                            "V=%d T=%d L=%d NH=%d C=%d (same data and model flags?)\n",
                    o->init_path, c.V, c.maxT, c.L, c.NH, c.C, tr->mcfg.V, tr->mcfg.maxT,
                    tr->mcfg.L, tr->mcfg.NH, tr->mcfg.C);
            free(p);
            return -1;
        }
        tr->be->set_params(tr->model, p);
        free(p);
        tr->warm_started = 1;
        printf("starting from %s\n", o->init_path);
    } else if (o->sft_steps > 0) {
        if (sft_train(tr) != 0) return -1;
        if (save_params(tr, tr->model, "sft.bin", tr->sft_params) != 0) return -1;
        tr->warm_started = 1;
    }
    tr->be->get_params(tr->model, tr->sft_params);
    RunState next = {.phase = o->algo == ALGO_SFT ? RUN_DONE : RUN_RL,
                     .copy[RUN_SFT_PARAMS] = tr->warm_started ? tr->sft_params : NULL};
    return save_run_state(tr, &next);
}

// ---------------------------------------------------------------------------------------------
// Training: data -> vocabulary -> model -> warm start -> curriculum -> final table

static int run_training(const Options *o, int argc, char **argv, Dist *dist) {
    Trainer tr = {.opt = *o, .dist = dist, .writer = dist_rank(dist) == 0};
    int rc = 1;
    tr.t_start = now_seconds();
    rng_seed(&tr.rng, o->seed);
    tr.mcfg = (ModelConfig){.maxT = o->max_seq, .L = o->layers, .NH = o->heads,
                            .C = o->channels};
    if (o->init_path && access(o->init_path, R_OK) != 0) {
        fprintf(stderr, "error: --init %s: %s\n", o->init_path, strerror(errno));
        goto done;
    }
    // A pretrained (Llama-family) --init brings its own shape: the model flags are for the
    // GPT-2 the synthetic world trains from scratch.
    if (o->init_path && init_shape(o->init_path, &tr.mcfg) != 0) goto done;
    // rank 0 alone prepares the directory and the data; the others wait for it
    int prepared = !tr.writer || (prepare_out_dir(o, argc, argv) == 0 && ensure_default_data(o) == 0);
    if (!dist_all_ok(dist, prepared)) goto done;
    if (load_dataset_or_die(o->train_path, &tr.train) != 0 ||
        load_dataset_or_die(o->val_path, &tr.val) != 0 ||
        load_dataset_or_die(o->test_path, &tr.test) != 0)
        goto done;
    if (tr.train.n == 0 || tr.val.n == 0 || tr.test.n == 0) {
        fprintf(stderr, "error: empty dataset (train %d, val %d, test %d episodes)\n", tr.train.n,
                tr.val.n, tr.test.n);
        goto done;
    }
    char path[4096], state[4096], tokpath[4096];
    path_join(path, sizeof path, o->out_dir, "vocab.txt");
    path_join(state, sizeof state, o->out_dir, "state.bin");
    int have_state = o->resume_dir && file_exists(state);
    // A resumed run keeps the vocabulary it saved; a run that starts from a checkpoint keeps
    // that checkpoint's.
    char ivocab[4096] = "", ictx[4200] = "";
    if (o->init_path) {
        sibling_vocab_path(o->init_path, ivocab, sizeof ivocab);
        snprintf(ictx, sizeof ictx, "the vocabulary of %s: ", o->init_path);
    }
    path_join(tokpath, sizeof tokpath, o->out_dir, "tokenizer.tok");
    if (open_world(&tr, &tr.train, have_state ? path : o->init_path ? ivocab : NULL,
                   have_state ? "--resume: " : ictx, have_state ? NULL : path, 1,
                   have_state && file_exists(tokpath) ? tokpath : o->init_path) != 0)
        goto done;
    tr.mcfg.V = tr.world.vocab_size;
    tr.mcfg.tokenizer_hash = tr.world.tokenizer_hash;  // saved in every checkpoint of this run
    tr.be = backend_for(&tr.mcfg);
    tr.model = create_model(&tr.mcfg, o->max_batch, o->seed);
    tr.ref = tr.model ? create_model(&tr.mcfg, o->max_batch, o->seed) : NULL;
    if (!tr.model || !tr.ref) goto done;
    if (row_batch_init(&tr.rows, o->max_batch, tr.mcfg.maxT) != 0) goto done;
    tr.rows.pad = tr.world.pad_token;
    printf("memr2 %s backend: V=%d T=%d L=%d NH=%d C=%d (%zu parameters); %d train, %d val, "
           "%d test episodes\n",
           tr.be->name, tr.mcfg.V, tr.mcfg.maxT, tr.mcfg.L, tr.mcfg.NH, tr.mcfg.C,
           tr.be->num_params(tr.model), tr.train.n, tr.val.n, tr.test.n);
    size_t np = tr.be->num_params(tr.model);
    tr.sft_params = malloc(sizeof(float) * np);
    if (!tr.sft_params) goto done;
    if (have_state && load_run_state(&tr) != 0) goto done;
    if (tr.writer && open_log(&tr) != 0) goto done;

    if (!tr.resuming || tr.rs.phase == RUN_SFT) {
        if (warm_start(&tr) != 0) goto done;
    } else {
        restore_run_state(&tr);
    }
    if (o->algo != ALGO_SFT && (!tr.resuming || tr.rs.phase != RUN_DONE)) {
        if (run_curriculum(&tr) != 0) goto done;
        RunState fin = {.phase = RUN_DONE,
                        .copy[RUN_SFT_PARAMS] = tr.warm_started ? tr.sft_params : NULL};
        if (save_run_state(&tr, &fin) != 0) goto done;
    }
    if (o->algo != ALGO_SFT && write_curve(&tr) != 0) goto done;
    float *scratch = malloc(sizeof(float) * np);
    if (!scratch) goto done;
    int saved = save_params(&tr, tr.model, "final.bin", scratch);
    free(scratch);
    if (saved != 0) goto done;
    if (run_final_table(&tr, tr.warm_started ? tr.sft_params : NULL) != 0) goto done;
    FILE *log = tr.log;
    tr.log = NULL;
    if (tr.writer && (tr.log_failed || fclose(log) != 0)) {
        if (!tr.log_failed)
            fprintf(stderr, "error: cannot write %s: %s\n", tr.log_path, strerror(errno));
        goto done;
    }
    printf("done in %.1fs; outputs in %s/\n", now_seconds() - tr.t_start, o->out_dir);
    rc = 0;
done:
    free(tr.sft_params);
    if (tr.log) fclose(tr.log);
    runstate_free(&tr.rs);
    free(tr.ts.mom), free(tr.ts.vel), free(tr.ts.blob);
    arrfree(tr.reward_pts), arrfree(tr.val_pts);
    row_batch_free(&tr.rows);
    if (tr.model) tr.be->destroy(tr.model);
    if (tr.ref) tr.be->destroy(tr.ref);
    world_close(&tr.world);
    dataset_free(&tr.train), dataset_free(&tr.val), dataset_free(&tr.test);
    return rc;
}

// Threads on a shared machine (README "Threads"): OpenMP's idle threads sleep instead of
// spinning (a spinning thread takes the core another process, or this one's other thread, needs)
// and OpenBLAS starts no pool of its own (model.c splits every sgemm over OpenMP's threads).
// Both libraries read these variables once, when they load, so the program sets them and
// re-executes itself; a value the user set is kept.
static void set_thread_env(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;  // the user's choice, or already re-executed
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    if (!getenv("OPENBLAS_NUM_THREADS")) setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
    // Still here: run as we are (correct, only slower on a busy machine).
    fprintf(stderr, "warning: cannot re-execute with OMP_WAIT_POLICY=passive: %s\n",
            strerror(errno));
}

int main(int argc, char **argv) {
    set_thread_env(argv);
    Options o;
    options_default(&o);
    if (parse_options(argc, argv, &o) != 0) {
        fprintf(stderr, "see %s --help\n", argv[0]);
        return 2;
    }
    char *args_buf = NULL, **args = NULL;
    if (o.resume_dir) {
        // Only -q may come with --resume: every other flag is the saved run's.
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--resume")) i++;
            else if (strncmp(argv[i], "--resume=", 9) && strcmp(argv[i], "-q") &&
                     strcmp(argv[i], "--quiet")) {
                fprintf(stderr, "error: --resume DIR takes the run's flags from DIR/run.args; "
                                "give no other flag but -q (got '%s')\n", argv[i]);
                return 2;
            }
        }
        int quiet = o.quiet;
        if (options_from_run_dir(o.resume_dir, argv[0], quiet, &o, &args_buf, &args) != 0)
            return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    // mpirun -np N (docs/scaleout.md): rank 0 speaks; the others print only errors (stderr)
    Dist dist;
    if (dist_init(&dist, &argc, &argv) != 0) {
        free(args_buf), free(args);
        return 1;
    }
    if (dist.rank != 0 && !freopen("/dev/null", "w", stdout)) dist_abort(&dist, 1);
    if (dist.size > 1) printf("memr2: %d ranks (MPI)\n", dist.size);
    // Ask the backend for a tiny model first: the GPU build says at once when there is no GPU.
    ModelConfig tiny = {.V = 8, .maxT = 8, .L = 1, .NH = 1, .C = 8};
    const ModelBackend *be = backend_for(&tiny);
    Model *probe = be->create(&tiny, 1, 0);
    if (!probe) {
        fprintf(stderr, "error: the %s backend cannot start (see above)%s\n", be->name,
                be == &cpu_backend ? "" : "; ./train_cpu runs the same on the CPU");
        free(args_buf), free(args);
        dist_finalize(&dist);
        return 1;
    }
    be->destroy(probe);
    int rc = o.eval_policy ? run_eval(&o, &dist) : run_training(&o, argc, argv, &dist);
    free(args_buf), free(args);
    // --eval's results go to stdout: a full disk behind a redirect must not pass silently.
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: cannot write the standard output: %s\n", strerror(errno));
        rc = 1;
    }
    if (rc != 0 && dist.size > 1) dist_abort(&dist, rc);  // no rank is left waiting for this one
    dist_finalize(&dist);
    return rc;
}
