#!/usr/bin/env bash
# container-test.sh - build the container image with Podman and run it as
# people will (make container-test; minutes, so not part of make test).
#
# Installs what it needs from Debian's archive (podman with netavark and
# iptables, runc, debootstrap, openssl), makes the base images debian:12
# and debian:12-slim with debootstrap when they are neither in local
# storage nor pullable, builds the image in the Docker format (an OCI image
# has no HEALTHCHECK), then checks, with no sysctl and no added capability:
#   - the image's user, ports, volume and health check;
#   - the health check passes; the process is not root and has no
#     capability;
#   - a client through the published port cannot relay (554 5.7.1), while
#     one message for a relay domain is accepted and queued; STARTTLS and
#     implicit TLS answer with a certificate for SLUICE_HOSTNAME;
#   - a restart keeps the queue; a new container on the same volume with
#     another SLUICE_HOSTNAME (and --cap-drop=ALL, no-new-privileges and a
#     read-only root) keeps it too and makes a certificate for the new name;
#   - arbitrary uids in group 0 (OpenShift): one uid on a new volume, a
#     second uid on that volume after it, and one on the volume made by
#     the image's own user;
#   - SLUICE_RELAY_NETWORKS naming the bridge's gateway lets the host's
#     client relay (the environment wins over the image's file).
# Nothing leaves the machine: the ports are published on 127.0.0.1 only,
# and delivery goes to a smarthost on the container's loopback where
# nothing listens, so mail stays deferred.  Everything it makes
# (containers, volumes, the image, base images it made, temp folders) is
# removed at the end by name or ID; KEEP_BASE_IMAGES=yes keeps base images
# it made, for the next run.
# The last line is "N passed, M failed"; the exit status is 1 on a failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_ID="ct$$"
TAG="localhost/sluice-container-test:$RUN_ID"
TMP=$(mktemp -d /tmp/sluice-container-test.XXXXXX)
CONTAINERS=()
VOLUMES=()
MADE_IMAGES=()
PASSED=0
FAILED=0

say() { printf '%s\n' "container-test: $*"; }
# crun 1.8 refuses hybrid cgroup hierarchies; runc works on every layout.
pm() { podman --runtime runc "$@"; }

cleanup() {
	local c v i
	set +e
	for c in "${CONTAINERS[@]}"; do pm rm -f -t 0 "$c" >/dev/null 2>&1; done
	for v in "${VOLUMES[@]}"; do pm volume rm -f "$v" >/dev/null 2>&1; done
	pm rmi -f "$TAG" >/dev/null 2>&1
	if [ "${KEEP_BASE_IMAGES:-no}" != yes ]; then
		for i in "${MADE_IMAGES[@]}"; do pm rmi -f "$i" >/dev/null 2>&1; done
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

# ---- what it needs ----
[ "$(id -u)" -eq 0 ] || { say "run as root (rootful podman, apt-get)"; exit 2; }
say "installing podman, netavark, iptables, runc, debootstrap, openssl"
if ! { apt-get update -qq &&
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		podman netavark iptables runc debootstrap openssl python3 ca-certificates; } >"$TMP/apt.log" 2>&1; then
	tail -20 "$TMP/apt.log"
	say "could not install the packages"
	exit 2
fi

# Without CAP_SYS_RESOURCE podman cannot raise the limits it asks for by
# default (nofile 1048576): ask for what this machine allows.
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
hard_nproc=$(ulimit -Hu)
{ [ "$hard_nproc" = unlimited ] || [ "$hard_nproc" -gt 32768 ]; } && hard_nproc=32768
ULIMITS=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit "nproc=$hard_nproc:$hard_nproc")


