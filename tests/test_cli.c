// tests/test_cli.c: the trainer against bad input, hostile paths and a full disk (issue 11).
//
//   - bad flag values exit 2 naming the flag (--stage-steps with junk, overflow or two counts,
//     --seed -1 or past 2^64-1, --max-seq out of range); --init of a missing file exits 1
//     naming it; an episodes file "[]" exits 1 (for --eval and for training)
//   - the injection strings of issue 11 as --train (the generator is called) and as -o (gnuplot
//     is called) create nothing: both run without a shell
//   - a full disk (a small tmpfs): a run either succeeds with the same bytes as on a roomy disk,
//     or exits non-zero with an error naming a file in its output directory, and never leaves a
//     .tmp file or a half-written output. Swept over the free space for whole runs, and for the
//     end-of-run files alone (--resume of a finished run: final.bin, curve, eval.md, eval.jsonl).
//     Needs `mount -t tmpfs` (root); prints "skipped" otherwise.
// Binaries: $MEMR2_GEN (default ./gen_episodes) and $MEMR2_TRAIN (default ./train_cpu).
#define _XOPEN_SOURCE 700  // realpath
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "check.h"
#include "proc.h"

static char train_bin[PATH_MAX], tmp[64], data[256], tiny[1024];

static void test_bad_flags(void) {
    struct {
        const char *args;
        int code;
        const char *says;
    } cases[] = {
        {"--stage-steps 1,2,3junk", 2, "--stage-steps"},
        {"--stage-steps 99999999999,1,1", 2, "--stage-steps"},
        {"--stage-steps 1,2", 2, "--stage-steps"},
        {"--stage-steps 1,,2", 2, "--stage-steps"},
        {"--seed -1", 2, "--seed"},
        {"--seed 18446744073709551616", 2, "--seed"},
        {"--seed 12x", 2, "--seed"},
        {"--max-seq 66", 2, "--max-seq"},
        {"--max-seq 5000", 2, "--max-seq"},
        {"--save-every 0", 2, "--save-every"},
        {"--init /nonexistent/memr2/x.bin -o OUT/init", 1, "/nonexistent/memr2/x.bin"},
        {"--eval none -d EMPTY", 1, "no samples"},
        {"--eval insert-only -d EMPTY --sessions 4", 1, "no samples"},
        {"--eval none -d DATA --sessions 4,2", 2, "rising session counts"},
        {"--eval none -d DATA --sessions 1,2,3,4", 2, "rising session counts"},
        {"--eval none -d DATA --sessions 2,", 2, "rising session counts"},
        {"--eval none -d DATA --sessions 0", 2, "--sessions"},
        {"--horizons 2,1,4 -o OUT/h", 2, "non-decreasing"},
        {"--horizons 0,1,4 -o OUT/h", 2, "non-decreasing"},
        {"--horizons 1,2 -o OUT/h", 2, "--horizons"},
        {"--train EMPTY --val DATA --test DATA -o OUT/empty", 1, "no samples"},
    };
    char empty[256], out[512];
    snprintf(empty, sizeof empty, "%s/empty.json", tmp);
    FILE *f = fopen(empty, "w");
    if (f) fputs("[]\n", f), fclose(f);
    snprintf(out, sizeof out, "%s/flag.txt", tmp);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        // substitute EMPTY, DATA, OUT
        char args[2048] = "", word[512];
        const char *p = cases[i].args;
        while (*p) {
            size_t n = strcspn(p, " ");
            snprintf(word, sizeof word, "%.*s", (int)n, p);
            char sub[600];
            if (!strcmp(word, "EMPTY")) snprintf(sub, sizeof sub, "%s", empty);
            else if (!strcmp(word, "DATA")) snprintf(sub, sizeof sub, "%s", data);
            else if (!strncmp(word, "OUT/", 4)) snprintf(sub, sizeof sub, "%s/%s", tmp, word + 4);
            else snprintf(sub, sizeof sub, "%s", word);
            strncat(args, sub, sizeof args - strlen(args) - 2);
            strncat(args, " ", sizeof args - strlen(args) - 1);
            p += n + (p[n] == ' ');
        }
        int rc = proc_run_fmt(out, "%s %s", train_bin, args);
        CHECK(rc == cases[i].code && file_contains(out, cases[i].says) &&
                  file_contains(out, "error"),
              "'%s' exits %d with a message naming '%s' (exit %d)", cases[i].args, cases[i].code,
              cases[i].says, rc);
    }
}

