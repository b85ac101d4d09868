// tests/fuzz/fuzz_state.c: the training-state loader (train_state_load in model.c) for the
// small GPT-2 config the seed corpus was written with. See fuzz_common.h.
#include <math.h>

#include "model.h"
#include "tests/fuzz/fuzz_common.h"

// The config of the seeds (tests/fuzz/corpus/state/); a header for another config is rejected.
static const ModelConfig FUZZ_STATE_CFG = {.V = 17, .maxT = 10, .L = 2, .NH = 2, .C = 8};

int fuzz_state(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_scratch("state", data, size);
    if (!path) return 0;
    TrainState st;
    char err[512];
    if (train_state_load(path, &FUZZ_STATE_CFG, &st, err, sizeof err) == 0) {
        size_t n = config_num_params(&FUZZ_STATE_CFG);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(st.mom[i]) || !(st.vel[i] >= 0.0f) || !isfinite(st.vel[i])) abort();
        if (st.step < 0) abort();
        free(st.mom), free(st.vel), free(st.blob);
    } else if (st.mom || st.vel || st.blob || !strstr(err, path)) {
        fprintf(stderr, "train_state_load failure leaks or names no file: %s\n", err);
        abort();
    }
    fuzz_remove_scratch(path);
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_state(data, size); }
#endif
