"""``deploy/nginx.conf``'s routing, read and applied: parsed for tests/test_compose.py, and run
as a small reverse proxy for the production-layout end-to-end test (there is no nginx here).

Only the subset of nginx the file uses is understood: ``upstream NAME { server HOST:PORT; … }``
and ``location [=] PATH { proxy_pass http://TARGET; }`` or ``{ return 404; }``, chosen as nginx
chooses among prefix locations: an exact match, else the longest matching prefix. A file using
anything else fails to parse rather than being half understood.

    python -m tests.e2e.gateway CONF PORT NAME=HOST:PORT …
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, web

_LOCATION = re.compile(
    r"location\s+(=\s+)?(\S+)\s*\{\s*(?:proxy_pass\s+http://([\w-]+)(?::\d+)?;|return 404;)\s*\}"
)
_UPSTREAM = re.compile(r"upstream\s+(\w+)\s*\{([^}]*)\}")
_SERVER = re.compile(r"server\s+([\w-]+):\d+;")


@dataclass(frozen=True)
class Location:
    exact: bool
    path: str
    target: str | None  # an upstream or a host; None answers 404


@dataclass
class Routes:
    """The locations and upstreams of one nginx server block."""

    locations: list[Location]
    upstreams: dict[str, list[str]]
    _turns: dict[str, Iterator[str]] = field(default_factory=dict)

    def location(self, path: str) -> Location:
        for loc in self.locations:
            if loc.exact and loc.path == path:
                return loc
        prefixes = [loc for loc in self.locations if not loc.exact and path.startswith(loc.path)]
        if not prefixes:
            raise LookupError(f"no location matches {path}")
        return max(prefixes, key=lambda loc: len(loc.path))

    def hosts(self, path: str) -> list[str]:
        """Every host that may answer ``path`` (none: nginx answers 404 itself)."""
        target = self.location(path).target
        if target is None:
            return []
        return self.upstreams.get(target, [target])

    def next_host(self, path: str) -> str | None:
        """The host for this request: upstream members take turns, as nginx's round robin."""
        target = self.location(path).target
        if target is None:
            return None
        if target not in self.upstreams:
            return target
        turns = self._turns.setdefault(target, itertools.cycle(self.upstreams[target]))
        return next(turns)


def parse(conf: str) -> Routes:
    """Read ``conf``; raise ``ValueError`` on a location or upstream this reader cannot follow."""
    locations = [
        Location(bool(exact), path, target or None)
        for exact, path, target in _LOCATION.findall(conf)
    ]
    written = re.findall(r"^\s*location\s", conf, re.MULTILINE)
    if len(locations) != len(written):
        raise ValueError("a location this reader cannot follow")
    upstreams = {name: _SERVER.findall(body) for name, body in _UPSTREAM.findall(conf)}
    if any(not members for members in upstreams.values()):
        raise ValueError("an upstream without servers")
    return Routes(locations, upstreams)


# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp recomputes.
_DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def app(routes: Routes, backends: dict[str, str]) -> web.Application:
    """A proxy sending each request where ``routes`` says, ``backends`` mapping host -> URL."""

    async def forward(request: web.Request) -> web.StreamResponse:
        host = routes.next_host(request.path)
        if host is None:
            raise web.HTTPNotFound()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        session: ClientSession = request.app[SESSION]
        async with session.request(
            request.method,
            f"{backends[host]}{request.path_qs}",
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
            return web.Response(status=upstream.status, headers=out, body=body)

    async def session_ctx(application: web.Application) -> AsyncIterator[None]:
        async with ClientSession(auto_decompress=False) as session:
            application[SESSION] = session
            yield

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.cleanup_ctx.append(session_ctx)
    application.router.add_route("*", "/{tail:.*}", forward)
    return application


SESSION = web.AppKey("session", ClientSession)


def main(argv: list[str]) -> None:
    conf, port, *pairs = argv
    backends = dict(pair.split("=", 1) for pair in pairs)
    routes = parse(Path(conf).read_text())
    unknown = {h for hosts in routes.upstreams.values() for h in hosts} - set(backends)
    if unknown:
        raise SystemExit(f"no backend given for {sorted(unknown)}")
    web.run_app(
        app(routes, {host: f"http://{addr}" for host, addr in backends.items()}),
        host="127.0.0.1",
        port=int(port),
        print=None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
