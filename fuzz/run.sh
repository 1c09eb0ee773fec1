#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), from corpora seeded with the vendor
# captures in testdata/ (fuzz/seed.sh), and fails on the first crash. Needs cargo-fuzz
# (`cargo install cargo-fuzz`); the toolchain is stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# use its nightly flags (sanitizer, coverage).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
export RUSTC_BOOTSTRAP=1
bash seed.sh
targets=$(cargo fuzz list)
cargo fuzz build -O $targets >/dev/null 2>&1 || cargo fuzz build -O
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "=== fuzz $t (${secs}s)"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=262144 -rss_limit_mb=512 -timeout=10 2>&1 \
    | grep -E "^#[0-9]+ +(DONE|pulse)|Done|ERROR|SUMMARY|panicked|crash-" | tail -3
done
