#!/usr/bin/env bash
# Build the reference build of sluice that a benchmark prints beside this
# one: the tree at git ref $1 (exported with git archive, so the work tree
# is untouched), built into bench/.cache/baseline-REF/.  Prints the path of
# its binary.
set -eu
cd "$(dirname "$0")/.."
ref=${1:?usage: bench/baseline.sh GIT-REF}
rev=$(git rev-parse --short "$ref^{commit}")
dir=bench/.cache/baseline-$rev
if [ ! -x "$dir/build/sluice" ]; then
	rm -rf "$dir"
	mkdir -p "$dir"
	git archive "$rev" | tar -x -C "$dir"
	make -C "$dir" -j2 build/sluice >/dev/null
fi
echo "$PWD/$dir/build/sluice"
