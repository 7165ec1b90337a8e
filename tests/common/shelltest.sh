# shelltest.sh — helpers for the shell tests (tests/*/test_*.sh), sourced
# after M (the moeprune binary) and SRC (the source folder) are set:
#   shelltest_init NAME      a temp folder $T (removed on exit), counters
#   expect CODE WHAT -- CMD...          runs CMD (stdin /dev/null) into $T/out, $T/err
#   expect_in CODE WHAT INPUT -- CMD... the same with printf INPUT on stdin
#   check 'SHELL EXPR' WHAT             counts a failure when EXPR is false
#   shelltest_end            prints the summary; its status is the test's
shelltest_init() {
    shelltest_name=$1
    T=$(mktemp -d "${TMPDIR:-/tmp}/mp-$1-XXXXXX")
    trap 'rm -rf "$T"' EXIT
    fails=0
    checks=0
}

shelltest_report() {
    echo "FAIL: $1" >&2
    sed 's/^/  stderr: /' "$T/err" >&2 2>/dev/null
    fails=$((fails + 1))
}

expect() {
    local want=$1 what=$2
    shift 3
    checks=$((checks + 1))
    "$@" >"$T/out" 2>"$T/err" </dev/null
    local got=$?
    [ "$got" = "$want" ] || shelltest_report "$what: exit $got, expected $want: $*"
}

expect_in() {
    local want=$1 what=$2 input=$3
    shift 4
    checks=$((checks + 1))
    printf "$input" | "$@" >"$T/out" 2>"$T/err"
    local got=${PIPESTATUS[1]}
    [ "$got" = "$want" ] || shelltest_report "$what: exit $got, expected $want: $*"
}

check() {
    checks=$((checks + 1))
    eval "$1" || shelltest_report "$2"
}

shelltest_end() {
    echo "$shelltest_name: $checks checks, $fails failed"
    [ "$fails" = 0 ]
}
