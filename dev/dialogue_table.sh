#!/usr/bin/env bash
# dev/dialogue_table.sh: the issue-10 measurements on real dialogue (README "Real dialogue"):
# none, store-turns, insert-only, the untrained SmolLM2 and a short LoGo-GRPO run as
# extractor/manager, each evaluated at 4 and 8 sessions in one pass, SmolLM2 as the frozen
# answerer. Every command runs under /usr/bin/time -v; results land in OUT/NAME.out / .err.
#
#   make smollm2 train_cpu
#   FILE=../shared/data/locomo-trainval.json OUT=out/d10 dev/dialogue_table.sh
#
# The RL run trains on every conversation of FILE but the validation one (VAL_ID, default
# conv-44, the paper's), which serves as its validation and test episode; STEPS RL steps at
# HORIZON sessions (defaults 1 and 1: one step took 28 minutes on 2 busy cores). --max-batch 4
# keeps the run under 20 GB (8 reached 22.8 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${FILE:-../shared/data/locomo-trainval.json}
OUT=${OUT:-out/d10}
VAL_ID=${VAL_ID:-conv-44}
STEPS=${STEPS:-1}
HORIZON=${HORIZON:-1}
INIT=${INIT:-out/smollm2.bin}
SESSIONS=${SESSIONS:-4,8}
mkdir -p "$OUT"
run() {  # NAME ARGS...: one timed run, skipped if NAME.out already holds its result
    local name=$1; shift
    if grep -q ' episodes=' "$OUT/$name.out" 2>/dev/null; then return 0; fi
    /usr/bin/time -v ./train_cpu "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
}
for p in none store-turns insert-only; do
    run "$p" --world dialogue --init "$INIT" --eval "$p" -d "$FILE" --sessions "$SESSIONS"
done
run base --world dialogue --init "$INIT" --eval "$INIT" -d "$FILE" --sessions "$SESSIONS"
# the train / validation split of FILE (the loader takes any path; LoCoMo stays out of the repo)
/usr/bin/python3 - "$FILE" "$OUT" "$VAL_ID" <<'PY'
import json, sys
src, out, val = sys.argv[1:4]
d = json.load(open(src))
json.dump([c for c in d if c.get("sample_id") != val], open(out + "/train.json", "w"))
json.dump([c for c in d if c.get("sample_id") == val], open(out + "/val.json", "w"))
PY
if [ ! -f "$OUT/rl/final.bin" ]; then
    /usr/bin/time -v ./train_cpu --world dialogue --init "$INIT" --train "$OUT/train.json" \
        --val "$OUT/val.json" --test "$OUT/val.json" --sft-steps 0 --direct \
        --horizons "$HORIZON,$HORIZON,$HORIZON" --stage-steps "0,0,$STEPS" --G 4 --K 2 \
        --max-batch 4 --val-episodes 1 --eval-every 100 --test-episodes 1 \
        --test-sessions "$HORIZON" -o "$OUT/rl" > "$OUT/rl.out" 2> "$OUT/rl.err"
fi
run trained --world dialogue --init "$INIT" --eval "$OUT/rl/final.bin" -d "$FILE" \
    --sessions "$SESSIONS"
grep -h ' episodes=\| parseable=' "$OUT"/{none,store-turns,insert-only,base,trained}.out
