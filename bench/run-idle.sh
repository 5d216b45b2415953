#!/usr/bin/env bash
# make bench-idle: 10,000 idle connections, then a trusted client (see
# bench/idle.py), for this build and, beside it, the reference build:
# BASELINE_REF (a git ref; default 3575e2d, the last commit before sessions
# were parked) or BASELINE_BIN (a binary).
set -eu
cd "$(dirname "$0")/.."
if [ -z "${BASELINE_BIN:-}" ]; then
	BASELINE_BIN=$(bash bench/baseline.sh "${BASELINE_REF:-3575e2d}")
fi
export BASELINE_BIN
exec /usr/bin/python3 bench/idle.py "$@"
