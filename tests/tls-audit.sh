#!/usr/bin/env bash
# make tls-audit (slow, optional; not part of make test): run Debian's
# testssl.sh against sluice's submission port (STARTTLS) and its implicit-TLS
# port, and fail on any finding rated HIGH or CRITICAL.  A test CA signs the
# server certificate and is given to testssl, so the findings are about the
# TLS set-up, not about trusting a test certificate.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
command -v testssl >/dev/null || {
	[ "$(id -u)" -eq 0 ] || { echo "tls-audit: install testssl.sh first"; exit 1; }
	apt-get update && apt-get install -y --no-install-recommends testssl.sh
}
dir=$(mktemp -d /tmp/sluice-tls-audit-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" \
	-days 30 -subj "/CN=sluice audit CA" -addext basicConstraints=critical,CA:TRUE \
	-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
	-days 400 -subj "/CN=localhost" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	-addext "extendedKeyUsage=serverAuth" \
	-addext "crlDistributionPoints=URI:http://localhost/crl.pem" 2>/dev/null
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sub=$(port)
smtps=$(port)
cat >"$dir/sluice.conf" <<CONF
hostname = localhost
listen = 127.0.0.1:$sub/submission, 127.0.0.1:$smtps/smtps
queue_path = $dir/queue.db
tls_cert = $dir/cert.pem
tls_key = $dir/key.pem
CONF
"$BUILD/sluice" serve -c "$dir/sluice.conf" 2>"$dir/sluice.log" &
pid=$!
for _ in $(seq 50); do grep -q "ready:" "$dir/sluice.log" && break; sleep 0.1; done
status=0
for target in "--starttls smtp 127.0.0.1:$sub" "127.0.0.1:$smtps"; do
	json="$dir/out-$RANDOM.json"
	# shellcheck disable=SC2086
	testssl --quiet --color 0 --warnings off --nodns min --add-ca "$dir/ca.pem" \
		-p -S -P -f -U --jsonfile "$json" $target >/dev/null 2>&1 || true
	bad=$(/usr/bin/python3 - "$json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
for f in findings:
    if f.get("severity") in ("HIGH", "CRITICAL"):
        print("%s %s: %s" % (f["severity"], f["id"], f.get("finding", "")))
PY
)
	if [ -n "$bad" ]; then
		echo "tls-audit: $target:"
		echo "$bad"
		status=1
	else
		echo "tls-audit: $target: no HIGH or CRITICAL findings"
	fi
done
exit $status
