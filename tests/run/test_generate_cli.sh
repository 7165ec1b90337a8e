#!/usr/bin/env bash
# test_generate_cli.sh — `moeprune generate` from the outside: greedy tokens
# equal the fixtures' (llama.cpp's) for the f32, q8_0 and q4_k_m variants and
# all three prompts, given as ids (--tokens) and as text (-f --parse-special,
# after checking that the text tokenizes to the fixture's ids); the text
# output equals the detokenized ids; -n, --stop, --seed, --reasoning-budget
# and a full context behave; --dropmap equals pruning the file (and a
# zero-mode file masks itself); usage errors exit 2, failures 1.
# usage: bash test_generate_cli.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_generate_cli
D=$SRC/tests/data/gemma4-tiny-a
MODEL=$D/tiny-a-q8_0.gguf


expect 0 "help" -- "$M" generate --help
check 'grep -q "example" "$T/out" && grep -q -- "--temp" "$T/out"' \
    "--help shows the options and an example"
expect 2 "no model" -- "$M" generate
expect 2 "no prompt" -- "$M" generate "$MODEL"
expect 2 "-p and -f" -- "$M" generate "$MODEL" -p hi -f "$D/prompts/prompt0.txt"
expect 2 "unknown flag" -- "$M" generate "$MODEL" -p hi --bogus
expect 2 "bad temperature" -- "$M" generate "$MODEL" -p hi --temp hot
expect 2 "negative -n" -- "$M" generate "$MODEL" -p hi -n -3
expect 2 "empty stop string" -- "$M" generate "$MODEL" -p hi --stop ""
expect 2 "--parse-special with --tokens" -- "$M" generate "$MODEL" -s \
    --tokens "$D/tiny-a-q8_0.ref/prompt0.tokens.txt"
expect 2 "stray argument" -- "$M" generate "$MODEL" -p hi more
expect 1 "missing model" -- "$M" generate "$T/nope.gguf" -p hi
check 'grep -q "$T/nope.gguf" "$T/err"' "the message names the missing model"
echo "2 5 99999" >"$T/bad.txt"
expect 1 "token outside the vocabulary" -- "$M" generate "$MODEL" --tokens "$T/bad.txt" -n 2
check 'grep -q 99999 "$T/err"' "the message names the bad id"
echo "2 x" >"$T/bad2.txt"
expect 1 "not a token id" -- "$M" generate "$MODEL" --tokens "$T/bad2.txt"
expect 1 "missing dropmap" -- "$M" generate "$MODEL" -p hi --dropmap "$T/nope.json"
expect 1 "more experts than the file's top-k" -- "$M" generate "$MODEL" -p hi --experts-used 5

# greedy tokens equal the fixture's: native or exact reference, either may match
for v in f32 q8_0 q4_k_m; do
    for i in 0 1 2; do
        R=$D/tiny-a-$v.ref/prompt$i
        expect 0 "greedy $v prompt$i" -- "$M" generate "$D/tiny-a-$v.gguf" \
            --tokens "$R.tokens.txt" --ids -n 16 --temp 0 -t 2
        check 'cmp -s "$T/out" "$R.greedy.txt" || cmp -s "$T/out" "$R.greedy-exact.txt"' \
            "$v prompt$i: greedy ids $(cat "$T/out") differ from $(cat "$R.greedy.txt")"
    done
done

# the same from text: it tokenizes to the fixture's ids, then continues alike
# (prompt1 as text just below)
for i in 0 1 2; do
    R=$D/tiny-a-q8_0.ref/prompt$i
    expect 0 "tokenize prompt$i" -- "$M" tokenize "$MODEL" --parse-special -f \
        "$D/prompts/prompt$i.txt"
    check 'cmp -s "$T/out" "$R.tokens.txt"' "prompt$i.txt tokenizes to prompt$i.tokens.txt"
    [ $i = 1 ] && continue
    expect 0 "greedy from text, prompt$i" -- "$M" generate "$MODEL" -f "$D/prompts/prompt$i.txt" \
        --parse-special --ids -n 16 --temp 0
    check 'cmp -s "$T/out" "$R.greedy.txt" || cmp -s "$T/out" "$R.greedy-exact.txt"' \
        "prompt$i from text: greedy ids $(cat "$T/out")"
done

# text output: the detokenized greedy ids, exactly (no newline added off a
# terminal)
R=$D/tiny-a-q8_0.ref/prompt1
expect 0 "greedy text" -- "$M" generate "$MODEL" -f "$D/prompts/prompt1.txt" -s -n 16 --temp 0
cp "$T/out" "$T/text"
expect 0 "detokenize" -- "$M" detokenize "$MODEL" --raw "$(cat "$R.greedy.txt")"
check 'cmp -s "$T/out" "$T/text"' "the text equals the detokenized greedy ids"

