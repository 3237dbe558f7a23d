"""How much of each kind of call's prompt a prefix cache can serve (issue 25), from captured requests or a stored run.

    python benchmarks/prefix_share.py                  # capture the default batch's requests on the test stub, compute
    python benchmarks/prefix_share.py --db n.db --run R   # what the endpoint's cache served, from a run's cached_tokens
    python benchmarks/prefix_share.py --engine --requests R.json   # the embedded engine's cached_tokens on those prompts

Endpoints reuse the longest prefix a new prompt shares with one they have seen (OpenAI and vLLM automatic prefix
caching, llama.cpp's slots and its host-memory prompt cache). Computed from the prompts, a call's servable part is
the longest prefix its rendered messages share with any earlier request's: what an unbounded cache could serve,
counted in characters (tokens follow characters closely within one prompt language). From a stored run, the share is
the endpoint's own `cached_tokens` over `prompt_tokens`, per call kind. With --engine the captured prompts are sent
in their order to the embedded engine (2 slots) for one token each, no output constraint: its prefill,
and so what its prompt cache serves, is the batch's, without waiting for a tiny model's answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Structured output types (the schema name a request carries) -> the call's kind, as `role purpose` in the records.
KINDS = {"practitioner_intent": "practitioner intent", "persona_state": "persona state",
         "transition_turns": "evaluator transitions", "transition_grades": "evaluator transition", "flags": "evaluator flags",
         "outcome": "evaluator outcome", "fidelity": "evaluator fidelity"}  # fmt: skip
# On the stub the conversation goes on for every round (as it mostly does on a model), the judges' answers are drawn
# from their schemas (so evidence is rejected and re-asked, as on a small model).
GOING_ON = {"practitioner_intent": {"intent": "small_talk"}, "persona_state": {"interest": 6, "comfort": 6, "intent": "chat"}}


def rendered(messages: list[dict]) -> str:
    """The messages as a chat template lays them out, roles included: `rendered([{'role': 'user', 'content': 'hi'}])`
    -> '<|user|>\\nhi\\n'."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slices: `common_prefix('abcd', 'abxd')` -> 2."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo


def servable(requests: list[tuple[str, str]]) -> dict[str, dict]:
    """Per kind, the prompt characters and how many an unbounded prefix cache could serve, requests taken in order.

    `servable([('a', 'xyz'), ('b', 'xyw')])` -> {'a': {'prompt': 3, 'served': 0, 'share': 0.0},
    'b': {'prompt': 3, 'served': 2, 'share': 0.667}}
    """
    seen: list[str] = []
    out: dict[str, dict] = defaultdict(lambda: {"prompt": 0, "served": 0})
    for kind, text in requests:
        out[kind]["prompt"] += len(text)
        out[kind]["served"] += max((common_prefix(text, s) for s in seen), default=0)
        seen.append(text)
    return with_total(out)


def with_total(out: dict[str, dict]) -> dict[str, dict]:
    """Shares per kind and over all kinds, from {'prompt', 'served'} counts."""
    out = dict(sorted(out.items()))
    out["all"] = {"prompt": sum(v["prompt"] for v in out.values()), "served": sum(v["served"] for v in out.values())}
    return {k: v | {"share": round(v["served"] / v["prompt"], 3) if v["prompt"] else None} for k, v in out.items()}


def kind(body: dict) -> str:
    """A captured request's call kind: the structured output's name, else whose line it asks for."""
    from simulator.conversation.graph import OPENING_CUE

    fmt = body.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name") or (fmt.get("schema") or {}).get("title")
    if body.get("grammar"):  # the embedded engine's output mode: the schema follows %json
        name = json.loads(body["grammar"].partition("%json ")[2]).get("title")
    if name:
        return KINDS.get(name, name)
    messages = body["messages"]
    return "practitioner utterance" if len(messages) > 1 and messages[1]["content"] == OPENING_CUE else "persona utterance"


