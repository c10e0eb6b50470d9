# Stand-in for prom/prometheus (used when it cannot be pulled): Debian's prometheus at the
# upstream image's path, user nobody, data in /prometheus, wget on PATH.
ARG BASE=etcd-monitor-base:local
FROM ${BASE}
# compose.sh removes the images this label marks once a rebuild leaves them untagged.
LABEL org.etcd-monitor.local-build="true"
COPY bin/ /bin/
COPY web/ /usr/share/prometheus/web/
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
