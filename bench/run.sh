#!/usr/bin/env bash
# make bench (and bench-wal, bench-dead, robustness: BENCH names the
# script in bench/): the benchmarks, not tests; see docs/benchmark.md.
# They need Postfix's smtp-source and smtp-sink, taken from Debian's postfix
# package without installing it (apt-get download + dpkg -x into a cache).
set -eu
cd "$(dirname "$0")/.."
CACHE=${BENCH_CACHE:-bench/.cache}
PF=$CACHE/postfix
if [ ! -x "$PF/usr/sbin/smtp-source" ]; then
	mkdir -p "$CACHE"
	(cd "$CACHE" && rm -f postfix_*.deb && apt-get download postfix >/dev/null)
	rm -rf "$PF"
	dpkg -x "$CACHE"/postfix_*.deb "$PF"
	mkdir -p "$PF/conf"
	: >"$PF/conf/main.cf"
fi
export PF_ROOT=$PF
# The reference build measured beside this one (BASELINE_REF=none: none).
if [ -z "${BASELINE_BIN:-}" ] && [ "${BASELINE_REF:-3575e2d}" != none ]; then
	BASELINE_BIN=$(bash bench/baseline.sh "${BASELINE_REF:-3575e2d}")
	export BASELINE_BIN
fi
exec /usr/bin/python3 "bench/${BENCH:-bench}.py" "$@"
