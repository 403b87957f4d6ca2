#!/usr/bin/env bash
# Issue 17's "must show" table: the IBP-based training methods on the Fashion-MNIST Small convnet
# at l_inf eps 0.1, with and without the IBP initialisation of Shi et al. (2021), three seeds.
#
#   scripts/small_conv_table.sh [OUT]      # OUT: where the sweep folder goes (default runs/sweeps)
#   env: CERTLAB (the binary, default target/release/certlab), TIMEOUT_S (verify's budget per
#        point, default 10; the cascade's batched stages count against it, so at 1 s branch
#        and bound hardly runs), TABLE_ONLY=1 (print the table from what is there; run nothing)
#
# 1. `certlab sweep sweeps/small-conv-methods.toml` (30 runs, one at a time, one torch thread;
#    finished runs are skipped, so the script resumes).
# 2. One `certlab verify --n 200 --json` per finished run, into RUN/verify-t<TIMEOUT_S>.json
#    (skipped when it is there), seeds 0 of every setting first, so a partial pass still covers every row.
#    Its cascade (clean, PGD, IBP, CROWN, alpha-CROWN, branch and bound; each bound stage on
#    every point still open, in that order, see src/eval/verify/mod.rs) gives, from one pass,
#    the points certified by IBP, by IBP or CROWN, by IBP, CROWN or alpha-CROWN, and verified.
#    Then (PURE_CROWN=1, the default) `certlab eval --methods crown --n 200` into
#    RUN/eval_crown.json: CROWN on its own, which the cascade's column (IBP or CROWN) includes.
# 3. The table: mean +- std (sample std, n - 1) over the seeds of each setting.
set -euo pipefail
cd "$(dirname "$0")/.."
CERTLAB=${CERTLAB:-target/release/certlab}
OUT=${1:-runs/sweeps}
TIMEOUT_S=${TIMEOUT_S:-10}
N=200
SWEEP=sweeps/small-conv-methods.toml
DIR="$OUT/small-conv-methods"

if [ "${TABLE_ONLY:-0}" != 1 ]; then
    "$CERTLAB" sweep "$SWEEP" --out "$OUT" --jobs 1 --threads 1
    for seed in 0 1 2; do
        for run in "$DIR"/p*-s"$seed"; do
            [ -s "$run/verify-t$TIMEOUT_S.json" ] && continue
            grep -q '"completed"' "$run/summary.json" 2>/dev/null || continue
            echo "verify $run (timeout $TIMEOUT_S s per point, $N points)" >&2
            start=$(date +%s.%N)
            OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$CERTLAB" verify "$run" --eps 0.1 --n "$N" \
                --timeout-s "$TIMEOUT_S" --json >"$run/verify-t$TIMEOUT_S.json.part"
            end=$(date +%s.%N)
            mv "$run/verify-t$TIMEOUT_S.json.part" "$run/verify-t$TIMEOUT_S.json"
            echo "$start $end" | awk '{printf "%.1f\n", $2 - $1}' >"$run/verify-t${TIMEOUT_S}_wall_s"
        done
    done
    # CROWN alone (not after IBP), for the column "CROWN only": `certlab eval` on the same points.
    if [ "${PURE_CROWN:-1}" = 1 ]; then
        for seed in 0 1 2; do
            for run in "$DIR"/p*-s"$seed"; do
                [ -s "$run/eval_crown.json" ] && continue
                grep -q '"completed"' "$run/summary.json" 2>/dev/null || continue
                echo "eval --methods crown $run" >&2
                OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$CERTLAB" eval "$run" --eps 0.1 \
                    --methods crown --n "$N" --json >"$run/eval_crown.json.part"
                mv "$run/eval_crown.json.part" "$run/eval_crown.json"
            done
        done
    fi
fi

python3 - "$DIR" "$TIMEOUT_S" <<'EOF'
import json, math, os, sys
from collections import OrderedDict

d, tag = sys.argv[1], "verify-t" + sys.argv[2]
points = [json.loads(l) for l in open(os.path.join(d, "points.jsonl"))]
groups = OrderedDict()
for p in points:
    o = p["overrides"]
    init = "ibp+shi" if o["train.init"] == "ibp" else "default"
    groups.setdefault((o["train.method"], init, o["train.shi_reg_weight"]), []).append(p)

def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "      -      "
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return f"{100*m:5.1f} ± {100*s:4.1f}"

