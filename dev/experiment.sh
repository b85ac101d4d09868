#!/usr/bin/env bash
# dev/experiment.sh: the LoGo-vs-GRPO experiment of issue 4.
#
# Arms (same data, same warm start, same number of RL steps each):
#   logo   LoGo-GRPO with the curriculum 8 -> 16 -> 32
#   grpo   plain GRPO (local branch off) with the curriculum
#   direct LoGo-GRPO trained directly at 32 sessions (all steps at the last horizon)
# under both reward modes (per-session evidence attribution, plain trajectory reward) and
# SEEDS seeds each. Every run evaluates its final policy on the test episodes at 8, 16 and 32
# sessions; dev/experiment.py turns the runs into docs/experiment.md (mean ± std over seeds).
#
#   dev/experiment.sh                      # defaults below; STEPS, SEEDS, OUT override
#   STEPS=4,2,1 SEEDS="1 2 3" dev/experiment.sh
#   TRAIN=/path/to/train_cpu dev/experiment.sh   # a fixed binary (no rebuild)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-6,3,2}
SEEDS=${SEEDS:-1 2 3}
OUT=${OUT:-out/experiment}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
if [ -z "${TRAIN:-}" ]; then
    make -s train_cpu gen_episodes
    TRAIN=./train_cpu
fi
start=$(date +%s)

# One warm start shared by every arm, so the arms differ only in the RL algorithm.
# A run killed earlier (its directory has run.args) is resumed, not started over.
if [ -f "$OUT/sft/run.args" ] && [ ! -f "$OUT/sft/eval.md" ]; then
    "$TRAIN" --resume "$OUT/sft" -q | tail -n 12
elif [ ! -f "$OUT/sft/sft.bin" ]; then
    "$TRAIN" --algo sft -o "$OUT/sft" --seed 1 -q $EXTRA | tail -n 12
fi

for reward in session trajectory; do
    for arm in logo grpo direct; do
        for seed in $SEEDS; do
            dir="$OUT/$reward-$arm-s$seed"
            [ -f "$dir/eval.jsonl" ] && continue
            case $arm in
                logo) flags="--algo logo" ;;
                grpo) flags="--algo grpo" ;;
                direct) flags="--algo logo --direct" ;;
            esac
            t0=$(date +%s)
            if [ -f "$dir/run.args" ]; then
                run=("$TRAIN" --resume "$dir" -q)
            else
                run=("$TRAIN" --init "$OUT/sft/sft.bin" $flags --reward "$reward" --seed "$seed"
                     --stage-steps "$STEPS" -o "$dir" -q $EXTRA)
            fi
            "${run[@]}" > "$dir.log" 2>&1 || { echo "run $dir failed: see $dir.log"; exit 1; }
            echo "$dir: $(( $(date +%s) - t0 ))s"
        done
    done
done
echo "experiment wall time: $(( $(date +%s) - start ))s"
python3 dev/experiment.py "$OUT" > docs/experiment.md
cat docs/experiment.md
