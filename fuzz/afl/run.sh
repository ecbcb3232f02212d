#!/bin/sh
# Builds one fuzz target for AFL++ and fuzzes it for SECONDS, seeded from
# fuzz/corpus/TARGET/. Findings land in fuzz/afl/out/TARGET/default/
# (crashes/, hangs/, queue/, fuzzer_stats); a second run of the same target
# resumes that session. Needs `cargo install cargo-afl` once (docs/development.md,
# "Fuzzing", "With AFL++").
#   fuzz/afl/run.sh request_head 300
set -eu

usage="usage: $0 TARGET SECONDS  (TARGET: request_head body packets response_head handshake static_path config)"
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
target=$1
seconds=$2
case $target in
request_head | body | packets | response_head | handshake | static_path | config) ;;
*) echo "$usage" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"
# Its own target/ (a CARGO_TARGET_DIR set for the main crate is not used).
cargo afl build --release --bin "$target" --target-dir target

out=out/$target
mkdir -p "$out"
# Containers and shared machines: no CPU frequency governor to check, and a
# core_pattern AFL++ may not like; neither matters to the findings.
export AFL_SKIP_CPUFREQ=${AFL_SKIP_CPUFREQ:-1}
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=${AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES:-1}
# Resume this target's earlier session, if there is one, instead of refusing.
export AFL_AUTORESUME=${AFL_AUTORESUME:-1}

status=0
if [ -t 1 ]; then
    cargo afl fuzz -i "../corpus/$target" -o "$out" -V "$seconds" \
        -- "target/release/$target" || status=$?
else
    # No terminal for the status screen: AFL++ logs a line per input fuzzed
    # (megabytes a minute), so the log goes to a file, the summary below.
    echo "afl-fuzz: $seconds s on $target, log in fuzz/afl/$out/afl-fuzz.log"
    AFL_NO_UI=1 cargo afl fuzz -i "../corpus/$target" -o "$out" -V "$seconds" \
        -- "target/release/$target" >"$out/afl-fuzz.log" 2>&1 || status=$?
    [ $status -eq 0 ] || tail -n 20 "$out/afl-fuzz.log" >&2
fi

# check_static_path builds its file tree in the temp dir once per process,
# as swiftiply-fuzz-tree-PID, and removes it at exit; afl-fuzz kills its
# children, so remove the trees of processes that are gone.
if [ "$target" = static_path ]; then
    for tree in "${TMPDIR:-/tmp}"/swiftiply-fuzz-tree-*; do
        [ -d "$tree" ] || continue
        kill -0 "${tree##*-}" 2>/dev/null || rm -rf "$tree"
    done
fi

stats=$out/default/fuzzer_stats
if [ -f "$stats" ]; then
    echo "== $target: fuzz/afl/$stats"
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg) ' "$stats"
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
    if [ "$crashes" -gt 0 ]; then
        echo "== $crashes crashing input(s) in fuzz/afl/$out/default/crashes/; replay one with"
        echo "   fuzz/afl/target/release/$target < FILE"
    fi
fi
exit $status