def capture(grid: dict, concurrency: int = 1) -> list[dict]:
    """The request bodies the batch `grid` sends, in order, to the loopback test stub (nothing stored but a temp db)."""
    import tempfile

    from stub_server import StubServer, pinned

    from simulator.runs.batch import run_grid_sync

    stub = StubServer(fault=pinned(**GOING_ON))
    with stub as url, tempfile.TemporaryDirectory() as work:
        run_grid_sync(grid, db=Path(work) / "n.db", base_url=url, model="stub", concurrency=concurrency)
    return stub.requests


def from_requests(bodies: list[dict]) -> dict[str, dict]:
    return servable([(kind(b), rendered(b["messages"])) for b in bodies])


def from_run(db: Path, run_id: str) -> dict[str, dict]:
    """Per `role purpose`, the prompt tokens and the cached_tokens the endpoint reported serving from its cache."""
    from simulator.storage.store import Store

    out: dict[str, dict] = defaultdict(lambda: {"prompt": 0, "served": 0})
    with Store(db) as store:
        for episode in store.episodes(run_id):
            for c in episode.all_calls():
                out[f"{c.role} {c.purpose}"]["prompt"] += c.prompt_tokens or 0
                out[f"{c.role} {c.purpose}"]["served"] += c.cached_tokens or 0
    return with_total(out)


async def _replay(bodies: list[dict], url: str) -> list[tuple[str, int, int]]:
    from simulator.models.openai_backend import async_client

    out = []
    async with async_client(url, "local", timeout=600) as client:
        for b in bodies:
            body = {"model": b["model"], "messages": b["messages"], "max_tokens": 1, "temperature": 0.0}
            usage = (await client.post("/chat/completions", body=body, cast_to=object))["usage"]
            out.append((kind(b), usage["prompt_tokens"], (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0))
    return out


def on_engine(bodies: list[dict], slots: int = 2) -> dict[str, dict]:
    """Per kind, prompt tokens and the engine's cached_tokens when the prompts are sent in order, one token each."""
    import asyncio

    from simulator.models.local import local_server

    out: dict[str, dict] = defaultdict(lambda: {"prompt": 0, "served": 0})
    with local_server(slots=slots) as server:
        for k, prompt, cached in asyncio.run(_replay(bodies, server.url)):
            out[k]["prompt"] += prompt
            out[k]["served"] += cached
    return with_total(out)


def table(shares: dict[str, dict], unit: str) -> str:
    lines = [f"| call kind | prompt {unit} | servable from a prefix cache | share |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['prompt']:,} | {v['served']:,} | {v['share']:.0%} |" for k, v in shares.items() if v["prompt"]]
    return "\n".join(lines)


DEFAULT_GRID = {}  # the README's default batch: supermarket x 3 personas x common_interest, 3 rounds, 1 judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a database: report the endpoint's own cached_tokens for --run")
    parser.add_argument("--run", help="the run in --db")
    parser.add_argument("--requests", type=Path, help="captured request bodies: a JSON list, or JSON lines "
                                                      "(benchmarks/stub.py --capture)")
    parser.add_argument("--save", type=Path, help="write the captured request bodies here (a JSON list)")
    parser.add_argument("--engine", action="store_true", help="send the prompts to the embedded engine and report its cache")
    args = parser.parse_args()
    if args.db:
        print(table(from_run(args.db, args.run), "tokens"))
        return
    if args.requests:
        text = args.requests.read_text()
        lines = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
        bodies = [line.get("body", line) for line in lines]
    else:
        bodies = capture(DEFAULT_GRID)
    if args.save:
        args.save.write_text(json.dumps(bodies))
    shares, unit = (on_engine(bodies), "tokens (engine)") if args.engine else (from_requests(bodies), "characters")
    print(json.dumps(shares))
    print(table(shares, unit))


if __name__ == "__main__":
    main()