# ---- base images ----
# The mirrors this machine's apt uses, for debootstrap and for the image.
apt_sources() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] && cat "$f"
	done
}
debian_mirror() {
	apt_sources | awk '
		/^deb / && $0 !~ /security/ { for (i = 2; i <= NF; i++)
			if ($i ~ /^https?:\/\//) { print $i; exit } }
		/^URIs:/ && $2 !~ /security/ { print $2; exit }'
}
security_mirror() {
	apt_sources | awk '
		/^deb / && $0 ~ /security/ { for (i = 2; i <= NF; i++)
			if ($i ~ /^https?:\/\//) { print $i; exit } }
		/^URIs:/ && $2 ~ /security/ { print $2; exit }'
}

# A debootstrap root file system shaped like the official debian:12 image.
make_rootfs() {
	local dir=$1 mirror security
	mirror=$(debian_mirror)
	security=$(security_mirror)
	[ -n "$mirror" ] || { say "no Debian mirror in this machine's apt sources"; exit 2; }
	[ -n "$security" ] || security="${mirror%/debian}/debian-security"
	say "debootstrap bookworm from this machine's mirror"
	debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$TMP/debootstrap.log" 2>&1 ||
		{ tail -20 "$TMP/debootstrap.log"; exit 2; }
	rm -f "$dir/etc/apt/sources.list"
	cat >"$dir/etc/apt/sources.list.d/debian.sources" <<-EOF
	Types: deb
	URIs: $mirror
	Suites: bookworm bookworm-updates
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

	Types: deb
	URIs: $security
	Suites: bookworm-security
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<-'EOF'
	DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
	APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
	Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
	EOF
	rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
		"$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log
	: >"$dir/etc/hostname"
	: >"$dir/etc/resolv.conf"
}

# The slim variant: no documentation, manual pages or locales (as the
# official debian:12-slim), now or from later installs.
slim_rootfs() {
	local dir=$1
	cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<-'EOF'
	path-exclude /usr/share/doc/*
	path-include /usr/share/doc/*/copyright
	path-exclude /usr/share/man/*
	path-exclude /usr/share/info/*
	path-exclude /usr/share/locale/*
	path-include /usr/share/locale/locale.alias
	path-exclude /usr/share/lintian/*
	EOF
	find "$dir/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
	find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/lintian/*
	find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
		-exec rm -rf {} +
}

import_rootfs() {
	local dir=$1 name=$2 id
	id=$(tar --numeric-owner -C "$dir" -c . |
		pm import --change 'CMD ["bash"]' - "$name" 2>"$TMP/import.log" | tail -1) ||
		{ cat "$TMP/import.log"; exit 2; }
	MADE_IMAGES+=("$id")
	say "made base image $name ($id)"
}

# An unqualified FROM debian:12 finds localhost/debian:12 in local storage.
need_base=()
for base in debian:12 debian:12-slim; do
	if pm image exists "$base"; then
		say "base image $base: in local storage"
	elif timeout 60 podman pull -q "$base" >/dev/null 2>&1; then
		say "base image $base: pulled"
	else
		need_base+=("$base")
	fi
done
if [ ${#need_base[@]} -gt 0 ]; then
	say "no registry reachable for ${need_base[*]}: making them locally"
	make_rootfs "$TMP/rootfs"
	for base in "${need_base[@]}"; do
		if [ "$base" = debian:12-slim ]; then
			cp -a "$TMP/rootfs" "$TMP/rootfs-slim"
			slim_rootfs "$TMP/rootfs-slim"
			import_rootfs "$TMP/rootfs-slim" "localhost/$base"
		else
			import_rootfs "$TMP/rootfs" "localhost/$base"
		fi
	done
	rm -rf "$TMP/rootfs" "$TMP/rootfs-slim"
fi

# ---- the image ----
say "building $TAG (podman build --format docker)"
start=$(date +%s)
if ! pm build --format docker --layers=false --pull=never "${ULIMITS[@]}" \
	-t "$TAG" -f "$ROOT/Dockerfile" "$ROOT" >"$TMP/build.log" 2>&1; then
	tail -40 "$TMP/build.log"
	say "build failed"
	exit 1
fi
say "built in $(($(date +%s) - start)) s: $(pm image inspect --format '{{.Size}}' "$TAG") bytes"

# ---- helpers for the checks ----
pass() { PASSED=$((PASSED + 1)); say "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/    /'; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run NAME VOLUME [podman run options...]: start a container, wait for
# "ready" (or its death), print nothing; its ports in P25/P587/P465.
run() {
	local name="$RUN_ID-$1" vol=$2 i
	shift 2
	P25=$(free_port) P587=$(free_port) P465=$(free_port)
	CONTAINERS+=("$name")
	pm run -d --name "$name" "${ULIMITS[@]}" \
		-p "127.0.0.1:$P25:2525" -p "127.0.0.1:$P587:2587" -p "127.0.0.1:$P465:2465" \
		-v "$RUN_ID-$vol:/var/lib/sluice" --stop-timeout 40 \
		-e SLUICE_SMARTHOST=127.0.0.1:1 -e SLUICE_RELAY_DOMAINS=inbound.test \
		"$@" "$TAG" >"$TMP/$name.run" 2>&1 || { cat "$TMP/$name.run"; return 1; }
	for i in $(seq 100); do
		grep -q 'info main: ready' <<<"$(logs "$name")" && return 0
		[ "$(pm inspect --format '{{.State.Running}}' "$name")" = true ] || break
		sleep 0.2
	done
	logs "$name" | tail -20
	return 1
}
logs() { pm logs "$1" 2>&1; }
volume() { VOLUMES+=("$RUN_ID-$1"); pm volume create "$RUN_ID-$1" >/dev/null; }

healthy() {
	local out
	out=$(pm healthcheck run "$1" 2>&1) || { printf '%s\n' "$out"; return 1; }
	[ "$(pm inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]
}

# smtp PORT RCPT [STARTTLS_PORT]: one message from a client on the host;
# prints the reply to RCPT (or to DATA's end when accepted).
smtp() {
	python3 - "$@" <<-'EOF'
	import smtplib, sys
	port, rcpt = int(sys.argv[1]), sys.argv[2]
	with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as s:
	    s.ehlo()
	    s.mail("probe@client.test")
	    code, text = s.rcpt(rcpt)
	    if code != 250:
	        print(code, text.decode())
	        sys.exit(0)
	    code, text = s.data(b"Subject: container test\r\n\r\nhello\r\n")
	    print(code, text.decode())
	EOF
}

# cert_cn PORT starttls|smtps: the CN of the certificate a client sees.
cert_cn() {
	local opt=(-starttls smtp)
	[ "$2" = smtps ] && opt=()
	openssl s_client -connect "127.0.0.1:$1" "${opt[@]}" </dev/null 2>/dev/null |
		openssl x509 -noout -subject -nameopt multiline 2>/dev/null |
		sed -n 's/^ *commonName *= *//p'
}

queued() { pm exec "$1" sluice queue list 2>&1; }

# ---- the checks ----
# A failed check is counted, not fatal.
set +e
cfg=$(pm image inspect --format '{{json .}}' "$TAG")
if out=$(python3 - "$cfg" 2>&1 <<-'EOF'
	import json, sys
	img = json.loads(sys.argv[1])
	img = img[0] if isinstance(img, list) else img
	cfg = img.get("Config", {})
	hc = img.get("Healthcheck") or cfg.get("Healthcheck") or {}
	assert hc.get("Test") == ["CMD", "sluice", "health"], hc
	assert cfg.get("User") == "sluice", cfg.get("User")
	ports = sorted(cfg.get("ExposedPorts", {}))
	assert ports == ["2465/tcp", "2525/tcp", "2587/tcp"], ports
	assert "/var/lib/sluice" in cfg.get("Volumes", {}), cfg.get("Volumes")
	EOF
); then
	pass "image: user sluice, ports 2525 2587 2465, volume, HEALTHCHECK kept"
else
	fail "image settings" "$out"
fi

# 1. Defaults: no sysctl, podman's default capabilities, the image's user.
volume q1
H1=relay1.container.test
if run a q1 --hostname "$H1" -e SLUICE_HOSTNAME="$H1"; then
	pass "starts without --sysctl under podman: $(logs "$RUN_ID-a" | grep -o 'listening on [^ ]*')"
else
	fail "starts without --sysctl under podman"
fi
A="$RUN_ID-a"
if out=$(healthy "$A"); then pass "health check: healthy"; else fail "health check" "$out"; fi
status=$(pm exec "$A" cat /proc/1/status 2>&1)
uid=$(awk '/^Uid:/ { print $2 }' <<<"$status")
capeff=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
if [ "$uid" = 2525 ] && [ "$capeff" = 0000000000000000 ] &&
	[ "$(pm top "$A" huser | tail -1 | tr -d ' ')" = 2525 ]; then
	pass "not root: uid 2525 in the container and on the host, no capability"
else
	fail "not root" "uid=$uid CapEff=$capeff $(pm top "$A" huser user 2>&1)"
fi
reply=$(smtp "$P25" someone@outside.example 2>&1)
client=$(logs "$A" | grep -o 'connect from \[[^]]*\]' | tail -1)
gateway=$(sed 's/.*\[\(.*\)\]/\1/' <<<"$client")
if [[ "$reply" == "554 5.7.1"* ]]; then
	pass "published port, outside domain: $reply (client seen as $gateway)"
else
	fail "published port must not relay" "$reply"
fi
reply=$(smtp "$P25" postmaster@inbound.test 2>&1)
id=$(sed -n 's/^250 .*queued as \([0-9A-Z]*\).*/\1/p' <<<"$reply")
if [ -n "$id" ] && grep -q "$id" <<<"$(queued "$A")"; then
	pass "message for a relay domain accepted and queued: $id"
else
	fail "message accepted and queued" "$reply
$(queued "$A")"
fi
cn587=$(cert_cn "$P587" starttls)
cn465=$(cert_cn "$P465" smtps)
if [ "$cn587" = "$H1" ] && [ "$cn465" = "$H1" ]; then
	pass "STARTTLS on 2587 and TLS on 2465: self-signed for $H1"
else
	fail "TLS listeners" "587: '$cn587' 465: '$cn465'"
fi
pm restart -t 40 "$A" >/dev/null 2>&1
for i in $(seq 100); do
	[ "$(logs "$A" | grep -c 'info main: ready')" -ge 2 ] && break
	sleep 0.2
done
if out=$(healthy "$A") && grep -q "$id" <<<"$(queued "$A")"; then
	pass "restart: healthy, $id still queued"
else
	fail "restart keeps the queue" "$out
$(queued "$A")"
fi
pm stop -t 40 "$A" >/dev/null 2>&1

# 2. The same volume, a new container, another host name, hardened.
H2=relay2.container.test
if run b q1 --hostname "$H2" -e SLUICE_HOSTNAME="$H2" \
	--cap-drop=ALL --security-opt=no-new-privileges --read-only; then
	B="$RUN_ID-b"
	if out=$(healthy "$B") && grep -q "$id" <<<"$(queued "$B")"; then
		pass "--cap-drop=ALL, no-new-privileges, --read-only: healthy, $id still queued"
	else
		fail "hardened container on the same volume" "$out
$(queued "$B")"
	fi
	cn=$(cert_cn "$P587" starttls)
	if [ "$cn" = "$H2" ] && grep -q "replacing the self-signed certificate: .* was made for $H1, not $H2" <<<"$(logs "$B")"; then
		pass "new SLUICE_HOSTNAME: certificate made anew for $H2, and logged"
	else
		fail "certificate follows SLUICE_HOSTNAME" "CN '$cn'
$(logs "$B" | grep tls)"
	fi
	pm stop -t 40 "$B" >/dev/null 2>&1
else
	fail "hardened container on the same volume"
fi

# 3. OpenShift: arbitrary uids in group 0.
volume q2
if run c q2 --user 100123:0 -e SLUICE_HOSTNAME=relay3.container.test; then
	C="$RUN_ID-c"
	reply=$(smtp "$P25" postmaster@inbound.test 2>&1)
	id3=$(sed -n 's/^250 .*queued as \([0-9A-Z]*\).*/\1/p' <<<"$reply")
	files=$(pm exec "$C" ls -ln /var/lib/sluice 2>&1)
	bad=$(awk 'NR > 1 && ($4 != 0 || substr($1, 5, 2) != "rw")' <<<"$files")
	if out=$(healthy "$C") && [ -n "$id3" ] && [ -z "$bad" ]; then
		pass "uid 100123 gid 0: healthy, $id3 queued, its files group 0 rw"
	else
		fail "uid 100123 gid 0" "$out $reply
$files"
	fi
	pm stop -t 40 "$C" >/dev/null 2>&1
else
	fail "uid 100123 gid 0 starts"
fi
if run d q2 --user 100456:0 -e SLUICE_HOSTNAME=relay3.container.test; then
	D="$RUN_ID-d"
	reply=$(smtp "$P25" postmaster@inbound.test 2>&1)
	cn=$(cert_cn "$P587" starttls)
	if out=$(healthy "$D") && grep -q "${id3:-none}" <<<"$(queued "$D")" &&
		[[ "$reply" == "250 "* ]] && [ "$cn" = relay3.container.test ]; then
		pass "then uid 100456 gid 0 on that volume: healthy, ${id3:-} kept, accepts mail, TLS key readable"
	else
		fail "a second uid on the volume" "$out $reply CN '$cn'
$(queued "$D")
$(logs "$D" | tail -5)"
	fi
	pm stop -t 40 "$D" >/dev/null 2>&1
else
	fail "a second uid on the volume starts"
fi
if run e q1 --user 100789:0 -e SLUICE_HOSTNAME="$H2"; then
	E="$RUN_ID-e"
	reply=$(smtp "$P25" postmaster@inbound.test 2>&1)
	if out=$(healthy "$E") && grep -q "$id" <<<"$(queued "$E")" && [[ "$reply" == "250 "* ]]; then
		pass "uid 100789 gid 0 on the volume of the image's user: healthy, $id kept, accepts mail"
	else
		fail "an arbitrary uid on the image user's volume" "$out $reply
$(queued "$E")
$(logs "$E" | tail -5)"
	fi
	pm stop -t 40 "$E" >/dev/null 2>&1
else
	fail "an arbitrary uid on the image user's volume starts"
fi

# 4. SLUICE_RELAY_NETWORKS wins over the image's file: trusting the
# gateway (docs/container.md: a port published on loopback only) lets the
# host's client relay; the mail stays deferred for the dead smarthost.
volume q3
if [ -n "$gateway" ] && run f q3 -e SLUICE_RELAY_NETWORKS="127.0.0.0/8, ::1/128, $gateway/32"; then
	reply=$(smtp "$P25" someone@outside.example 2>&1)
	if [[ "$reply" == "250 "* ]]; then
		pass "SLUICE_RELAY_NETWORKS naming the gateway $gateway: the host's client relays ($reply)"
	else
		fail "SLUICE_RELAY_NETWORKS override" "$reply"
	fi
	pm stop -t 40 "$RUN_ID-f" >/dev/null 2>&1
else
	fail "SLUICE_RELAY_NETWORKS override starts (gateway '$gateway')"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
