#!/usr/bin/env bash
# dev/grpo_faults.sh: injects each wiring fault of issue 8 into grpo.c (or rollout.c), one at a
# time, and shows which check of tests/test_grpo_step.c fails (every fault must fail it), then
# restores the file.
# Run from the repository root with grpo.c and rollout.c committed:  dev/grpo_faults.sh
set -u
cd "$(dirname "$0")/.."
git diff --quiet -- grpo.c rollout.c ||
    { echo "grpo.c or rollout.c has uncommitted changes: commit or stash them first"; exit 2; }
trap 'git checkout -q -- grpo.c rollout.c' EXIT
names=("local turns ignoring omega" "local weight 0" "no KL reference passed"
       "every local advantage from lane 0" "global advantage ignoring the session"
       "rerolls from the snapshot after t" "PPO scale 1/m -> 1"
       "lookahead reruns stopping at their own session"
       "lookahead reruns scored after their own session"
       "lookahead sessions recorded"
       "lookahead reruns each on its own stream" "the shared stream from the rerun session on"
       "splice reruns scored on their own banks" "splice without the source's later sessions"
       "splice reruns looking ahead")
files=(grpo.c grpo.c grpo.c grpo.c grpo.c grpo.c grpo.c grpo.c grpo.c rollout.c grpo.c rollout.c
       grpo.c grpo.c grpo.c)
from=('pt->weight = ok ? c->omega : 0.0f;' 'pt->weight = ok ? c->omega : 0.0f;'
      'const float *ref = ref_lp ? ref_lp + pt->offset + pt->prompt_len : NULL;'
      'pt->advantage = ok ? ladv[pt->lane] : 0.0f;'
      'gadv[(size_t)pt->lane * H + (size_t)(pt->session - 1)]'
      'lane_snapshot(&global[src[g]], t - 1)' 'float scale = 1.0f / (float)m;'
      'last = t + ahead < H ? t + ahead : H;' 'splice ? H : local[g * K].last_session'
      '(!l->record_through || st.session <= l->record_through)'
      'if (ahead > 0) l->ahead_stream = GRPO_AHEAD_STREAM0 + g;'
      'l->ahead_stream >= 0 && st.session > l->first_session'
      'rk[k] = (float)(splice ? splice_reward' '&tmp[1], &source->bank, &rerun->bank'
      'c->local_reward == LOCAL_REWARD_RERUN ? c->lookahead : 0')
to=('pt->weight = ok ? 1.0f : 0.0f;' 'pt->weight = 0.0f;' 'const float *ref = NULL;'
    'pt->advantage = ok ? ladv[0] : 0.0f;' 'gadv[(size_t)pt->lane * H]'
    'lane_snapshot(&global[src[g]], t)' 'float scale = 1.0f;'
    'last = t;' 'splice ? H : local[g * K].first_session' '1'
    '(void)0;' 'l->ahead_stream >= 0'
    'rk[k] = (float)(0 ? splice_reward' '&tmp[1], &tmp[1], &rerun->bank'
    'c->local_reward == LOCAL_REWARD_RERUN ? c->lookahead : c->lookahead')
caught=0
for i in "${!names[@]}"; do
    git checkout -q -- grpo.c rollout.c
    FILE="${files[$i]}" FROM="${from[$i]}" TO="${to[$i]}" /usr/bin/python3 -c '
import os, sys
f, a, b = os.environ["FILE"], os.environ["FROM"], os.environ["TO"]
s = open(f).read()
if s.count(a) != 1: sys.exit(f + ": the fault site is gone: " + a)
open(f, "w").write(s.replace(a, b))' || exit 2
    make -s build/rel/tests/test_grpo_step > /dev/null || exit 2
    out=$(build/rel/tests/test_grpo_step 2>&1)
    echo "== fault: ${names[$i]}"
    printf '%s\n' "$out" | grep '^FAIL' | head -n 2
    printf '%s\n' "$out" | tail -n 1
    printf '%s\n' "$out" | grep -q '^FAIL' && caught=$((caught + 1))
done
git checkout -q -- grpo.c rollout.c
make -s build/rel/tests/test_grpo_step > /dev/null
echo "faults caught: $caught of ${#names[@]}"
[ "$caught" -eq "${#names[@]}" ]
