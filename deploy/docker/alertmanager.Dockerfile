# Alertmanager from Debian's package, a stand-in for the official image where registry images cannot be pulled
# (docker-compose.yml: ALERTMANAGER_IMAGE=hndsr-alertmanager:bookworm). Same paths, user, port and defaults.
ARG DEBIAN_IMAGE=hndsr-debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /alertmanager /etc/alertmanager && chown nobody:nogroup /alertmanager
USER nobody
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
