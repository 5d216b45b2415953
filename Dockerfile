# Dockerfile - the sluice container image (see docs/container.md).
#
#   docker build -t sluice .        (podman: podman build --format docker)
#   docker run -d --name sluice -p 25:2525 -p 587:2587 -p 465:2465 \
#       -v sluice-queue:/var/lib/sluice -e SLUICE_HOSTNAME=mail.example.com \
#       --stop-timeout 40 sluice
#
# Two stages: the build stage compiles on Debian 12 and stages
# `make install DESTDIR=/out PREFIX=/usr`; the runtime stage is
# debian:12-slim with the shared libraries only, and runs as the
# unprivileged user sluice (uid and gid 2525), or any uid in group 0.

FROM debian:12 AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config libgnutls28-dev libsqlite3-dev \
        libldns-dev libcrypt-dev libmicrohttpd-dev zlib1g-dev libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore keeps build folders, var/ and .git out of the context.
COPY . .
RUN make -j"$(nproc)" \
    && make install DESTDIR=/out PREFIX=/usr \
    && strip --strip-unneeded /out/usr/sbin/sluice

FROM debian:12-slim
# The run-time halves of the build stage's -dev packages (GnuTLS, SQLite,
# ldns, libxcrypt, libmicrohttpd), and the CA bundle for
# outbound_tls = verify and smarthosts.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgnutls30 libsqlite3-0 libldns3 libcrypt1 libmicrohttpd12 zlib1g libpq5 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so that bind mounts and Kubernetes (runAsUser: 2525,
# fsGroup: 2525) can match it.  The volume's folder belongs to group 0 and
# that group may write it, with the setgid bit so that what is made there
# stays in group 0: OpenShift runs the image under an arbitrary uid in
# group 0, and sluice gives that group the owner's rights on the files it
# makes in such a folder (docs/container.md).
RUN groupadd --system --gid 2525 sluice \
    && useradd --system --uid 2525 --gid sluice --home-dir /var/lib/sluice \
        --no-create-home --shell /usr/sbin/nologin sluice \
    && install -d -o sluice -g 0 -m 2770 /var/lib/sluice
COPY --from=build /out/usr/sbin/sluice /usr/sbin/sluice
COPY --from=build /out/etc/sluice/ /etc/sluice/
COPY --from=build /out/usr/share/doc/sluice/ /usr/share/doc/sluice/

# The image's configuration (queue on the volume, the three listeners on
# unprivileged ports, relay_networks loopback only):
# docs/sluice-container.conf.
# Mount your own /etc/sluice/sluice.conf over it, or override single keys
# with SLUICE_<KEY> variables, which win over the file (docs/container.md).
COPY docs/sluice-container.conf /etc/sluice/sluice.conf

VOLUME /var/lib/sluice
WORKDIR /var/lib/sluice
# 2525 (smtp), 2587 (submission), 2465 (smtps): a non-root process may
# bind them under any runtime, with no sysctl and no capability (Podman
# does not set net.ipv4.ip_unprivileged_port_start=0 as Docker does).
# Publish them as 25, 587 and 465: -p 25:2525 -p 587:2587 -p 465:2465.
EXPOSE 2525 2587 2465
USER sluice
# `sluice health` gives up after its own 10 s (--timeout); Docker waits 15.
HEALTHCHECK --interval=30s --timeout=15s --start-period=15s --retries=3 \
    CMD ["sluice", "health"]
# SIGTERM lets sessions and deliveries finish for shutdown_grace (30 s):
# stop with `docker stop -t 40`, or run with --stop-timeout 40.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["serve"]
