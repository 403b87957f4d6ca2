#!/usr/bin/env bash
# Randomized smoothing against Lipschitz certificates on Fashion-MNIST (issue "the rest of
# Araujo et al.'s work", must show): runs sweeps/smooth-{gaussian,sll,lip}.toml (three seeds each;
# finished points are skipped, so it resumes) and prints certified accuracy at l_2 radii
# 0.25 / 0.5 / 1.0, mean ± sample std over the seeds, from each run's reported test record.
#   scripts/smoothing_table.sh [OUT]     (OUT: where the sweep folders go, default runs/sweeps)
#   env: CERTLAB (default target/release/certlab), JOBS (default 2), TABLE_ONLY=1
set -euo pipefail
cd "$(dirname "$0")/.."
CERTLAB=${CERTLAB:-target/release/certlab}
OUT=${1:-runs/sweeps}
if [ "${TABLE_ONLY:-0}" != 1 ]; then
    for s in gaussian sll lip; do
        "$CERTLAB" sweep "sweeps/smooth-$s.toml" --out "$OUT" --jobs "${JOBS:-2}"
    done
fi
python3 - "$OUT" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
def reported(run):
    recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    test = [r for r in recs if r.get("split") == "test"]
    best = [r for r in test if r.get("model") == "best"]
    return (best or test)[-1]
def at(rec, key):
    """Certified accuracy per eval eps under `key` (cert_acc), {eps: acc}."""
    got = {rec["eval_eps"]: rec["cert_acc"].get(key)}
    for e in rec.get("more_eps", []):
        got[e["eps"]] = e["cert_acc"].get(key)
    return got
def ms(v):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
rows = []
for sweep, key, label in [("smooth-gaussian", "smoothing", "Gaussian smoothing"),
                          ("smooth-sll", "lipschitz", "SLL, Lipschitz certificate"),
                          ("smooth-lip", "lipschitz", "Lipschitz-trained MLP, certificate")]:
    groups = {}
    for run in sorted(glob.glob(os.path.join(out, sweep, "p*-s*"))):
        summary = os.path.join(run, "summary.json")
        if not os.path.exists(summary) or json.load(open(summary)).get("outcome") != "completed":
            continue
        rec = reported(run)
        cfg = open(os.path.join(run, "config.toml")).read()
        sigma = [l.split("=")[1].strip() for l in cfg.splitlines() if l.startswith("noise_sigma")]
        name = f"{label} sigma {sigma[0]}" if key == "smoothing" else label
        groups.setdefault(name, []).append((rec["clean_acc"], at(rec, key)))
    for name, runs in groups.items():
        cells = [ms([r[0] for r in runs])]
        for eps in (0.25, 0.5, 1.0):
            cells.append(ms([r[1].get(eps) for r in runs]))
        rows.append(f"| {name} ({len(runs)} seeds) | " + " | ".join(cells) + " |")
print("| model | clean | r = 0.25 | r = 0.5 | r = 1.0 |")
print("|---|---|---|---|---|")
print("\n".join(rows))
PY
