// tests/test_files.c: the trainer's file and process helpers (files.c) and its resume blob
// (runstate.c).
//
//   - an OutFile appears only at commit, with exactly what was written; abort leaves nothing
//   - make_dirs creates missing parents (mkdir -p), accepts what exists, refuses a file in the way
//   - remove_stale_tmp removes the trainer's "*.tmp" leftovers and nothing else
//   - spawn_wait passes arguments untouched (no shell: an injection string is just text),
//     pipes large inputs and outputs both ways without deadlock, reports exit codes, missing
//     programs and signals
//   - a run state survives encode/decode bit for bit; truncated, padded, corrupt or non-finite
//     blobs are refused with a message
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "runstate.h"

static char dir[64];

static int exists(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_outfile(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/table.md", dir);
    OutFile f;
    CHECK(outfile_open(&f, path, err, sizeof err) == 0, "outfile_open: %s", err);
    CHECK(exists("table.md.tmp") && !exists("table.md"), "while writing only the .tmp exists");
    outfile_printf(&f, "| a | %d |\n", 42);
    outfile_write(&f, "xyz", 3);
    CHECK(outfile_commit(&f, err, sizeof err) == 0, "commit: %s", err);
    CHECK(exists("table.md") && !exists("table.md.tmp"), "commit renames the .tmp into place");
    char buf[64] = {0};
    FILE *r = fopen(path, "r");
    size_t n = r ? fread(buf, 1, sizeof buf - 1, r) : 0;
    if (r) fclose(r);
    CHECK(n == 14 && !strcmp(buf, "| a | 42 |\nxyz"), "the file holds what was written ('%s')", buf);

    CHECK(outfile_open(&f, path, err, sizeof err) == 0, "reopen: %s", err);
    outfile_printf(&f, "half");
    outfile_abort(&f);
    CHECK(!exists("table.md.tmp"), "abort removes the .tmp");
    r = fopen(path, "r");
    n = r ? fread(buf, 1, sizeof buf - 1, r) : 0;
    if (r) fclose(r);
    CHECK(n == 14, "abort keeps the old file whole (%zu bytes)", n);

    // A directory that does not exist: an error naming the file, not a crash.
    snprintf(path, sizeof path, "%s/no/such/dir/x.md", dir);
    err[0] = 0;
    CHECK(outfile_open(&f, path, err, sizeof err) != 0 && strstr(err, "x.md.tmp"),
          "open in a missing directory fails naming the file ('%s')", err);
    // /dev/full: every write fails with ENOSPC; the commit must say so.
    if (access("/dev/full", W_OK) == 0) {
        memset(&f, 0, sizeof f);
        f.f = fopen("/dev/full", "w");
        f.path = strdup("/dev/full");
        f.tmp = strdup("/nonexistent.tmp");
        for (int i = 0; i < 1000 && f.f; i++) outfile_printf(&f, "%0100d\n", i);
        err[0] = 0;
        CHECK(f.f && outfile_commit(&f, err, sizeof err) != 0 && strstr(err, "/dev/full"),
              "a full device fails at commit naming the file ('%s')", err);
    }
}

static void test_make_dirs(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/runs//today/a/", dir);  // doubled and trailing slashes
    CHECK(make_dirs(path, err, sizeof err) == 0, "make_dirs creates three levels: %s", err);
    CHECK(exists("runs/today/a"), "runs/today/a is there");
    CHECK(make_dirs(path, err, sizeof err) == 0, "again: what exists is fine (%s)", err);
    snprintf(path, sizeof path, "%s/runs/today/file", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "a plain file in the way");
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/runs/today/file/b", dir);
    err[0] = 0;
    CHECK(make_dirs(path, err, sizeof err) != 0 && strstr(err, "today/file") &&
              strstr(err, "not a directory"),
          "a file as a parent is refused, named ('%s')", err);
    CHECK(make_dirs("", err, sizeof err) != 0, "an empty name is refused ('%s')", err);
    const char *made[] = {"runs/today/file", "runs/today/a", "runs/today", "runs"};
    for (int i = 0; i < 4; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, made[i]);
        if (i == 0) remove(p);
        else rmdir(p);
    }
    CHECK(!exists("runs"), "cleaned up");
}

