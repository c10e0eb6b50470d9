# Stand-in for gcr.io/etcd-development/etcd (used when it cannot be pulled): Debian's
# etcd-server and etcd-client binaries at the upstream image's paths, on the local base.
ARG BASE=etcd-monitor-base:local
FROM ${BASE}
# compose.sh removes the images this label marks once a rebuild leaves them untagged.
LABEL org.etcd-monitor.local-build="true"
COPY etcd etcdctl /usr/local/bin/
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
CMD ["/usr/local/bin/etcd"]
