#!/usr/bin/env bash
# Helpers shared by the scripts/bench-*.sh benchmarks (sourced, not run): messages,
# stopping processes, port checks, and reading a process's CPU and memory from /proc.
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
