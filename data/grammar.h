// data/grammar.h: the closed world of the synthetic episodes, shared by the generator
// (data/gen_episodes.c writes it) and the synthetic world (world_synth.c parses it: the oracle
// manager and the frozen answerer know this grammar, like the paper's frozen LLM knows English).
//
// A fact is about one key "person|attribute" and has one of three canonical forms:
//   SET     "<p> <phrase> <v>"                        alice lives in lyon
//   CHANGE  "<p> now <phrase> <v> , previously <o>"   alice now lives in lyon , previously paris
//   END     "<p> no longer <phrase> <o>"              alice no longer drives a toyota
// Every form of a key carries the key's phrase, so a query "alice lives" finds all of them; and a
// SET is shorter than the CHANGE that supersedes it, so BM25 ranks a stale SET first when both
// sit in the bank: that is how the insert-only baseline suffers from stale values.
//
// Questions (whitespace-separated tokens; {x} is a person name or a two-hop description, {v} a
// value):
//   current   q_cur   "where does {x} live ?"              -> current value, or "none" if ended
//   previous  q_prev  "where did {x} live before {v} ?"     -> the value before the last change
//   two-hop   q_cur with {x} = desc of another attribute, e.g. "the owner of the {v}"
// Names and values are single lower-case words; all pools are disjoint.
#ifndef MEMR2_GRAMMAR_H
#define MEMR2_GRAMMAR_H

#include <stdio.h>
#include <string.h>

enum { GR_SET = 0, GR_CHANGE = 1, GR_END = 2 };

#define GR_N_ATTRS 7
#define GR_N_VALUES 12
#define GR_N_NAMES 16

typedef struct {
    const char *name;    // attribute part of the key
    const char *phrase;  // canonical verb phrase
    const char *q_cur;   // current-value question
    const char *q_prev;  // previous-value question
    const char *desc;    // two-hop description of the holder of value {v}; NULL: not a bridge
    int can_end;         // the attribute can end ("sold my car")
    int hop_target;      // asked about in two-hop questions
    const char *values[GR_N_VALUES];
} GrAttr;

static const GrAttr GR_ATTRS[GR_N_ATTRS] = {
    {"city", "lives in", "where does {x} live ?", "where did {x} live before {v} ?", NULL, 0, 1,
     {"paris", "lyon", "berlin", "rome", "madrid", "lisbon", "vienna", "prague", "dublin", "oslo",
      "warsaw", "zurich"}},
    {"job", "works as a", "what job does {x} have ?", "what job did {x} have before {v} ?", NULL,
     1, 1,
     {"teacher", "nurse", "chef", "pilot", "lawyer", "farmer", "plumber", "dentist", "baker",
      "banker", "carpenter", "librarian"}},
    {"employer", "works at", "which company does {x} work for ?",
     "which company did {x} work for before {v} ?", NULL, 1, 0,
     {"acme", "globex", "initech", "hooli", "vandelay", "soylent", "cyberdyne", "tyrell", "wonka",
      "zorg", "dunder", "massive"}},
    {"pet", "owns a", "what pet does {x} have ?", "what pet did {x} have before {v} ?",
     "the owner of the {v}", 1, 0,
     {"cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "lizard", "ferret",
      "pony", "snake", "canary"}},
    {"car", "drives a", "what car does {x} drive ?", "what car did {x} drive before {v} ?",
     "the driver of the {v}", 1, 0,
     {"toyota", "honda", "tesla", "volvo", "ford", "fiat", "mazda", "nissan", "kia", "jeep",
      "porsche", "subaru"}},
    {"hobby", "enjoys", "what hobby does {x} enjoy ?", "what hobby did {x} enjoy before {v} ?",
     NULL, 1, 0,
     {"chess", "tennis", "painting", "hiking", "cooking", "gardening", "yoga", "fishing",
      "knitting", "surfing", "pottery", "climbing"}},
    {"partner", "is dating", "who is {x} dating ?", "who was {x} dating before {v} ?", NULL, 1, 0,
     {"sam", "alex", "jordan", "taylor", "morgan", "casey", "riley", "jamie", "quinn", "avery",
      "drew", "robin"}},
};

// People of the world (speakers and the friends they talk about).
static const char *const GR_NAMES[GR_N_NAMES] = {
    "alice", "bob", "carol", "dave", "emma", "frank", "grace", "henry",
    "irene", "jack", "kate", "leo", "mia", "nick", "olivia", "paul"};

// The canonical text of a fact. v is the (new) value, o the old one (CHANGE, END).
static inline int gr_format_fact(char *out, size_t n, int type, const char *p, int attr,
                                 const char *v, const char *o) {
    const char *ph = GR_ATTRS[attr].phrase;
    switch (type) {
    case GR_SET: return snprintf(out, n, "%s %s %s", p, ph, v);
    case GR_CHANGE: return snprintf(out, n, "%s now %s %s , previously %s", p, ph, v, o);
    default: return snprintf(out, n, "%s no longer %s %s", p, ph, o);
    }
}

// Substitute {x}, {v}, {o}, {p} in a template (missing arguments become empty).
static inline void gr_fill(char *out, size_t n, const char *tmpl, const char *x, const char *v,
                           const char *o) {
    size_t k = 0;
    if (n == 0) return;
    for (const char *t = tmpl; *t && k + 1 < n;) {
        const char *arg = NULL;
        if (t[0] == '{' && t[1] && t[2] == '}') {
            if (t[1] == 'x' || t[1] == 'p') arg = x ? x : "";
            else if (t[1] == 'v') arg = v ? v : "";
            else if (t[1] == 'o') arg = o ? o : "";
        }
        if (arg) {
            for (; *arg && k + 1 < n; arg++) out[k++] = *arg;
            t += 3;
        } else {
            out[k++] = *t++;
        }
    }
    out[k] = '\0';
}

#endif