// Results printed to a full device: exit 1, not a silent 0.
// --sessions H,H: one pass, one summary line per horizon; a horizon past the data is capped
// at its longest episode (4 sessions here) and not repeated.
static void test_horizon_list(void) {
    char out[512];
    snprintf(out, sizeof out, "%s/horizons.txt", tmp);
    int rc = proc_run_fmt(out, "%s --eval insert-only -d %s --sessions 2,4,9", train_bin, data);
    CHECK(rc == 0 && file_contains(out, "episodes=2 sessions=2 ") &&
              file_contains(out, "episodes=2 sessions=4 ") &&
              !file_contains(out, "sessions=9"),
          "--sessions 2,4,9 reports 2 and 4 (exit %d)", rc);
    int n = 0;
    FILE *f = fopen(out, "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) n += strstr(line, " f1=") && strstr(line, "bleu1=");
    if (f) fclose(f);
    CHECK(n == 2, "two summary lines, got %d", n);
}

static void test_stdout_full(void) {
    if (access("/dev/full", W_OK) != 0) return;
    int rc = proc_run_fmt("/dev/full", "%s --eval none -d %s", train_bin, data);
    CHECK(rc == 1, "--eval with stdout on /dev/full exits 1 (exit %d)", rc);
}

static void test_injection(void) {
    // Relative paths from inside tmp, so anything created lands there.
    if (chdir(tmp) != 0) {
        CHECK(0, "chdir %s", tmp);
        return;
    }
    // The train file is absent: the generator runs with it as its -o argument.
    int rc = proc_run_fmt("inj1.txt",
                          "%s --train x';touch${IFS}INJECTED;'.json --val %s --test %s "
                          "--algo sft --sft-steps 1 --layers 1 --heads 2 --channels 32 "
                          "--max-batch 16 --test-episodes 1 -q -o inj1",
                          train_bin, data, data);
    CHECK(rc == 0, "a run with a hostile --train path works (exit %d, see %s/inj1.txt)", rc, tmp);
    CHECK(path_exists("x';touch${IFS}INJECTED;'.json"), "the generator wrote the file as named");
    CHECK(!path_exists("INJECTED"), "the --train injection string created nothing");
    // gnuplot runs for curve.png with the output directory in its reach.
    rc = proc_run_fmt("inj2.txt", "%s %s --stage-steps 1,0,0 -o o\";touch${IFS}INJ2;\"",
                      train_bin, tiny);
    CHECK(rc == 0, "a run with a hostile -o path works (exit %d, see %s/inj2.txt)", rc, tmp);
    CHECK(!path_exists("INJ2") && !path_exists("o\";touch"), "the -o injection string created nothing");
    CHECK(path_exists("o\";touch${IFS}INJ2;\"/curve.dat"), "the curve's data is where -o says");
    if (access("/usr/bin/gnuplot", X_OK) == 0)
        CHECK(path_exists("o\";touch${IFS}INJ2;\"/curve.png"), "gnuplot drew curve.png");
    if (chdir("/") != 0) CHECK(0, "chdir /");
}

// ---- a full disk ---------------------------------------------------------------------------

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

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    char buf[65536];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok ? 0 : -1;
}

static int same_file(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    int same = x && y;
    while (same) {
        int c = fgetc(x), d = fgetc(y);
        if (c != d) same = 0;
        if (c == EOF) break;
    }
    if (x) fclose(x);
    if (y) fclose(y);
    return same;
}

static const char *END_FILES[] = {"final.bin", "eval.md", "eval.jsonl", "curve.dat", "curve.png"};

