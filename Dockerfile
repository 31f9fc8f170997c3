# syntax=docker/dockerfile:1
# One image for every hub process: `docker run IMAGE api bank`, `... worker reconcile`, `... topics create`.
# Production should pin the base by digest (python:3.11-slim-bookworm@sha256:...) once a registry mirror exists.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only in this stage: some dependencies (faust-streaming's optional extensions, fastavro on a new
# architecture) build from source when no wheel matches; the runtime stage never carries it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/sinergi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY connectors ./connectors
# A regular (non-editable) install: the runtime image holds the venv and the schemas, not the source tree.
RUN /opt/sinergi/bin/pip install --upgrade pip \
 && /opt/sinergi/bin/pip install . \
 && /opt/sinergi/bin/python -m compileall -q /opt/sinergi/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sinergi" \
      org.opencontainers.image.description="Event-driven hub: BPJS Ketenagakerjaan x KBRI/KJRI/KDEI x partner banks"
# Settings default schemas and reference files to paths beside the package (services/config.py REPO_ROOT);
# installed into site-packages that is the wrong place, so the image names them explicitly.
ENV PATH=/opt/sinergi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SINERGI_SCHEMAS_DIR=/app/schemas \
    SINERGI_TARIFF_FILE=/app/schemas/reference/tariffs.json \
    SINERGI_BANKS_FILE=/app/schemas/reference/banks.json \
    SINERGI_OFFICES_FILE=/app/schemas/reference/offices.json \
    SINERGI_DATA_DIR=/var/lib/sinergi \
    SINERGI_HTTP_HOST=0.0.0.0 \
    SINERGI_LOG_JSON=true
RUN groupadd --system --gid 10001 sinergi \
 && useradd --system --uid 10001 --gid sinergi --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sinergi \
 && mkdir -p /var/lib/sinergi \
 && chown sinergi:sinergi /var/lib/sinergi
COPY --from=build /opt/sinergi /opt/sinergi
COPY schemas /app/schemas
# Numeric, so that Kubernetes' runAsNonRoot can verify it without resolving a name.
USER 10001:10001
WORKDIR /var/lib/sinergi
# bank API, KBRI API, worker/webhooks /metrics + probes
EXPOSE 8081 8082 9300
# No HEALTHCHECK here: each process answers on its own port (APIs 8081/8082, workers 9300), so compose and
# Kubernetes declare the probe per service.
ENTRYPOINT ["sinergi"]
CMD ["--help"]
