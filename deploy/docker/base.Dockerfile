# Base image of the CPU Bento (bentofile.yaml `docker.base_image`), built from Debian packages only, for hosts
# that cannot pull registry images: bookworm's Python 3.11 (the CPU torch wheel is cp311) with pip for uv.
# scripts/docker-images builds it; the build context holds the CPU torch wheel and the host's CA bundle.
ARG DEBIAN_IMAGE=hndsr-debian:bookworm
FROM ${DEBIAN_IMAGE}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
# Restore the bundle the host trusts (ca-certificates' trigger rewrites it during the install above).
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY wheels/ /opt/wheels/
# Bentos' Dockerfiles install uv with pip into the system Python, then packages with uv: the CPU torch wheel
# comes from /opt/wheels (torch==2.13.0 is satisfied by 2.13.0+cpu), everything else from the package index.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_FIND_LINKS=/opt/wheels \
    LANG=C.UTF-8
