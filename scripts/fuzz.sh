#!/usr/bin/env bash
# Fuzzes the relay's parsers and renderers (fuzz/: ingest, config, matchers, silence) and
# the exporter's readers of what members and agents send (exporter_textformat: a member's
# /metrics, parsed, merged and read back; exporter_agent_snapshot: an agent's snapshot and
# its staleness) with cargo-fuzz and libFuzzer, each target for SECONDS (default 300), and exits non-zero if
# any target crashed (a panic, a failed check), hung on one input for more than 5 s, or ran
# out of memory.
#
#   ./scripts/fuzz.sh [SECONDS]           every target
#   FUZZ_TARGETS="ingest silence" ./scripts/fuzz.sh 60
#
# exporter_textformat's seeds include a whole etcd member's /metrics (147 KB); its inputs
# are capped at 16 KiB (-max_len, which truncates that seed as it is read) so that most
# runs stay short and the 20 s of the test command go to many inputs, not a few large ones.
#
# Stable Rust only. cargo-fuzz's default build adds `-Zsanitizer=address`, which needs
# nightly; this script builds with `--sanitizer none`, which leaves only stable rustc flags
# (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`, `--cfg fuzzing`,
# `-Cdebug-assertions`), so no nightly and no RUSTC_BOOTSTRAP are needed. What that loses is
# AddressSanitizer, which finds memory errors in unsafe code; the relay forbids unsafe code,
# and what it can get wrong (panics, overflow with debug assertions on, hangs, unbounded
# memory) libFuzzer catches without it. (RUSTC_BOOTSTRAP=1 would let stable rustc take
# -Zsanitizer=address; that is a nightly feature on a stable compiler, so it is not used.)
#
# Inputs: libFuzzer adds what it finds to fuzz/work/<target> (git-ignored, kept between
# runs) and reads the seeds in fuzz/corpus/<target> and the minimised crashers in
# fuzz/regressions/<target>, so every known crasher is replayed first. A crash is saved in
# fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/crash-...
# and minimise it with `cargo fuzz tmin --sanitizer none <target> <file>`.
#
# Cost on the 2-core machine: installing cargo-fuzz about 1 minute (3 under load),
# building fuzz/target from nothing about 7 minutes for the relay's dependencies and 15
# with the exporter's (etcd-client, tonic; measured on a loaded machine), a rebuild after
# a change to alerting/ or exporter/ 1.5 to 4 minutes; then SECONDS per target.
set -euo pipefail
cd "$(dirname "$0")/.."

per_target=${1:-300}
[[ $per_target =~ ^[0-9]+$ && $per_target -gt 0 ]] || {
    echo "usage: $0 [SECONDS per target]" >&2
    exit 2
}
targets=(${FUZZ_TARGETS:-ingest config matchers silence exporter_textformat exporter_agent_snapshot})
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

build=(--sanitizer none)

mkdir -p fuzz/work
echo "fuzz: building (cargo fuzz build ${build[*]}, into fuzz/target; log: fuzz/work/build.log)"
start=$(date +%s)
if ! cargo fuzz build "${build[@]}" >fuzz/work/build.log 2>&1; then
    tail -60 fuzz/work/build.log >&2
    echo "fuzz: build failed" >&2
    exit 1
fi
echo "fuzz: built in $(($(date +%s) - start))s"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    # The shipped config as it is now, whatever the seed copy says.
    [[ $t == config ]] && cp alerting/relay.yml fuzz/work/config/relay.yml
    args=(-max_total_time="$per_target" -timeout=5 -print_final_stats=1)
    [[ -f fuzz/dict/$t.dict ]] && args+=(-dict="fuzz/dict/$t.dict")
    [[ $t == exporter_textformat ]] && args+=(-max_len=16384)
    log=fuzz/work/$t.log
    echo "fuzz: $t for ${per_target}s (log: $log)"
    if cargo fuzz run "${build[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" \
        -- "${args[@]}" >"$log" 2>&1; then
        # libFuzzer's last status line: "#RUNS DONE cov: N ft: N corp: N/SIZE ... exec/s: N".
        summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 |
            sed -E 's/^#([0-9]+)[[:space:]]+DONE +(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).* (exec\/s: [0-9]+).*/\1 runs, \2, \3/' || true)
        echo "fuzz: $t ok: ${summary:-see $log}"
    else
        failed+=("$t")
        echo "fuzz: $t FAILED (full log: $log):" >&2
        # The panic message or timeout report, up to libFuzzer's summary and the input file.
        sed -n '/^Running: \|panicked at\|^ALARM\|ERROR: libFuzzer/,/^SUMMARY/p' "$log" | head -40 >&2
        grep -E 'Test unit written to' "$log" | sed "s|.*Test unit written to |fuzz:   input: |" >&2 || true
        echo "fuzz:   replay: cargo fuzz run ${build[*]} $t <input>" >&2
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]}: minimise (cargo fuzz tmin ${build[*]} <target> <input>), fix, and keep the input in fuzz/regressions/<target>/" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${per_target}s each without a crash"
