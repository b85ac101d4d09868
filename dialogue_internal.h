// dialogue_internal.h: helpers the dialogue_*.c files share (not part of the world's API).
#ifndef MEMR2_DIALOGUE_INTERNAL_H
#define MEMR2_DIALOGUE_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "dialogue.h"

// A growing NUL-terminated string; oom is sticky, so builders check once at the end.
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} DStr;
int dstr_add(DStr *s, const char *p, size_t n);
int dstr_puts(DStr *s, const char *p);
int dstr_printf(DStr *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dstr_json(DStr *s, struct cJSON *obj);  // compact JSON of obj (freed)

int ids_push(BpeIds *ids, int id);
void dia_format(int dia, char *buf, size_t n);          // "D3:5"
int dialogue_chat_ids(const Dialogue *d, const BpeMessage *msgs, int n, BpeIds *out, char *err,
                      size_t errlen);
// system + user: the rendered text into *text, or (ids != NULL) the ids into ids.
int dialogue_render(const Dialogue *d, const char *system, const char *user, char **text,
                    BpeIds *ids, char *err, size_t errlen);
const char *slot_speaker(const Episode *ep, const MemoryBank *bank, int i);
char *ids_text(const Dialogue *d, const int *ids, int n);  // decoded ids (malloc'd)

#endif
