"""The HTTP side: Starlette routes for the OpenAI-compatible and native endpoints, auth, CORS, limits.

Handlers run on the event loop; model work runs elsewhere: completions on each model's Scheduler
thread, prompts, predictions and scores in worker threads. Every route but /health asks for the
API key when one is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import checks
from ..errors import SeqgenError
from ..model import Model
from . import api
from .api import ApiError, Completion, Limits
from .scheduler import Job, QueueFull, Refused, Scheduler, ShuttingDown, Update

RETRY_AFTER_S = 1
"""What a refused client is told to wait (Retry-After) before trying again."""
MAX_PREDICT_K = 100


@dataclass(frozen=True)
class ServeOptions:
    """Everything the serve command decides besides the models."""

    limits: Limits = field(default_factory=Limits)
    max_batch: int = 64
    max_queue: int = 256
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()


class Pending:
    """The event loop's view of one completion while the scheduler works on it."""

    def __init__(self, request: Completion) -> None:
        self.request = request
        self.texts: list[list[str]] = [[] for _ in request.choices]
        self.logprobs: list[list[tuple[str, float, list[tuple[str, float]]]]] = [[] for _ in request.choices]
        self.finish: list[str | None] = [None] * len(request.choices)
        self.news: list[Update] = []
        self.error: Exception | None = None
        self.disconnected = False
        self.changed = asyncio.Event()
        self.job = Job(request.choices, self.deliver, self.fail)

    def deliver(self, updates: list[Update]) -> None:
        for update in updates:
            self.texts[update.index].append(update.text)
            self.logprobs[update.index].extend(update.logprobs)
            if update.finish_reason is not None:
                self.finish[update.index] = update.finish_reason
        self.news.extend(updates)
        self.changed.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.changed.set()

    def abandon(self) -> None:
        """The client went away: the scheduler drops the rows before its next step."""
        self.job.cancelled = True
        self.disconnected = True
        self.changed.set()

    @property
    def over(self) -> bool:
        return self.error is not None or self.disconnected or all(f is not None for f in self.finish)

    async def next_news(self) -> list[Update]:
        """Wait for news; consecutive updates of a choice are merged, so a slow reader gets longer pieces."""
        await self.changed.wait()
        self.changed.clear()
        news, self.news = self.news, []
        merged: dict[int, Update] = {}
        for update in news:
            if update.index in merged:
                last = merged[update.index]
                merged[update.index] = Update(update.index, last.text + update.text, last.logprobs + update.logprobs,
                                              update.finish_reason)
            else:
                merged[update.index] = update
        return list(merged.values())

    def chars(self) -> int:
        return sum(len(piece) for text in self.texts for piece in text)


