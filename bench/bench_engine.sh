#!/usr/bin/env bash
# bench_engine.sh — moeprune bench against llama.cpp's llama-bench on one
# file, side by side: ROUNDS rounds, each running both tools once (the order
# alternates between rounds so drift hits both), each run being one warmup
# plus one timed pp and one timed tg test from an empty cache. Prints every
# round and the medians with the moeprune/llama.cpp ratio.
#
#   bench/bench_engine.sh MOEPRUNE LLAMA_BENCH MODEL [ROUNDS] [THREADS] [PP] [TG]
#
# MOEPRUNE is the moeprune binary (a Release build), LLAMA_BENCH llama.cpp's
# llama-bench built elsewhere (never part of this repository). Defaults: 5
# rounds, 2 threads, pp512, tg128. Needs only bash, awk and sort.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
mp=$1 lb=$2 model=$3 rounds=${4:-5} threads=${5:-2} pp=${6:-512} tg=${7:-128}

# "pp tg" tokens/s of one llama-bench run (its JSON: one object per test)
run_llama() {
    "$lb" -m "$model" -t "$threads" -p "$pp" -n "$tg" -r 1 -o json 2>/dev/null |
        awk -F'[:,]' '/"n_prompt"/ {p = $2 + 0} /"n_gen"/ {g = $2 + 0}
                      /"avg_ts"/ {if (g == 0) pps = $2 + 0; else tgs = $2 + 0}
                      END {printf "%.2f %.2f\n", pps, tgs}'
}

# "pp tg rss" of one moeprune bench run
run_moeprune() {
    "$mp" bench "$model" -t "$threads" -p "$pp" -n "$tg" -r 1 --json |
        awk -F'[:,]' '/"pp_tokens_per_s"/ {p = $2 + 0} /"tg_tokens_per_s"/ {g = $2 + 0}
                      /"peak_rss_bytes"/ {r = $2 + 0}
                      END {printf "%.2f %.2f %.0f\n", p, g, r}'
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "model $model ($(stat -c %s "$model") bytes), $threads threads, pp$pp tg$tg, $rounds rounds"
echo "round  llama_pp  moeprune_pp  llama_tg  moeprune_tg  moeprune_peak_rss"
lpp=() ltg=() mpp=() mtg=() rss=0
for ((i = 1; i <= rounds; i++)); do
    if ((i % 2)); then
        read -r a b < <(run_llama)
        read -r c d r < <(run_moeprune)
    else
        read -r c d r < <(run_moeprune)
        read -r a b < <(run_llama)
    fi
    lpp+=("$a") ltg+=("$b") mpp+=("$c") mtg+=("$d")
    rss=$(awk -v a="$r" -v b="$rss" 'BEGIN {printf "%.0f", (a > b) ? a : b}')
    printf "%5d  %8s  %11s  %8s  %11s  %s\n" "$i" "$a" "$c" "$b" "$d" "$r"
done
m_lpp=$(printf '%s\n' "${lpp[@]}" | median) m_mpp=$(printf '%s\n' "${mpp[@]}" | median)
m_ltg=$(printf '%s\n' "${ltg[@]}" | median) m_mtg=$(printf '%s\n' "${mtg[@]}" | median)
awk -v a="$m_lpp" -v b="$m_mpp" -v c="$m_ltg" -v d="$m_mtg" -v r="$rss" 'BEGIN {
    printf "median pp%s: llama.cpp %.2f, moeprune %.2f t/s, ratio %.2f\n", "'"$pp"'", a, b, b / a
    printf "median tg%s: llama.cpp %.2f, moeprune %.2f t/s, ratio %.2f\n", "'"$tg"'", c, d, d / c
    printf "moeprune peak RSS %.0f bytes\n", r }'
