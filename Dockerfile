# The sigstead image that compose.yaml builds: the package with its pinned runtime dependencies
# (all of them have wheels, so no compiler), run as an unprivileged user. Keys and the TUF
# repository live in /var/lib/sigstead, a volume shared by the services.
FROM python:3.11-slim-bookworm

RUN useradd --system --uid 10001 --home-dir /var/lib/sigstead --create-home sigstead \
    && chmod 0700 /var/lib/sigstead

WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY clients ./clients
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-compile . && rm -rf /src

USER sigstead
WORKDIR /var/lib/sigstead
ENTRYPOINT ["sigstead"]
CMD ["--help"]
