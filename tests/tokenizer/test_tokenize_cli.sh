#!/usr/bin/env bash
# test_tokenize_cli.sh — `moeprune tokenize` and `moeprune detokenize` from
# the outside: the fixtures' prompt ids (BOS, special tokens parsed),
# --no-bos, text from the command line and from stdin, round trips through
# detokenize (ids as arguments, as one pasted line, from stdin), --special,
# --raw, --help, usage errors (exit 2) and failures (exit 1).
# usage: bash test_tokenize_cli.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_tokenize_cli


D="$SRC/tests/data/gemma4-tiny-a"
TINY="$D/tiny-a-f32.gguf"

# the fixtures' ids, byte for byte (one line, space-separated)
for n in 0 1 2; do
    expect 0 "tokenize prompt$n" -- \
        "$M" tokenize "$TINY" --parse-special --file "$D/prompts/prompt$n.txt"
    check "cmp -s '$T/out' '$D/tiny-a-f32.ref/prompt$n.tokens.txt'" \
        "prompt$n ids equal llama.cpp's"
    # and back: the exact text, with --special for <bos>/<|turn>
    ids=$(cat "$T/out")
    expect 0 "detokenize prompt$n" -- "$M" detokenize "$TINY" --special --raw $ids
    check "cmp -s '$T/out' <(printf '<bos>'; cat '$D/prompts/prompt$n.txt')" "prompt$n round trip"
done

# --no-bos, text argument, stdin
expect 0 "tokenize text" -- "$M" tokenize "$TINY" "Hello world"
check "[ \"\$(cut -d' ' -f1 '$T/out')\" = 2 ]" "BOS first"
with=$(cat "$T/out")
expect 0 "tokenize --no-bos" -- "$M" tokenize "$TINY" --no-bos "Hello world"
check "[ \"2 \$(cat '$T/out')\" = '$with' ]" "--no-bos drops only BOS"
checks=$((checks + 1))
if [ "$(printf 'Hello world' | "$M" tokenize "$TINY" --file -)" != "$with" ]; then
    echo "FAIL: --file - (stdin) differs" >&2
    fails=$((fails + 1))
fi
# special tokens: parsed only on request
expect 0 "no parse" -- "$M" tokenize "$TINY" --no-bos "<|turn>"
check "[ \"\$(wc -w < '$T/out')\" -gt 1 ]" "control text without --parse-special is text"
expect 0 "parse" -- "$M" tokenize "$TINY" --no-bos --parse-special "<|turn>"
check "[ \"\$(cat '$T/out')\" = 105 ]" "control text with --parse-special is one id"

# detokenize: ids pasted as one argument, with commas, from stdin; control tokens hidden
expect 0 "detokenize list" -- "$M" detokenize "$TINY" "2 105, 106"
check "[ \"\$(cat '$T/out')\" = '' ]" "control tokens print nothing by default"
expect 0 "detokenize --special" -- "$M" detokenize "$TINY" --special "2 105, 106"
check "[ \"\$(cat '$T/out')\" = '<bos><|turn><turn|>' ]" "--special prints them"
checks=$((checks + 1))
if [ "$(printf '%s' "$with" | "$M" detokenize "$TINY")" != "Hello world" ]; then
    echo "FAIL: detokenize from stdin" >&2
    fails=$((fails + 1))
fi
expect 0 "detokenize --raw" -- "$M" detokenize "$TINY" --raw "$with"
check "[ \"\$(wc -c < '$T/out')\" = 11 ]" "--raw adds no newline"

# help, usage errors, failures
for c in tokenize detokenize; do
    expect 0 "$c --help" -- "$M" $c --help
    check "grep -q 'example' '$T/out'" "$c --help shows an example"
    expect 2 "$c bad option" -- "$M" $c --bogus "$TINY" 1
done
expect 2 "tokenize no args" -- "$M" tokenize
expect 2 "tokenize two texts" -- "$M" tokenize "$TINY" a b
expect 2 "tokenize file and text" -- "$M" tokenize "$TINY" --file "$D/prompts/prompt0.txt" hi
expect 2 "detokenize not an id" -- "$M" detokenize "$TINY" 1 x2
expect 2 "detokenize negative" -- "$M" detokenize "$TINY" -- -1
expect 1 "detokenize out of range" -- "$M" detokenize "$TINY" 1024
check "grep -q '1024' '$T/err'" "message names the id"
expect 1 "tokenize missing model" -- "$M" tokenize "$T/none.gguf" hi
expect 1 "tokenize missing file" -- "$M" tokenize "$TINY" --file "$T/none.txt"
expect 1 "tokenize not a model" -- "$M" tokenize "$D/prompts/prompt0.txt" hi

shelltest_end
