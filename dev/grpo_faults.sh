#!/usr/bin/env bash
# dev/grpo_faults.sh: injects each wiring fault of issue 8 into grpo.c, one at a time, and shows
# which check of tests/test_grpo_step.c fails (every fault must fail it), then restores grpo.c.
# Run from the repository root with grpo.c committed:  dev/grpo_faults.sh
set -u
cd "$(dirname "$0")/.."
git diff --quiet -- grpo.c || { echo "grpo.c has uncommitted changes: commit or stash them first"; exit 2; }
trap 'git checkout -q -- grpo.c' EXIT
names=("local turns ignoring omega" "local weight 0" "no KL reference passed"
       "every local advantage from lane 0" "global advantage ignoring the session"
       "rerolls from the snapshot after t" "PPO scale 1/m -> 1")
from=('pt->weight = ok ? c->omega : 0.0f;' 'pt->weight = ok ? c->omega : 0.0f;'
      'const float *ref = ref_lp ? ref_lp + pt->offset + pt->prompt_len : NULL;'
      'pt->advantage = ok ? ladv[pt->lane] : 0.0f;'
      'gadv[(size_t)pt->lane * H + (size_t)(pt->session - 1)]'
      'lane_snapshot(&global[src[g]], t - 1)' 'float scale = 1.0f / (float)m;')
to=('pt->weight = ok ? 1.0f : 0.0f;' 'pt->weight = 0.0f;' 'const float *ref = NULL;'
    'pt->advantage = ok ? ladv[0] : 0.0f;' 'gadv[(size_t)pt->lane * H]'
    'lane_snapshot(&global[src[g]], t)' 'float scale = 1.0f;')
caught=0
for i in "${!names[@]}"; do
    git checkout -q -- grpo.c
    FROM="${from[$i]}" TO="${to[$i]}" /usr/bin/python3 -c '
import os, sys
s = open("grpo.c").read(); a, b = os.environ["FROM"], os.environ["TO"]
if s.count(a) != 1: sys.exit("grpo.c: the fault site is gone: " + a)
open("grpo.c", "w").write(s.replace(a, b))' || exit 2
    make -s build/rel/tests/test_grpo_step > /dev/null || exit 2
    out=$(build/rel/tests/test_grpo_step 2>&1)
    echo "== fault: ${names[$i]}"
    printf '%s\n' "$out" | grep '^FAIL' | head -n 2
    printf '%s\n' "$out" | tail -n 1
    printf '%s\n' "$out" | grep -q '^FAIL' && caught=$((caught + 1))
done
git checkout -q -- grpo.c
make -s build/rel/tests/test_grpo_step > /dev/null
echo "faults caught: $caught of ${#names[@]}"
[ "$caught" -eq "${#names[@]}" ]
