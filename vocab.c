// vocab.c: the word-level tokenizer (contract in vocab.h): lower-cased words and single
// punctuation characters; vocabulary in an stb_ds hash map.
//
// This file owns STB_DS_IMPLEMENTATION for the whole program.
#define STB_DS_IMPLEMENTATION
#include <stb/stb_ds.h>

#include "vocab.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORD VOCAB_MAX_WORD

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

// =============================================================================================
// Tokenizer core: a token is a run of letters and digits (bytes >= 0x80 count as letters, so
// UTF-8 stays inside words; numbers are words) or one other non-space character. Lower-cased.
// Returns the token length written to buf (cut to bufsz-1), 0 at the end of the text.
static int next_token(const char **p, char *buf, size_t bufsz) {
    const unsigned char *s = (const unsigned char *)*p;
    while (*s && isspace(*s)) s++;
    if (!*s) {
        *p = (const char *)s;
        return 0;
    }
    size_t n = 0;
#define WORDCH(c) (isalnum(c) || (c) >= 0x80)
    if (WORDCH(*s)) {
        while (*s && WORDCH(*s)) {
            if (n + 1 < bufsz) buf[n++] = (char)tolower(*s);
            s++;
        }
    } else {
        buf[n++] = (char)*s++;
    }
#undef WORDCH
    buf[n] = '\0';
    *p = (const char *)s;
    return (int)n;
}

int vocab_count_tokens(const char *text) {
    char w[MAX_WORD];
    int n = 0;
    if (!text) return 0;
    while (next_token(&text, w, sizeof w)) n++;
    return n;
}

// =============================================================================================
// Vocabulary
typedef struct {
    char *key;
    int value;
} WordEntry;

struct Vocab {
    char **words;    // (size) owned strings; id -> word
    int size;
    WordEntry *map;  // stb_ds string hash map: word -> id
    uint8_t *stop;   // (size) 1 for ids retrieval ignores: specials, punctuation, stop words
};

// Function words ignored by retrieval (queries and slots alike).
static const char *const STOP_WORDS[] = {
    "a", "an", "the", "in", "on", "at", "of", "to", "for", "and", "or", "is", "are", "was",
    "were", "be", "been", "being", "do", "does", "did", "i", "you", "he", "she", "it", "we",
    "they", "my", "your", "his", "her", "its", "our", "their", "me", "him", "us", "them", "this",
    "that", "these", "those", "with", "from", "by", "as", "what", "who", "whom", "where", "when",
    "which", "how", "why", "have", "has", "had", "will", "would", "can", "could", "should", "there",
    "here", "so", "but", "if", "then", "than", "too", "very", "just", "about", "into", "over",
    "up", "out", "s", "t", "am", "not", "no", "yes", "any", "some", "all"};

int vocab_is_stop_word(const char *w) {
    if (!w[0] || (!isalnum((unsigned char)w[0]) && (unsigned char)w[0] < 0x80)) return 1;
    for (size_t i = 0; i < sizeof STOP_WORDS / sizeof STOP_WORDS[0]; i++)
        if (strcmp(w, STOP_WORDS[i]) == 0) return 1;
    return 0;
}

static void special_name(int id, char *buf, size_t n) {
    static const char *const names[] = {"<pad>", "<unk>", "<eos>", "<extract>", "<manage>",
                                        "<out>", "<sep>", "<facts>", "<ins>", "<upd>", "<del>",
                                        "<noop>"};
    if (id < TOK_TURN0) snprintf(buf, n, "%s", names[id]);
    else if (id < TOK_SLOT0) snprintf(buf, n, "<t%d>", id - TOK_TURN0);
    else snprintf(buf, n, "<m%d>", id - TOK_SLOT0);
}

static Vocab *vocab_alloc(void) {
    Vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    sh_new_strdup(v->map);
    return v;
}

static int vocab_add(Vocab *v, const char *w) {
    char **nw = realloc(v->words, (size_t)(v->size + 1) * sizeof(char *));
    if (!nw) return -1;
    v->words = nw;
    v->words[v->size] = xstrdup(w);
    if (!v->words[v->size]) return -1;
    shput(v->map, w, v->size);
    v->size++;
    return 0;
}

