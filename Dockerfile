# hookd in a container: docker build -t hookd . && docker run -p 8080:8080 -v hookd:/var/lib/hookd hookd
# First API key: docker exec CONTAINER hookd keys create --workspace ws_123
# Configuration: HOOKD_<SECTION>_<KEY> variables, or a TOML file mounted and named by
# HOOKD_CONFIG (docker run -v ./hookd.toml:/etc/hookd/hookd.toml:ro -e HOOKD_CONFIG=/etc/hookd/hookd.toml).

# --- build: one wheel for hookd and one for each dependency --------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels installed, nothing else of the build --------------------------------------
FROM python:3.11-slim-bookworm

# A fixed UID/GID, so a volume's ownership is predictable on the host.
RUN groupadd --system --gid 10001 hookd \
    && useradd --system --uid 10001 --gid hookd --home-dir /var/lib/hookd --no-create-home \
        --shell /usr/sbin/nologin hookd \
    && install --directory --owner hookd --group hookd --mode 0700 /var/lib/hookd

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/hookd-*.whl

ENV PYTHONUNBUFFERED=1 \
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
