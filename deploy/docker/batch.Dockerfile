# hndsr batch on Ray (deploy/kubernetes/ray/): the project's Bento image plus the batch package and the `ray`
# extra's libraries, so that every Ray node runs the served model's code and weights. Built from the repo root:
#   scripts/build --image --cuda      # hndsr:latest-cuda, the GPU Bento image
#   docker build -f deploy/docker/batch.Dockerfile --build-arg BASE=hndsr:latest-cuda -t hndsr-batch:latest-cuda .
# (BASE=hndsr:latest for CPU workers.) Ray's version must be the cluster's: the RayJob's rayVersion says 2.60.0.
ARG BASE=hndsr:latest-cuda
FROM ${BASE}
USER root
RUN pip install --no-cache-dir "ray[data]==2.60.0" "pystac>=1.10" "rio-stac>=0.10" "boto3>=1.34"
COPY hndsr_batch/ /home/bentoml/bento/src/hndsr_batch/
USER bentoml
# `python -m hndsr_client.cli batch …` from here finds the Bento's packages (hndsr_model, hndsr_raster, …).
WORKDIR /home/bentoml/bento/src
