# Image for our worker (default command) and CLI: `python starter.py start|list|run ...`.
#   docker build -t scheduled-jobs-temporal .
# Runtime dependencies only, as locked in uv.lock; the dev extras are not installed.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# An unprivileged user. The code stays root-owned (read-only to it); /data (DATA_DIR: the secrets
# files made on first use, and the default SQLite database when APP_DATABASE_URL is unset) is the
# one place it writes. A named volume mounted there starts out owned by this user.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

WORKDIR /app

# Dependencies first, exactly as locked in uv.lock (with their hashes), so that this layer is
# rebuilt only when the lock changes, not on every code change.
COPY pyproject.toml uv.lock ./
RUN pip install 'uv>=0.5' \
    && uv export --frozen --no-emit-project --format requirements-txt > /tmp/requirements.txt \
    && pip install --require-hashes -r /tmp/requirements.txt \
    && pip uninstall -y uv \
    && rm /tmp/requirements.txt

# Then the code (see .dockerignore) and the project itself; its dependencies are already in place.
# setuptools lists the modules and packages explicitly in pyproject.toml ([tool.setuptools]).
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

# DATA_DIR only. No CATALOG_DB: it defaults to DATA_DIR/catalog.db anyway, and set beside
# APP_DATABASE_URL (as docker-compose.yml sets it) it is refused, so it is not baked in.
ENV DATA_DIR=/data

USER app

# Exec form: the worker is PID 1 and gets SIGTERM, which it handles by stopping cleanly.
CMD ["schedjobs-worker"]
