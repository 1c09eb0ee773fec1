#!/usr/bin/env bash
# Builds the firmware (no demo, no embedded broker, no station tools; size-tuned profile) for
# every gateway target, and reports sizes. One entry point: `bash cross/build.sh [--install]`.
#   --install   first add the rustup targets and Debian's cross linkers and qemu-user (root).
# Targets that cannot be installed or built here are reported LOUDLY and skipped; the rest
# still build. Output: target/<triple>/firmware/camgw, and cross/out/sizes.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
TARGETS=(aarch64-unknown-linux-musl aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf armv7-unknown-linux-musleabihf)
if [ "${1:-}" = "--install" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
    libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user binutils-aarch64-linux-gnu \
    binutils-arm-linux-gnueabihf >/dev/null || echo "!!! cross packages could not be installed"
  for t in "${TARGETS[@]}"; do
    rustup target add "$t" >/dev/null 2>&1 || echo "!!! WARNING: rustup cannot install target $t on this machine: it will be skipped !!!"
  done
fi
mkdir -p cross/out
: > cross/out/sizes.txt
failed=()
for t in "${TARGETS[@]}"; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "!!! WARNING: target $t is not installed (rustup target add $t failed here): SKIPPED !!!"
    failed+=("$t (not installable)")
    continue
  fi
  echo "=== building firmware for $t"
  if cargo build -q --profile firmware --no-default-features --target "$t"; then
    bin="target/$t/firmware/camgw"
    size=$(stat -c %s "$bin")
    printf '%-34s %9d bytes (%.2f MiB) %s\n' "$t" "$size" "$(echo "$size/1048576" | bc -l)" "$(file -b "$bin" | cut -d, -f1-2)" | tee -a cross/out/sizes.txt
  else
    echo "!!! WARNING: build for $t FAILED !!!"
    failed+=("$t (build failed)")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "!!! not built: ${failed[*]} !!!"
fi
# The shipped artefact must fit the budget.
if [ -f target/aarch64-unknown-linux-musl/firmware/camgw ]; then
  size=$(stat -c %s target/aarch64-unknown-linux-musl/firmware/camgw)
  if [ "$size" -gt $((6 * 1024 * 1024)) ]; then
    echo "!!! the static aarch64 firmware is $size bytes, over the 6 MiB budget !!!"
    exit 1
  fi
fi
exit 0