// A run that succeeded must have the reference's outputs; one that failed must say which file.
static void check_outcome(int rc, const char *out_txt, const char *dir, const char *ref,
                          const char *what) {
    if (rc == 0) {
        int same = 1;
        for (int i = 0; i < 5; i++) {
            char a[600], b[600];
            snprintf(a, sizeof a, "%s/%s", ref, END_FILES[i]);
            snprintf(b, sizeof b, "%s/%s", dir, END_FILES[i]);
            if (path_exists(a)) same &= same_file(a, b);
        }
        CHECK(same, "%s: it succeeded, with the same outputs as on a roomy disk", what);
    } else {
        CHECK(rc == 1 && file_contains(out_txt, "error: ") && file_contains(out_txt, dir) &&
                  !file_contains(out_txt, "outputs in"),
              "%s: exit %d with an error naming a file in %s (see %s)", what, rc, dir, out_txt);
        // Whatever exists is whole: an end file is either absent or the reference's.
        int whole = 1;
        for (int i = 0; i < 5; i++) {
            char a[600], b[600];
            snprintf(a, sizeof a, "%s/%s", ref, END_FILES[i]);
            snprintf(b, sizeof b, "%s/%s", dir, END_FILES[i]);
            if (path_exists(b)) whole &= same_file(a, b);
        }
        CHECK(whole, "%s: no half-written output", what);
    }
    CHECK(tmp_files_in(dir) == 0, "%s: no .tmp file left in %s", what, dir);
}

static int mount_tmpfs(const char *mnt, long bytes, char *why, size_t n) {
    char opt[64], out[512];
    snprintf(opt, sizeof opt, "size=%ld", bytes);
    snprintf(out, sizeof out, "%s/mount.txt", tmp);
    int rc = proc_run_fmt(out, "mount -t tmpfs -o %s memr2test %s", opt, mnt);
    if (rc != 0) {
        FILE *f = fopen(out, "r");
        size_t k = f ? fread(why, 1, n - 1, f) : 0;
        if (f) fclose(f);
        why[k] = 0;
        why[strcspn(why, "\n")] = 0;
    }
    return rc;
}

static void umount_tmpfs(const char *mnt) {
    char out[512];
    snprintf(out, sizeof out, "%s/umount.txt", tmp);
    proc_run_fmt(out, "umount %s", mnt);
}

// Fills the file system at mnt so that about `free_bytes` remain.
static void leave_free(const char *mnt, long free_bytes) {
    struct statvfs s;
    if (statvfs(mnt, &s) != 0) return;
    long avail = (long)s.f_bavail * (long)s.f_frsize, fill = avail - free_bytes;
    char p[600];
    snprintf(p, sizeof p, "%s/filler", mnt);
    FILE *f = fopen(p, "wb");
    static char zeros[4096];
    for (long done = 0; f && done < fill; done += (long)sizeof zeros)
        fwrite(zeros, 1, (size_t)(fill - done < (long)sizeof zeros ? fill - done : (long)sizeof zeros), f);
    if (f) fclose(f);
}

