// tests/test_resume.c: `train_cpu --resume DIR` after a SIGKILL ends exactly where a run that was
// never killed ends (README, "Outputs and resume").
//
// A tiny run (warm start of 20 steps saved every 3, then 2 + 2 + 1 RL steps) is killed at
// several points: while the teacher's traces are made, in the middle of the warm start between
// two saves, at its end, inside the curriculum, after the last log line (while the final table
// is written), and twice in a row (the resumed run killed again). Each resumed run must leave
// the same final.bin, eval.md, eval.jsonl and curve.dat bytes as the uninterrupted run, the
// same log.jsonl apart from timings, and no *.tmp file. Also: a fresh run refuses a directory
// that holds a run (its log is kept), --resume refuses other flags and directories without a
// run, and resuming a finished run rewrites the same outputs.
// Binaries: $MEMR2_GEN (default ./gen_episodes) and $MEMR2_TRAIN (default ./train_cpu).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "proc.h"

static const char *train_bin;
static char tmp[64];
static char flags[1024];

#define SFT_STEPS 20
#define RL_STEPS 5

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    size_t cap = 1 << 16;
    char *b = malloc(cap + 1);
    while (b) {
        *n += fread(b + *n, 1, cap - *n, f);
        if (*n < cap) break;
        char *nb = realloc(b, 2 * cap + 1);
        if (!nb) free(b);
        b = nb, cap *= 2;
    }
    fclose(f);
    if (b) b[*n] = 0;
    return b;
}

// The log without its timings ("time_s", "step_s", "tok_s_*": they differ between any two runs).
static void strip_timings(char *s) {
    const char *keys[] = {"\"time_s\":", "\"step_s\":", "\"tok_s_"};
    for (int k = 0; k < 3; k++) {
        char *p;
        while ((p = strstr(s, keys[k])) != NULL) {
            char *e = p + strlen(keys[k]);
            while (*e && *e != ',' && *e != '}') e++;
            if (*e == ',') e++;
            memmove(p, e, strlen(e) + 1);
        }
    }
}

static int same_log(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_all(a, &na), *y = read_all(b, &nb);
    int same = 0;
    if (x && y) {
        strip_timings(x), strip_timings(y);
        same = !strcmp(x, y);
    }
    free(x), free(y);
    return same;
}

static int tmp_files_in(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        n += l > 4 && !strcmp(e->d_name + l - 4, ".tmp");
    }
    if (d) closedir(d);
    return n;
}

// Starts a run (fresh into dir, or --resume dir) and SIGKILLs it as soon as its log has
// `lines` lines (0: as soon as the log exists). Returns 1 if it was killed, 0 if it ended first.
static int run_and_kill(const char *dir, int resume, long lines) {
    char line[4096], *argv[128], log[512], out[512];
    if (resume) snprintf(line, sizeof line, "%s --resume %s -q", train_bin, dir);
    else snprintf(line, sizeof line, "%s %s -o %s", train_bin, flags, dir);
    proc_split(line, argv, 128);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    snprintf(out, sizeof out, "%s.killed%d.txt", dir, resume);
    return proc_kill_at_lines(argv, out, log, lines);
}