static void test_stale_tmp(void) {
    const char *names[] = {"state.bin.tmp", "best_h8.bin.tmp", "eval.md.tmp", "mine.tmp",
                           "state.bin"};
    for (int i = 0; i < 5; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        if (f) fclose(f);
    }
    const char *prefixes[] = {"state.bin", "best_h", "eval."};
    CHECK(remove_stale_tmp(dir, prefixes, 3) == 3, "three stale temporaries removed");
    CHECK(!exists("state.bin.tmp") && !exists("best_h8.bin.tmp") && !exists("eval.md.tmp"),
          "the trainer's .tmp files are gone");
    CHECK(exists("mine.tmp") && exists("state.bin"), "other files are kept");
    CHECK(remove_stale_tmp("/nonexistent_dir_memr2", prefixes, 3) == 0,
          "a missing directory has nothing stale");
}

static void test_spawn(void) {
    char err[512], *out = NULL;
    size_t n = 0;
    // No shell: the injection strings of issue 11 reach the program as plain arguments.
    char inj[256];
    snprintf(inj, sizeof inj, "x';touch %s/INJECTED;'\"$(touch %s/INJ2)\"", dir, dir);
    char *echo[] = {"echo", inj, NULL};
    int rc = spawn_wait(echo, NULL, 0, &out, &n, 0, err, sizeof err);
    CHECK(rc == 0 && out && n == strlen(inj) + 1 && !memcmp(out, inj, strlen(inj)),
          "an argument arrives untouched (rc %d, '%.*s')", rc, (int)n, out ? out : "");
    CHECK(!exists("INJECTED") && !exists("INJ2"), "the injection strings created nothing");
    free(out);

    // 4 MB through cat both ways: the pump must not deadlock on full pipes.
    size_t big = 4u << 20;
    char *in = malloc(big);
    for (size_t i = 0; in && i < big; i++) in[i] = (char)('a' + i % 26);
    char *cat[] = {"cat", NULL};
    rc = in ? spawn_wait(cat, in, big, &out, &n, 0, err, sizeof err) : -1;
    CHECK(rc == 0 && n == big && out && !memcmp(out, in, big), "4 MB round trip through cat "
          "(rc %d, %zu bytes)", rc, n);
    free(out);
    free(in);

    char *f[] = {"false", NULL};
    rc = spawn_wait(f, NULL, 0, NULL, NULL, 0, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "exit status 1"), "exit status reported (%d, '%s')", rc, err);
    char *missing[] = {"memr2-no-such-program", NULL};
    rc = spawn_wait(missing, "x", 1, NULL, NULL, 1, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "memr2-no-such-program"), "a missing program is an error "
          "naming it ('%s')", err);
    // A child that stops reading: EPIPE, not a SIGPIPE that kills the caller.
    char *t[] = {"true", NULL};
    rc = spawn_wait(t, "", 0, NULL, NULL, 0, err, sizeof err);
    CHECK(rc == 0, "empty input is fine (%d)", rc);
    char *big_in = calloc(1, 8u << 20);
    rc = big_in ? spawn_wait(t, big_in, 8u << 20, NULL, NULL, 0, err, sizeof err) : 0;
    CHECK(rc != 0, "a child that never reads its 8 MB input is an error, and we survive (%d)", rc);
    free(big_in);
}

static void fill(float *p, size_t n, float base) {
    for (size_t i = 0; i < n; i++) p[i] = base + (float)i * 0.25f;
}

