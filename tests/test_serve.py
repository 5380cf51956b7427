"""seqgen-run serve: the real server in a subprocess on a free 127.0.0.1 port, driven by the official
`openai` client and by plain HTTP (http.client) for the native endpoints and the error statuses."""

from __future__ import annotations

import http.client
import json
import math
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import assert_input_error, run, seqgen_run

openai = pytest.importorskip("openai", reason="the test extra brings openai: pip install -e '.[test]'")
pytest.importorskip("uvicorn", reason="the test extra brings the serve extra: pip install -e '.[test]'")

import seqgen  # noqa: E402

KEY = "test-key-123"
START_TIMEOUT_S = 60
TEXT = "hello world, the quick brown fox jumps over the lazy dog.\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class Server:
    """`seqgen-run serve ... --port 0` in a subprocess; the port is read from its first line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([*seqgen_run(), "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self._first_line()
        assert "127.0.0.1" in line, line
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
        self.url = f"http://127.0.0.1:{self.port}"

    def _first_line(self) -> str:
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not selector.select(START_TIMEOUT_S):
            self.stop()
            pytest.fail("the server did not start in time")
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            pytest.fail(f"the server exited: {self.process.wait(10)} {self.process.stderr.read()}")  # type: ignore[union-attr]
        return line

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def request(self, method: str, path: str, body: object = None, *, key: str | None = KEY,
                headers: dict[str, str] | None = None) -> Reply:
        """One plain HTTP request (stdlib http.client); a dict body is sent as JSON, bytes as they are."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Authorization": f"Bearer {key}"} if key else {}
        sent.update(headers or {})
        if isinstance(body, dict):
            body, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def health(self) -> dict:
        return self.request("GET", "/health", key=None).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import export_tiny

    return export_tiny(tmp_path_factory.mktemp("serve") / "tiny.onnx", "lstm", texts=[TEXT])


@pytest.fixture(scope="module")
def server(tiny_path: Path) -> Iterator[Server]:
    started = Server("--model", f"tiny={tiny_path}", "--model", "names", "--model", "alphabet", "--api-key", KEY,
                     "--max-tokens", "100000", "--max-prompt-chars", "200", "--max-body-bytes", "4096")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> seqgen.Model:
    return seqgen.load(tiny_path)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def completion_text(client: openai.OpenAI, request: dict) -> str:
    """The whole text of one completion of the tiny model (`request`: create's other arguments), streamed or not."""
    reply = client.completions.create(model="tiny", **request)
    choices = [c for chunk in reply for c in chunk.choices] if request.get("stream") else reply.choices
    return "".join(c.text for c in choices)


def served_together(client: openai.OpenAI, requests: list[dict]) -> list[str]:
    """The texts of `requests`, all sent at once from as many threads."""
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda request: completion_text(client, request), requests))


# -- the openai client ----------------------------------------------------------------------------


def test_models_are_listed_by_name(server: Server) -> None:
    client = server.client()
    assert [m.id for m in client.models.list()] == ["tiny", "names", "alphabet"]
    assert client.models.retrieve("names").id == "names"


def test_seeded_completion_equals_the_in_process_api(server: Server, tiny: seqgen.Model) -> None:
    options = {"temperature": 0.9, "top_p": 0.95, "seed": 7}
    result = server.client().completions.create(model="tiny", prompt="the quick", max_tokens=60, **options)
    choice = result.choices[0]
    assert choice.text == tiny.generate("the quick", 60, **options)
    assert choice.finish_reason == "length" and len(choice.text) == 60
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 60)


def test_seqgen_options_and_greedy_equal_the_in_process_api(server: Server, tiny: seqgen.Model) -> None:
    options = {"top_k": 3, "min_p": 0.05, "repetition_penalty": 1.3}
    result = server.client().completions.create(model="tiny", prompt="lazy", max_tokens=40, seed=11,
                                                extra_body=options)
    assert result.choices[0].text == tiny.generate("lazy", 40, seed=11, **options)
    greedy = server.client().completions.create(model="tiny", prompt="fox", max_tokens=30, temperature=0)
    assert greedy.choices[0].text == tiny.generate("fox", 30, temperature=0)


def test_stream_gives_the_same_text_in_pieces(server: Server, tiny: seqgen.Model) -> None:
    chunks = list(server.client().completions.create(model="tiny", prompt="brown", max_tokens=80, seed=3,
                                                      stream=True, stream_options={"include_usage": True}))
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    assert text == tiny.generate("brown", 80, seed=3)
    finals = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 80 and chunks[-1].choices == []


