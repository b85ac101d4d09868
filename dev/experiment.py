#!/usr/bin/env python3
"""dev/experiment.py OUT: summarise the runs of dev/experiment.sh as a markdown table.

Reads OUT/<reward>-<arm>-s<seed>/eval.jsonl (the trained policy's rows) and log.jsonl (RL
diagnostics), and prints mean ± std over seeds per (reward mode, arm, horizon)."""
import glob
import json
import os
import statistics
import sys


def mean_std(xs):
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    s = statistics.pstdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}"


def main(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*-s*", "eval.jsonl"))):
        name = os.path.basename(os.path.dirname(path))
        reward, arm, seed = name.rsplit("-", 2)
        rows = [json.loads(l) for l in open(path) if l.strip()]
        diag = [json.loads(l) for l in open(os.path.join(os.path.dirname(path), "log.jsonl"))
                if '"phase":"rl"' in l]
        runs.setdefault((reward, arm), []).append((seed, rows, diag))
    sft = os.path.join(out, "sft", "eval.jsonl")
    print("# LoGo-GRPO vs GRPO, curriculum vs direct-32\n")
    print(f"Runs in `{out}`; mean ± std over seeds of the trained policy on the test episodes "
          "(greedy). `mfail` = share of gold evidence never written; ops are totals over the "
          "test episodes.\n")
    if os.path.exists(sft):
        print("Warm start (shared by every arm) and references:\n")
        print("| policy | sessions | f1 | bleu1 | em | mfail | mem_words |")
        print("|---|---|---|---|---|---|---|")
        for l in open(sft):
            r = json.loads(l)
            if r["policy"] in ("none", "sft", "trained", "oracle", "insert-only"):
                name = "warm start (sft)" if r["policy"] in ("sft", "trained") else r["policy"]
                if r["policy"] == "trained":
                    continue
                print(f"| {name} | {r['sessions']} | {r['f1']:.3f} | {r['bleu1']:.3f} | "
                      f"{r['em']:.3f} | {r['mfail']:.3f} | {r['mem_words']:.1f} |")
        print()
    print("| reward | arm | sessions | seeds | f1 | bleu1 | em | mfail | mem_words | "
          "insert/update/delete/noop |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (reward, arm), rs in sorted(runs.items()):
        horizons = sorted({r["sessions"] for _, rows, _ in rs for r in rows})
        for h in horizons:
            sel = [r for _, rows, _ in rs for r in rows if r["policy"] == "trained" and r["sessions"] == h]
            ops = "/".join(str(round(statistics.fmean([r[k] for r in sel]))) for k in
                           ("ops_insert", "ops_update", "ops_delete", "ops_noop")) if sel else "-"
            print(f"| {reward} | {arm} | {h} | {len(sel)} | "
                  + " | ".join(mean_std([r[k] for r in sel]) for k in ("f1", "bleu1", "em", "mfail", "mem_words"))
                  + f" | {ops} |")
    print("\nRL diagnostics (means over all RL steps and seeds):\n")
    print("| reward | arm | reward_mean | reward_std | frac_reward_zero_std | adv_global_std | "
          "local groups/step | local zero-std share | adv_local_std | kl | clip_frac | step_s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (reward, arm), rs in sorted(runs.items()):
        d = [x for _, _, diag in rs for x in diag]
        if not d:
            continue
        def m(k):
            return statistics.fmean([x.get(k, 0.0) for x in d])
        lg = m("local_groups")
        lz = statistics.fmean([x["local_zero_std"] / x["local_groups"] for x in d
                               if x.get("local_groups")]) if any(x.get("local_groups") for x in d) else 0
        print(f"| {reward} | {arm} | {m('reward_mean'):.3f} | {m('reward_std'):.3f} | "
              f"{m('frac_reward_zero_std'):.3f} | {m('adv_global_std'):.3f} | {lg:.1f} | {lz:.3f} | "
              f"{m('adv_local_std'):.3f} | {m('kl'):.5f} | {m('clip_frac'):.3f} | {m('step_s'):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/experiment")
