// world_dialogue.h: the real-dialogue world (world_dialogue.c) behind the World interface.
#ifndef MEMR2_WORLD_DIALOGUE_H
#define MEMR2_WORLD_DIALOGUE_H

#include "world.h"

// Opens the world for a checkpoint (a->checkpoint; its tokenizer beside it), the frozen
// answerer (a->answerer_path or the same checkpoint), bank slots sized from a->vocab_data.
// Returns 0, or -1 with a message on stderr.
int world_dialogue_open(World *w, const WorldArgs *a);

#endif