def test_n_and_prompt_lists_give_one_stream_per_choice(server: Server, tiny: seqgen.Model) -> None:
    client = server.client()
    result = client.completions.create(model="tiny", prompt=["dog", "over the"], n=3, max_tokens=30, seed=5)
    texts = [c.text for c in sorted(result.choices, key=lambda c: c.index)]
    assert len(texts) == 6
    assert texts[0] == tiny.generate("dog", 30, seed=5) and texts[3] == tiny.generate("over the", 30, seed=5)
    assert len(set(texts[:3])) == 3  # each choice has its own random stream
    again = client.completions.create(model="tiny", prompt=["dog", "over the"], n=3, max_tokens=30, seed=5)
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == texts
    assert result.usage.prompt_tokens == 11 and result.usage.completion_tokens == 180


def test_stop_strings_end_the_text_before_them(server: Server, tiny: seqgen.Model) -> None:
    whole = tiny.generate("jumps", 100, seed=2)
    stop = whole[40:42]
    expected = whole[: whole.find(stop)]
    for stream in (False, True):
        reply = server.client().completions.create(model="tiny", prompt="jumps", max_tokens=100, seed=2, stop=[stop],
                                                   stream=stream)
        choices = [c for chunk in reply for c in chunk.choices] if stream else reply.choices
        assert "".join(c.text for c in choices) == expected == tiny.generate("jumps", 100, seed=2, stop=stop)
        assert choices[-1].finish_reason == "stop"


def test_line_item_models_stop_at_the_end_of_an_item(server: Server) -> None:
    result = server.client().completions.create(model="names", prompt="", max_tokens=50, seed=1, n=4)
    assert all(c.finish_reason == "stop" and 0 < len(c.text) < 50 and "\n" not in c.text for c in result.choices)
    assert result.choices[0].text == seqgen.load("names").generate("", 50, seed=1)


def test_logprobs_report_the_model_distribution(server: Server, tiny: seqgen.Model) -> None:
    result = server.client().completions.create(model="tiny", prompt="quick", max_tokens=20, seed=4, logprobs=3)
    choice = result.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text and logprobs.text_offset == list(range(20))
    assert all(len(top) == 3 and max(top.values()) >= lp for top, lp in zip(logprobs.top_logprobs,
                                                                          logprobs.token_logprobs))
    first = dict(tiny.predict("quick", k=tiny.vocab.size))[choice.text[0]]
    assert logprobs.token_logprobs[0] == pytest.approx(math.log(first), abs=1e-5)
    streamed = list(server.client().completions.create(model="tiny", prompt="quick", max_tokens=20, seed=4,
                                                       logprobs=3, stream=True))
    assert [t for chunk in streamed for c in chunk.choices for t in c.logprobs.tokens] == logprobs.tokens


def test_concurrent_clients_get_what_each_would_get_alone(server: Server) -> None:
    client = server.client()
    requests = [{"prompt": ["the", "lazy dog", ""][i % 3], "seed": 100 + i, "max_tokens": 40 + i % 7,
                 "temperature": 0.8, "stream": i % 2 == 0} for i in range(24)]
    together = served_together(client, requests)
    alone = [completion_text(client, request) for request in requests]
    assert together == alone
    wait_for(lambda: server.health()["models"]["tiny"]["active"] == 0, "the finished rows to be retired")


def test_a_client_that_disconnects_frees_its_rows(server: Server) -> None:
    before = server.health()["models"]["tiny"]["generated"]
    stream = server.client().completions.create(model="tiny", prompt="a", max_tokens=100000, n=2, stream=True)
    next(iter(stream))
    assert server.health()["models"]["tiny"]["active"] == 2
    stream.close()
    wait_for(lambda: server.health()["models"]["tiny"]["active"] == 0, "the abandoned rows to be retired")
    assert server.health()["models"]["tiny"]["generated"] - before < 2 * 100000
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 100000}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as waiting:  # a plain request, abandoned
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
        waiting.sendall(head % (KEY.encode(), len(body)) + body)
        wait_for(lambda: server.health()["models"]["tiny"]["active"] == 1, "the plain request to start")
    wait_for(lambda: server.health()["models"]["tiny"]["active"] == 0, "the abandoned plain request to be retired")


# -- constraints ----------------------------------------------------------------------------------


def test_constrained_completions_equal_the_in_process_api(server: Server, tiny: seqgen.Model) -> None:
    client = server.client()
    for options in ({"pattern": "[a-z]{3,8}( [a-z]{2,5}){2}"}, {"allowed": "abc ", "banned": ["aa", "b c"]},
                    {"pattern": "(the|a) [a-z ]+", "banned": ["th"], "repetition_penalty": 1.5}):
        for stream in (False, True):
            text = completion_text(client, {"prompt": "the lazy", "max_tokens": 30, "seed": 9, "stream": stream,
                                            "extra_body": options})
            assert text == tiny.generate("the lazy", 30, seed=9, **options), options
    names = client.completions.create(model="names", prompt="", max_tokens=20, seed=3, n=8,
                                      extra_body={"pattern": "k[a-z]{3,7}"})
    assert all(re.fullmatch("k[a-z]{3,7}", c.text) and c.finish_reason == "stop" for c in names.choices)
    assert names.choices[0].text == seqgen.load("names").generate("", 20, seed=3, pattern="k[a-z]{3,7}")


