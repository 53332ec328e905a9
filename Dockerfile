# The bridge's image. The model server is the stock tensorflow/serving image, run
# beside it as a sidecar (k8s/deployment.yaml).
#
#   docker build -t tfs-kafka-bridge:0.1.0 .
#
# The tag is pyproject.toml's version; tests/k8s checks that k8s/deployment.yaml
# names the same one.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/bridge
WORKDIR /src
# What is sent is set by .dockerignore (no virtualenv, models, tests or run output).
COPY . .
# No extras: the bridge's runtime dependencies only, no TensorFlow, no dev tools.
RUN /opt/bridge/bin/pip install .

FROM python:3.11-slim
# Same base and path as the build stage, so the virtualenv works as copied.
COPY --from=build /opt/bridge /opt/bridge
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so Kubernetes can check runAsNonRoot (k8s/deployment.yaml runs the
# pod as 10001). Nothing is written outside /tmp; the root filesystem can be read-only.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bridge
USER 10001:10001
# Settings come from BRIDGE_* environment variables (`bridge run --help`).
ENTRYPOINT ["bridge", "run"]
