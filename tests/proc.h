// tests/proc.h: running the trainer from a test without a shell (header-only, test use).
//
// proc_start(argv, out_file) starts a program with stdout and stderr sent to out_file;
// proc_wait(pid) waits and returns its exit code, or 128 + signal. proc_run_fmt formats a command
// line, splits it at spaces (the tests' paths have none) and runs it to the end;
// proc_kill_at_lines kills a run once its log has some lines (the resume tests).
#ifndef MEMR2_TESTS_PROC_H
#define MEMR2_TESTS_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static inline pid_t proc_start(char *const argv[], const char *out_file) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out_file) {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_file,
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    }
    pid_t pid;
    int rc = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &fa, NULL, argv, environ)
                                  : posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    return pid;
}

static inline int proc_wait(pid_t pid) {
    int status;
    if (pid < 0) return -1;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Splits line (modified in place) at spaces into argv (room for max - 1 words).
static inline int proc_split(char *line, char **argv, int max) {
    int n = 0;
    for (char *tok = strtok(line, " "); tok && n < max - 1; tok = strtok(NULL, " "))
        argv[n++] = tok;
    argv[n] = NULL;
    return n;
}

// Runs the formatted command line to its end with output in out_file; returns the exit code.
static inline int proc_run_fmt(const char *out_file, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int proc_run_fmt(const char *out_file, const char *fmt, ...) {
    char line[8192], *argv[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    proc_split(line, argv, 128);
    return proc_wait(proc_start(argv, out_file));
}

// 1 if the file contains the string.
static inline int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

// Lines in a file (-1 if it cannot be read).
static inline long file_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long lines = 0;
    int c;
    while ((c = getc(f)) != EOF) lines += c == '\n';
    fclose(f);
    return lines;
}

// 1 if both files can be read and hold the same bytes.
static inline int files_same(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    int same = x && y, c;
    while (same && (c = getc(x)) != EOF) same = c == getc(y);
    same = same && getc(y) == EOF;
    if (x) fclose(x);
    if (y) fclose(y);
    return same;
}

// Starts argv (output in out_file) and SIGKILLs it as soon as the file log has `lines` lines.
// 1 if it was killed, 0 if it ended first (or did not start).
static inline int proc_kill_at_lines(char *const argv[], const char *out_file, const char *log,
                                     long lines) {
    pid_t pid = proc_start(argv, out_file);
    if (pid < 0) return 0;
    struct timespec nap = {0, 200000};
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return 0;
        long n = file_lines(log);
        if (n >= lines && n >= 0) break;
        nanosleep(&nap, NULL);
    }
    kill(pid, SIGKILL);
    proc_wait(pid);
    return 1;
}

static inline int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

#endif
