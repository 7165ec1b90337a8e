#!/usr/bin/env bash
# test_logits_cli.sh — `moeprune logits` from the outside: --help, usage
# errors (exit 2), failures (exit 1), refusing to overwrite without --force
# or to write over an input, the output size, greedy tokens equal to the
# fixture's, -t 1 and -t 2 byte-identical, and nothing left behind on error.
# usage: bash test_logits_cli.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_logits_cli
D=$SRC/tests/data/gemma4-tiny-a
MODEL=$D/tiny-a-q8_0.gguf
TOK=$D/tiny-a-q8_0.ref/prompt2.tokens.txt


expect 0 "help" -- "$M" logits --help
check 'grep -q "example:" "$T/out"' "--help shows an example"
expect 2 "no model" -- "$M" logits --tokens "$TOK" -o "$T/a.f32"
expect 2 "no output" -- "$M" logits "$MODEL" --tokens "$TOK"
expect 2 "greedy without --greedy-out" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32" \
    --greedy 4
expect 2 "bad thread count" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32" -t x
expect 2 "bad kv type" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32" --kv q8

n=$(wc -w <"$TOK")
expect 0 "run" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32" --greedy 16 \
    --greedy-out "$T/g.txt" -t 2
check '[ "$(stat -c %s "$T/a.f32")" = "$((n * 1024 * 4))" ]' \
    "logits file is n_tokens x n_vocab x 4 bytes"
R=$D/tiny-a-q8_0.ref/prompt2
check 'cmp -s "$T/g.txt" "$R.greedy-exact.txt" || cmp -s "$T/g.txt" "$R.greedy.txt"' \
    "greedy tokens equal the fixture's"
expect 0 "one thread" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/b.f32" -t 1
check 'cmp -s "$T/a.f32" "$T/b.f32"' "-t 1 and -t 2 give the same bytes"

expect 1 "existing output" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32"
check 'grep -q -- "--force" "$T/err"' "refusal mentions --force"
expect 0 "--force" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/a.f32" --force \
    --experts-used 2 --kv f16
check '! cmp -s "$T/a.f32" "$T/b.f32"' "--experts-used 2 changes the logits"
expect 1 "output is the model" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$MODEL" --force
expect 1 "experts used above top-k" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/c.f32" \
    --experts-used 5
echo "1 2 99999" >"$T/bad.txt"
expect 1 "token outside the vocabulary" -- "$M" logits "$MODEL" --tokens "$T/bad.txt" \
    -o "$T/c.f32"
check 'grep -q "99999" "$T/err"' "message names the bad id"
expect 1 "context too small" -- "$M" logits "$MODEL" --tokens "$TOK" -o "$T/c.f32" --ctx 4
check '[ "$(ls "$T" | LC_ALL=C sort | tr "\n" " ")" = "a.f32 b.f32 bad.txt err g.txt out " ]' \
    "failed runs leave no output or temp files"

shelltest_end
