#!/usr/bin/env bash
# test_run_cli.sh — `moeprune run` from the outside, on the tiny fixture:
# a piped REPL session (two questions, /stats, /clear, /bye ends it), the
# conversation kept across turns with the KV cache reused (same answers as
# re-evaluating everything with --no-reuse), /set think and --system change
# the prompt, multi-line """ messages, end of input, one-shot mode, and the
# exit codes: 0, 1 for a bad model path (named in the message), 2 for bad
# flags. The answers of a random-weight model are noise: the checks count
# turns and tokens through the stats lines, not words.
# usage: bash test_run_cli.sh PATH/TO/moeprune SOURCE_DIR
set -u
M=$1
SRC=$2
. "$SRC/tests/common/shelltest.sh"
shelltest_init test_run_cli
D=$SRC/tests/data/gemma4-tiny-a
MODEL=$D/tiny-a-q8_0.gguf

# stats lines in $T/err
n_stats() { grep -c "^prompt: .* | generation: " "$T/err"; }
# prompt tokens of the Nth stats line
prompt_tokens() {
    grep "^prompt: " "$T/err" | sed -n "$1p" | sed 's/^prompt: \([0-9]*\) tokens.*/\1/'
}
cached_tokens() {
    grep "^prompt: " "$T/err" | sed -n "$1p" | sed 's/^[^(]*(\([0-9]*\) cached.*/\1/'
}

expect_in 0 "help" "" -- "$M" run --help
check 'grep -q "example" "$T/out" && grep -q "/bye" "$T/out"' \
    "--help lists the commands and an example"
expect_in 2 "no model" "" -- "$M" run
expect_in 2 "unknown flag" "" -- "$M" run "$MODEL" --bogus
expect_in 2 "bad temperature" "" -- "$M" run "$MODEL" --temp warm
expect_in 2 "bad chat format" "" -- "$M" run "$MODEL" --chat-format llama2
expect_in 1 "missing model" "" -- "$M" run "$T/missing.gguf" "Hi"
check 'grep -q "$T/missing.gguf" "$T/err"' "the message names the missing model"

# the session of the acceptance test, plus a line after /bye that must not
# be answered; --verbose prints a stats line per answer whatever /stats says
IN='Hello\n/stats\nWhat is 2+2?\n/clear\n/bye\nNever answered\n'
expect_in 0 "piped session" "$IN" -- "$M" run "$MODEL" --temp 0 -n 8 --verbose
check '[ -s "$T/out" ] && [ "$(n_stats)" = 2 ]' "two answers, none after /bye ($(n_stats))"
check '[ "$(grep -c "generation: 8 tokens" "$T/err")" = 2 ]' "each answer has 8 tokens"
check '[ "$(prompt_tokens 2)" -gt "$(prompt_tokens 1)" ] && [ "$(cached_tokens 2)" -gt 0 ]' \
    "the second prompt holds the first turn, partly from the cache"
check 'grep -q "Cleared" "$T/err"' "/clear says so"
# /stats toggles the line (here off after the first answer)
expect_in 0 "/stats toggle" 'Hi\n/stats\nHi\n' -- "$M" run "$MODEL" --temp 0 -n 2 --stats
check '[ "$(n_stats)" = 1 ] && grep -q "Stats off" "$T/err"' "/stats turns the line off"

# history and the cache: a longer chat (sampled, seeded) equals re-evaluating
# the whole conversation every turn; /clear starts over; end of input ends it
CHAT='Hello\nWhat is 2+2?\n/set think on\nAnd 3+3?\n'
CHAT+='/set think off\n"""\nline one\nline two\n"""\n/clear\nAgain\n'
expect_in 0 "chat, cache reused" "$CHAT" -- "$M" run "$MODEL" --temp 0.7 --seed 3 -n 4 \
    --system "Be brief." --verbose
cp "$T/out" "$T/reuse.out"
cp "$T/err" "$T/reuse.err"
check '[ "$(n_stats)" = 5 ]' "five answers (the \"\"\" message is one)"
check '[ "$(cached_tokens 2)" -gt 0 ] && [ "$(cached_tokens 5)" -gt 0 ]' "turns reuse the cache"
check '[ "$(prompt_tokens 5)" -lt "$(prompt_tokens 4)" ]' "/clear forgets the conversation"
expect_in 0 "chat, no reuse" "$CHAT" -- "$M" run "$MODEL" --temp 0.7 --seed 3 -n 4 \
    --system "Be brief." --verbose --no-reuse
check 'cmp -s "$T/out" "$T/reuse.out"' "the answers do not depend on reusing the cache"
check '[ "$(cached_tokens 2)" = 0 ]' "--no-reuse evaluates everything"

# thinking and the system prompt are part of the prompt
expect_in 0 "thinking off" 'Hi\n/set think on\nHi\n/clear\n/set system You are terse.\nHi\n' \
    -- "$M" run "$MODEL" --temp 0 -n 2 --no-think --stats
check '[ "$(prompt_tokens 2)" -gt "$(prompt_tokens 1)" ]' "/set think on opens a system turn"
check '[ "$(prompt_tokens 3)" -gt "$(prompt_tokens 1)" ]' "/set system adds a system turn"
expect_in 0 "unknown command" '/frobnicate\nHi\n' -- "$M" run "$MODEL" --temp 0 -n 2 --stats
check 'grep -q "Unknown command" "$T/err" && [ "$(n_stats)" = 1 ]' \
    "an unknown command is reported and the chat goes on"

# one-shot: one answer, stdin untouched
expect_in 0 "one-shot" 'never read\n' -- "$M" run "$MODEL" What is 2+2 --temp 0 -n 4 --verbose
check '[ -s "$T/out" ] && [ "$(n_stats)" = 1 ] && [ "$(prompt_tokens 1)" -gt 5 ]' \
    "one answer to the joined prompt words"
expect_in 1 "one-shot, context too small" "" -- "$M" run "$MODEL" "What is 2+2?" --ctx 8
check 'grep -q "does not fit" "$T/err"' "the message says the conversation does not fit"
# a turn that does not fit is reported; the chat goes on
expect_in 0 "REPL, turn too long" 'Hi\nWhat is two plus two, and what is three plus three?\nHi\n' \
    -- "$M" run "$MODEL" --temp 0 -n 2 --ctx 40 --stats
check 'grep -q "does not fit" "$T/err" && [ "$(n_stats)" = 2 ]' \
    "the long question fails, the others are answered"

shelltest_end
