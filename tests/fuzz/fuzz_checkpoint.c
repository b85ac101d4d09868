// tests/fuzz/fuzz_checkpoint.c: the model checkpoint loader (checkpoint_load in model.c). What
// loads must have a valid config and only finite weights. See fuzz_common.h.
#include <math.h>

#include "model.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_checkpoint(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_scratch("checkpoint", data, size);
    if (!path) return 0;
    ModelConfig cfg;
    float *p = NULL;
    char err[512];
    if (checkpoint_load(path, &cfg, &p, err, sizeof err) == 0) {
        if (model_config_check(&cfg)) abort();  // the loader let a bad config through
        size_t n = config_num_params(&cfg);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(p[i])) abort();  // ... or a non-finite weight
        free(p);
    } else if (p || !strstr(err, path)) {
        fprintf(stderr, "checkpoint_load failure without a message naming the file: %s\n", err);
        abort();
    }
    fuzz_remove_scratch(path);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_checkpoint(data, size); }
#endif