def _error_status(error: Exception) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, QueueFull):
        return ApiError(429, f"{error}; retry later", code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(error, ShuttingDown):
        return ApiError(503, f"{error}; retry later", code="shutting_down",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(error, SeqgenError):
        return ApiError(500, str(error), code="model_error")
    return ApiError(500, f"internal error: {type(error).__name__}", code="internal_error")


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client closes the connection (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Service:
    """The served models, their schedulers and the routes that reach them."""

    def __init__(self, models: dict[str, Model], options: ServeOptions) -> None:
        self.models = models
        self.options = options
        self.schedulers: dict[str, Scheduler] = {}
        self.draining = False

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one scheduler per model; its news comes back through this event loop."""
        loop = asyncio.get_running_loop()
        self.schedulers = {name: Scheduler(model, max_batch=self.options.max_batch, max_queue=self.options.max_queue,
                                           post=loop.call_soon_threadsafe) for name, model in self.models.items()}

    def drain(self) -> None:
        """Refuse new requests and waiting ones; let running ones go on (until `abort`)."""
        self.draining = True
        for scheduler in self.schedulers.values():
            scheduler.drain()

    def abort(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.abort()

    def stop(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.stop()

    # -- helpers -------------------------------------------------------------------------------------

    async def read_body(self, request: Request) -> dict[str, object]:
        """The JSON body, refused with 413 past the size limit (checked before it is all read)."""
        cap = self.options.limits.max_body_bytes
        too_large = ApiError(413, f"the request body is larger than the server's limit of {cap} bytes "
                                  "(the --max-body-bytes flag)", code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > cap:
                raise too_large
        return api.parse_json(bytes(raw))

    def model(self, name: object) -> str:
        if not isinstance(name, str) or name not in self.models:
            shown = repr(name)[:100]  # the body may be large: quote a bounded part
            raise ApiError(404, f"the model {shown} does not exist; this server has: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return name

    # -- routes --------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        models = {name: {"active": s.active, "waiting": s.waiting, "steps": s.steps, "generated": s.generated,
                         "seconds": dict(s.seconds)} for name, s in self.schedulers.items()}
        return JSONResponse({"status": "draining" if self.draining else "ok", "models": models})

    def _model_object(self, name: str) -> dict[str, object]:
        return {"id": name, "object": "model", "created": int(self.models[name].path.stat().st_mtime),
                "owned_by": "seqgen"}

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_object(name) for name in self.models]})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(self._model_object(self.model(request.path_params["model"])))

    async def predict(self, request: Request) -> Response:
        body = await self.read_body(request)
        api.known_fields(body, {"model", "text", "k"})
        model = self.models[self.model(body.get("model"))]
        text = api.text_field(body, "text", self.options.limits.max_prompt_chars, default="")
        k = api.field_value(body, "k", checks.integer, 1, MAX_PREDICT_K) or 5
        ranked = await self._in_thread(model.predict, text, k)
        return JSONResponse({"model": body["model"], "predictions": [{"char": c, "prob": p} for c, p in ranked]})

    async def score(self, request: Request) -> Response:
        body = await self.read_body(request)
        api.known_fields(body, {"model", "text"})
        model = self.models[self.model(body.get("model"))]
        text = api.text_field(body, "text", self.options.limits.max_prompt_chars)
        result = await self._in_thread(model.score, text)
        return JSONResponse({"model": body["model"], "tokens": result.tokens, "loss": result.loss,
                             "bits_per_char": result.bits_per_char, "perplexity": result.perplexity})

    async def _in_thread(self, work: Callable[..., object], *args: object) -> object:
        if self.draining:
            raise _error_status(ShuttingDown("the server is shutting down"))
        try:
            return await asyncio.to_thread(work, *args)
        except SeqgenError as exc:
            raise ApiError(400, str(exc)) from None

    async def completions(self, request: Request) -> Response:
        completion = api.parse_completion(await self.read_body(request), self.options.limits)
        scheduler = self.schedulers[self.model(completion.model)]
        pending = Pending(completion)
        try:
            scheduler.reserve()
        except (QueueFull, ShuttingDown) as exc:
            raise _error_status(exc) from None
        try:
            await asyncio.to_thread(scheduler.prepare, pending.job)
        except BaseException as exc:
            scheduler.release()
            if isinstance(exc, Refused):  # constraints that no text can meet
                raise ApiError(400, str(exc), code="constraints_refused") from None
            if isinstance(exc, SeqgenError):  # a prompt with characters outside the model's vocabulary
                raise ApiError(400, str(exc), param="prompt") from None
            raise
        scheduler.submit(pending.job)
        watcher = asyncio.create_task(_until_disconnect(request.receive))
        watcher.add_done_callback(lambda task: task.cancelled() or pending.abandon())
        if completion.stream:
            return StreamingResponse(self._events(pending, watcher), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while not pending.over:
                await pending.next_news()
        finally:
            watcher.cancel()
        if pending.error is not None:
            raise _error_status(pending.error)
        return JSONResponse(self._whole(pending))

    def _whole(self, pending: Pending) -> dict[str, object]:
        request = pending.request
        choices = [{"index": i, "text": "".join(text),
                    "logprobs": api.logprobs_object(pending.logprobs[i], 0) if request.logprobs else None,
                    "finish_reason": pending.finish[i]} for i, text in enumerate(pending.texts)]
        return {"id": request.id, "object": "text_completion", "created": request.created, "model": request.model,
                "choices": choices, "usage": api.usage(request.prompts, request.n, pending.chars())}

    async def _events(self, pending: Pending, watcher: asyncio.Task[None]) -> AsyncIterator[str]:
        """Server-sent events: a chunk per wake-up with each choice's new text, then [DONE]."""
        request = pending.request
        offsets = [0] * len(request.choices)
        try:
            while True:  # news first: the whole completion may have arrived before the first wake-up
                news = await pending.next_news()
                if pending.disconnected:
                    return
                if news:
                    yield _event(api.chunk(request, news, offsets))
                if pending.over:
                    break
            if pending.error is not None:
                yield _event(_error_status(pending.error).body())
            elif request.include_usage:
                yield _event({"id": request.id, "object": "text_completion", "created": request.created,
                              "model": request.model, "choices": [],
                              "usage": api.usage(request.prompts, request.n, pending.chars())})
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            pending.job.cancelled = True  # however the stream ended, its rows go at the next step


def _event(payload: dict[str, object]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class RequireKey:
    """ASGI middleware: every path but /health needs `Authorization: Bearer KEY` (constant-time compare)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):
            error = ApiError(401, "a valid API key is required: send the header Authorization: Bearer KEY",
                             code="invalid_api_key")
            await JSONResponse(error.body(), 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(models: dict[str, Model], options: ServeOptions) -> tuple[Starlette, Service]:
    """The ASGI app serving `models` by name, and the Service behind it (for shutdown)."""
    service = Service(models, options)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    async def api_error(request: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, ApiError) else ApiError(
            getattr(exc, "status_code", 500), getattr(exc, "detail", "internal error"))
        return JSONResponse(error.body(), error.status, error.headers)

    middleware = []
    if options.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(options.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    if options.api_key:
        middleware.append(Middleware(RequireKey, key=options.api_key))
    routes = [
        Route("/health", service.health, methods=["GET"]),
        Route("/v1/models", service.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", service.get_model, methods=["GET"]),
        Route("/v1/completions", service.completions, methods=["POST"]),
        Route("/v1/predict", service.predict, methods=["POST"]),
        Route("/v1/score", service.score, methods=["POST"]),
    ]
    handlers: dict[object, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: api_error, HTTPException: api_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan), service
