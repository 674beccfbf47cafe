"""Run the viewer with uvicorn: in the foreground (``serve``) or in a background thread (``start_server``)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CnnscopeError

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _config(app, host: str, port: int, log_level: str, workers_limit: int | None):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
                          limit_concurrency=workers_limit, timeout_keep_alive=5, server_header=False)


def check_port(host: str, port: int) -> None:
    """Raise a one-line :class:`CnnscopeError` naming the port and ``--port`` when ``host:port`` cannot be bound
    (bound the way uvicorn binds: ``SO_REUSEADDR``, so connections closing on the port do not count)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise CnnscopeError(f"cannot listen on {host!r}: {exc.strerror or exc}; check --host") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CnnscopeError(f"port {port} on {host} is in use; choose another with --port (--port 0 picks a "
                                    "free one)") from None
            raise CnnscopeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or "
                                "--host") from None


def _app(atlas, **app_options):
    from .app import create_app

    return atlas if callable(atlas) and not isinstance(atlas, (str, Path)) else create_app(atlas, **app_options)


def serve(atlas: str | Path | FastAPI, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          log_level: str = "warning", **app_options) -> None:
    """Serve the atlas at ``atlas`` until interrupted (Ctrl-C). Binds ``127.0.0.1`` unless told otherwise.

    Args:
        atlas: an atlas folder (or an ASGI app made by :func:`~cnnscope.web.create_app`).
        host, port: where to listen.
        log_level: uvicorn's log level.
        **app_options: passed to :func:`~cnnscope.web.create_app` (``model=``, ``explain=``, limits).
    """
    import uvicorn

    check_port(host, port)
    server = uvicorn.Server(_config(_app(atlas, **app_options), host, port, log_level, 256))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind (the port was taken after the check)
        server.started = False
    if not server.started:
        raise CnnscopeError(f"the server could not listen on {host}:{port} (port in use? choose another with --port)")


@dataclass
class RunningServer:
    """A viewer running in a background thread; :meth:`stop` shuts it down."""

    server: object
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(atlas: str | Path | FastAPI, *, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 30.0,
                 **app_options) -> RunningServer:
    """Start the viewer of ``atlas`` (a folder, or an app made by :func:`~cnnscope.web.create_app`) in a daemon
    thread and wait until it listens (``port=0`` picks a free port).

    Returns:
        :class:`RunningServer` with the actual ``port`` and ``url``.
    """
    import uvicorn

    server = uvicorn.Server(_config(_app(atlas, **app_options), host, port, "warning", 256))
    thread = threading.Thread(target=server.run, name="cnnscope-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise CnnscopeError(f"the viewer did not start on {host}:{port}")
        time.sleep(0.02)
    sock = server.servers[0].sockets[0]
    return RunningServer(server=server, thread=thread, host=host, port=sock.getsockname()[1])
