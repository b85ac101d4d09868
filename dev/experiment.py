#!/usr/bin/env python3
"""dev/experiment.py OUT [BASE]: summarise the runs of dev/experiment.sh.

Reads OUT/<arm>-s<seed>/eval.jsonl (the final table of each run, with each episode's F1) and
log.jsonl (one line per RL step) and prints markdown: the arms' test F1 per horizon, paired
per-episode differences with 95% t-intervals (against the warm start, insert-only and the BASE
arm, default the first arm in name order), the gap to the oracle closed, and the RL diagnostics
per stage. Draws OUT/f1_horizon.png (F1 vs horizon, 95% bars) and OUT/curves.png (reward, KL
and validation F1 per step) with gnuplot, started with an argument list (no shell), script and
data on its stdin.

Statistics: per episode, F1 is the mean over its questions; with several seeds an arm's
per-episode F1 is the mean over its seeds, and an interval is a paired t-interval over the test
episodes (it does not count the seed-to-seed spread beyond what the episodes show; the per-seed
values are printed beside it)."""
import glob
import json
import math
import os
import statistics
import subprocess
import sys


def t975(df):
    """t quantile 0.975 (stats.c stats_t975: table to 30, Cornish-Fisher beyond)."""
    table = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
             2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
             2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]
    if df < 1:
        return float("nan")
    if df <= 30:
        return table[df - 1]
    z = 1.959963984540054
    z2, v = z * z, float(df)
    g1 = (z2 + 1) * z / 4
    g2 = ((5 * z2 + 16) * z2 + 3) * z / 96
    g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384
    return z + g1 / v + g2 / v ** 2 + g3 / v ** 3


def mean_ci(xs):
    n = len(xs)
    m = statistics.fmean(xs)
    if n < 2:
        return m, float("nan"), float("nan")
    half = t975(n - 1) * statistics.stdev(xs) / math.sqrt(n)
    return m, m - half, m + half


def fmt_ci(xs):
    m, lo, hi = mean_ci(xs)
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (" *" if lo > 0 or hi < 0 else "")


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*-s*", "eval.jsonl"))):
        d = os.path.dirname(path)
        name = os.path.basename(d)
        arm, seed = name.rsplit("-s", 1)
        if not seed.isdigit():
            continue
        rows = [json.loads(l) for l in open(path) if l.strip()]
        log = os.path.join(d, "log.jsonl")
        diag = [json.loads(l) for l in open(log) if '"phase":"rl"' in l] if os.path.exists(log) else []
        ev = {(r["policy"], r["sessions"]): r for r in rows if not r.get("paired")}
        runs.setdefault(arm, []).append({"seed": int(seed), "ev": ev, "diag": diag})
    return runs


def horizons(runs):
    return sorted({h for rs in runs.values() for r in rs for (p, h) in r["ev"] if p == "trained"})


def ep_mean(rs, policy, h):
    """Per-episode F1 of `policy` at h, averaged over the runs rs (None if missing)."""
    vecs = [r["ev"][(policy, h)].get("ep_f1") for r in rs if (policy, h) in r["ev"]]
    vecs = [v for v in vecs if v]
    if not vecs or len({len(v) for v in vecs}) != 1:
        return None
    return [statistics.fmean(col) for col in zip(*vecs)]


def cat_f1(row, c):
    v = row.get("cat_f1", [])
    return v[c] if len(v) > c and v[c] >= 0 else float("nan")


def gnuplot(script, png):
    try:
        res = subprocess.run(["gnuplot"], input=script.encode(), capture_output=True, check=False)
    except OSError as e:
        print(f"<!-- no {png}: {e} -->")
        return
    if res.returncode != 0 or not res.stdout:
        print(f"<!-- no {png}: gnuplot failed: {res.stderr.decode()[:200]} -->")
        return
    with open(png + ".tmp", "wb") as f:
        f.write(res.stdout)
    os.replace(png + ".tmp", png)


def plot_horizons(out, runs, hs):
    arms = sorted(runs)
    ref = next(iter(runs.values()))[0]["ev"]
    series = []
    for name, policy, rs in [("warm start", "sft", next(iter(runs.values())))] + \
            [(a, "trained", runs[a]) for a in arms] + [("insert-only", "insert-only", next(iter(runs.values())))]:
        pts = []
        for i, h in enumerate(hs):
            v = ep_mean(rs, policy, h)
            if v is None:
                continue
            m, lo, hi = mean_ci(v)
            pts.append((h * (1 + 0.012 * (len(series) - len(arms) / 2)), m, lo, hi))
        series.append((name, pts))
    s = ("set terminal png size 1000,600\nset logscale x 2\nset xtics (8, 16, 32, 64)\n"
         "set xrange [6:%d]\nset xlabel 'sessions (horizon)'\nset ylabel 'test F1 (95%% CI over "
         "episodes)'\nset key top right\nset grid\nplot " % (max(hs) * 1.3))
    s += ", ".join(f"'-' with yerrorlines lw 2 title '{n}'" for n, p in series if p) + "\n"
    for n, p in series:
        if not p:
            continue
        s += "".join(f"{x} {m} {lo if lo == lo else m} {hi if hi == hi else m}\n" for x, m, lo, hi in p)
        s += "e\n"
    gnuplot(s, os.path.join(out, "f1_horizon.png"))