// Compares dir's outputs with the uninterrupted run's.
static void check_same_as_ref(const char *dir, const char *what) {
    const char *files[] = {"final.bin", "eval.md", "eval.jsonl", "curve.dat", "sft.bin"};
    for (int i = 0; i < 5; i++) {
        char a[512], b[600];
        snprintf(a, sizeof a, "%s/ref/%s", tmp, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        CHECK(files_same(a, b), "%s: %s has the uninterrupted run's bytes", what, files[i]);
    }
    char a[512], b[600];
    snprintf(a, sizeof a, "%s/ref/log.jsonl", tmp);
    snprintf(b, sizeof b, "%s/log.jsonl", dir);
    CHECK(same_log(a, b), "%s: log.jsonl is the uninterrupted run's (timings aside)", what);
    CHECK(tmp_files_in(dir) == 0, "%s: no .tmp file left", what);
}

// Kill a fresh run at `first` log lines; if second >= 0 kill its resumed run at `second`; then
// resume to the end and compare.
static void kill_resume(const char *name, long first, long second, const char *what) {
    char dir[256], out[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    snprintf(out, sizeof out, "%s.resume.txt", dir);
    int killed = run_and_kill(dir, 0, first);
    if (!killed) printf("  note: %s: the run ended before the kill\n", what);
    if (second >= 0 && !run_and_kill(dir, 1, second))
        printf("  note: %s: the resumed run ended before the second kill\n", what);
    int rc = proc_run_fmt(out, "%s --resume %s", train_bin, dir);
    CHECK(rc == 0, "%s: the resumed run finishes (exit %d, see %s)", what, rc, out);
    if (killed && first > 3)
        CHECK(file_contains(out, "resuming"), "%s: it resumed from a saved state (see %s)", what,
              out);
    check_same_as_ref(dir, what);
}

static void test_refusals(void) {
    char out[512], ref[512], log[512], saved[512];
    snprintf(out, sizeof out, "%s/refuse.txt", tmp);
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    snprintf(log, sizeof log, "%s/ref/log.jsonl", tmp);
    snprintf(saved, sizeof saved, "%s/ref/final.bin", tmp);
    size_t n0;
    char *before = read_all(log, &n0);
    // A fresh run (or one from --init) into a directory that holds a run: refused, log kept.
    int rc = proc_run_fmt(out, "%s %s -o %s", train_bin, flags, ref);
    CHECK(rc == 1 && file_contains(out, "--resume") && file_contains(out, "already holds a run"),
          "a fresh run into a used directory is refused (exit %d, see %s)", rc, out);
    rc = proc_run_fmt(out, "%s %s --init %s/sft.bin -o %s", train_bin, flags, ref, ref);
    CHECK(rc == 1 && file_contains(out, "already holds a run"),
          "--init into a used directory is refused (exit %d)", rc);
    size_t n1;
    char *after = read_all(log, &n1);
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0),
          "the refused runs left log.jsonl untouched (%zu -> %zu bytes)", n0, n1);
    free(before), free(after);
    rc = proc_run_fmt(out, "%s --resume %s --lr 0.5", train_bin, ref);
    CHECK(rc == 2 && file_contains(out, "--lr"), "--resume with another flag exits 2 (%d)", rc);
    rc = proc_run_fmt(out, "%s --resume %s/nothing", train_bin, tmp);
    CHECK(rc == 1 && file_contains(out, "run.args"),
          "--resume of a directory without a run names run.args (exit %d)", rc);
    // --resume of a finished run redoes only the end: same outputs, no new log lines.
    size_t nf0, nf1;
    char *final0 = read_all(saved, &nf0);
    long lines0 = file_lines(log);
    rc = proc_run_fmt(out, "%s --resume %s", train_bin, ref);
    CHECK(rc == 0 && file_contains(out, "resuming"),
          "--resume of a finished run succeeds (exit %d, see %s)", rc, out);
    char *final1 = read_all(saved, &nf1);
    CHECK(final0 && final1 && nf0 == nf1 && !memcmp(final0, final1, nf0) &&
              file_lines(log) == lines0,
          "a finished run is not trained again (same final.bin, %ld log lines)", lines0);
    free(final0), free(final1);
}

int main(void) {
    const char *gen = getenv("MEMR2_GEN") ? getenv("MEMR2_GEN") : "./gen_episodes";
    train_bin = getenv("MEMR2_TRAIN") ? getenv("MEMR2_TRAIN") : "./train_cpu";
    snprintf(tmp, sizeof tmp, "/tmp/memr2_test_resume_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char data[256], out[512];
    snprintf(data, sizeof data, "%s/tiny.json", tmp);
    snprintf(out, sizeof out, "%s/gen.txt", tmp);
    CHECK(proc_run_fmt(out, "%s --seed 3 --episodes 2 --sessions 4 -o %s", gen, data) == 0,
          "generate tiny data");
    snprintf(flags, sizeof flags,
             "--layers 1 --heads 2 --channels 32 --max-batch 16 --sft-steps %d --sft-batch 8 "
             "--save-every 3 --stage-steps 2,2,1 --G 3 --K 2 --p-local 1 --eval-every 1 "
             "--val-episodes 1 --test-episodes 1 --lr 1e-3 -q --seed 5 --train %s --val %s "
             "--test %s",
             SFT_STEPS, data, data, data);
    snprintf(out, sizeof out, "%s/ref.txt", tmp);
    int rc = proc_run_fmt(out, "%s %s -o %s/ref", train_bin, flags, tmp);
    CHECK(rc == 0, "the uninterrupted run finishes (exit %d, see %s)", rc, out);
    char log[512];
    snprintf(log, sizeof log, "%s/ref/log.jsonl", tmp);
    long total = file_lines(log);
    CHECK(total == SFT_STEPS + RL_STEPS, "%d log lines (got %ld)", SFT_STEPS + RL_STEPS, total);
    if (rc == 0) {
        kill_resume("k_teacher", 0, -1, "killed while making the teacher's traces");
        kill_resume("k_sft", 7, -1, "killed between two warm-start saves");
        kill_resume("k_sft_end", SFT_STEPS, -1, "killed at the end of the warm start");
        kill_resume("k_rl", SFT_STEPS + 2, -1, "killed inside the curriculum");
        kill_resume("k_end", total, -1, "killed after the last log line");
        kill_resume("k_twice", 10, SFT_STEPS + 3, "killed twice");
        test_refusals();
    }
    if (!check_counts.failed) {
        char *rm[] = {"rm", "-rf", tmp, NULL};
        proc_wait(proc_start(rm, NULL));
    } else {
        fprintf(stderr, "kept %s for inspection\n", tmp);
    }
    return check_summary("test_resume");
}
