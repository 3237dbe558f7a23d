"""`nextstep fitness`: the fixed protocol run through the public API, and its verdict per criterion."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import yaml

import simulator.api as api
from evaluations.analysis.agreement import labelling_agreement
from evaluations.judge import gold as _gold
from evaluations.analysis.compare import ranking_within
from evaluations.judge.evaluator import judge_max_calls
from simulator.core.errors import UserError
from simulator.storage.store import Store

from . import _verdict as v

PROTOCOL = Path(__file__).with_name("protocol.yaml")
GOLD = Path(_gold.__file__).resolve().parents[1] / "gold"  # the shipped gold sets
NAMES = {1: "personas told apart", 2: "staying in character", 3: "the article's rules matter",
         4: "the judge agrees with people", 5: "the run works"}  # fmt: skip


def protocol(path: Path = PROTOCOL) -> tuple[dict, str]:
    """A protocol file's contents (the shipped one by default) and the first 12 hex digits of its sha256."""
    raw = Path(path).read_bytes()
    return yaml.safe_load(raw), hashlib.sha256(raw).hexdigest()[:12]


def plan(*, db: Path | str = api.DB, reps: int | None = None, protocol_file: Path = PROTOCOL, **config_flags) -> dict:
    """What `fitness` would spend, nothing run: {'protocol', 'hash', 'stages': [{'stage', 'episodes', 'calls_at_most', ...}]}."""
    p, digest = protocol(protocol_file)
    stages = []
    for stage, flags in (("persona grid (criteria 1, 2, 5)", config_flags),
                         ("the same grid without the article's rules (criterion 3)", _ablation(p, config_flags))):
        grid, _, bound = api.plan_batch(_grid(p, reps), db=db, **flags)
        stages.append({"stage": stage, **bound, "grid": grid.model_dump(mode="json")})
    reasks = api.config(**config_flags).reasks
    items = _gold.load_gold(GOLD / p["criteria"]["judge_agrees"]["gold"], api.catalog(**_files(config_flags)))
    stages.append({"stage": "calibrate on the shipped gold set (criterion 4)", "episodes": 0, "items": len(items),
                   "calls_at_most": sum(judge_max_calls((len(i.turns) + 1) // 2, reasks) for i in items)})  # fmt: skip
    return {"protocol": p["version"], "hash": digest, "stages": stages,
            "calls_at_most": sum(s["calls_at_most"] for s in stages), "episodes": sum(s["episodes"] for s in stages)}


def fitness(*, db: Path | str = api.DB, reps: int | None = None, budget: int | None = None, protocol_file: Path = PROTOCOL,
            on_progress: Callable[[api.Progress], None] | None = None, **config_flags) -> dict:
    """Run the protocol into `db` (stored runs like any batch's, resumable) and read the verdict per criterion; the
    verdict is stored beside the runs (`nextstep report` shows it).

    Stages in order: the persona grid (criteria 1, 2, 5), the same grid with the ablation personas (3), the calibration
    (4). Once a criterion has clearly failed, the later stages are not run. `reps` overrides the protocol's
    repetitions (the verdict says so); `budget` is the most LLM calls it may spend: a persona grid whose bound is above
    it is refused before any call, and a later stage that could take the total past it is not run. `protocol_file`
    reads another protocol (a smaller one for a test, say): the verdict names it and says it is not the shipped one's.
    """
    p, digest = protocol(protocol_file)
    spend = plan(db=db, reps=reps, protocol_file=protocol_file, **config_flags)
    grid_bound, ablation_bound, judge_bound = (s["calls_at_most"] for s in spend["stages"])
    if budget is not None and grid_bound > budget:
        raise UserError(f"--budget {budget}: the protocol's persona grid may spend up to {grid_bound:,} calls "
                        f"({spend['stages'][0]['episodes']} episodes); raise the budget or lower --reps")  # fmt: skip
    grid, limits = _grid(p, reps), p["criteria"]
    max_failures = max(1, int(p["stop_after_failures"] * spend["stages"][0]["episodes"]))
    result = api.run_batch(grid, db=db, max_failures=max_failures, on_progress=on_progress, **config_flags)
    records = api.load_episodes(result.run_id, db=db)
    cat = api.catalog(**_files(config_flags))
    ranges = {name: {k: tuple(getattr(persona.expected_first_turn, k)) for k in ("interest", "comfort")}
              for name, persona in cat.personas.items()}  # fmt: skip
    criteria = [v.run_works(records, result.progress.per_minute, api.summarize(result.run_id, db=db), limits["run_works"],
                           planned=spend["stages"][0]["episodes"], stopped=result.progress.stopped)]  # fmt: skip
    if any(r.status == "succeeded" for r in records):
        audit = api.audit_personas(result.run_id, db=db, personas_dir=config_flags.get("personas_dir"))
        criteria += [v.personas_told_apart(audit, limits["personas_told_apart"]),
                     v.staying_in_character(records, ranges, limits["staying_in_character"])]  # fmt: skip
    else:
        criteria += [v.not_run(n, NAMES[n], "no episode succeeded: nothing to read") for n in (1, 2)]
    runs, spent = {"grid": result.run_id}, grid_bound
    for number, bound in ((3, ablation_bound), (4, judge_bound)):
        clearly = sorted(c["criterion"] for c in criteria if c["status"] == "fail" and c["clearly"])
        if clearly:
            criteria.append(v.not_run(number, NAMES[number], f"stopped early: criterion {', '.join(map(str, clearly))} "
                                                             "clearly failed"))  # fmt: skip
        elif budget is not None and spent + bound > budget:
            criteria.append(v.not_run(number, NAMES[number], f"not run: this stage may spend up to {bound:,} calls, "
                                                             f"past --budget {budget} with the {spent:,} before it"))
        elif number == 3:
            ablation = api.run_batch(grid, db=db, max_failures=max_failures, on_progress=on_progress,
                                     **_ablation(p, config_flags))  # fmt: skip
            runs["ablation"] = ablation.run_id
            ranking = ranking_within(api.load_frame(result.run_id, db=db), api.load_frame(ablation.run_id, db=db),
                                     n_resamples=limits["rules_matter"]["resamples"], seed=p["grid"]["seed"])  # fmt: skip
            criteria.append(v.ranking_survives(ranking, limits["rules_matter"], runs=(result.run_id, ablation.run_id),
                                               stopped=ablation.progress.stopped))  # fmt: skip
            spent += bound
        else:
            judge = limits["judge_agrees"]
            report = api.calibrate(GOLD / judge["gold"], **config_flags)["report"]
            items = _gold.load_gold(GOLD / judge["gold"], cat)
            people = labelling_agreement(items, _gold.load_second_pass(GOLD / judge["second_pass"], items))
            criteria.append(v.judge_agrees(report, people, judge))
    criteria.sort(key=lambda c: c["criterion"])
    shipped = Path(protocol_file).resolve() == PROTOCOL.resolve()
    graded = [c["status"] for c in criteria if c["status"] != "not run"]
    verdict = {
        "protocol": {"file": "simulator/fitness/protocol.yaml" if shipped else str(protocol_file), "version": p["version"],
                     "hash": digest, "reps": grid["reps"],
                     "reduced": not shipped or (reps is not None and reps != p["grid"]["reps"])},
        "model": _models(api.load_run(result.run_id, db=db)), "runs": runs, "db": str(db),
        "episodes": len(records), "calls_at_most": spend["calls_at_most"],
        "overall": v.worst(*graded) if graded else "not run", "criteria": criteria,
    }  # fmt: skip
    with Store(Path(db)) as store:
        store.save_fitness(verdict)
    return verdict


def _ablation(p: dict, config_flags: dict) -> dict:
    """The configuration of the ablation grid: the protocol's persona set in place of any given."""
    return config_flags | {"personas_dir": Path(p["criteria"]["rules_matter"]["personas_dir"])}


def _files(config_flags: dict) -> dict:
    return {k: config_flags.get(k) for k in ("personas_dir", "prompts_dir", "config_file")}


def _grid(p: dict, reps: int | None) -> dict:
    return p["grid"] | ({"reps": reps} if reps is not None else {})


def _models(run: dict) -> dict:
    spec = run["spec"]
    return {"backend": spec.backend, **spec.models}
