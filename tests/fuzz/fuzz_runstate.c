// tests/fuzz/fuzz_runstate.c: the resume blob decoder (runstate_decode in runstate.c), the part
// of DIR/state.bin that train_state_load hands over unread. nparams is fixed at the seeds'
// value; the first input byte picks a different one now and then, so length checks that scale
// with it are exercised too. See fuzz_common.h.
#include <math.h>

#include "runstate.h"
#include "tests/fuzz/fuzz_common.h"

int fuzz_runstate(const uint8_t *data, size_t size) {
    size_t nparams = 5;
    if (size > 0 && data[0] == 0xff) nparams = 0;
    RunState st;
    memset(&st, 0, sizeof st);
    char err[512];
    err[0] = 0;
    if (runstate_decode(data, size, nparams, &st, err, sizeof err) == 0) {
        // what a decoded state promises the trainer: a known phase, sane counts, finite values
        if (st.phase < RUN_SFT || st.phase > RUN_DONE || st.n_reward < 0 || st.n_val < 0)
            abort();
        for (int c = 0; c < RUN_NUM_COPIES; c++)
            for (size_t i = 0; st.copy[c] && i < nparams; i++)
                if (!isfinite(st.copy[c][i])) abort();
        runstate_free(&st);
    } else if (!err[0]) {
        fprintf(stderr, "runstate_decode failed without a reason\n");
        abort();
    }
    return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_runstate(data, size); }
#endif