static int vocab_finish(Vocab *v) {
    v->stop = calloc((size_t)v->size, 1);
    if (!v->stop) return -1;
    for (int i = 0; i < v->size; i++)
        v->stop[i] = i < TOK_FIRST_WORD || vocab_is_stop_word(v->words[i]);
    return 0;
}

typedef struct {
    char *key;
    long value;
} CountEntry;

static void count_text(CountEntry **counts, const char *text) {
    char w[MAX_WORD];
    if (!text) return;
    while (next_token(&text, w, sizeof w)) {
        ptrdiff_t i = shgeti(*counts, w);
        if (i < 0) shput(*counts, w, 1);
        else (*counts)[i].value++;
    }
}

static int count_cmp(const void *a, const void *b) {
    const CountEntry *x = a, *y = b;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return strcmp(x->key, y->key);
}

Vocab *vocab_build(const Dataset *ds, int max_size) {
    CountEntry *counts = NULL;
    sh_new_strdup(counts);
    for (int e = 0; e < ds->n; e++) {
        const Episode *E = &ds->episodes[e];
        for (int s = 0; s < E->n_sessions; s++) {
            for (int t = 0; t < E->sessions[s].n_turns; t++) {
                const Turn *T = &E->sessions[s].turns[t];
                count_text(&counts, T->speaker);
                count_text(&counts, ":");  // the extract prompt writes "speaker : text"
                count_text(&counts, T->text);
            }
            if (E->gold)
                for (int g = 0; g < E->n_gold[s]; g++) count_text(&counts, E->gold[s][g].text);
        }
        for (int q = 0; q < E->n_qa; q++) {
            count_text(&counts, E->qa[q].question);
            count_text(&counts, E->qa[q].answer);
        }
    }
    int n = (int)shlen(counts);
    CountEntry *sorted = malloc((size_t)(n > 0 ? n : 1) * sizeof *sorted);
    Vocab *v = vocab_alloc();
    if (!sorted || !v) goto fail;
    memcpy(sorted, counts, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, count_cmp);
    char name[16];
    for (int i = 0; i < TOK_FIRST_WORD; i++) {
        special_name(i, name, sizeof name);
        if (vocab_add(v, name) != 0) goto fail;
    }
    for (int i = 0; i < n && (max_size <= 0 || v->size < max_size); i++)
        if (shgeti(v->map, sorted[i].key) < 0 && vocab_add(v, sorted[i].key) != 0) goto fail;
    if (vocab_finish(v) != 0) goto fail;
    free(sorted);
    shfree(counts);
    return v;
fail:
    fprintf(stderr, "vocab_build: out of memory\n");
    free(sorted);
    shfree(counts);
    vocab_free(v);
    return NULL;
}

#define VOCAB_MAGIC "memr2-vocab"

int vocab_save(const Vocab *v, const char *path, char *err, size_t errlen) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, "%s 1 %d\n", VOCAB_MAGIC, v->size) < 0;
    for (int i = 0; i < v->size && !bad; i++) bad = fprintf(f, "%s\n", v->words[i]) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

// "memr2-vocab <version> <size>" with both numbers decimal, in range, nothing after them
// (sscanf's %d is undefined on overflow, so the numbers go through strtol).
static int parse_vocab_header(const char *line, long *version, long *size) {
    size_t m = strlen(VOCAB_MAGIC);
    if (strncmp(line, VOCAB_MAGIC, m) != 0 || line[m] != ' ') return -1;
    const char *p = line + m;
    long *dst[2] = {version, size};
    for (int i = 0; i < 2; i++) {
        while (*p == ' ') p++;
        if (!isdigit((unsigned char)*p)) return -1;  // no sign, no empty field
        char *end;
        errno = 0;
        *dst[i] = strtol(p, &end, 10);
        if (errno == ERANGE) return -1;
        p = end;
    }
    return strcmp(p, "\n") == 0 || strcmp(p, "\r\n") == 0 || *p == '\0' ? 0 : -1;
}

#define VOCAB_MAX_WORDS 10000000
#define VOCAB_MAX_LINE 4096

