#!/usr/bin/env bash
# check-neon.sh — checks the NEON kernels (src/engine/kern_neon.c) from an
# x86 machine: cross-compiles tests/engine/test_kernels.c with the engine,
# quant, util, arch and gguf sources into two static aarch64 binaries, one for
# baseline armv8-a (the vmull/vpadal dot product) and one for
# armv8.2-a+dotprod (sdot), and runs each under qemu user-mode emulation:
# the first on a Cortex-A53 model (no dot-product extension), the second on
# qemu's "max" CPU. Each run must report "level neon tested" and no failed
# check. Arguments go to the test (a seed repeats a run).
#
# Needs gcc-aarch64-linux-gnu and qemu-user (or qemu-user-static); installs
# them with apt-get when missing (sudo when not root). Binaries go to
# build-neon/. Not part of CI or scripts/test.sh: qemu runs take a while.
set -euo pipefail
cd "$(dirname "$0")/.."
cc=aarch64-linux-gnu-gcc
if ! command -v "$cc" > /dev/null ||
    ! { command -v qemu-aarch64 || command -v qemu-aarch64-static; } > /dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user ||
        $sudo apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user-static
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
mkdir -p build-neon
flags=(-O2 -static -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wvla -Werror
       -D_GNU_SOURCE -Iinclude -Isrc -Itests/common -DMP_TEST_DATA=\"tests/data\"
       -DMP_SOURCE_DIR=\".\")
srcs=(tests/engine/test_kernels.c tests/common/testutil.c src/engine/kern_*.c
      src/engine/matmul.c src/engine/ops.c src/engine/pool.c src/quant/*.c src/util/*.c
      src/arch/*.c src/gguf/*.c)
for variant in armv8-a:cortex-a53 armv8.2-a+dotprod:max; do
    march=${variant%%:*} cpu=${variant#*:}
    bin=build-neon/test_kernels-${march//+/-}
    echo "== -march=$march, qemu -cpu $cpu"
    "$cc" -march="$march" "${flags[@]}" "${srcs[@]}" -lm -lpthread -o "$bin"
    out=$("$qemu" -cpu "$cpu" "$bin" "$@") || { echo "$out"; exit 1; }
    echo "$out"
    grep -q "^level neon *tested" <<< "$out" || { echo "neon level was not tested"; exit 1; }
done