static void test_runstate(void) {
    size_t np = 1000;
    float *a = malloc(np * sizeof(float)), *b = malloc(np * sizeof(float));
    fill(a, np, 1.0f);
    fill(b, np, -3.0f);
    CurvePoint rw[3] = {{1, 0.5f}, {2, 0.25f}, {3, -0.125f}}, vl[1] = {{0, 0.75f}};
    RunState st = {.phase = RUN_RL, .sft_step = 30, .stage = 1, .stage_step = 2,
                   .done_steps = 5, .global_step = 35, .warm_started = 1, .best_f1 = 0.375,
                   .elapsed_s = 12.5, .log_bytes = 123456789012LL,
                   .copy[RUN_PARAMS] = a, .copy[RUN_BEST] = b, .copy[RUN_SFT_PARAMS] = a,
                   .reward_pts = rw, .n_reward = 3, .val_pts = vl, .n_val = 1};
    void *blob = NULL;
    size_t bytes = 0;
    CHECK(runstate_encode(&st, np, &blob, &bytes) == 0, "encode");
    {  // the pieces the trainer saves are the encoding, in order, pointing into st
        RunStatePieces pc;
        runstate_pieces(&st, np, &pc);
        size_t at = 0;
        int same = pc.total == bytes && pc.n == 6 && pc.piece[1] == (const void *)a &&
                   pc.piece[2] == (const void *)b;
        for (int i = 0; i < pc.n && same; i++) {
            same = at + pc.bytes[i] <= bytes &&
                   !memcmp((const unsigned char *)blob + at, pc.piece[i], pc.bytes[i]);
            at += pc.bytes[i];
        }
        CHECK(same && at == bytes, "pieces concatenate to the encoding (%d pieces, %zu of %zu bytes)",
              pc.n, at, bytes);
    }
    RunState d;
    char err[256] = "";
    int ok = runstate_decode(blob, bytes, np, &d, err, sizeof err) == 0;
    CHECK(ok, "decode: %s", err);
    if (ok) {
        CHECK(d.phase == RUN_RL && d.sft_step == 30 && d.stage == 1 && d.stage_step == 2 &&
                  d.done_steps == 5 && d.global_step == 35 && d.warm_started == 1 &&
                  d.best_f1 == 0.375 && d.elapsed_s == 12.5 && d.log_bytes == 123456789012LL,
              "scalars round-trip");
        CHECK(d.copy[RUN_PARAMS] && !memcmp(d.copy[RUN_PARAMS], a, np * sizeof(float)) &&
                  d.copy[RUN_BEST] && !memcmp(d.copy[RUN_BEST], b, np * sizeof(float)) &&
                  !d.copy[RUN_REF] && d.copy[RUN_SFT_PARAMS] &&
                  !memcmp(d.copy[RUN_SFT_PARAMS], a, np * sizeof(float)),
              "parameter copies round-trip (absent stays absent)");
        CHECK(d.n_reward == 3 && d.n_val == 1 && !memcmp(d.reward_pts, rw, sizeof rw) &&
                  !memcmp(d.val_pts, vl, sizeof vl), "curve points round-trip");
        runstate_free(&d);
    }
    // Every truncation is refused, and so is one byte too many.
    int refused = 0;
    for (size_t cut = 0; cut < bytes; cut += 1 + cut / 7)
        refused += runstate_decode(blob, cut, np, &d, err, sizeof err) != 0;
    int cuts = 0;
    for (size_t cut = 0; cut < bytes; cut += 1 + cut / 7) cuts++;
    CHECK(refused == cuts, "every truncated blob refused (%d of %d)", refused, cuts);
    unsigned char *pad = malloc(bytes + 1);
    memcpy(pad, blob, bytes);
    pad[bytes] = 0;
    CHECK(runstate_decode(pad, bytes + 1, np, &d, err, sizeof err) != 0 &&
              strstr(err, "trailing"), "a trailing byte refused ('%s')", err);
    CHECK(runstate_decode(blob, bytes, np + 1, &d, err, sizeof err) != 0,
          "a blob for another model size refused ('%s')", err);
    // Corrupt fields: phase, a negative count, a huge count, a NaN parameter.
    memcpy(pad, blob, bytes);
    int32_t bad_phase = 7;
    memcpy(pad + 8, &bad_phase, 4);
    CHECK(runstate_decode(pad, bytes, np, &d, err, sizeof err) != 0 && strstr(err, "phase"),
          "an unknown phase refused ('%s')", err);
    memcpy(pad, blob, bytes);
    size_t counts_at = 8 + 7 * 4 + 2 * 8 + 8 + 4;
    int32_t neg = -1, huge = 2000000000;
    memcpy(pad + counts_at, &neg, 4);
    CHECK(runstate_decode(pad, bytes, np, &d, err, sizeof err) != 0, "a negative count refused");
    memcpy(pad + counts_at, &huge, 4);
    CHECK(runstate_decode(pad, bytes, np, &d, err, sizeof err) != 0, "a huge count refused");
    memcpy(pad, blob, bytes);
    float nan = NAN;
    memcpy(pad + counts_at + 8 + 10 * sizeof(float), &nan, sizeof nan);
    CHECK(runstate_decode(pad, bytes, np, &d, err, sizeof err) != 0 && strstr(err, "non-finite"),
          "a NaN parameter refused ('%s')", err);
    memcpy(pad, blob, bytes);
    pad[0] ^= 1;
    CHECK(runstate_decode(pad, bytes, np, &d, err, sizeof err) != 0 && strstr(err, "magic"),
          "a bad magic refused ('%s')", err);
    CHECK(runstate_decode(NULL, 0, np, &d, err, sizeof err) != 0, "no blob refused");
    free(pad);
    free(blob);
    free(a), free(b);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/memr2_test_files_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_outfile();
    test_make_dirs();
    test_stale_tmp();
    test_spawn();
    test_runstate();
    const char *left[] = {"table.md", "mine.tmp", "state.bin"};
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, left[i]);
        remove(p);
    }
    if (rmdir(dir) != 0) fprintf(stderr, "note: %s not empty\n", dir);
    return check_summary("test_files");
}
