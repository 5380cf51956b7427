"""`seqgen-run serve`: an OpenAI-compatible HTTP server with continuous batching (the `serve` extra).

Imported only by the serve command: it needs Starlette and uvicorn, which the base install lacks.
Layout: api (request checks, response bodies), scheduler (continuous batching), app (routes, auth).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from ..errors import SeqgenError
from ..model import Model
from .app import ServeOptions, build_app

__all__ = ["ServeOptions", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 picks a free one), or a one-line SeqgenError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise SeqgenError(f"cannot resolve --host {host!r} ({exc}); give an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SeqgenError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server with seqgen's shutdown: on SIGTERM or SIGINT, stop accepting, let running
    completions go on for `grace` seconds, end the rest with finish_reason `abort`, and exit normally
    (uvicorn would re-raise the signal after its own shutdown, so the process would die of it)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_signal = on_signal
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.signals:  # a second signal: stop waiting for open requests
            self.force_exit = True
        self.signals.append(sig)
        self.should_exit = True
        self.on_signal()


def serve(models: dict[str, Model], sock: socket.socket, options: ServeOptions, *, grace: float) -> int:
    """Serve `models` by name on a bound socket until a signal; the exit code (0, or 130 after Ctrl-C)."""
    app, service = build_app(models, options)
    loop_box: list[asyncio.AbstractEventLoop] = []

    def wind_down() -> None:
        service.drain()
        loop_box[0].call_later(grace, service.abort)

    def on_signal() -> None:  # runs in a signal handler: hand the work to the event loop
        if loop_box:
            loop_box[0].call_soon_threadsafe(wind_down)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=max(1, round(grace + 2)))
    server = _Server(config, on_signal)

    async def run() -> None:
        loop_box.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    asyncio.run(run())
    return 130 if signal.SIGINT in server.signals else 0
