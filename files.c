// files.c: atomic output files, stale-temporary cleanup and shell-free child programs
// (interface and rationale in files.h). Tests: tests/test_files.c.
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// ---------------------------------------------------------------------------------------------
// Atomic output files

static void outfile_release(OutFile *o) {
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    o->f = NULL;
}

int outfile_open(OutFile *o, const char *path, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    size_t n = strlen(path);
    o->path = malloc(n + 1);
    o->tmp = malloc(n + 5);
    if (!o->path || !o->tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        outfile_release(o);
        return -1;
    }
    memcpy(o->path, path, n + 1);
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp", 5);
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        snprintf(err, errlen, "%s: cannot create: %s", o->tmp, strerror(errno));
        outfile_release(o);
        return -1;
    }
    return 0;
}

static void outfile_fail(OutFile *o) {
    if (!o->failed) o->err_no = errno ? errno : EIO;
    o->failed = 1;
}

int outfile_printf(OutFile *o, const char *fmt, ...) {
    if (!o->f || o->failed) return -1;
    va_list ap;
    va_start(ap, fmt);
    errno = 0;
    int rc = vfprintf(o->f, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        outfile_fail(o);
        return -1;
    }
    return 0;
}

int outfile_write(OutFile *o, const void *data, size_t bytes) {
    if (!o->f || o->failed) return -1;
    errno = 0;
    if (bytes && fwrite(data, 1, bytes, o->f) != bytes) {
        outfile_fail(o);
        return -1;
    }
    return 0;
}

int outfile_commit(OutFile *o, char *err, size_t errlen) {
    if (!o->f) {
        snprintf(err, errlen, "%s: not open", o->path ? o->path : "(output file)");
        outfile_release(o);
        return -1;
    }
    // stdio may hold the data until fclose: a full disk often shows up only here or at fsync.
    errno = 0;
    if (!o->failed && fflush(o->f) != 0) outfile_fail(o);
    if (!o->failed && fsync(fileno(o->f)) != 0 && errno != EINVAL) outfile_fail(o);
    errno = 0;
    if (fclose(o->f) != 0 && !o->failed) outfile_fail(o);
    o->f = NULL;
    if (o->failed) {
        snprintf(err, errlen, "%s: write failed: %s", o->path, strerror(o->err_no));
        remove(o->tmp);
        outfile_release(o);
        return -1;
    }
    if (rename(o->tmp, o->path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", o->path, o->tmp,
                 strerror(errno));
        remove(o->tmp);
        outfile_release(o);
        return -1;
    }
    outfile_release(o);
    return 0;
}

void outfile_abort(OutFile *o) {
    if (o->f) fclose(o->f);
    if (o->tmp) remove(o->tmp);
    outfile_release(o);
}

// ---------------------------------------------------------------------------------------------
// Directories

// One component: created, or already a directory (whatever mkdir's errno: an existing parent
// may answer EACCES or EROFS rather than EEXIST).
static int make_one_dir(const char *path, char *err, size_t errlen) {
    if (mkdir(path, 0755) == 0) return 0;
    int e = errno;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        snprintf(err, errlen, "%s exists and is not a directory", path);
        return -1;
    }
    snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(e));
    return -1;
}

int make_dirs(const char *path, char *err, size_t errlen) {
    size_t n = strlen(path);
    if (n == 0) {
        snprintf(err, errlen, "an empty directory name");
        return -1;
    }
    char *p = malloc(n + 1);
    if (!p) {
        snprintf(err, errlen, "out of memory for the path %s", path);
        return -1;
    }
    memcpy(p, path, n + 1);
    // each '/' after the first character ends a parent: "a/b/c" makes "a", "a/b", then "a/b/c"
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '/' || p[i - 1] == '/') continue;
        p[i] = 0;
        int rc = make_one_dir(p, err, errlen);
        p[i] = '/';
        if (rc != 0) {
            free(p);
            return -1;
        }
    }
    int rc = make_one_dir(p, err, errlen);
    free(p);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Stale temporaries

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int remove_stale_tmp(const char *dir, const char *const *prefixes, int n) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, "error: cannot read directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".tmp")) continue;
        int ours = 0;
        for (int i = 0; i < n && !ours; i++)
            ours = !strncmp(e->d_name, prefixes[i], strlen(prefixes[i]));
        if (!ours) continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (!p) break;
        snprintf(p, len, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && unlink(p) == 0) removed++;
        free(p);
    }
    closedir(d);
    return removed;
}

// ---------------------------------------------------------------------------------------------
// Child programs without a shell

