"""`nextstep fitness`: the fixed protocol run through the public API, and its verdict per criterion."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import yaml

import simulator.api as api
from simulator.core.errors import UserError

from . import _verdict as v

PROTOCOL = Path(__file__).with_name("protocol.yaml")
NAMES = {1: "personas told apart", 2: "staying in character", 3: "the article's rules matter",
         4: "the judge agrees with people", 5: "the run works"}  # fmt: skip


def protocol() -> tuple[dict, str]:
    """The protocol file's contents and the first 12 hex digits of its sha256."""
    raw = PROTOCOL.read_bytes()
    return yaml.safe_load(raw), hashlib.sha256(raw).hexdigest()[:12]


def plan(*, db: Path | str = api.DB, reps: int | None = None, **config_flags) -> dict:
    """What `fitness` would spend, nothing run: {'protocol', 'hash', 'stages': [{'stage', 'episodes', 'calls_at_most', ...}]}."""
    p, digest = protocol()
    grid, _, bound = api.plan_batch(_grid(p, reps), db=db, **config_flags)
    stage = {"stage": "persona grid (criteria 1, 2, 5)", **bound, "grid": grid.model_dump(mode="json")}
    return {"protocol": p["version"], "hash": digest, "stages": [stage],
            "calls_at_most": stage["calls_at_most"], "episodes": stage["episodes"]}  # fmt: skip


def fitness(*, db: Path | str = api.DB, reps: int | None = None, budget: int | None = None,
            on_progress: Callable[[api.Progress], None] | None = None, **config_flags) -> dict:
    """Run the protocol into `db` (a stored run like any batch's, resumable) and read the verdict per criterion.

    `reps` overrides the protocol's repetitions (the verdict says so); `budget` is the most LLM calls it may spend:
    a protocol whose bound is above it is refused before any call.
    """
    p, digest = protocol()
    spend = plan(db=db, reps=reps, **config_flags)
    if budget is not None and spend["calls_at_most"] > budget:
        raise UserError(f"--budget {budget}: the protocol may spend up to {spend['calls_at_most']:,} calls "
                        f"({spend['episodes']} episodes); raise the budget or lower --reps")  # fmt: skip
    grid = _grid(p, reps)
    max_failures = max(1, int(p["stop_after_failures"] * spend["episodes"]))
    result = api.run_batch(grid, db=db, max_failures=max_failures, on_progress=on_progress, **config_flags)
    per_minute = result.progress.per_minute
    records = api.load_episodes(result.run_id, db=db)
    limits = p["criteria"]
    cat = api.catalog(**{k: config_flags.get(k) for k in ("personas_dir", "prompts_dir", "config_file")})
    ranges = {name: {k: tuple(getattr(persona.expected_first_turn, k)) for k in ("interest", "comfort")}
              for name, persona in cat.personas.items()}  # fmt: skip
    criteria = [v.run_works(records, per_minute, api.summarize(result.run_id, db=db)["tokens_per_episode"], limits["run_works"])]
    if any(r.status == "succeeded" for r in records):
        audit = api.audit_personas(result.run_id, db=db, personas_dir=config_flags.get("personas_dir"))
        criteria += [v.personas_told_apart(audit, limits["personas_told_apart"]),
                     v.staying_in_character(records, ranges, limits["staying_in_character"])]  # fmt: skip
    else:
        criteria += [v.not_run(n, NAMES[n], "no episode succeeded: nothing to read") for n in (1, 2)]
    clearly = [c["criterion"] for c in criteria if c["status"] == "fail" and c["clearly"]]
    why_not = (f"stopped early: criterion {', '.join(map(str, clearly))} clearly failed" if clearly
               else "not in this version of the protocol")  # fmt: skip
    criteria += [v.not_run(n, NAMES[n], why_not) for n in (3, 4)]
    criteria.sort(key=lambda c: c["criterion"])
    graded = [c["status"] for c in criteria if c["status"] != "not run"]
    return {
        "protocol": {"file": "simulator/fitness/protocol.yaml", "version": p["version"], "hash": digest,
                     "reps": grid["reps"], "reduced": reps is not None and reps != p["grid"]["reps"]},
        "model": _models(api.load_run(result.run_id, db=db)), "runs": {"grid": result.run_id}, "db": str(db),
        "episodes": len(records), "calls_at_most": spend["calls_at_most"],
        "overall": v.worst(*graded) if graded else "not run", "criteria": criteria,
    }  # fmt: skip


def _grid(p: dict, reps: int | None) -> dict:
    return p["grid"] | ({"reps": reps} if reps is not None else {})


def _models(run: dict) -> dict:
    spec = run["spec"]
    return {"backend": spec.backend, **spec.models}
