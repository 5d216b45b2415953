#!/usr/bin/env bash
# make bench-dead: the dead-smarthost benchmark (not a test; see
# docs/benchmark.md).  Takes smtp-source from Debian's postfix package
# without installing it, as bench/run.sh does (same cache).
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
exec /usr/bin/python3 bench/dead.py "$@"
