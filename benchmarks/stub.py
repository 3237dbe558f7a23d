"""A lean OpenAI-compatible stub for benchmarks: asyncio streams, HTTP/1.1 keep-alive, TCP_NODELAY.

It answers every chat completion after a fixed latency with the same schema-valid replies as
tests/stub_server.py, but costs far less CPU per request than a thread per connection, so on a
2-core machine it can sit on one core and leave the other to the client being measured.

    python benchmarks/stub.py --latency 0.2 [--capture requests.jsonl] [--cpu 1]

prints `PORT <n>` once it listens. With --capture every request body is appended to the file
with its `x-episode` header, so the requests can be replayed per episode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the answers are the test stub's
from stub_server import answer, completion  # noqa: E402

MODELS = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()


def response(status: bytes, payload: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
    return head + payload


class Stub:
    def __init__(self, latency: float, capture: Path | None = None):
        self.latency = latency
        self.capture = capture.open("a") if capture else None
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ", 2)[:2]
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                if method == "POST" and path.endswith("/chat/completions"):
                    self.requests += 1
                    body = json.loads(raw)
                    if self.capture:
                        self.capture.write(json.dumps({"episode": headers.get("x-episode"), "part": headers.get("x-part"),
                                                       "turn": headers.get("x-turn"), "body": body}) + "\n")
                        self.capture.flush()  # the stub is stopped by a signal; capture runs are not timed
                    await asyncio.sleep(self.latency)
                    writer.write(response(b"200 OK", json.dumps(completion(body, answer(body))).encode()))
                elif method == "GET" and path.endswith("/models"):
                    writer.write(response(b"200 OK", MODELS))
                else:
                    writer.write(response(b"404 Not Found", b"{}"))
                await writer.drain()
                if headers.get("connection") == "close":
                    return
        finally:
            writer.close()


async def main(latency: float, capture: Path | None, port: int) -> None:
    stub = Stub(latency, capture)
    server = await asyncio.start_server(stub.serve, "127.0.0.1", port, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if stub.capture:
            stub.capture.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--capture", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, help="pin the stub to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        asyncio.run(main(args.latency, args.capture, args.port))
    except KeyboardInterrupt:
        pass
