# Prometheus from Debian's package, a stand-in for the official image where registry images cannot be pulled
# (docker-compose.yml: PROMETHEUS_IMAGE=hndsr-prometheus:bookworm). Same paths, user and port as the official one.
ARG DEBIAN_IMAGE=hndsr-debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
