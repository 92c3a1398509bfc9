# The two service images, satchel/auth-service and satchel/file-service, from one file. Build
# from the repository root, naming the service (compose and docs/deploy.md do):
#   docker build --build-arg SERVICE=auth-service -t satchel/auth-service .
#   docker build --build-arg SERVICE=file-service -t satchel/file-service .
# SERVICE (required) picks the package the build stage installs (with shared/) and the stage the
# image is (the last FROM), so one argument decides both. The gateway image is gateway/Dockerfile.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG SERVICE

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN case "$SERVICE" in auth-service|file-service) ;; \
      *) echo "build with --build-arg SERVICE=auth-service or SERVICE=file-service" >&2; exit 1 ;; \
    esac
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (this layer survives source edits): the third-party requirements of
# both pyproject.toml files, pinned by constraints.txt; our own packages come after.
COPY constraints.txt ./
COPY shared/pyproject.toml shared/
COPY ${SERVICE}/pyproject.toml ${SERVICE}/
RUN python -c "import sys, tomllib; [print(r) for p in sys.argv[1:] for r in tomllib.load(open(p, 'rb'))['project'].get('dependencies', []) if not r.lower().startswith('satchel')]" \
        shared/pyproject.toml ${SERVICE}/pyproject.toml > requirements.txt
RUN pip install -c constraints.txt -r requirements.txt gunicorn
COPY shared/ shared/
COPY ${SERVICE}/ ${SERVICE}/
RUN pip install --no-deps -c constraints.txt ./shared ./${SERVICE}

# What both services run on: the virtualenv only (no pip cache, no build stage), as uid 10001.
# Both state directories exist, owned by the app user, so a fresh named volume mounted there
# inherits that owner: JWT_KEYS_DIR (auth-service; a volume or a Secret, never in the image)
# and DATA_DIR (file-service, local blob backend only).
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 satchel \
 && useradd --system --uid 10001 --gid satchel --home-dir /nonexistent --no-create-home satchel \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/satchel/keys \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/satchel/data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# gunicorn with the options every deployment shares, for the service SATCHEL_SERVICE names
# (satchel_shared/serve.py; the devstack runs the same); arguments (compose `command:`, k8s
# `args:`) are added gunicorn options.
ENTRYPOINT ["python", "-m", "satchel_shared.serve"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-m", "satchel_shared.serve", "--check"]

FROM runtime AS auth-service
ENV SATCHEL_SERVICE=auth-service \
    AUTH_PORT=8081 \
    AUTH_WORKERS=2 \
    JWT_KEYS_DIR=/var/lib/satchel/keys
EXPOSE 8081

FROM runtime AS file-service
ENV SATCHEL_SERVICE=file-service \
    FILE_PORT=8082 \
    FILE_WORKERS=2 \
    FILE_THREADS=32 \
    DATA_DIR=/var/lib/satchel/data
EXPOSE 8082

# The image: the stage named by SERVICE.
FROM ${SERVICE}