static void test_full_disk(void) {
    char mnt[256], ref[256], out[512], why[512] = "";
    snprintf(mnt, sizeof mnt, "%s/fs", tmp);
    snprintf(ref, sizeof ref, "%s/fullref", tmp);
    if (mkdir(mnt, 0755) != 0 || mount_tmpfs(mnt, 1 << 20, why, sizeof why) != 0) {
        printf("test_cli: full-disk tests skipped (cannot mount a tmpfs: %s)\n", why);
        return;
    }
    umount_tmpfs(mnt);
    snprintf(out, sizeof out, "%s/fullref.txt", tmp);
    int rc = proc_run_fmt(out, "%s %s --stage-steps 1,1,0 -o %s", train_bin, tiny, ref);
    CHECK(rc == 0, "the reference run works (exit %d, see %s)", rc, out);
    if (rc != 0) return;
    // Whole runs with little room: the first file, the log, a state save, ... fail in turn.
    long levels[] = {0, 4096, 16384, 65536, 262144, 600000};
    for (int i = 0; i < 6; i++) {
        char what[128], dir[600];
        snprintf(what, sizeof what, "a run with %ld bytes free", levels[i]);
        if (mount_tmpfs(mnt, levels[i] ? levels[i] : 4096, why, sizeof why) != 0) {
            CHECK(0, "mount %s: %s", what, why);
            continue;
        }
        if (levels[i] == 0) leave_free(mnt, 0);
        snprintf(dir, sizeof dir, "%s/run", mnt);
        snprintf(out, sizeof out, "%s/full%d.txt", tmp, i);
        rc = proc_run_fmt(out, "%s %s --stage-steps 1,1,0 -o %s", train_bin, tiny, dir);
        check_outcome(rc, out, dir, ref, what);
        umount_tmpfs(mnt);
    }
    // The end of a run alone: a finished run's state resumed onto a disk with `free` bytes left,
    // so only final.bin, the curve and the table are written.
    const char *keep[] = {"run.args", "state.bin", "log.jsonl", "vocab.txt", "sft.bin",
                          "best_h8.bin", "best_h16.bin"};
    long end_levels[] = {0, 8192, 65536, 118000, 133000, 137000, 200000, 400000};
    int failed_at_end = 0;
    for (int i = 0; i < 8; i++) {
        char what[128], dir[600];
        snprintf(what, sizeof what, "the end of a run with %ld bytes free", end_levels[i]);
        if (mount_tmpfs(mnt, 4 << 20, why, sizeof why) != 0) {
            CHECK(0, "mount: %s", why);
            continue;
        }
        snprintf(dir, sizeof dir, "%s/run", mnt);
        mkdir(dir, 0755);
        int copied = 0;
        for (int k = 0; k < 7; k++) {
            char a[600], b[700];
            snprintf(a, sizeof a, "%s/%s", ref, keep[k]);
            snprintf(b, sizeof b, "%s/%s", dir, keep[k]);
            copied += !path_exists(a) || copy_file(a, b) == 0;
        }
        CHECK(copied == 7, "copy the finished run onto the tmpfs");
        leave_free(mnt, end_levels[i]);
        snprintf(out, sizeof out, "%s/end%d.txt", tmp, i);
        rc = proc_run_fmt(out, "%s --resume %s", train_bin, dir);
        check_outcome(rc, out, dir, ref, what);
        failed_at_end += rc != 0;
        umount_tmpfs(mnt);
    }
    CHECK(failed_at_end >= 2, "the sweep hit the end-of-run files (%d runs failed there)",
          failed_at_end);
    rmdir(mnt);
}

int main(void) {
    const char *gen = getenv("MEMR2_GEN") ? getenv("MEMR2_GEN") : "./gen_episodes";
    const char *tb = getenv("MEMR2_TRAIN") ? getenv("MEMR2_TRAIN") : "./train_cpu";
    if (!realpath(tb, train_bin)) {
        perror(tb);
        return 1;
    }
    snprintf(tmp, sizeof tmp, "/tmp/memr2_test_cli_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char out[512];
    snprintf(data, sizeof data, "%s/tiny.json", tmp);
    snprintf(out, sizeof out, "%s/gen.txt", tmp);
    CHECK(proc_run_fmt(out, "%s --seed 3 --episodes 2 --sessions 4 -o %s", gen, data) == 0,
          "generate tiny data");
    snprintf(tiny, sizeof tiny,
             "--layers 1 --heads 2 --channels 32 --max-batch 16 --sft-steps 4 --sft-batch 8 "
             "--G 2 --K 2 --eval-every 1 --val-episodes 1 --test-episodes 1 -q --seed 5 "
             "--train %s --val %s --test %s",
             data, data, data);
    test_bad_flags();
    test_horizon_list();
    test_stdout_full();
    test_injection();
    test_full_disk();
    if (!check_counts.failed) {
        char *rm[] = {"rm", "-rf", tmp, NULL};
        proc_wait(proc_start(rm, NULL));
    } else {
        fprintf(stderr, "kept %s for inspection\n", tmp);
    }
    return check_summary("test_cli");
}