def row_of(p):
    run = os.path.join(d, p["run"])
    r = {"train_s": None, "verify_s": None}
    try:
        recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        rec = recs[-1]
        r.update(clean=rec["clean_acc"], pgd=rec.get("pgd_acc"),
                 ibp_eval=rec.get("cert_acc", {}).get("ibp"))
        r["train_s"] = json.load(open(os.path.join(run, "summary.json")))["elapsed_s"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    try:
        r["crown_only"] = json.load(open(os.path.join(run, "eval_crown.json")))["cert_acc"]["crown"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        v = json.load(open(os.path.join(run, tag + ".json")))
    except (OSError, ValueError):
        return r
    n = len(v["points"])
    by = lambda *stages: sum(1 for q in v["points"]
                             if q["verdict"] == "verified" and q["decided_by"] in stages) / n
    r.update(ibp=by("ibp"), crown=by("ibp", "crown"),
             alpha=by("ibp", "crown", "alpha-crown"), verified=v["verified_acc"],
             not_falsified=1 - v["falsified"] / n,
             unknown=sum(q["verdict"] == "unknown" for q in v["points"]),
             timeout=sum(q["verdict"] == "timeout" for q in v["points"]),
             bab_verified=sum(q["decided_by"] == "bab" and q["verdict"] == "verified"
                              for q in v["points"]),
             bab_falsified=sum(q["decided_by"] == "bab" and q["verdict"] == "falsified"
                               for q in v["points"]),
             timeout_s=v["timeout_s"], n=n)
    # The run's own IBP (float32, on the same 200 points) against the cascade's (float64).
    r["ibp_diff"] = None if r["ibp_eval"] is None else round((r["ibp_eval"] - r["ibp"]) * n)
    try:
        r["verify_s"] = float(open(os.path.join(run, tag + "_wall_s")).read())
    except (OSError, ValueError):
        pass
    return r

cols = [("clean", "clean (10k)"), ("pgd", "PGD-20"), ("ibp", "IBP"), ("crown_only", "CROWN only"), ("crown", "CROWN"),
        ("alpha", "a-CROWN"), ("verified", "verified"), ("not_falsified", "upper")]
hdr = f"{'method':10} {'init':8} {'n':>2} " + " ".join(f"{h:>13}" for _, h in cols)
hdr += "  unk  t/o  bab+  bab-  train_s verify_s"
print(hdr)
timeout_s = set()
for (method, init, _), ps in groups.items():
    rows = [r for r in (row_of(p) for p in ps) if r is not None]
    vrows = [r for r in rows if "verified" in r]
    cells = " ".join(f"{stats([r.get(k) for r in rows]):>13}" for k, _ in cols)
    tot = lambda k: sum(r[k] for r in vrows) if vrows else "-"
    def mean(k):
        xs = [r[k] for r in rows if r.get(k) is not None]
        return f"{sum(xs) / len(xs):7.0f}" if xs else f"{'-':>7}"
    print(f"{method:10} {init:8} {len(vrows)}/{len(rows)} {cells} {tot('unknown'):>4} {tot('timeout'):>4}"
          f" {tot('bab_verified'):>5} {tot('bab_falsified'):>5}  {mean('train_s')} {mean('verify_s'):>8}")
    for r in vrows:
        timeout_s.add(r["timeout_s"])
        if r["ibp_diff"]:
            print(f"   note: the run's float32 IBP and the cascade's IBP differ by {r['ibp_diff']} points")
print()
print("n: runs verified / runs trained. clean: whole test set (10,000); the rest on the first 200")
print("test points. PGD-20: the run's evaluation (20 steps, 1 restart). CROWN only: `certlab eval")
print("--methods crown` (CROWN alone, CROWN intermediate bounds). IBP / CROWN / a-CROWN:")
print("certified by that bound or an earlier stage of the cascade (IBP, then CROWN, then")
print("alpha-CROWN on the points still open); verified: the cascade plus branch and bound; upper:")
print("1 - falsified / 200 (the true robust accuracy lies in [verified, upper]). unk / t/o: points")
print("left unknown / timed out, summed over the seeds; bab+ / bab-: points branch and bound")
print("verified / falsified. train_s / verify_s: mean wall seconds per run (one torch thread).")
print(f"verify timeout per point: {sorted(timeout_s)} s")

# What is beyond seed noise: Welch's t on the seeds (the 200 points are the same for every run,
# so the spread is the seeds' alone), two-sided 5%, for the IBP initialisation against the
# default within each method, and each method against IBP training with the same init.
T95 = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23]
def welch(a, b):
    a, b = [x for x in a if x is not None], [x for x in b if x is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return (ma - mb, math.inf if ma != mb else 0.0, True)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    return (ma - mb, t, abs(t) > T95[min(len(T95), max(1, int(df))) - 1])
rows_of = {k: [row_of(p) for p in ps] for k, ps in groups.items()}
rows_of = {k: [r for r in v if r is not None] for k, v in rows_of.items()}
pairs = []
keys = list(rows_of)
for k in keys:
    if k[1] == "ibp+shi":
        pairs += [(k, (k[0], "default", 0.0))]
for k in keys:
    if k[0] != "ibp":
        pairs += [(k, ("ibp", k[1], k[2]))]
print()
print("Differences beyond seed noise (Welch's t, two-sided 5%; everything else is within noise):")
found = False
for a, b in pairs:
    if a not in rows_of or b not in rows_of:
        continue
    for k, h in cols:
        w = welch([r.get(k) for r in rows_of[a]], [r.get(k) for r in rows_of[b]])
        if w and w[2]:
            found = True
            print(f"  {h:>11}: {a[0]} {a[1]} - {b[0]} {b[1]} = {100*w[0]:+5.1f} points (t = {w[1]:.1f})")
if not found:
    print("  none")
EOF
