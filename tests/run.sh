#!/usr/bin/env bash
# Run the whole test suite: unit tests (and the fuzz corpus replays), then
# integration tests against the real binary.  Every test prints "ok - NAME"
# or "FAIL - NAME: why"; this script counts them and ends with one line
# "N passed, M failed".
#   BUILD=build-asan bash tests/run.sh        # against another build
#   bash tests/run.sh test_session.py         # only some integration files
#   bash tests/run.sh pg:test_delivery.py     # one on a PostgreSQL queue
#   JOBS=1 bash tests/run.sh                  # one file at a time
# Integration files are independent (each starts its own servers on free
# ports), so JOBS of them (default: the number of CPUs) run at once; each
# file's output is printed whole when it ends.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
PY=/usr/bin/python3     # Debian's python: it has aiosmtpd and dnslib
# The integration files mostly wait (for servers, timeouts, retries): one
# more at a time than there are CPUs.
JOBS=${JOBS:-$(($(nproc 2>/dev/null || echo 2) + 1))}
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
	# The accept, delivery, queue CLI, relay, sendmail, health and
	# metrics tests again on a PostgreSQL queue.  The longest files
	# first (about a minute each), so that none starts last.
	slow="pg:test_delivery.py test_delivery.py test_hostile_mx.py test_pg.py
		test_parking.py test_suspend.py pg:test_queue_cli.py"
	set --
	for t in $slow; do
		case $t in pg:*) set -- "$@" "$t" ;; *) set -- "$@" "tests/integration/$t" ;; esac
	done
	for t in tests/integration/test_*.py pg:test_accept.py pg:test_relay.py \
		pg:test_sendmail.py pg:test_health.py pg:test_metrics.py; do
		case " $(echo $slow) " in *" $(basename "$t") "*) continue ;; esac
		set -- "$@" "$t"
	done
else
	set -- "${@/#/tests/integration/}"
fi

# Integration files, JOBS at a time; each writes its own log and status.
# A file named pg:FILE runs FILE again with its queues in PostgreSQL (the
# cluster started below, SLUICE_TEST_PG).
declare -A running=()
finish_one() {
	local pid
	wait -n -p pid
	local name=${running[$pid]}
	unset "running[$pid]"
	count "$name" "$logs/$name.log" "$(cat "$logs/$name.rc")"
}
pg_pid=
start_pg() {   # one PostgreSQL for the pg: files, stopped by its PID below
	pg_dir=${TMPDIR:-/tmp}/sluice-pg-$$
	"$PY" tests/lib/pgcluster.py start "$pg_dir" >"$logs/pg.out" 2>&1 || {
		cat "$logs/pg.out"
		echo "FAIL - run.sh: cannot start PostgreSQL for the pg: tests"
		fail=$((fail + 1))
		return 1
	}
	SLUICE_TEST_PG=$(sed -n 1p "$logs/pg.out")
	pg_pid=$(sed -n 2p "$logs/pg.out")
	export SLUICE_TEST_PG
}
for t in "$@"; do
	name=$(basename "$t")
	file=$t
	case $name in pg:*)
		file=tests/integration/${name#pg:}
		[ -n "$pg_pid" ] || start_pg || continue
	esac
	while [ ${#running[@]} -ge "$JOBS" ]; do
		finish_one
	done
	if [ "$file" = "$t" ]; then
		(s=$SECONDS; env -u SLUICE_TEST_PG "$PY" "$file" >"$logs/$name.log" 2>&1
		 echo $? >"$logs/$name.rc"; echo "# $name: $((SECONDS - s)) s" >>"$logs/$name.log") &
	else
		(s=$SECONDS; "$PY" "$file" >"$logs/$name.log" 2>&1; echo $? >"$logs/$name.rc"
		 echo "# $name: $((SECONDS - s)) s" >>"$logs/$name.log") &
	fi
	running[$!]=$name
done
while [ ${#running[@]} -gt 0 ]; do
	finish_one
done
if [ -n "$pg_pid" ]; then
	"$PY" tests/lib/pgcluster.py stop "$pg_dir" "$pg_pid"
fi
rm -rf "$logs"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