def plot_curves(out, runs):
    arms = sorted(runs)
    panels = [("reward_mean", "train reward (mean over G)"), ("kl", "KL to the stage reference"),
              ("val_f1", "validation F1 (greedy)")]
    s = "set terminal png size 1000,900\nset multiplot layout 3,1\nset grid\nset key outside right\n"
    for key, label in panels:
        s += f"set ylabel '{label}'\nset xlabel 'RL step'\nplot "
        data = []
        for a in arms:
            steps = {}
            for r in runs[a]:
                for i, x in enumerate(r["diag"]):
                    if key in x and x[key] is not None:
                        steps.setdefault(i + 1, []).append(x[key])
            if steps:
                data.append((a, sorted((k, statistics.fmean(v)) for k, v in steps.items())))
        if not data:
            s += "0 notitle\n"
            continue
        s += ", ".join(f"'-' with linespoints title '{a}'" for a, _ in data) + "\n"
        for _, pts in data:
            s += "".join(f"{k} {v}\n" for k, v in pts) + "e\n"
    s += "unset multiplot\n"
    gnuplot(s, os.path.join(out, "curves.png"))


def main(out, base=None):
    runs = load(out)
    if not runs:
        sys.exit(f"experiment.py: no runs with eval.jsonl under {out}")
    arms = sorted(runs)
    base = base or arms[0]
    hs = horizons(runs)
    first = runs[arms[0]][0]["ev"]
    print(f"Runs in `{out}`: {len(arms)} arms, seeds "
          + ", ".join(f"{a}: {' '.join(str(r['seed']) for r in runs[a])}" for a in arms) + ".\n")
    print("References (the shared warm start and the baselines, same test episodes):\n")
    print("| policy | episodes | " + " | ".join(f"F1@{h}" for h in hs) + " |")
    print("|---|---|" + "---|" * len(hs))
    for p in ("insert-only", "sft", "oracle"):
        if (p, hs[0]) in first:
            print(f"| {'warm start' if p == 'sft' else p} | {first[(p, hs[0])]['episodes']} | "
                  + " | ".join(f"{first[(p, h)]['f1']:.3f}" for h in hs) + " |")
    hl = hs[-1]
    print(f"\nTrained policies (greedy; F1 is the mean over seeds, per-seed values in brackets; "
          f"temporal = F1 of the temporal questions; ops at {hl} sessions, mean over seeds):\n")
    print("| arm | " + " | ".join(f"F1@{h}" for h in hs) + f" | M-Fail@{hl} | temporal F1@{hl} | "
          f"insert/update/delete/noop@{hl} | invalid@{hl} | gap closed@{hl} |")
    print("|---|" + "---|" * (len(hs) + 5))
    for a in arms:
        rs = runs[a]
        cells = []
        for h in hs:
            v = [r["ev"][("trained", h)]["f1"] for r in rs if ("trained", h) in r["ev"]]
            cells.append(f"{statistics.fmean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})")
        last = [r["ev"][("trained", hl)] for r in rs if ("trained", hl) in r["ev"]]
        sft = [r["ev"][("sft", hl)] for r in rs if ("sft", hl) in r["ev"]]
        orc = [r["ev"][("oracle", hl)] for r in rs if ("oracle", hl) in r["ev"]]
        gap = statistics.fmean((t["f1"] - s["f1"]) / max(1e-9, o["f1"] - s["f1"])
                               for t, s, o in zip(last, sft, orc))
        ops = "/".join(str(round(statistics.fmean(x[k] for x in last)))
                       for k in ("ops_insert", "ops_update", "ops_delete", "ops_noop"))
        print(f"| {a} | " + " | ".join(cells)
              + f" | {statistics.fmean(x['mfail'] for x in last):.3f}"
              + f" | {statistics.fmean(cat_f1(x, 2) for x in last):.3f} | {ops}"
              + f" | {statistics.fmean(x['ops_invalid'] for x in last):.0f} | {100 * gap:.1f}% |")
    sft_row = [first[("sft", hl)]]
    print(f"| warm start | " + " | ".join(f"{first[('sft', h)]['f1']:.3f}" for h in hs)
          + f" | {sft_row[0]['mfail']:.3f} | {cat_f1(sft_row[0], 2):.3f} | "
          + "/".join(str(sft_row[0][k]) for k in ("ops_insert", "ops_update", "ops_delete", "ops_noop"))
          + f" | {sft_row[0]['ops_invalid']} | |")

    print("\nPaired per-episode F1 differences, mean [95% t-interval] over the test episodes "
          "(* = the interval excludes zero):\n")
    print("| comparison | " + " | ".join(f"dF1@{h}" for h in hs) + " |")
    print("|---|" + "---|" * len(hs))
    for a in arms:
        for ref_name, ref_policy, ref_runs in (("warm start", "sft", runs[a]),
                                               ("insert-only", "insert-only", runs[a])):
            cells = []
            for h in hs:
                x, y = ep_mean(runs[a], "trained", h), ep_mean(ref_runs, ref_policy, h)
                cells.append(fmt_ci([p - q for p, q in zip(x, y)]) if x and y else "-")
            print(f"| {a} - {ref_name} | " + " | ".join(cells) + " |")
    for a in arms:
        if a == base:
            continue
        shared = sorted({r["seed"] for r in runs[a]} & {r["seed"] for r in runs[base]})
        ra = [r for r in runs[a] if r["seed"] in shared]
        rb = [r for r in runs[base] if r["seed"] in shared]
        cells, seed_cells = [], []
        for h in hs:
            x, y = ep_mean(ra, "trained", h), ep_mean(rb, "trained", h)
            cells.append(fmt_ci([p - q for p, q in zip(x, y)]) if x and y and shared else "-")
            # the variation over RL runs: per-seed mean F1 paired by seed (t with seeds - 1 df)
            fa = {r["seed"]: r["ev"][("trained", h)]["f1"] for r in ra if ("trained", h) in r["ev"]}
            fb = {r["seed"]: r["ev"][("trained", h)]["f1"] for r in rb if ("trained", h) in r["ev"]}
            d = [fa[k] - fb[k] for k in shared if k in fa and k in fb]
            seed_cells.append(fmt_ci(d) if len(d) > 1 else "-")
        print(f"| {a} - {base} (seeds {' '.join(map(str, shared))}) | " + " | ".join(cells) + " |")
        print(f"| {a} - {base}, over seeds | " + " | ".join(seed_cells) + " |")

    print("\nRL diagnostics, means over the steps of each stage and over seeds (zero-std = share "
          "of groups without reward variance; credit = Pearson(advantage, -true mistakes); kl and "
          "clip of the PPO epochs; tokens = rollout + rerollout tokens per step):\n")
    print("| arm | stage (H) | steps | reward | zero-std global | zero-std local | credit global | "
          "credit local | credit per unit global / local | nonzero adv | kl mean / last | clip | ins/upd/noop per step | invalid "
          "| tokens/step | step_s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def m(xs, k):
        v = [x[k] for x in xs if x.get(k) is not None]
        return statistics.fmean(v) if v else float("nan")

    for a in arms:
        stages = sorted({x["stage"] for r in runs[a] for x in r["diag"]})
        for st in stages:
            xs = [x for r in runs[a] for x in r["diag"] if x["stage"] == st]
            lasts = [[x for x in r["diag"] if x["stage"] == st][-1] for r in runs[a]
                     if any(x["stage"] == st for x in r["diag"])]
            tok = statistics.fmean(x.get("rollout_tokens", 0) + x.get("rerollout_tokens", 0) for x in xs)
            print(f"| {a} | {st} ({xs[0]['sessions']}) | {len(xs) // len(runs[a])} | "
                  f"{m(xs, 'reward_mean'):.3f} | {m(xs, 'frac_zero_std_global'):.2f} | "
                  f"{m(xs, 'frac_zero_std_local'):.2f} | {m(xs, 'credit_global'):.3f} | "
                  f"{m(xs, 'credit_local'):.3f} | {m(xs, 'credit_global_unit'):.2f} / "
                  f"{m(xs, 'credit_local_unit'):.2f} | {m(xs, 'frac_nonzero_adv'):.2f} | "
                  f"{m(xs, 'kl'):.4f} / {m(lasts, 'kl'):.4f} | {m(xs, 'clip_frac'):.3f} | "
                  f"{m(xs, 'ops_insert'):.0f}/{m(xs, 'ops_update'):.0f}/{m(xs, 'ops_noop'):.0f} | "
                  f"{m(xs, 'ops_invalid'):.1f} | {tok:.0f} | {m(xs, 'step_s'):.1f} |")
    plot_horizons(out, runs, hs)
    plot_curves(out, runs)
    print(f"\nPlots: `{out}/f1_horizon.png` (test F1 per horizon, 95% bars over episodes), "
          f"`{out}/curves.png` (per RL step, mean over seeds).")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/experiment",
         sys.argv[2] if len(sys.argv) > 2 else None)
