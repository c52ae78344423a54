# Image for our worker (default command) and CLI: `python starter.py start|list|run ...`.
#   docker build -t scheduled-jobs-temporal .
# Runtime dependencies only ([project].dependencies in pyproject.toml); the dev extras are not installed.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# An unprivileged user. The code stays root-owned (read-only to it); /data, for the SQLite catalog,
# is the one place it writes. A named volume mounted there starts out owned by this user.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that this layer is rebuilt only when
# pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code (see .dockerignore) and the project itself; its dependencies are already in place.
# setuptools lists the modules and packages explicitly in pyproject.toml ([tool.setuptools]).
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

ENV DATA_DIR=/data \
    CATALOG_DB=/data/catalog.db

USER app

# Exec form: python is PID 1 and gets SIGTERM, which worker.py handles by stopping cleanly.
CMD ["python", "worker.py"]
