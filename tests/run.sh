#!/usr/bin/env bash
# Run the whole test suite: unit tests (and the fuzz corpus replays), then
# integration tests against the real binary.  Every test prints "ok - NAME"
# or "FAIL - NAME: why"; this script counts them and ends with one line
# "N passed, M failed".
#   BUILD=build-asan bash tests/run.sh        # against another build
#   bash tests/run.sh test_session.py         # only some integration files
#   JOBS=1 bash tests/run.sh                  # one file at a time
# Integration files are independent (each starts its own servers on free
# ports), so JOBS of them (default: the number of CPUs) run at once; each
# file's output is printed whole when it ends.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
PY=/usr/bin/python3     # Debian's python: it has aiosmtpd and dnslib
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
pass=0
fail=0
logs=$(mktemp -d)

# Count one finished program's log: echo it, add its lines to the totals.
count() {   # NAME LOG RC
	local name=$1 log=$2 rc=$3 p f
	cat "$log"
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
		[ -x "$t" ] || continue
		"$t" >"$logs/unit" 2>&1
		count "$(basename "$t")" "$logs/unit" $?
	done
	set -- tests/integration/test_*.py
else
	set -- "${@/#/tests/integration/}"
fi

# Integration files, JOBS at a time; each writes its own log and status.
declare -A running=()
finish_one() {
	local pid
	wait -n -p pid
	local name=${running[$pid]}
	unset "running[$pid]"
	count "$name" "$logs/$name.log" "$(cat "$logs/$name.rc")"
}
for t in "$@"; do
	name=$(basename "$t")
	while [ ${#running[@]} -ge "$JOBS" ]; do
		finish_one
	done
	("$PY" "$t" >"$logs/$name.log" 2>&1; echo $? >"$logs/$name.rc") &
	running[$!]=$name
done
while [ ${#running[@]} -gt 0 ]; do
	finish_one
done
rm -rf "$logs"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
