# etcd-monitor: one image with every binary (the command picks one; default the exporter).
#
#   docker build -t etcd-monitor .
#   docker run --rm etcd-monitor etcd-monitor --help
#   docker run --rm etcd-monitor etcd-monitor-agent --help
#
# This is the user-facing build: a Rust builder and Google's distroless cc image (glibc,
# libgcc, CA certificates, user nonroot 65532), both pulled from public registries.
# Where nothing can be pulled, ./scripts/compose.sh builds the same layout offline from
# the checkout's binaries and a base made locally (compose/Dockerfile.base and
# compose/Dockerfile.local); the tests use that path. Layout, in both:
#   /usr/local/bin/etcd-monitor, etcd-monitor-agent, etcd-monitor-relay, etcd-monitor-bench,
#   etcd-monitor-ctl
#   /usr/local/bin/etcd-monitor-healthcheck (GET /health of the daemon; HEALTHCHECK below)
#   /usr/local/bin/busybox (static; for wget in healthchecks)
#   /var/lib/etcd-monitor-relay (the relay's data dir, owned by 65532)
#   USER 65532:65532, no ENTRYPOINT, CMD ["etcd-monitor"]
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        protobuf-compiler libprotobuf-dev busybox-static \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p exporter -p agent -p alerting -p bench -p ctl \
    && mkdir -p /out/bin /out/relay-data \
    && for b in target/release/etcd-monitor*; do \
         if [ -f "$b" ] && [ -x "$b" ]; then strip -o "/out/bin/${b##*/}" "$b"; fi; \
       done \
    && cp /bin/busybox /out/bin/busybox \
    && install -m 0755 compose/image/healthcheck /out/bin/etcd-monitor-healthcheck

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/relay-data/ /var/lib/etcd-monitor-relay/
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
WORKDIR /var/lib/etcd-monitor-relay
EXPOSE 8080 9101 9095
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 CMD ["/usr/local/bin/etcd-monitor-healthcheck"]
CMD ["etcd-monitor"]
