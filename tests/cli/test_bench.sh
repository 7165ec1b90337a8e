#!/usr/bin/env bash
# test_bench.sh — `moeprune bench` from the outside: --help, the table, the
# --json object (every line a "key": value pair cJSON prints, the keys there,
# speeds and sizes positive, the KV cache size the fixture's layout gives),
# -p 0 / -n 0 giving null for the skipped test, --kv/--experts-used/--no-warmup,
# usage errors (exit 2, one message) and failures (exit 1). Sizes stay small
# (-p 32 -n 8 -r 2) so it runs in seconds under ASan.
# usage: bash test_bench.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_bench
MODEL=$SRC/tests/data/gemma4-tiny-a/tiny-a-q8_0.gguf

# value KEY: the JSON value of KEY in $T/out ("" when the key is absent)
value() {
    sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\\(.*\\)\$/\\1/p" "$T/out" | sed 's/,$//'
}
# positive KEY: the value is a number > 0
positive() {
    local v
    v=$(value "$1")
    [ -n "$v" ] && awk -v v="$v" 'BEGIN { exit !(v ~ /^[0-9.eE+-]+$/ && v + 0 > 0) }'
}
# one_object: $T/out is one cJSON-printed object: "{", lines of
# "key": number|null|true|false|"string" (commas between), "}"
one_object() {
    [ "$(head -n 1 "$T/out")" = "{" ] && [ "$(tail -n 1 "$T/out")" = "}" ] &&
        [ "$(grep -c '^[{}]$' "$T/out")" = 2 ] &&
        ! sed '1d;$d' "$T/out" | grep -qvE \
            '^[[:space:]]+"[a-z_]+":[[:space:]]+(-?[0-9][0-9.eE+-]*|null|true|false|"[^"]*"),?$' &&
        [ "$(sed '1d;$d' "$T/out" | grep -vc ',$')" = 1 ] &&
        ! sed '1d;$d' "$T/out" | tail -n 1 | grep -q ',$'
}

expect 0 "help" -- "$M" bench --help
check 'grep -q "^example" "$T/out"' "--help shows an example"
check '"$M" --help | grep -q "^  bench "' "bench is in the command list"

# the table: one row per test, the memory line
expect 0 "table" -- "$M" bench "$MODEL" -p 32 -n 8 -r 2 -t 2
check 'grep -qE "^\| tiny-a-q8_0.gguf .*\| +2 \| f16 \| +pp32 \| +[0-9.]+ ± [0-9.]+ \|$" "$T/out"' \
    "table has the pp32 row"
check 'grep -qE "^\| tiny-a-q8_0.gguf .*\| +tg8 \| +[0-9.]+ ± [0-9.]+ \|$" "$T/out"' \
    "table has the tg8 row"
check 'grep -q "^peak RSS .* bytes" "$T/out"' "the peak RSS line"
check '[ ! -s "$T/err" ]' "nothing on stderr (no progress when it is not a terminal)"

# --json: one object with the keys, positive speeds and sizes
expect 0 "json" -- "$M" bench "$MODEL" -p 32 -n 8 -r 2 -t 2 --json
check 'one_object' "--json prints one JSON object"
for k in model threads pp_tokens_per_s tg_tokens_per_s peak_rss_bytes pp_stddev tg_stddev \
    n_prompt n_gen reps file_bytes; do
    check '[ -n "$(value '$k')" ]' "key $k present"
done
for k in pp_tokens_per_s tg_tokens_per_s peak_rss_bytes file_bytes kv_cache_bytes; do
    check 'positive '$k "$k is a positive number"
done
check '[ "$(value model)" = "\"$MODEL\"" ]' "model is the path"
check '[ "$(value threads)" = 2 ] && [ "$(value reps)" = 2 ]' "threads 2, reps 2"
check '[ "$(value n_prompt)" = 32 ] && [ "$(value n_gen)" = 8 ]' "n_prompt 32, n_gen 8"
check '[ "$(value file_bytes)" = "$(stat -c %s "$MODEL")" ]' "file_bytes is the file size"
# K and V (2) x (3 sliding layers x 2 KV heads x 64 + 1 global layer x 1 KV head x 128)
# x 2 bytes (f16) = 2048 bytes per position, for 32 + 8 positions
check '[ "$(value kv_cache_bytes)" = $((2048 * 40)) ]' "KV cache bytes of the fixture's layout"
check '[ "$(value experts_used)" = 4 ]' "the file's top-k by default"

# a skipped test is null, the other one still measured
expect 0 "json -p 0" -- "$M" bench "$MODEL" -p 0 -n 8 -r 2 -t 2 --json
check 'one_object' "-p 0: one JSON object"
check '[ "$(value pp_tokens_per_s)" = null ] && [ "$(value pp_stddev)" = null ]' "-p 0: pp null"
check 'positive tg_tokens_per_s' "-p 0: tg measured"
expect 0 "json -n 0" -- "$M" bench "$MODEL" -p 32 -n 0 -r 1 -t 2 --json
check '[ "$(value tg_tokens_per_s)" = null ] && positive pp_tokens_per_s' "-n 0: tg null"
check '[ "$(value pp_stddev)" = 0 ]' "one repetition: standard deviation 0"
expect 0 "table -p 0" -- "$M" bench "$MODEL" -p 0 -n 4 -r 1 -t 2
check '! grep -q "pp0" "$T/out" && grep -q "tg4" "$T/out"' "-p 0: no pp row"

# the options reach the context
expect 0 "kv f32, experts, no warmup" -- "$M" bench "$MODEL" -p 16 -n 4 -r 1 -t 1 --json \
    --kv f32 --experts-used 2 --no-warmup
check '[ "$(value kv_type)" = "\"f32\"" ] && [ "$(value kv_cache_bytes)" = $((4096 * 20)) ]' \
    "--kv f32 doubles the KV cache"
check '[ "$(value experts_used)" = 2 ] && [ "$(value warmup)" = false ]' \
    "--experts-used 2, --no-warmup"
expect 0 "moe hook" -- "$M" bench "$MODEL" -p 16 -n 2 -r 1 -t 2 --json --moe-hook
check '[ "$(value moe_hook)" = true ] && positive pp_tokens_per_s' "--moe-hook runs"

# usage errors: exit 2 and one message naming the command
usage_error() {
    local what=$1
    shift
    expect 2 "$what" -- "$M" bench "$@"
    check 'grep -q "^moeprune bench: " "$T/err"' "$what: message"
}
usage_error "no model"
usage_error "non-numeric -p" "$MODEL" -p abc
usage_error "negative -p" "$MODEL" -p -5
usage_error "negative -n" "$MODEL" -n -1
usage_error "non-numeric -t" "$MODEL" -t x
usage_error "-r 0" "$MODEL" -r 0
usage_error "nothing to measure" "$MODEL" -p 0 -n 0
usage_error "past the model's context" "$MODEL" -p 4000 -n 200
check 'grep -q "4096" "$T/err"' "the context message names the model's limit"
usage_error "bad kv type" "$MODEL" --kv q8
usage_error "unknown option" "$MODEL" --frobnicate
usage_error "two models" "$MODEL" "$MODEL"

# failures: exit 1
expect 1 "missing file" -- "$M" bench "$T/none.gguf" -p 4 -n 0
check 'grep -q "none.gguf" "$T/err"' "message names the file"
expect 1 "experts used above top-k" -- "$M" bench "$MODEL" -p 4 -n 0 --experts-used 5

shelltest_end