# -n, --stop (text held back across tokens is not shown), --stats
expect 0 "-n 5" -- "$M" generate "$MODEL" -p "Hello there" -n 5 --temp 0 --ids
check '[ "$(wc -w <"$T/out")" = 5 ]' "-n 5 gives 5 ids"
expect 0 "24 tokens" -- "$M" generate "$MODEL" -p "Hello there" -n 24 --temp 0
full=$(cat "$T/out")
stop=${full:3:2}
want=${full%%"$stop"*}
check '[ ${#full} -ge 8 ]' "24 greedy tokens give some text ('$full')"
expect 0 "--stop" -- "$M" generate "$MODEL" -p "Hello there" -n 24 --temp 0 --stop "$stop" \
    --stop "never-appears" --stats
check '[ "$(cat "$T/out")" = "$want" ]' \
    "--stop '$stop' ends the text before it: '$(cat "$T/out")', expected '$want'"
check 'grep -q "stop: stop-string" "$T/err"' "--stats names the stop reason"

# a seed repeats a sampled run exactly
expect 0 "seeded 1" -- "$M" generate "$MODEL" -p "Once upon a time" -n 12 --temp 1.5 --top-k 0 \
    --top-p 1 --min-p 0 --seed 7 --ids --stats
cp "$T/out" "$T/seed1"
check 'grep -q "seed 7" "$T/err"' "--stats shows the seed"
expect 0 "seeded 2" -- "$M" generate "$MODEL" -p "Once upon a time" -n 12 --temp 1.5 --top-k 0 \
    --top-p 1 --min-p 0 --seed 7 --ids -t 1
check 'cmp -s "$T/out" "$T/seed1"' "the same seed gives the same tokens"

# the reasoning budget closes an open thinking block (<channel|> is id 101)
close=$("$M" tokenize "$MODEL" --no-bos "<channel|>")
expect 0 "reasoning budget 0" -- "$M" generate "$MODEL" -p "<|channel>thought
" --reasoning-budget 0 --ids -n 3 --temp 0
check '[ "$(cut -d" " -f1 "$T/out")" = "$close" ]' \
    "budget 0: the first token is <channel|> ($(cat "$T/out"))"

# the context: full stops generation, a prompt that does not fit fails
expect 0 "full context" -- "$M" generate "$MODEL" -p "Hello" --ctx 8 --temp 0 --ids
check 'grep -q "full" "$T/err" && [ "$(wc -w <"$T/out")" = 5 ]' \
    "a context of 8: 4 prompt tokens, 5 generated (the last one not fed back) ($(cat "$T/out"))"
expect 1 "prompt longer than the context" -- "$M" generate "$MODEL" \
    --tokens "$D/tiny-a-q8_0.ref/prompt1.tokens.txt" --ctx 16
check 'grep -q "does not fit" "$T/err"' "the message says the prompt does not fit"

# --dropmap masks experts exactly as pruning them does; a file pruned with
# --mode zero gets its recorded mask without being told
{
    printf '{"format":"moeprune.dropmap/1","model":{"arch":"gemma4","n_layer":4,'
    printf '"n_expert":16,"n_expert_used":4},"layers":['
    for l in 0 1 2 3; do
        printf '%s{"layer":%d,"keep":[%s]}' "$([ $l = 0 ] || echo ,)" $l \
            "$(seq $l 2 $((l + 10)) | tr '\n' , | sed 's/,$//')"
    done
    printf ']}\n'
} >"$T/map.json"
P1=$D/tiny-a-q8_0.ref/prompt1.tokens.txt
# sampled hot: greedy tokens of this random-weight model hardly depend on the experts
HOT="--temp 3 --top-k 0 --top-p 1 --min-p 0 --seed 11 --ids -n 12"
expect 0 "prune" -- "$M" prune "$MODEL" "$T/map.json" -o "$T/pruned.gguf"
expect 0 "prune --mode zero" -- "$M" prune "$MODEL" "$T/map.json" -o "$T/zeroed.gguf" --mode zero
expect 0 "--dropmap" -- "$M" generate "$MODEL" --tokens "$P1" --dropmap "$T/map.json" $HOT
cp "$T/out" "$T/masked"
expect 0 "pruned file" -- "$M" generate "$T/pruned.gguf" --tokens "$P1" $HOT
check 'cmp -s "$T/out" "$T/masked"' "--dropmap gives the pruned file's tokens"
expect 0 "zeroed file" -- "$M" generate "$T/zeroed.gguf" --tokens "$P1" $HOT
check 'cmp -s "$T/out" "$T/masked"' "a zero-mode file gives the pruned file's tokens"
expect 0 "no map" -- "$M" generate "$MODEL" --tokens "$P1" $HOT
check '! cmp -s "$T/out" "$T/masked"' \
    "the map changes the tokens (else the checks above prove nothing)"

shelltest_end
