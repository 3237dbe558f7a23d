"""The cassette setup shared by the tests and by record_cassettes.py, so both send identical requests."""

from __future__ import annotations

from pathlib import Path

import openai
import vcr

from simulator.conversation.catalog import Profile, load_catalog
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import Prompts
from simulator.models.local import MODEL_NAME
from simulator.models.openai_backend import OpenAIChatModel

CASSETTES = Path(__file__).parent / "cassettes"
SECRET_HEADERS = ["authorization", "api-key", "x-api-key", "openai-organization", "openai-project", "cookie", "set-cookie"]


def cassette(name: str, record_mode: str):
    """Match on method, path and body only, so a cassette replays against any host and port."""
    recorder = vcr.VCR(
        match_on=("method", "path", "body"),
        filter_headers=SECRET_HEADERS,
        record_mode=record_mode,
        decode_compressed_response=True,
    )
    return recorder.use_cassette(str(CASSETTES / f"{name}.yaml"))


def local_models(client: openai.AsyncOpenAI) -> tuple[OpenAIChatModel, OpenAIChatModel]:
    """Practitioner and persona on the embedded model's server, as the local backend makes them."""
    return (OpenAIChatModel(client, MODEL_NAME, output_mode="llguidance"),
            OpenAIChatModel(client, MODEL_NAME, output_mode="llguidance"))


def gold_judge(client: openai.AsyncOpenAI):
    """The judge and the gold transcript the 'verdict' cassette holds."""
    import evaluations
    from evaluations.judge.evaluator import Judge
    from evaluations.judge.gold import load_gold
    from evaluations.judge.rubric import load_rubric

    catalog = load_catalog()
    item = load_gold(Path(evaluations.__file__).parent / "gold" / "team.jsonl", catalog)[0]
    rubric, rubric_hash = load_rubric()
    judge = Judge(local_models(client)[0], Prompts(catalog.prompt_dirs), rubric, rubric_hash, seed=5)
    return judge, item.episode(), catalog


def short_episode(client: openai.AsyncOpenAI) -> Context:
    """The short episode the 'episode' cassette holds."""
    catalog = load_catalog()
    practitioner, persona = local_models(client)
    scenario = Scenario("bar_club", "friendly", "high_point_exit", Profile())
    return Context(practitioner, persona, catalog, Prompts(catalog.prompt_dirs), scenario, seed=11, max_turns=2)