def test_constrained_rows_keep_their_state_through_regrouping(server: Server, tiny: seqgen.Model) -> None:
    """Rows of different lengths arrive and leave while others run, so the batch is regrouped mid-text: each
    output still fully matches its pattern and equals the same request served by Model.generate."""
    patterns = ["[a-z]+( [a-z]+)*", "(ab|ba)+c?", "[aeiou ]{5,}", "x?[a-z]{2}(, [a-z]{2})+"]
    requests = [{"prompt": ["the", "lazy dog", ""][i % 3], "seed": 200 + i, "max_tokens": 15 + 7 * (i % 5),
                 "extra_body": {"pattern": patterns[i % 4], "banned": ["ll"] if i % 3 else None},
                 "stream": i % 2 == 0} for i in range(16)]
    for request, text in zip(requests, served_together(server.client(), requests)):
        options = {k: v for k, v in request["extra_body"].items() if v is not None}
        assert re.fullmatch(options["pattern"], text), (request, text)
        if "banned" in options:
            assert "ll" not in request["prompt"][-1:] + text
        assert text == tiny.generate(request["prompt"], request["max_tokens"], seed=request["seed"], **options)


@pytest.mark.parametrize(("extra", "max_tokens", "param", "says"), [
    ({"pattern": "Z+"}, 10, None, "can fully match"),  # no Z in the vocabulary
    ({"allowed": "XYZ"}, 10, None, "none of the allowed characters"),
    ({"pattern": "[a-z]{12}"}, 5, None, "raise max_new_chars"),
    ({"pattern": "(ab"}, 10, "pattern", "not a valid regular expression"),
    ({"pattern": "^a$"}, 10, "pattern", "anchors"),
    ({"allowed": ""}, 10, "allowed", "allowed"),
    ({"banned": [""]}, 10, "banned", "banned words"),
])
def test_impossible_constraints_are_refused_before_generating(server: Server, extra: dict, max_tokens: int,
                                                              param: str | None, says: str) -> None:
    before = server.health()["models"]["tiny"]["generated"]
    response = server.request("POST", "/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": max_tokens,
                                                          **extra})
    assert response.status == 400, response.body
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"] and error["type"] == "invalid_request_error"
    assert server.health()["models"]["tiny"]["generated"] == before


def test_a_pattern_without_the_constrain_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.serve.api import ApiError, Limits, parse_completion

    monkeypatch.setitem(sys.modules, "interegular", None)  # as if the extra were not installed
    body = {"model": "tiny", "prompt": "a", "pattern": "[a-z]+"}
    with pytest.raises(ApiError) as refused:
        parse_completion(body, Limits())
    assert refused.value.status == 400 and refused.value.param == "pattern"
    assert "seqgen[constrain]" in refused.value.message
    assert parse_completion({**body, "pattern": None, "allowed": "ab", "banned": "ba"}, Limits()).choices


# -- native endpoints and errors over plain HTTP ----------------------------------------------------


def test_predict_and_score(server: Server, tiny: seqgen.Model) -> None:
    predicted = server.request("POST", "/v1/predict", {"model": "alphabet", "text": "cde", "k": 2}).json()
    assert predicted["predictions"][0]["char"] == "f" and len(predicted["predictions"]) == 2
    scored = server.request("POST", "/v1/score", {"model": "tiny", "text": "the lazy dog"}).json()
    expected = tiny.score("the lazy dog")
    assert scored["tokens"] == expected.tokens and scored["loss"] == pytest.approx(expected.loss)
    assert scored["bits_per_char"] == pytest.approx(expected.bits_per_char)