// Feeds in_data to fd_in and collects fd_out until EOF, whichever is ready (poll), so neither
// side can block the other on a full pipe. fd_in or fd_out may be -1. 0, or -1 on a failed
// write (EPIPE: the child stopped reading) or no memory.
static int pump(int fd_in, const char *in_data, size_t in_bytes, int fd_out, char **out,
                size_t *out_bytes) {
    size_t sent = 0, cap = 0, got = 0;
    char *buf = NULL;
    int rc = 0;
    if (fd_in >= 0 && in_bytes == 0) close(fd_in), fd_in = -1;
    // Non-blocking writes: a blocking write of a large input would wait for the child to read
    // all of it while the child waits for us to read its output.
    if (fd_in >= 0) fcntl(fd_in, F_SETFL, fcntl(fd_in, F_GETFL) | O_NONBLOCK);
    while (fd_in >= 0 || fd_out >= 0) {
        struct pollfd p[2];
        int n = 0, iin = -1, iout = -1;
        if (fd_in >= 0) iin = n, p[n++] = (struct pollfd){.fd = fd_in, .events = POLLOUT};
        if (fd_out >= 0) iout = n, p[n++] = (struct pollfd){.fd = fd_out, .events = POLLIN};
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            rc = -1;
            break;
        }
        if (iin >= 0 && p[iin].revents) {
            ssize_t w = (p[iin].revents & POLLOUT) ? write(fd_in, in_data + sent, in_bytes - sent)
                                                   : -1;
            if (w < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (w > 0) sent += (size_t)w;
            if (w <= 0) rc = -1;
            if (w <= 0 || sent == in_bytes) close(fd_in), fd_in = -1;
        }
        if (iout >= 0 && p[iout].revents) {
            if (got == cap) {
                size_t ncap = cap ? 2 * cap : 65536;
                char *nb = realloc(buf, ncap);
                if (!nb) {
                    rc = -1;
                    close(fd_out), fd_out = -1;
                    continue;
                }
                buf = nb, cap = ncap;
            }
            ssize_t r = read(fd_out, buf + got, cap - got);
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) got += (size_t)r;
            else close(fd_out), fd_out = -1;  // EOF or error: the child is done writing
        }
    }
    if (fd_in >= 0) close(fd_in);
    if (fd_out >= 0) close(fd_out);
    if (out) {
        *out = buf;
        *out_bytes = got;
    } else {
        free(buf);
    }
    return rc;
}

int spawn_wait(char *const argv[], const char *stdin_data, size_t stdin_bytes, char **out,
               size_t *out_bytes, int quiet_stderr, char *err, size_t errlen) {
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    if (out) *out = NULL, *out_bytes = 0;
    if ((stdin_data && pipe(in_pipe) != 0) || (out && pipe(out_pipe) != 0)) {
        snprintf(err, errlen, "%s: cannot make a pipe: %s", argv[0], strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (in_pipe[i] >= 0) close(in_pipe[i]);
            if (out_pipe[i] >= 0) close(out_pipe[i]);
        }
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    // The child gets default SIGPIPE handling even though this process ignores it below.
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    if (stdin_data) {
        posix_spawn_file_actions_adddup2(&fa, in_pipe[0], STDIN_FILENO);
        posix_spawn_file_actions_addclose(&fa, in_pipe[0]);
        posix_spawn_file_actions_addclose(&fa, in_pipe[1]);
    }
    if (out) {
        posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&fa, out_pipe[0]);
        posix_spawn_file_actions_addclose(&fa, out_pipe[1]);
    }
    if (quiet_stderr)
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &fa, &attr, argv, environ)
                                  : posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (stdin_data) close(in_pipe[0]);
    if (out) close(out_pipe[1]);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot run: %s", argv[0], strerror(rc));
        if (stdin_data) close(in_pipe[1]);
        if (out) close(out_pipe[0]);
        return -1;
    }
    // A child that exits early must give EPIPE here, not kill this process with SIGPIPE.
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    int pumped = pump(stdin_data ? in_pipe[1] : -1, stdin_data, stdin_bytes,
                      out ? out_pipe[0] : -1, out, out_bytes);
    sigaction(SIGPIPE, &old, NULL);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "%s: cannot wait for it: %s", argv[0], strerror(errno));
            status = -1;
            break;
        }
    }
    int code = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (status != -1 && WIFSIGNALED(status))
        snprintf(err, errlen, "%s: killed by signal %d", argv[0], WTERMSIG(status));
    else if (code > 0)
        snprintf(err, errlen, "%s: exit status %d", argv[0], code);
    else if (code == 0 && pumped != 0) {
        snprintf(err, errlen, "%s: its input or output pipe failed", argv[0]);
        code = -1;
    }
    if (code != 0 && out) {
        free(*out);
        *out = NULL, *out_bytes = 0;
    }
    return code;
}

int write_text_file(const char *path, const char *text, size_t bytes) {
    OutFile f;
    char err[1024];
    if (outfile_open(&f, path, err, sizeof err) == 0) {
        outfile_write(&f, text, bytes);  // a failure is reported by the commit
        if (outfile_commit(&f, err, sizeof err) == 0) return 0;
    }
    fprintf(stderr, "error: %s\n", err);
    return -1;
}

const char *json_num(char *buf, size_t n, double x, const char *fmt) {
    if (isfinite(x)) snprintf(buf, n, fmt, x);
    else snprintf(buf, n, "null");
    return buf;
}
