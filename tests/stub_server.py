"""A loopback OpenAI-compatible chat server for tests and benchmarks.

It answers every chat completion after a fixed latency: plain text for dialogue, and for a
structured request an instance generated from the request's own JSON schema, so the whole
graph (practitioner, persona, evaluator) runs unchanged against it. `faults` scripts failures.

    with StubServer(latency=0.05) as url: ...      # url like http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def instance(schema: dict, rng: random.Random, defs: dict | None = None):
    """A value valid for a JSON schema (the subset pydantic emits): `instance({'enum': [1, 2]}, rng)` -> 1 or 2."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[1]], rng, defs)
    if "anyOf" in schema:
        return instance(next(s for s in schema["anyOf"] if s.get("type") != "null"), rng, defs)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return {k: instance(v, rng, defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("integer", "number"):
        return 0
    return "ok"


def completion(body: dict, text: str, finish_reason: str = "stop") -> dict:
    return {
        "id": "stub", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    }  # fmt: skip


def pinned(**answers: dict) -> Callable[[int, dict], object]:
    """A `fault` that answers structured requests by schema name: `pinned(practitioner_intent={"intent": "ask"})`."""

    def fault(n: int, body: dict):
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        return (200, {}, completion(body, json.dumps(answers[name]))) if name in answers else None

    return fault


def answer(body: dict) -> str:
    """Schema-valid JSON for structured requests; a distinct line of dialogue otherwise."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    rng = random.Random(digest)
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
    if body.get("grammar", "").startswith("%llguidance"):  # the local engine's output mode: the schema follows %json
        schema = json.loads(body["grammar"].partition("%json ")[2])
    if schema:
        return json.dumps(instance(schema, rng))
    return f"That sounds lovely, tell me more about it ({digest[:6]})."


class StubServer:
    """Serve on 127.0.0.1 in a thread. `fault(n, body)` may return (status, headers, payload) or 'reset'/'hang'/'trickle'
    for request n."""

    def __init__(self, latency: float = 0.0, fault: Callable[[int, dict], object] | None = None, port: int = 0):
        self.latency, self.fault = latency, fault
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request, to check keys are used
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def setup(self):
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):
                self._send(200, {}, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with stub._lock:
                    n = len(stub.requests)
                    stub.requests.append(body)
                    stub.authorizations.append(self.headers.get("authorization"))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.latency)
                    outcome = stub.fault(n, body) if stub.fault else None
                    if outcome == "reset":
                        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        self.close_connection = True
                        return
                    if outcome == "hang":
                        time.sleep(30)
                        return
                    if outcome == "trickle":  # a whole answer, a byte every 0.2 s: each read is quick, the call is not
                        self._send(200, {}, completion(body, answer(body)), trickle=0.2)
                        return
                    if outcome is None:
                        self._send(200, {}, completion(body, answer(body)))
                    else:
                        self._send(*outcome)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _send(self, status: int, headers: dict, payload, trickle: float = 0.0) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not trickle:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except OSError:  # the client gave up
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # `python tests/stub_server.py PORT [LATENCY]`: serve in the foreground
    import sys

    stub = StubServer(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0, port=int(sys.argv[1]))
    print(f"stub serving on {stub.url}", flush=True)
    stub.server.serve_forever()
