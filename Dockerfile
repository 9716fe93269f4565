# syntax=docker/dockerfile:1
# authgate: reverse-proxy authentication sidecar (SAML 2.0 + OpenID Connect).
#
#   docker build -t authgate .
#   docker run --rm -p 4180:4180 \
#     -v "$PWD/conf/docker.yaml:/etc/authgate/authgate.yaml:ro" ... authgate
#
# The whole `docker run`, with the environment conf/docker.yaml reads: docs/docker.md.
#
# The builder stage turns the source into wheels (with the `fast` extra: uvloop and
# hiredis, which authgate uses when present); the final stage installs only those
# wheels next to xmlsec1 (pysaml2 still shells out to it to sign and decrypt) and
# runs as uid 10001.

FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast]'

FROM python:3.11-slim
LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="Reverse-proxy authentication sidecar: SAML 2.0 and OpenID Connect" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# xmlsec1 follows Debian stable's security updates rather than an exact pin, which
# the mirror drops as soon as a fix lands and would break every later build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends xmlsec1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 authgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin authgate \
    && install -d -m 0755 /etc/authgate \
    && install -d -m 0750 -g 10001 /etc/authgate/keys
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "$(echo /wheels/authgate-*.whl)[fast]"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHGATE_HEALTHCHECK_URL=http://127.0.0.1:4180/_authgate/healthz
USER 10001:10001
WORKDIR /tmp
EXPOSE 4180 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AUTHGATE_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["authgate"]
CMD ["run", "--config", "/etc/authgate/authgate.yaml"]
