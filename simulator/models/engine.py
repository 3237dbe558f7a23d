"""The embedded engine's own process: llama.cpp's server (prebuilt, from xllamacpp) on 127.0.0.1.

`simulator.models.local` starts it as `python -m simulator.models.engine --port P --slots N`, so that a native crash (an
instruction the CPU refuses, say) ends this process and not the command that started it. It serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal

CTX_PER_SLOT = 4096  # tokens of context per slot: the longest judge prompt plus its answer fits with room


def params(model: str, alias: str, port: int, slots: int, threads: int):
    """xllamacpp's CommonParams for the embedded model with `slots` parallel slots."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.model_alias = {alias}
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_parallel = slots
    p.n_ctx = CTX_PER_SLOT * slots  # the server splits it evenly between the slots
    p.cpuparams.n_threads = threads  # generation on every core (llama.cpp's default leaves some idle)
    p.cpuparams_batch.n_threads = threads
    p.verbosity = 0
    # The prompt cache reuses a slot's KV for a shared prefix (the judge's parts share the rubric and the transcript:
    # without it `nextstep run` took 53 s instead of 28). The logits then differ in their last bits from a full
    # prefill (llama.cpp documents it), so what a slot held before a request can change a sampled answer: one slot
    # is reproducible from a fresh engine, as every command that starts one has, not from whatever a long-lived
    # `nextstep serve` last answered. Several slots batch requests together and are not reproducible anyway.
    p.cache_prompt = True
    return p


def main(argv: list[str] | None = None) -> None:
    from .local import MODEL_NAME, model_path

    parser = argparse.ArgumentParser(prog="python -m simulator.models.engine")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    # Blocked before the server starts its threads, which inherit the mask: the signals wait for sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import xllamacpp

    server = xllamacpp.Server(params(str(model_path()), MODEL_NAME, args.port, args.slots, args.threads))
    print(f"serving on {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)  # the server's threads hold nothing that needs an orderly shutdown


if __name__ == "__main__":
    main()
