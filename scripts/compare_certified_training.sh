#!/usr/bin/env bash
# A short comparison of the certified-training methods on Fashion-MNIST, MLP 2x100, l_inf 0.1:
# IBP, CROWN-IBP, SABR, MTL-IBP, CC-IBP, each with the default initialisation and with the IBP
# initialisation plus the warm-up regularizers of Shi et al. (2021, weight 0.5). 12,000 training
# and 1,000 test examples, 3 epochs (eps ramped over 2), one seed; one run at a time.
# Usage: scripts/compare_certified_training.sh [CERTLAB_BINARY] [OUT_DIR]
set -euo pipefail
bin=${1:-target/release/certlab}
out=${2:-runs/compare-certified}
mkdir -p "$out"
for method in ibp crown-ibp sabr mtl-ibp cc-ibp; do
  for init in default ibp; do
    weight=0.0
    [ "$init" = ibp ] && weight=0.5
    name="$method-$init"
    cat > "$out/$name.toml" <<TOML
name = "$name"
seed = 0
[dataset]
kind = "fashion-mnist"
train_size = 12000
test_size = 1000
val_size = 0
[model]
arch = "mlp"
hidden = [100, 100]
[train]
method = "$method"
epochs = 3
batch_size = 128
eps = 0.1
ramp_epochs = 2
final_beta = 0.0
final_kappa = 0.0
sabr_lambda = 0.4
mtl_alpha = 0.5
pgd_steps = 8
pgd_step_ratio = 0.25
init = "$init"
shi_reg_weight = $weight
[optimizer]
kind = "adam"
lr = 0.001
[eval]
eps = [0.1]
bounds = ["ibp", "crown-ibp", "crown"]
pgd_steps = 20
robust_subset = 1000
TOML
    "$bin" run "$out/$name.toml" --out "$out/$name" --device cpu > "$out/$name.log" 2>&1
    echo "$name: $(grep 'epoch 3/3' "$out/$name.log")"
  done
done