Vocab *vocab_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    long version = 0, size = 0;
    Vocab *v = NULL;
    ssize_t got = getline(&line, &cap, f);
    if (got <= 0 || (size_t)got != strlen(line) || parse_vocab_header(line, &version, &size) != 0) {
        snprintf(err, errlen, "%s: line 1: expected the header '%s 1 <size>'", path, VOCAB_MAGIC);
        goto fail;
    }
    if (version != 1 || size < TOK_FIRST_WORD || size > VOCAB_MAX_WORDS) {
        snprintf(err, errlen, "%s: line 1: version %ld size %ld: this build reads version 1 with "
                 "%d to %d words", path, version, size, TOK_FIRST_WORD, VOCAB_MAX_WORDS);
        goto fail;
    }
    v = vocab_alloc();
    if (!v) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (long i = 0; i < size; i++) {
        got = getline(&line, &cap, f);
        if (got <= 0) {
            snprintf(err, errlen, "%s: line %ld: file ends after %ld of %ld words", path, i + 2, i,
                     size);
            goto fail;
        }
        if ((size_t)got != strlen(line) || got > VOCAB_MAX_LINE) {
            snprintf(err, errlen, "%s: line %ld: %s", path, i + 2,
                     got > VOCAB_MAX_LINE ? "longer than 4096 bytes" : "contains a NUL byte");
            goto fail;
        }
        line[strcspn(line, "\r\n")] = '\0';
        char name[16];
        if (i < TOK_FIRST_WORD) {
            special_name((int)i, name, sizeof name);
            if (strcmp(line, name) != 0) {
                snprintf(err, errlen, "%s: line %ld: expected the special token %s, got '%.64s'",
                         path, i + 2, name, line);
                goto fail;
            }
        }
        if (!line[0] || shgeti(v->map, line) >= 0) {
            snprintf(err, errlen, "%s: line %ld: empty or repeated word '%.64s'", path, i + 2,
                     line);
            goto fail;
        }
        if (vocab_add(v, line) != 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto fail;
        }
    }
    // The header's size is the whole vocabulary: more lines mean a damaged or edited file.
    while ((got = getline(&line, &cap, f)) > 0) {
        if (line[strspn(line, " \t\r\n")] != '\0') {
            snprintf(err, errlen, "%s: more words than the header's size %ld", path, size);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    if (vocab_finish(v) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    free(line);
    fclose(f);
    return v;
fail:
    free(line);
    fclose(f);
    vocab_free(v);
    return NULL;
}

uint64_t vocab_hash(const Vocab *v) {
    // FNV-1a 64 over the words in id order, each followed by a NUL byte (so "ab","c" and
    // "a","bc" differ). 0 means "not recorded" in a checkpoint header, so it is never returned.
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < v->size; i++) {
        for (const unsigned char *p = (const unsigned char *)v->words[i]; ; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
            if (!*p) break;
        }
    }
    return h ? h : 1;
}

void vocab_free(Vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->size; i++) free(v->words[i]);
    free(v->words);
    shfree(v->map);
    free(v->stop);
    free(v);
}

int vocab_size(const Vocab *v) { return v->size; }

const char *vocab_word(const Vocab *v, int id) {
    return (id >= 0 && id < v->size) ? v->words[id] : "<unk>";
}

// The thread-safe lookup: shgeti() stores its result in the table header, a data race when
// several threads encode at once (e.g. lanes in an OpenMP loop); the _ts form returns it instead.
static int vocab_id(const Vocab *v, const char *w) {
    WordEntry *m = v->map;
    ptrdiff_t i = -1;
    m = stbds_hmget_key_ts(m, sizeof *m, (void *)w, sizeof m->key, &i, STBDS_HM_STRING);
    return i < 0 ? TOK_UNK : m[i].value;
}

int vocab_encode(const Vocab *v, const char *text, int *out, int max) {
    char w[MAX_WORD];
    int n = 0;
    if (!text) return 0;
    while (n < max && next_token(&text, w, sizeof w)) out[n++] = vocab_id(v, w);
    return n;
}

int vocab_decode(const Vocab *v, const int *ids, int n, char *out, size_t outlen) {
    size_t k = 0;
    if (outlen == 0) return 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *w = vocab_word(v, ids[i]);
        int r = snprintf(out + k, outlen - k, "%s%s", i ? " " : "", w);
        if (r < 0 || (size_t)r >= outlen - k) {
            k = outlen - 1;
            out[k] = '\0';
            break;
        }
        k += (size_t)r;
    }
    return (int)k;
}

const uint8_t *vocab_stop_mask(const Vocab *v) { return v->stop; }

