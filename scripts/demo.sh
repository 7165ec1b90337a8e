#!/usr/bin/env bash
# demo.sh — the README's first command: installs the dependencies, builds
# moeprune, makes a tiny random-weight Gemma 4 MoE and walks it through the
# loop: inspect -> profile -> plan (two recipes) -> prune -> eval.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build-release -j"$(nproc)" --target moeprune
mp=./build-release/moeprune
mkdir -p demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "synth: a tiny Gemma 4 MoE (4 layers, 16 experts, top-4), Q8_0"
$mp synth --preset gemma4-tiny --type q8_0 --seed 1 --force -o demo/tiny-q8_0.gguf
step "inspect"
$mp inspect demo/tiny-q8_0.gguf
step "profile: the built-in calibration set (math, logic, code, science, creative)"
$mp profile demo/tiny-q8_0.gguf --ctx 128 --force -o demo/tiny.stats
$mp stats show demo/tiny.stats
step "plan: keep 95% of every layer's contribution"
$mp plan demo/tiny.stats --method contribution --retain 0.95 --force -o demo/keep-contrib95.json
step "plan: REAP, 8 experts per layer, compared with frequency"
$mp plan demo/tiny.stats --method reap --keep 8 --compare frequency --force -o demo/keep8-reap.json
step "prune: 16 -> 8 experts per layer, byte copies of the kept experts"
$mp prune demo/tiny-q8_0.gguf demo/keep8-reap.json --force -o demo/tiny-8e-q8_0.gguf
$mp prune demo/tiny-q8_0.gguf demo/keep-contrib95.json --force -o demo/tiny-c95-q8_0.gguf
$mp inspect demo/tiny-8e-q8_0.gguf | sed -n '/^MoE summary/,$p'
step "eval: what each pruned model lost against the base (KL divergence, top-1 agreement, PPL)"
$mp kld demo/tiny-q8_0.gguf demo/tiny-c95-q8_0.gguf demo/tiny-8e-q8_0.gguf README.md --ctx 128 --chunks 4
step "bench-mc: the built-in multiple-choice smoke set (a random-weight model scores near chance)"
$mp bench-mc demo/tiny-q8_0.gguf
$mp bench-mc demo/tiny-8e-q8_0.gguf
