#!/usr/bin/env bash
# demo.sh — the README's first command: installs the dependencies, builds
# moeprune, makes a tiny random-weight Gemma 4 MoE and inspects it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target moeprune
mkdir -p demo
./build/moeprune synth --preset gemma4-tiny --type q8_0 --seed 1 --force -o demo/tiny-q8_0.gguf
./build/moeprune inspect demo/tiny-q8_0.gguf
