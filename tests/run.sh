#!/usr/bin/env bash
# Run the whole test suite: unit tests, then integration tests against the
# real binary.  Every test prints "ok - NAME" or "FAIL - NAME: why"; this
# script counts them and ends with one line "N passed, M failed".
#   BUILD=build-asan bash tests/run.sh        # against another build
#   bash tests/run.sh test_session.py         # only some integration files
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
PY=/usr/bin/python3     # Debian's python: it has aiosmtpd and dnslib
pass=0
fail=0
log=$(mktemp)

run() {   # run a test program, echo its output, count its lines
	local name=$1
	shift
	"$@" >"$log" 2>&1
	local rc=$?
	cat "$log"
	local p f
	p=$(grep -c '^ok - ' "$log")
	f=$(grep -c '^FAIL - ' "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAIL - $name: exited with status $rc"
		f=1
	fi
	pass=$((pass + p))
	fail=$((fail + f))
}

if [ $# -eq 0 ]; then
	for t in "$BUILD"/tests/test_*; do
		[ -x "$t" ] && run "$(basename "$t")" "$t"
	done
	set -- tests/integration/test_*.py
else
	set -- "${@/#/tests/integration/}"
fi
for t in "$@"; do
	run "$(basename "$t")" "$PY" "$t"
done
rm -f "$log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
