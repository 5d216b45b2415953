#!/usr/bin/env bash
# Install the Debian packages that building and testing sluice need, when
# they are missing.  Called by `make deps` and .ci/run; safe to re-run.
set -eu
PKGS=(
	build-essential pkg-config          # compiler, make, pkg-config
	libgnutls28-dev libsqlite3-dev libldns-dev   # the three libraries
	libcrypt-dev                        # password hashes for AUTH
	libmicrohttpd-dev                   # the /metrics endpoint
	zlib1g-dev                          # gzip of TLS-RPT reports
	sqlite3                             # inspect the queue by hand
	python3 python3-aiosmtpd python3-dnslib      # test clients and peers
	python3-dkim                        # verifies DKIM signatures in tests
	swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
	gnutls-bin openssl                  # test certificates, TLS clients
	procps util-linux                   # ps, mount (tmpfs disk-full test), unshare
	iproute2                            # ip: addresses in a test network namespace
	groff-base                          # render the man page in tests
	clang libclang-rt-14-dev            # make fuzz: libFuzzer, sanitizers
	clang-format cppcheck               # make fmt-check, make lint (CI)
	knot knot-dnsutils unbound          # real DNSSEC: a signing server, a validator
	libpq-dev postgresql python3-psycopg2   # the PostgreSQL queue and its tests
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PKGS[@]} packages present"
	exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "deps: installing ${missing[*]}"
$SUDO apt-get update
# The tests start their own knotd and unbound on high ports: keep the
# packages from starting system instances (exit 101: "not allowed").
rc_d=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	rc_d=/usr/sbin/policy-rc.d
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee $rc_d >/dev/null
	$SUDO chmod 755 $rc_d
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
[ -z "$rc_d" ] || $SUDO rm -f "$rc_d"
