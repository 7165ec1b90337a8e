#!/usr/bin/env bash
# test_synth_cli.sh — `moeprune synth` and `moeprune vocab` from the outside:
# --help, usage errors (exit 2), failures (exit 1), refusing to overwrite
# without --force, and that data/gemma4-tiny-vocab.gguf is what `vocab` makes.
# usage: bash test_synth_cli.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_synth_cli
unset MOEPRUNE_DATA

# grep_in FILE PATTERN DESCRIPTION
grep_in() {
    checks=$((checks + 1))
    if ! grep -q -- "$2" "$1"; then
        echo "FAIL: $3: '$2' not in $(basename "$1")" >&2
        sed 's/^/  /' "$1" >&2
        fails=$((fails + 1))
    fi
}

TINY="$SRC/tests/data/gemma4-tiny-a/tiny-a-f32.gguf"

# --- synth ---
expect 0 "synth --help" -- "$M" synth --help
grep_in "$T/out" "gemma4-tiny" "help lists presets"
grep_in "$T/out" "gemma4-26b-a4b" "help lists presets"
grep_in "$T/out" "example" "help has an example"
expect 0 "synth -h" -- "$M" synth -h

expect 2 "no arguments" -- "$M" synth
expect 2 "no output" -- "$M" synth --preset gemma4-tiny
expect 2 "no preset" -- "$M" synth -o "$T/a.gguf"
expect 2 "unknown preset" -- "$M" synth --preset gemma4-huge -o "$T/a.gguf"
grep_in "$T/err" "gemma4-26b-a4b" "unknown preset lists presets"
expect 2 "unknown option" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --bogus
expect 2 "extra argument" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" extra
expect 2 "--layers 0" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --layers 0
expect 2 "--layers abc" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --layers abc
expect 2 "--layers too many" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --layers 5
expect 2 "--type q4_k" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --type q4_k
expect 2 "--seed -1" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --seed -1
expect 2 "--seed x" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --seed 12x
check '[ ! -e "$T/a.gguf" ]' "usage errors wrote no file"

expect 0 "synth tiny" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --seed 7 --type q8_0
check '[ -s "$T/a.gguf" ]' "output written"
expect 0 "inspect the output" -- "$M" inspect "$T/a.gguf"
sum_a=$(cksum <"$T/a.gguf")
expect 1 "existing output refused" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" --seed 8
grep_in "$T/err" "force" "refusal mentions --force"
check '[ "$(cksum <"$T/a.gguf")" = "$sum_a" ]' "refused output unchanged"
expect 0 "same seed again, --force" -- "$M" synth --preset gemma4-tiny -o "$T/a.gguf" \
    --seed 7 --type q8_0 --force
check '[ "$(cksum <"$T/a.gguf")" = "$sum_a" ]' "same seed, same bytes"
expect 0 "other seed, --force" -- "$M" synth -p gemma4-tiny -o "$T/a.gguf" -s 8 -t q8_0 -f
check '[ "$(cksum <"$T/a.gguf")" != "$sum_a" ]' "other seed, other bytes"
expect 0 "all options" -- "$M" synth --preset gemma4-tiny -o "$T/b.gguf" --layers 2 \
    --type bf16 --vocab "$TINY" --split-experts --v-all-layers
expect 1 "missing vocabulary" -- "$M" synth --preset gemma4-tiny -o "$T/c.gguf" \
    --vocab "$T/none.gguf"
grep_in "$T/err" "$T/none.gguf" "missing vocabulary names the path"
grep_in "$T/err" "\-\-vocab" "missing vocabulary mentions --vocab"
mkdir "$T/emptydata"
expect 1 "empty MOEPRUNE_DATA" -- env MOEPRUNE_DATA="$T/emptydata" \
    "$M" synth --preset gemma4-tiny -o "$T/c.gguf"
grep_in "$T/err" "$T/emptydata/gemma4-tiny-vocab.gguf" "default vocabulary path named"
check '[ ! -e "$T/c.gguf" ]' "failed synth wrote no file"
leftovers=$(find "$T" -maxdepth 1 -name '.*gguf*' | wc -l)
check '[ "$leftovers" = 0 ]' "no temporary files left"

# --- vocab ---
expect 0 "vocab --help" -- "$M" vocab --help
grep_in "$T/out" "example" "vocab help has an example"
expect 2 "vocab without arguments" -- "$M" vocab
expect 2 "vocab without -o" -- "$M" vocab "$TINY"
expect 2 "vocab with two models" -- "$M" vocab "$TINY" "$TINY" -o "$T/v.gguf"
expect 2 "vocab unknown option" -- "$M" vocab "$TINY" -o "$T/v.gguf" --bogus
expect 0 "vocab of the tiny fixture" -- "$M" vocab "$TINY" -o "$T/v.gguf"
check 'cmp -s "$T/v.gguf" "$SRC/data/gemma4-tiny-vocab.gguf"' \
    "data/gemma4-tiny-vocab.gguf equals \`moeprune vocab\` of the fixture"
expect 1 "vocab refuses to overwrite" -- "$M" vocab "$TINY" -o "$T/v.gguf"
expect 0 "vocab --force" -- "$M" vocab "$TINY" -o "$T/v.gguf" --force
expect 1 "vocab of a missing file" -- "$M" vocab "$T/none.gguf" -o "$T/w.gguf"
expect 0 "vocab of a vocabulary" -- "$M" vocab "$T/v.gguf" -o "$T/w.gguf"
check 'cmp -s "$T/v.gguf" "$T/w.gguf"' "vocab of a vocabulary file is the same file"
expect 0 "synth with the extracted vocabulary" -- "$M" synth --preset gemma4-tiny \
    -o "$T/d.gguf" --vocab "$T/v.gguf" --layers 1

shelltest_end
