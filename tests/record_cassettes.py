"""Re-record every cassette from the real embedded model: `python tests/record_cassettes.py`.

Starts the local llama server (needs the `local` extra), runs each recorded scenario through
the real OpenAI-compatible path, and overwrites tests/cassettes/*.yaml.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cassettes import CASSETTES, cassette, gold_judge, short_episode  # noqa: E402

from evaluations.judge.graph import grade  # noqa: E402
from simulator.models.local import local_server  # noqa: E402
from simulator.models.openai_backend import async_client  # noqa: E402
from simulator.conversation.runner import run_episode  # noqa: E402


async def recorded(url: str, make):
    """`make(client)` awaited with a client to the server at url, closed afterwards."""
    async with async_client(url, "local") as client:
        return await make(client)


async def grade_gold(client):
    judge, episode, catalog = gold_judge(client)
    return await grade(episode, judge, catalog)


def main() -> None:
    CASSETTES.mkdir(exist_ok=True)
    with local_server() as server:
        url = server.url
        (CASSETTES / "episode.yaml").unlink(missing_ok=True)
        with cassette("episode", record_mode="all"):
            record = asyncio.run(recorded(url, lambda client: run_episode(short_episode(client), backend="local")))
        print(f"episode.yaml: {record.status}, {len(record.turns)} turns, {record.usage.calls} calls")
        (CASSETTES / "verdict.yaml").unlink(missing_ok=True)
        with cassette("verdict", record_mode="all"):
            verdict = asyncio.run(recorded(url, grade_gold))
        scored = [c for t in verdict.transitions for c, g in t.conditions.items() if g.status == "scored"]
        print(f"verdict.yaml: {len(verdict.calls)} calls, {verdict.status}, {len(scored)} condition(s) scored, "
              f"{len(verdict.unscored)} part(s) unscored")
        if verdict.status != "graded" or not scored:  # tests/test_cassettes.py checks a scored grade's evidence
            sys.exit(f"verdict.yaml holds no scored grade, so the cassette test has no evidence to check: "
                     f"{verdict.error or verdict.unscored}")


if __name__ == "__main__":
    main()
