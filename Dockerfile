# syntax=docker/dockerfile:1
# authz: external authorization for Envoy (gRPC Check + ext_proc on 9001, HTTP on 9002).
#
#   docker build -t authz .
#   docker run --read-only -p 127.0.0.1:9001:9001 -p 127.0.0.1:9002:9002 \
#     -v "$PWD/config/example.yaml:/etc/authz/config.yaml:ro" -v "$PWD/data:/data" \
#     -e AUTHZ_DATA_DIR=/data -e AUTHZ_SECRET=... -e AUTHZ_AES_KEY=... authz
#   (docs/deploy.md: what each secret is and how to generate it)
#
# Two stages: wheels are built (with pip, from pyproject.toml) in a throw-away stage and
# installed into a clean python:3.11-slim; no compiler, no pip cache, no sources remain.
# The process runs as an unprivileged numeric user and writes nothing to the image's
# filesystem, so it runs with a read-only root (give it a tmpfs /tmp if a library needs one).
#
# The base image is pinned by digest (the same bytes on every build); refresh it with
#   docker buildx imagetools inspect python:3.11-slim     (the "Digest:" line)

ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The context is whitelisted by .dockerignore (package sources, pyproject.toml, README.md).
# Dependencies first, from pyproject.toml alone (an empty package stands in for authz): this
# layer is rebuilt only when pyproject.toml changes, not on every source edit.
COPY pyproject.toml README.md LICENSE ./
RUN mkdir authz && touch authz/__init__.py \
 && pip wheel --wheel-dir /wheels . \
 && rm -r authz /wheels/authz-*.whl
COPY authz/ authz/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="External authorization for Envoy: security rules over gRPC ext_authz and ext_proc" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    AUTHZ_CONFIG=/etc/authz/config.yaml \
    AUTHZ_LISTEN=0.0.0.0:9001 \
    AUTHZ_HTTP_LISTEN=0.0.0.0:9002
# Wheels come in through a bind mount, so they never land in a layer. pip compiles the
# bytecode now, while the filesystem is still writable.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels authz \
 && groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin authz
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /etc/authz
EXPOSE 9001 9002
# gRPC health of the Check service on the port AUTHZ_LISTEN names (exit 0 only when SERVING).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ.get('AUTHZ_LISTEN', '0.0.0.0:9001').rsplit(':', 1)[1]; stub = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)); reply = stub.Check(h.HealthCheckRequest(service='envoy.service.auth.v3.Authorization'), timeout=2); sys.exit(0 if reply.status == h.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["authz"]
CMD ["serve"]
