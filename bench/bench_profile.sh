#!/usr/bin/env bash
# bench_profile.sh — profiling throughput against plain prompt processing on
# one file (issue 6 target: profile >= 90% of `bench -p`, same model and
# threads). Per round, in alternating order:
#   bench    moeprune bench MODEL -p CTX -n 0 -r CHUNKS     (mean of CHUNKS pp runs)
#   hook     the same with --moe-hook (every row through every layer, as
#            profiling needs; without a hook the last layer's FFN runs only for
#            the row whose logits are asked for)
#   profile  moeprune profile MODEL CORPUS --ctx CTX --max-tokens CTX*CHUNKS:
#            CHUNKS chunks of CTX tokens, statistics hooked, the stats file
#            written; tokens / the seconds profile reports for its loop
#   imatrix  the same with --imatrix (every matmul's input squared and summed)
# Prints every round and the medians, with the ratios to `bench`.
#
#   bench/bench_profile.sh MOEPRUNE MODEL [ROUNDS] [THREADS] [CTX] [CHUNKS]
#
# MOEPRUNE is the moeprune binary (a Release build). Defaults: 5 rounds, 2
# threads, ctx 512, 8 chunks. The corpus is this repository's README and
# sources (code and prose), cut to 400 KB: more tokens than 8 chunks need, in
# one text so every chunk is full. Temporary files go to a mktemp folder.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
mp=$1 model=$2 rounds=${3:-5} threads=${4:-2} ctx=${5:-512} chunks=${6:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 400000 < <(cat "$root/README.md" "$root"/src/*/*.c) > "$tmp/corpus.txt"
max=$((ctx * chunks))

# pp tokens/s of one `moeprune bench` run (extra flags in $@)
run_bench() {
    "$mp" bench "$model" -t "$threads" -p "$ctx" -n 0 -r "$chunks" --json "$@" |
        awk -F'[:,]' '/"pp_tokens_per_s"/ {p = $2 + 0} END {printf "%.2f\n", p}'
}

# tokens/s of one profile run (extra flags in $@), from its closing line
# "OUT: N tokens counted in K chunks, C classes, S s"
run_profile() {
    "$mp" profile "$model" "$tmp/corpus.txt" --ctx "$ctx" --max-tokens "$max" -t "$threads" \
        --quiet -f -o "$tmp/out.stats" "$@" 2>&1 |
        awk -v want="$max" '/tokens counted in/ {
            n = $2 + 0; s = $(NF - 1) + 0
            if (n != want) { print "profile counted " n " tokens, not " want > "/dev/stderr"; exit 1 }
            printf "%.2f\n", n / s }'
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "model $model ($(stat -c %s "$model") bytes), $threads threads, $chunks chunks of $ctx tokens, $rounds rounds"
echo "round  bench_pp  hook_pp  profile  imatrix   (tokens/s)"
b=() h=() p=() q=()
for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then
        x=$(run_bench) y=$(run_bench --moe-hook) z=$(run_profile)
        w=$(run_profile --imatrix "$tmp/out.imatrix.gguf")
    else
        w=$(run_profile --imatrix "$tmp/out.imatrix.gguf") z=$(run_profile)
        y=$(run_bench --moe-hook) x=$(run_bench)
    fi
    b+=("$x") h+=("$y") p+=("$z") q+=("$w")
    printf "%5d  %8s  %7s  %7s  %7s\n" "$i" "$x" "$y" "$z" "$w"
done
mb=$(printf '%s\n' "${b[@]}" | median) mh=$(printf '%s\n' "${h[@]}" | median)
mpr=$(printf '%s\n' "${p[@]}" | median) mq=$(printf '%s\n' "${q[@]}" | median)
awk -v b="$mb" -v h="$mh" -v p="$mpr" -v q="$mq" 'BEGIN {
    printf "median tokens/s: bench %.2f, bench --moe-hook %.2f, profile %.2f, profile --imatrix %.2f\n", b, h, p, q
    printf "profile / bench %.3f, profile / bench --moe-hook %.3f, profile --imatrix / bench %.3f\n", p / b, p / h, q / b }'