def test_api_key_is_required_everywhere_but_health(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    refused = server.request("POST", "/v1/predict", {"model": "alphabet", "text": "a"}, key=None)
    assert refused.status == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert server.request("GET", "/v1/models", key=KEY + "x").status == 401
    assert server.request("GET", "/health", key=None).status == 200


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"model": "tiny", "prompt": "a", "max_tokens": True}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "a", "n": 17}, 400, "n"),
    ({"model": "tiny", "prompt": "a", "seed": -1}, 400, "seed"),
    ({"model": "tiny", "prompt": "a", "temprature": 1}, 400, "temprature"),
    ({"model": "tiny", "prompt": "a", "presence_penalty": 1}, 400, "presence_penalty"),
    ({"model": "tiny", "prompt": [1, 2]}, 400, "prompt"),
    ({"model": "tiny", "prompt": "ZZZ"}, 400, "prompt"),  # outside the vocabulary
    ({"model": "tiny", "prompt": "a", "stop": [""]}, 400, "stop"),
    ({"model": "nope", "prompt": "a"}, 404, "model"),
    ({"model": "tiny", "prompt": "a" * 201}, 413, "prompt"),
])
def test_bad_requests_get_openai_errors(server: Server, body: dict, status: int, param: str) -> None:
    response = server.request("POST", "/v1/completions", body)
    assert response.status == status, response.body
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_bad_bodies_and_the_openai_client_errors(server: Server) -> None:
    too_big = server.request("POST", "/v1/completions", b"{" + b" " * 5000 + b"}")
    assert too_big.status == 413 and too_big.json()["error"]["code"] == "request_too_large"
    assert server.request("POST", "/v1/completions", b"{not json").status == 400
    assert server.request("GET", "/v1/nowhere").status == 404
    assert "access-control-allow-origin" not in server.request("GET", "/v1/models",
                                                               headers={"Origin": "http://x.test"}).headers
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="missing", prompt="a")
    with pytest.raises(openai.BadRequestError):
        server.client().completions.create(model="tiny", prompt="a", top_p=0)


# -- queue limits, CORS and shutdown, on a server with a batch of 2 -----------------------------------


def test_full_queue_then_sigterm_ends_streams_cleanly(tiny_path: Path) -> None:
    small = Server("--model", f"tiny={tiny_path}", "--max-batch", "2", "--max-n", "2", "--max-queue", "1",
                   "--max-tokens", "100000", "--cors-origin", "http://app.test", "--shutdown-grace", "0.5")
    try:
        client = small.client()
        long_stream = client.completions.create(model="tiny", prompt="a", max_tokens=100000, n=2, stream=True)
        pieces = iter(long_stream)
        next(pieces)  # both rows of the batch are taken
        waiting: list[Reply] = []
        waiter = threading.Thread(target=lambda: waiting.append(
            small.request("POST", "/v1/completions", {"model": "tiny", "prompt": "b"})))
        waiter.start()
        wait_for(lambda: small.health()["models"]["tiny"]["waiting"] == 1, "the second request to queue")
        refused = small.request("POST", "/v1/completions", {"model": "tiny", "prompt": "c"})
        assert refused.status == 429 and refused.headers["retry-after"] == "1"
        allowed = small.request("GET", "/v1/models", headers={"Origin": "http://app.test"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.test"
        started = time.monotonic()
        small.process.send_signal(signal.SIGTERM)
        waiter.join(30)
        assert waiting[0].status == 503 and waiting[0].headers["retry-after"] == "1"
        rest = list(pieces)  # the open stream runs on for the grace period, then ends with [DONE]
        assert rest and {c.finish_reason for chunk in rest for c in chunk.choices if c.finish_reason} == {"abort"}
        assert small.process.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        small.stop()


# -- the command line ------------------------------------------------------------------------------


def test_serve_without_the_extra_names_it() -> None:
    code = ("import sys; sys.modules['uvicorn'] = None; sys.argv = ['seqgen-run', 'serve']; "
            "from seqgen.cli import run; run()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert 'pip install "seqgen[serve]"' in result.stderr and len(result.stderr.splitlines()) == 1


def test_serve_refuses_bad_settings_before_serving() -> None:
    assert_input_error(run("serve", "--max-n", "8", "--max-batch", "4"), "--max-n")
    assert_input_error(run("serve", "--model", "alphabet", "--model", "alphabet"), "two models")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_input_error(run("serve", "--model", "alphabet", "--port", taken.getsockname()[1]), "cannot listen")


def test_event_stream_is_plain_sse(server: Server) -> None:
    reply = server.request("POST", "/v1/completions", {"model": "alphabet", "prompt": "abc", "max_tokens": 3,
                                                       "stream": True, "temperature": 0})
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [line for line in reply.body.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(event.startswith("data: ") for event in events)
    assert "".join(json.loads(event[6:])["choices"][0]["text"] for event in events[:-1]) == "def"


def test_bench_script_runs_end_to_end(tiny_path: Path, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve.py"
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(script), "--model", str(tiny_path), "--levels", "1,3", "--chars", "8",
                             "--requests-per-client", "2", "--overhead-chars", "10", "--repeats", "1", "--json",
                             str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [row["clients"] for row in report["levels"]] == [1, 3]
    assert all(row["same_texts"] and row["together"]["chars"] == row["alone"]["chars"] == row["clients"] * 2 * 8
               for row in report["levels"])
    assert report["overhead"]["ratio"] > 0 and report["server_exit_code"] == 0
