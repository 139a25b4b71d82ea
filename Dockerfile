# hookd in a container.  Build, run and the first API key: the commands under "### Docker"
# in README.md (tests/ship runs them, changing only what its machine needs).  BuildKit is
# needed (RUN --mount).
# Configuration: HOOKD_<SECTION>_<KEY> variables, or a TOML file mounted and named by
# HOOKD_CONFIG (docker run -v ./hookd.toml:/etc/hookd/hookd.toml:ro -e HOOKD_CONFIG=/etc/hookd/hookd.toml).
#
# Another base (an air-gapped registry's, or one made locally): --build-arg BASE=IMAGE.
# It needs python3 (3.11 or newer) with its venv module, and useradd.
# A package index that needs its own CA or URL is given to the build stage only, as
# BuildKit secrets: --secret id=pip.conf,src=FILE (a pip configuration file, e.g. with
# index-url) and --secret id=pip-ca,src=CA.pem (named by `cert = /run/secrets/pip-ca`).
ARG BASE=python:3.11-slim-bookworm

# --- build: one wheel for hookd and one for each dependency --------------------------------
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=secret,id=pip.conf \
    --mount=type=secret,id=pip-ca \
    python3 -m venv /opt/build \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf \
        /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels installed, nothing else of the build --------------------------------------
FROM ${BASE}

# A fixed UID/GID, so a volume's ownership is predictable on the host.
RUN groupadd --system --gid 10001 hookd \
    && useradd --system --uid 10001 --gid hookd --home-dir /var/lib/hookd --no-create-home \
        --shell /usr/sbin/nologin hookd \
    && install --directory --owner hookd --group hookd --mode 0700 /var/lib/hookd

# A virtual environment of its own: the same on every base, whatever Python it brings.
# pip leaves with the install: nothing at run time installs anything.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/hookd \
    && /opt/hookd/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/hookd-*.whl \
    && /opt/hookd/bin/pip uninstall --yes --quiet pip setuptools

ENV PATH=/opt/hookd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOOKD_SERVER_LISTEN=0.0.0.0:8080 \
    HOOKD_DATABASE_PATH=/var/lib/hookd/hookd.db \
    HOOKD_LOGGING_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/hookd
VOLUME ["/var/lib/hookd"]
EXPOSE 8080

# Readiness, not only liveness: the database answers and the scheduler moves.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
    CMD ["hookd", "check"]

# Exec form: hookd is PID 1 and gets SIGTERM itself, drains, exits 0.  docker stop's
# default 10 s grace is shorter than the 20 s drain: use --stop-timeout 30 (or lower
# HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["hookd"]
CMD ["serve"]
