#!/usr/bin/env bash
# Points every alert's runbook_url at another copy of docs/runbooks.md: the base is one
# setting, rules/RUNBOOK_BASE (the URL of runbooks.md, without the #anchor). This rewrites
# it, the runbook_url of every alert in rules/ and the expectations of the rule unit tests,
# and regenerates kubernetes/prometheusrule.yaml, so everything keeps agreeing (a test checks
# that every runbook_url starts with the base in rules/RUNBOOK_BASE).
#
#   ./scripts/set-runbook-base.sh https://wiki.example.com/etcd/runbooks.md
set -euo pipefail
cd "$(dirname "$0")/.."
new=${1:?usage: $0 URL-of-runbooks.md}
[[ $new =~ ^https?://[^[:space:]\#]+$ ]] || { echo "set-runbook-base: $new is not an http(s) URL without #" >&2; exit 2; }
old=$(head -n1 rules/RUNBOOK_BASE)
files=(rules/*.yml rules/tests/*.yml)
# Literal replacement of the old base, only where it begins a runbook_url value.
OLD=$old NEW=$new perl -pi -e 's/(runbook_url:\s*["\x27]?)\Q$ENV{OLD}\E#/$1$ENV{NEW}#/g' "${files[@]}"
printf '%s\n' "$new" > rules/RUNBOOK_BASE
python3 scripts/gen-kubernetes.py
echo "set-runbook-base: $old -> $new in ${#files[@]} files and kubernetes/"
