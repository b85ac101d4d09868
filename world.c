// world.c: the world a run uses, made from the command line's choice (world.h: world_open).
// The one place that names the worlds; everything else sees only the World interface.
#include "world.h"

#include <stdio.h>
#include <string.h>

#include "world_dialogue.h"
#include "world_synth.h"

// The synthetic world: the vocabulary is loaded (a resumed run, a checkpoint's vocab.txt) or
// built from the data, and saved for the run's directory when asked.
static int open_synth(World *w, const WorldArgs *a) {
    char err[1024];
    Env env = {0};
    env_config_default(&env.cfg);
    if (a->rho >= 0) env.cfg.rho = a->rho;
    if (a->lambda >= 0) env.cfg.lambda = a->lambda;
    Vocab *v = NULL;
    if (a->vocab_path) {
        v = vocab_load(a->vocab_path, err, sizeof err);
        if (!v) fprintf(stderr, "error: %s%s\n", a->context ? a->context : "", err);
    } else if (a->vocab_data) {
        v = vocab_build(a->vocab_data, a->vocab_max);
    }
    if (!v) return -1;
    if (a->save_vocab && vocab_save(v, a->save_vocab, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        vocab_free(v);
        return -1;
    }
    return world_synth_open(w, &env, v, 1);
}

int world_open(World *w, const WorldArgs *a) {
    memset(w, 0, sizeof *w);
    const char *name = a->name ? a->name : "synth";
    if (!strcmp(name, "synth")) return open_synth(w, a);
    if (!strcmp(name, "dialogue")) return world_dialogue_open(w, a);
    fprintf(stderr, "error: --world %s: unknown world (synth, dialogue)\n", name);
    return -1;
}
