# The sigstead image that compose.yaml builds: the package with its pinned runtime dependencies
# (all of them have wheels) and its optional C extensions (setup.py: fsck's hasher and replay,
# built against OpenSSL's and SQLite's headers, which are removed again with the compiler in the
# same layer), run as an unprivileged user. Keys and the TUF
# repository live in /var/lib/sigstead, a volume shared by the services.
FROM python:3.11-slim-bookworm

RUN useradd --system --uid 10001 --home-dir /var/lib/sigstead --create-home sigstead \
    && chmod 0700 /var/lib/sigstead

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY services ./services
COPY clients ./clients
COPY migrations ./migrations
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev libsqlite3-dev \
    && pip install --no-cache-dir --no-compile . \
    && apt-get purge -y --auto-remove gcc libc6-dev libssl-dev libsqlite3-dev \
    && rm -rf /var/lib/apt/lists/* /src

USER sigstead
WORKDIR /var/lib/sigstead
ENTRYPOINT ["sigstead"]
CMD ["--help"]
