#!/usr/bin/env bash
# `make screenshots`: the real app in a real window under Xvfb, driven by its autopilot
# (`certlab gui --start --shot TAB=FILE`), on the bundled presets; PNGs go to screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/certlab}
OUT=screenshots
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs="$work/runs"
mkdir -p "$runs" "$work/xdg"
chmod 700 "$work/xdg"
export XDG_RUNTIME_DIR="$work/xdg"
xrun() { xvfb-run -a -s "-screen 0 1500x950x24" "$@"; }

echo "1/6 the default experiment, trained live"
xrun "$BIN" gui --runs-dir "$runs" --size 1400x900 --start --shot-after 30 \
  --shot overview="$OUT/overview.png" --shot tightness="$OUT/tightness.png" \
  --shot decision="$OUT/decision-2d.png"

echo "2/6 Lipschitz-regularised training, live (l_2 balls in the 2-D view)"
xrun "$BIN" gui presets/moons-lip.toml --runs-dir "$work/lip-runs" --size 1400x900 --start --shot-after 30 \
  --shot lipschitz="$OUT/lipschitz.png" --shot decision="$OUT/decision-l2.png"

echo "3/6 the ADMM of Pauli et al. (2021) with an enforced LipSDP bound, live (bounds and primal residual)"
xrun "$BIN" gui presets/moons-lip-admm.toml --runs-dir "$work/admm-runs" --size 1400x900 --start --shot-after 30 \
  --shot lipschitz="$OUT/lipschitz-admm.png"

echo "4/6 three more methods on the same data, headless"
for p in moons-pgd moons-ibp moons-crown-ibp; do
  "$BIN" run "presets/$p.toml" --out "$runs/$p" --device cpu >/dev/null 2>"$work/$p.log" \
    || { cat "$work/$p.log"; exit 1; }
done

echo "5/6 the comparison: every run overlaid, the run table"
xrun "$BIN" gui presets/moons-crown-ibp.toml --runs-dir "$runs" --size 1400x900 --overlay-all \
  --shot overview="$OUT/compare.png" --shot tightness="$OUT/compare-tightness.png" \
  --shot runs="$OUT/runs.png"
echo "6/6 a sweep (training eps x 3 seeds on two moons), its Pareto front and response curve"
"$BIN" sweep sweeps/moons-eps.toml --out "$runs/sweeps" --jobs 2 >/dev/null 2>"$work/sweep.log" \
  || { cat "$work/sweep.log"; exit 1; }
xrun "$BIN" gui presets/moons-crown-ibp.toml --runs-dir "$runs" --size 1400x900 \
  --sweep "$runs/sweeps/moons-eps" --shot sweep="$OUT/sweep.png"

echo "the Inspector: a Fashion-MNIST image and a 2-D point (gui --inspect RUN_DIR)"
cat > "$work/fm-inspect.toml" <<'TOML'
name = "fmnist-inspect"
seed = 0
device = "cpu"
[dataset]
kind = "fashion-mnist"
train_size = 12000
test_size = 500
[model]
arch = "mlp"
hidden = [100, 100]
[train]
method = "crown-ibp"
epochs = 4
batch_size = 128
eps = 0.05
warmup_epochs = 1
ramp_epochs = 2
final_beta = 0.0
final_kappa = 0.0
[optimizer]
kind = "adam"
lr = 0.001
[eval]
eps = [0.05]
bounds = ["ibp", "crown"]
pgd_steps = 10
robust_subset = 200
TOML
"$BIN" run "$work/fm-inspect.toml" --out "$work/fm-inspect" --device cpu >/dev/null
big() { xvfb-run -a -s "-screen 0 1500x1350x24" "$@"; }
big "$BIN" gui --runs-dir "$work/none" --size 1450x1300 --inspect "$work/fm-inspect" \
  --inspect-index 6 --inspect-eps 0.03 --inspect-layer 1 --shot inspector="$OUT/inspector-fmnist.png"
big "$BIN" gui --runs-dir "$work/none" --size 1450x1300 --inspect "$runs/moons-crown-ibp" \
  --inspect-index 5 --inspect-eps 0.08 --inspect-layer 1 --shot inspector="$OUT/inspector-2d.png"

echo "the l_inf vs l_2 heat map: PGD l_inf and PGD l_2 training on two moons, each attacked under both norms"
cross="$work/cross-runs"
for norm in linf l2; do
  cat > "$work/pgd-$norm.toml" <<TOML
name = "pgd-$norm"
seed = 1
device = "cpu"
[dataset]
kind = "moons"
[model]
hidden = [64, 64]
[train]
method = "pgd"
norm = "$norm"
eps = 0.1
epochs = 30
warmup_epochs = 3
ramp_epochs = 10
pgd_steps = 7
[optimizer]
lr = 0.005
[eval]
eps = [0.05, 0.1]
norm = "linf"
bounds = ["ibp", "crown"]
pgd_steps = 10
robust_subset = 400
cross_norm = true
cross_eps = [0.07, 0.14]
TOML
  "$BIN" run "$work/pgd-$norm.toml" --out "$cross/pgd-$norm" --device cpu >/dev/null 2>"$work/pgd-$norm.log" \
    || { cat "$work/pgd-$norm.log"; exit 1; }
done
xrun "$BIN" gui --runs-dir "$cross" --size 1400x900 --overlay-all --shot overview="$OUT/cross-norm.png"

echo "randomized smoothing in the 2-D view: a Gaussian-trained run's smoothed regions, a point's noise cloud and certified radius"
cat > "$work/gaussian.toml" <<'TOML'
name = "moons-gaussian"
seed = 1
device = "cpu"
[dataset]
kind = "moons"
[model]
hidden = [64, 64]
[train]
method = "gaussian"
noise_sigma = 0.15
epochs = 20
[optimizer]
lr = 0.005
[eval]
eps = [0.1]
norm = "l2"
bounds = ["ibp", "crown"]
[eval.smoothing]
sigma = [0.15]
n = 2000
points = 20
TOML
"$BIN" run "$work/gaussian.toml" --out "$work/gaussian" --device cpu >/dev/null 2>"$work/gaussian.log" \
  || { cat "$work/gaussian.log"; exit 1; }
big "$BIN" gui --runs-dir "$work/none" --size 1450x1300 --inspect "$work/gaussian" \
  --inspect-index 0 --inspect-eps 0.1 --inspect-smoothing --shot inspector="$OUT/smoothing-2d.png"
ls -l "$OUT"
