#!/usr/bin/env bash
# Run libFuzzer targets built by `make fuzz` (see docs/fuzzing.md):
#   FUZZ_SECONDS=60 FUZZ_BUILD=build-fuzz bash tests/fuzz/run.sh parse data
# Each target runs for FUZZ_SECONDS from its seed corpus
# (tests/fuzz/corpus/NAME, never written to); new inputs go to
# $FUZZ_BUILD/corpus/NAME and crashing inputs to $FUZZ_BUILD/crashes/.
# Prints one line per target with its executions, and fails when any
# target crashed, leaked, hit undefined behaviour or a property check.
set -u
cd "$(dirname "$0")/../.."
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
failed=()
for t in "$@"; do
	bin=$FUZZ_BUILD/fuzz/fuzz_$t
	seeds=tests/fuzz/corpus/$t
	scratch=$FUZZ_BUILD/corpus/$t
	crashes=$FUZZ_BUILD/crashes
	log=$FUZZ_BUILD/fuzz_$t.log
	mkdir -p "$scratch" "$crashes"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	echo "fuzz $t: ${FUZZ_SECONDS}s from $seeds"
	# The first corpus folder receives new inputs; the seeds stay as
	# they are.  -timeout: an input that takes 10 s is a hang.
	"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
	    -print_final_stats=1 -artifact_prefix="$crashes/$t-" \
	    "${dict[@]}" "$scratch" "$seeds" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	if [ "$rc" -ne 0 ]; then
		echo "FAIL - fuzz $t: exit status $rc after ${execs:-?} executions;" \
		    "see $log and $crashes/$t-*"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|.*property failed)' "$log" | head -5
		failed+=("$t")
	else
		echo "ok - fuzz $t: ${execs:-?} executions in ${FUZZ_SECONDS}s," \
		    "$(find "$scratch" -type f | wc -l) inputs in $scratch"
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failed: ${failed[*]}"
	exit 1
fi
