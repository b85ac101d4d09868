// tests/fuzz/fuzz_episodes.c: the LoCoMo-format episodes loader (dataset_load, data/locomo.c), then
// the vocabulary built from what it loaded and the words-seen count every episode feeds the
// compression penalty. See fuzz_common.h for how harnesses are built and run.
#include "world_synth.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_episodes(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_scratch("episodes", data, size);
    if (!path) return 0;
    Dataset ds;
    char err[512];
    if (dataset_load(path, &ds, err, sizeof err) == 0) {
        Vocab *v = vocab_build(&ds, 512);
        if (v) {
            Env env = {.vocab = v};
            env_config_default(&env.cfg);
            for (int e = 0; e < ds.n; e++)
                for (int s = 1; s <= ds.episodes[e].n_sessions; s++)
                    (void)env_words_seen(&env, &ds.episodes[e], s);
            vocab_free(v);
        }
        dataset_free(&ds);
    } else if (!strstr(err, path)) {
        fprintf(stderr, "dataset_load error does not name the file: %s\n", err);
        abort();
    }
    fuzz_remove_scratch(path);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_episodes(data, size); }
#endif
