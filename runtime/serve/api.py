"""The OpenAI completions API as seqgen reads and writes it: request checks, response bodies, errors.

Everything a client controls is checked here, before any model work: types (one rule, seqgen.checks),
ranges and the server's limits. A bad request becomes an ApiError carrying OpenAI's error object.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from .. import checks
from ..errors import SeqgenError
from ..sampling import Sampling
from .scheduler import Choice, Update

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default `max_tokens` for completions."""
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_LOGPROBS = 20

SAMPLING_FIELDS = ("temperature", "top_p", "seed", "top_k", "min_p", "repetition_penalty", "allowed", "banned",
                   "pattern")
"""Body fields that are seqgen.Sampling options of the same name (stop is checked against the server's caps)."""
COMPLETION_FIELDS = {"model", "prompt", "max_tokens", "n", "stop", "stream", "stream_options", "logprobs", "user",
                     "echo", "suffix", "best_of", "presence_penalty", "frequency_penalty", "logit_bias",
                     *SAMPLING_FIELDS}
UNSUPPORTED = {  # OpenAI fields seqgen accepts only at their neutral value, and what to use instead
    "echo": ((None, False), "prepend the prompt yourself"),
    "suffix": ((None,), "seqgen models only continue text"),
    "presence_penalty": ((None, 0, 0.0), "use repetition_penalty"),
    "frequency_penalty": ((None, 0, 0.0), "use repetition_penalty"),
    "logit_bias": ((None, {}), "use top_k, top_p or min_p"),
}


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               413: "invalid_request_error", 429: "server_busy", 500: "server_error", 503: "server_unavailable"}
"""OpenAI's error `type` for each status the server answers with."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (the serve command's flags)."""

    max_prompt_chars: int = 4096
    max_tokens: int = 4096
    max_n: int = 16
    max_body_bytes: int = 1 << 20


class ApiError(Exception):
    """An HTTP error answered with OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        fallback = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, fallback),
                          "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict[str, object]:
    """A request body as a JSON object."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def known_fields(body: dict[str, object], known: set[str]) -> None:
    """Refuse fields the endpoint does not know (a misspelt option must not be silently ignored)."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; this endpoint accepts {', '.join(sorted(known))}",
                       param=unknown[0])


def field_value(body: dict[str, object], name: str, check: object, *args: object) -> object:
    """body[name] (None if absent) through a seqgen.checks rule; a refusal names the field."""
    value = body.get(name)
    try:
        return None if value is None else check(name, value, *args)  # type: ignore[operator]
    except SeqgenError as exc:
        raise ApiError(400, str(exc), param=name) from None


def text_field(body: dict[str, object], name: str, max_chars: int, *, default: str | None = None) -> str:
    """A required (or defaulted) string field of at most `max_chars` characters (the --max-prompt-chars flag)."""
    value = body.get(name, default)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string", param=name)
    if len(value) > max_chars:
        raise ApiError(413, f"{name} has {len(value)} characters; the server's limit is {max_chars} "
                            "(the --max-prompt-chars flag)", param=name, code="request_too_large")
    return value


@dataclass(frozen=True)
class Completion:
    """A checked /v1/completions request."""

    model: str
    prompts: list[str]
    n: int
    choices: list[Choice]
    stream: bool
    include_usage: bool
    logprobs: bool
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse_completion(body: dict[str, object], limits: Limits) -> Completion:
    """Check a completions request against OpenAI's rules, seqgen's options and the server's limits."""
    known_fields(body, COMPLETION_FIELDS)
    for name, (neutral, instead) in UNSUPPORTED.items():
        if name in body and body[name] not in neutral:
            raise ApiError(400, f"{name} is not supported by seqgen; {instead}", param=name)
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string: the name of a served model (GET /v1/models)", param="model")
    prompts = _prompts(body, limits)
    n = field_value(body, "n", checks.integer, 1, limits.max_n) or 1
    best_of = field_value(body, "best_of", checks.integer, 1, limits.max_n)
    if best_of is not None and best_of != n:
        raise ApiError(400, "best_of must equal n (seqgen returns every sample it makes)", param="best_of")
    if len(prompts) * n > limits.max_n:
        raise ApiError(400, f"{len(prompts)} prompts x n={n} make {len(prompts) * n} choices; the server's limit "
                            f"is {limits.max_n} per request (the --max-n flag)", param="n")
    max_tokens = field_value(body, "max_tokens", checks.integer, 0, limits.max_tokens)
    top_logprobs = field_value(body, "logprobs", checks.integer, 0, MAX_LOGPROBS)
    sampling = _sampling(body)
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise ApiError(400, "stream_options must be {\"include_usage\": true|false} and needs stream: true",
                       param="stream_options")
    include_usage = _flag(options or {}, "include_usage")
    length = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    choices = [Choice(prompt, length, sampling, j, top_logprobs) for prompt in prompts for j in range(n)]
    return Completion(model, prompts, n, choices, stream, include_usage, top_logprobs is not None)


def _sampling(body: dict[str, object]) -> Sampling:
    """The request's sampling options, checked by seqgen.Sampling itself one field at a time, so a refusal
    names its field (null means the default, as in OpenAI's API)."""
    given = {name: body[name] for name in SAMPLING_FIELDS if body.get(name) is not None}
    for name, value in given.items():
        try:
            Sampling.from_kwargs(**{name: value})
        except SeqgenError as exc:
            raise ApiError(400, str(exc), param=name) from None
    return Sampling.from_kwargs(stop=_stops(body), **given)


def _prompts(body: dict[str, object], limits: Limits) -> list[str]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt or len(prompt) > limits.max_n:
        raise ApiError(400, f"prompt must be a string or a list of 1 to {limits.max_n} strings", param="prompt")
    if not all(isinstance(p, str) for p in prompt):
        raise ApiError(400, "prompt must be text: seqgen has no token-id prompts (its tokens are characters)",
                       param="prompt")
    return [text_field({"prompt": p}, "prompt", limits.max_prompt_chars) for p in prompt]


def _stops(body: dict[str, object]) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or len(stops) > MAX_STOPS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them, each at "
                            f"most {MAX_STOP_CHARS} characters", param="stop")
    return tuple(stops)


def _flag(body: dict[str, object], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", param=name)
    return value


# -- responses -----------------------------------------------------------------------------------


def logprobs_object(entries: list[tuple[str, float, list[tuple[str, float]]]], offset: int) -> dict[str, object]:
    """OpenAI's legacy logprobs object for emitted characters; offsets count from the completion's start."""
    return {"tokens": [char for char, _, _ in entries],
            "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [dict(top) for _, _, top in entries],
            "text_offset": list(range(offset, offset + len(entries)))}


def usage(prompts: list[str], n: int, completion_chars: int) -> dict[str, int]:
    """Token counts in characters (seqgen's tokens); each prompt counts once however many choices it has."""
    prompt_chars = sum(map(len, prompts))
    return {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
            "total_tokens": prompt_chars + completion_chars}


def chunk(request: Completion, updates: list[Update], offsets: list[int]) -> dict[str, object]:
    """One server-sent event of a streamed completion: the news of each choice that has some."""
    choices = []
    for update in updates:
        logprobs = logprobs_object(update.logprobs, offsets[update.index]) if request.logprobs else None
        offsets[update.index] += len(update.text)
        choices.append({"index": update.index, "text": update.text, "logprobs": logprobs,
                        "finish_reason": update.finish_reason})
    return {"id": request.id, "object": "text_completion", "created": request.created, "model": request.model,
            "choices": choices}
