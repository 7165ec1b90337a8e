#!/usr/bin/env bash
# bench_prune.sh — expert surgery speed against `cp` of the same file, side by
# side, alternating, REPS times each (the machine is shared and noisy: report
# the ratio of medians). Also reports moeprune's peak RSS.
#
#   bench/bench_prune.sh MOEPRUNE MODEL.gguf KEEP [REPS] [--json]
#
# KEEP experts are kept in every MoE layer (ids 0, 2, 4, ...: every other
# expert, so the copy really is strided). Outputs go next to the model's
# folder's temp dir ($TMPDIR or /tmp) and are removed.
set -euo pipefail
mp=$1 model=$2 keep=$3 reps=${4:-3} json=${5:-}
tmp=${TMPDIR:-/tmp}/bench-prune.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# a uniform drop map from the model's own header
info=$("$mp" inspect --json "$model")
arch=$(printf '%s' "$info" | grep -m1 '"architecture"' | sed 's/.*:[[:space:]]*"\(.*\)".*/\1/')
nl=$(printf '%s' "$info" | grep -m1 "\"$arch.block_count\"" | sed 's/.*:[[:space:]]*\([0-9]*\).*/\1/')
nx=$(printf '%s' "$info" | grep -m1 "\"$arch.expert_count\"" | sed 's/.*:[[:space:]]*\([0-9]*\).*/\1/')
nu=$(printf '%s' "$info" | grep -m1 "\"$arch.expert_used_count\"" | sed 's/.*:[[:space:]]*\([0-9]*\).*/\1/')
ids=$(seq -s, 0 $(( nx / keep )) $(( nx - 1 )) | cut -d, -f1-"$keep")
{
    printf '{"format":"moeprune.dropmap/1","model":{"arch":"%s","n_layer":%d,"n_expert":%d,' \
        "$arch" "$nl" "$nx"
    printf '"n_expert_used":%d},"layers":[' "$nu"
    for ((l = 0; l < nl; l++)); do
        [ $l -gt 0 ] && printf ','
        printf '{"layer":%d,"keep":[%s]}' "$l" "$ids"
    done
    printf ']}\n'
} > "$tmp/map.json"

now() { date +%s.%N; }
cp_t=() pr_t=() rss=0
cat "$model" > /dev/null # same warm page cache for both
for ((r = 0; r < reps; r++)); do
    t0=$(now); cp "$model" "$tmp/copy.gguf"; sync "$tmp/copy.gguf"; t1=$(now)
    cp_t+=("$(awk "BEGIN {print $t1 - $t0}")")
    rm -f "$tmp/copy.gguf"
    t0=$(now)
    /usr/bin/time -f %M -o "$tmp/rss" "$mp" prune "$model" "$tmp/map.json" -o "$tmp/p.gguf" --force \
        2> "$tmp/prune.log" || { cat "$tmp/prune.log" >&2; exit 1; }
    t1=$(now)
    pr_t+=("$(awk "BEGIN {print $t1 - $t0}")")
    r_kb=$(cat "$tmp/rss"); [ "$r_kb" -gt "$rss" ] && rss=$r_kb
    out_bytes=$(stat -c %s "$tmp/p.gguf")
    rm -f "$tmp/p.gguf"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mc=$(median "${cp_t[@]}") mprune=$(median "${pr_t[@]}")
in_bytes=$(stat -c %s "$model")
ratio=$(awk "BEGIN {printf \"%.3f\", $mc / $mprune}")
if [ "$json" = "--json" ]; then
    printf '{"model":"%s","bytes_in":%d,"bytes_out":%d,"reps":%d,"cp_s":%s,"prune_s":%s,' \
        "$model" "$in_bytes" "$out_bytes" "$reps" "$mc" "$mprune"
    printf '"speed_ratio":%s,"prune_peak_rss_kb":%d}\n' "$ratio" "$rss"
else
    echo "model $model: $in_bytes bytes in, $out_bytes bytes out (keep $keep of $nx)"
    echo "cp     median ${mc}s over $reps: ${cp_t[*]}"
    echo "prune  median ${mprune}s over $reps: ${pr_t[*]}"
    echo "speed ratio cp_time/prune_time = $ratio (target >= 0.70); prune peak RSS ${rss} KB"
fi
