// files.h: the trainer's output files and child programs, done so that nothing is lost silently.
//
//   - OutFile: a text or binary file written to "<path>.tmp", every write checked, then flushed,
//     fsync'ed, closed (checked) and renamed over <path>. A full disk or a kill leaves either the
//     old file or the new one, never half of one, and an error names the file (README, "Outputs
//     and resume").
//   - make_dirs: an output directory and its missing parents (mkdir -p).
//   - remove_stale_tmp: deletes the "<name>.tmp" leftovers of a killed run in an output directory.
//   - spawn_wait: runs a program with an argument vector (posix_spawn, no shell), optionally
//     feeding its stdin and reading its stdout through pipes.
#ifndef MEMR2_FILES_H
#define MEMR2_FILES_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *f;      // open on tmp while writing
    char *path;   // final name
    char *tmp;    // path + ".tmp"
    int failed;   // a write failed (errno saved in err_no)
    int err_no;
} OutFile;

// Opens "<path>.tmp" for writing. 0, or -1 with a message naming the file in err.
int outfile_open(OutFile *o, const char *path, char *err, size_t errlen);
// Checked writes: a failure is remembered and reported by outfile_commit. Return 0 or -1.
int outfile_printf(OutFile *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int outfile_write(OutFile *o, const void *data, size_t bytes);
// Flush, fsync, close and rename into place. On any failure the temporary file is removed and
// err names the file and the reason. The OutFile is released either way. 0 or -1.
int outfile_commit(OutFile *o, char *err, size_t errlen);
// Gives up: closes and removes the temporary file (a no-op on a zeroed or released OutFile).
void outfile_abort(OutFile *o);

// Removes every regular file in dir whose name ends in ".tmp" and starts with one of the n
// prefixes (the trainer's own outputs: a killed run leaves such files behind). Returns how many
// were removed, or -1 if dir cannot be read (message on stderr).
int remove_stale_tmp(const char *dir, const char *const *prefixes, int n);

// Creates the directory path and any missing parents (mkdir -p, mode 0755). A component that
// exists but is not a directory is an error. 0, or -1 with err naming the path and the reason.
int make_dirs(const char *path, char *err, size_t errlen);

// Writes one output file atomically (outfile_*) from text built in memory; errors name the file
// (on stderr). Returns 0 or -1.
int write_text_file(const char *path, const char *text, size_t bytes);
// A JSON number, or null for NaN / inf (JSON has no NaN): "%s" of buf.
const char *json_num(char *buf, size_t n, double x, const char *fmt);

// Runs argv[0] with argv (NULL-terminated; argv[0] without a '/' is searched in PATH) and waits.
// No shell is involved: every argument reaches the program as it is. If stdin_data is not NULL
// its bytes are written to the program's stdin through a pipe (then closed); otherwise stdin is
// inherited. If out is not NULL the program's stdout is captured into a malloc'ed buffer
// (*out, *out_bytes; the caller frees it); otherwise stdout is inherited. quiet_stderr sends its
// stderr to /dev/null. Returns the exit status (0..255), or -1 if it could not be started or died
// of a signal (err says which; *out is then NULL).
int spawn_wait(char *const argv[], const char *stdin_data, size_t stdin_bytes, char **out,
               size_t *out_bytes, int quiet_stderr, char *err, size_t errlen);

#endif
