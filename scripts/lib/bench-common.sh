#!/usr/bin/env bash
# Helpers shared by the scripts/bench-*.sh benchmarks (sourced, not run): messages,
# stopping processes, port checks, reading a process's CPU and memory from /proc, and a test
# output file kept when a run fails (`output_file`).
# `run_wait` leaves the PID it waits for in the caller's `fg_pid`, so a trap can stop it.

log() { echo "bench: $*" >&2; }

die() {
    echo "bench: ERROR: $*" >&2
    exit 1
}

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cpu_ticks() { # utime+stime (fields 14, 15) of PID; comm may contain spaces, so cut at ')'
    local rest
    rest=$(<"/proc/$1/stat")
    rest=${rest##*) }
    awk '{ print $12 + $13 }' <<<"$rest"
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

run_wait() {
    local rc=0
    "$@" &
    fg_pid=$!
    wait "$fg_pid" || rc=$?
    fg_pid=""
    return "$rc"
}

nap() { run_wait sleep "$1"; }

# output_file NAME: a temp file for a test's output in the caller's `out`, removed at exit
# unless the run failed or KEEP_OUTPUT=1; the process in `fg_pid` is stopped at exit.
# Sets the EXIT, INT and TERM traps.
output_file() {
    out=$(mktemp "${TMPDIR:-/tmp}/$1.XXXXXX")
    fg_pid=""
    trap _output_file_cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
}

_output_file_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$fg_pid"
    if [[ "${KEEP_OUTPUT:-0}" == 1 || $rc -ne 0 ]]; then
        log "test output kept in $out"
    else
        rm -f "$out"
    fi
    exit "$rc"
}
