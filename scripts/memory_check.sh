#!/usr/bin/env bash
# The memory estimate (certlab run --dry-run) against the measured peak (max RSS of
# /usr/bin/time -v) of one epoch of five presets across training methods, on the CPU.
set -u
BIN=${CERTLAB:-${CARGO_TARGET_DIR:-target}/release/certlab}
TMP=$(mktemp -d)
printf '%-22s %10s %10s %7s\n' preset estimate measured ratio
for p in fmnist-mlp fmnist-mlp-crown-ibp fmnist-mlp-cp fmnist-mlp-pgd moons-lip; do
  est=$("$BIN" run "presets/$p.toml" --device cpu --dry-run | awk '$1=="total"{print $2, $3}')
  /usr/bin/time -v "$BIN" run "presets/$p.toml" --epochs 1 --device cpu --out "$TMP/$p" \
    >/dev/null 2>"$TMP/$p.time"
  kb=$(awk -F': ' '/Maximum resident set size/{print $2}' "$TMP/$p.time")
  awk -v p="$p" -v e="$est" -v kb="$kb" 'BEGIN{
    split(e, a, " "); m = (a[2]=="GB") ? 1e9 : (a[2]=="MB" ? 1e6 : 1e3);
    eb = a[1]*m; mb = kb*1024;
    printf "%-22s %10s %7.0f MB %7.2f\n", p, e, mb/1e6, eb/mb }'
done
rm -rf "$TMP"
