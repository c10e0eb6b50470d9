# Stand-in for prom/pushgateway (used when it cannot be pulled): Debian's
# prometheus-pushgateway as /bin/pushgateway, user nobody, wget on PATH.
ARG BASE=etcd-monitor-base:local
FROM ${BASE}
# compose.sh removes the images this label marks once a rebuild leaves them untagged.
LABEL org.etcd-monitor.local-build="true"
COPY bin/ /bin/
COPY --chown=65534:65534 data/ /pushgateway/
USER 65534:65534
WORKDIR /pushgateway
EXPOSE 9091
ENTRYPOINT ["/bin/pushgateway"]
