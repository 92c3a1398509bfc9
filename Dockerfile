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

FROM runtime AS auth-service
ENV AUTH_PORT=8081 \
    AUTH_WORKERS=2 \
    JWT_KEYS_DIR=/var/lib/satchel/keys
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AUTH_PORT', '8081'), timeout=4)"]
ENTRYPOINT ["/bin/sh", "-c", "exec gunicorn --bind \"0.0.0.0:${AUTH_PORT}\" --workers \"${AUTH_WORKERS}\" --worker-class sync --worker-tmp-dir /tmp --keep-alive 75 \"$@\" satchel_auth.wsgi:app", "gunicorn"]

FROM runtime AS file-service
ENV FILE_PORT=8082 \
    FILE_WORKERS=2 \
    FILE_THREADS=32 \
    DATA_DIR=/var/lib/satchel/data
EXPOSE 8082
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FILE_PORT', '8082'), timeout=4)"]
# gthread, not gevent: uploads hash and store on helper threads (services/ingest.py) and hashing
# is CPU work that would stall an event loop. Long-polls of /changes sleep in their thread, so
# there are many threads (FILE_THREADS), and the service holds at most FILE_THREADS - 8 long-polls
# per worker (CHANGES_MAX_WAITING), answering at once beyond that, so 8 threads stay for the rest.
ENTRYPOINT ["/bin/sh", "-c", "exec gunicorn --bind \"0.0.0.0:${FILE_PORT}\" --workers \"${FILE_WORKERS}\" --worker-class gthread --threads \"${FILE_THREADS}\" --worker-tmp-dir /tmp --keep-alive 75 \"$@\" satchel_files.wsgi:app", "gunicorn"]

# The image: the stage named by SERVICE.
FROM ${SERVICE}
