"""Replay bundles: a run's records with every response it used, so that the run can be made again with no endpoint.

`write_bundle` takes the records from the store and the responses from the response cache (each call's record keeps its
request's key); `Bundle.files()` puts back the prompt and persona files the run was made with, and `Bundle.endpoint()`
answers each request from the bundle alone. Nothing secret is in a bundle: run settings never hold the key, endpoint
URLs are kept without user or password, and a response is its text and token counts.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from simulator.conversation.catalog import load_catalog, personas_path
from simulator.conversation.prompts import text_hash
from simulator.core.errors import UserError
from simulator.core.files import data_dir, output_file, read_text
from simulator.core.records import Episode, RunSpec, package_version
from simulator.core.redact import redact
from simulator.models.backends import Endpoint, endpoint_identity
from simulator.models.cache import Responses, stored
from simulator.models.config import Config
from simulator.storage.store import Store

from .batch import Batch, as_experiment
from .grading import regrade

FORMAT = "nextstep-bundle/1"
# What a replay cannot repeat: when it ran, how long calls took, whether they reached an endpoint and what they cost.
UNREPEATABLE = {"started_at", "duration_s", "usage"}
CALL_UNREPEATABLE = {"latency_s", "from_cache", "retries", "cost_usd"}  # a replayed call costs nothing


def replayable(record: Episode, *, verdicts: bool = True) -> dict:
    """An episode without what a replay cannot repeat (nor its verdicts, if not `verdicts`): two runs' records are equal
    in this form when a replay holds."""
    calls = {"__all__": CALL_UNREPEATABLE}
    exclude = dict.fromkeys(UNREPEATABLE, True) | {"calls": calls, "verdicts": {"__all__": {"calls": calls}} if verdicts else True}
    return record.model_dump(mode="json", exclude=exclude)


def _effective(shipped: Path, own: Path | None, pattern: str) -> dict[str, str]:
    """{file name: text} of the files in effect: the user's directory over the shipped one, by name."""
    files = {p.name: p for p in sorted(shipped.glob(pattern))}
    if own is not None and own.is_dir():
        files |= {p.name: p for p in sorted(own.glob(pattern))}
    return {name: read_text(path) for name, path in files.items()}


def _files(settings: dict, spec: RunSpec) -> dict[str, str]:
    """The prompt, persona and rubric files the run was made with, checked against the hashes its spec recorded."""
    prompts_dir = Path(settings["prompts_dir"]) if settings.get("prompts_dir") else None
    personas_dir = settings.get("personas_dir")
    personas_dir = personas_dir and (Path(personas_dir) if Path(personas_dir).is_dir() else personas_path(Path(Path(personas_dir).name)))
    files = {f"prompts/{n}": t for n, t in _effective(data_dir("prompts"), prompts_dir, "*.*").items()}
    files |= {f"personas/{n}": t for n, t in _effective(data_dir("personas"), personas_dir, "*.yaml").items()}
    if settings.get("rubric_file"):
        files["prompts/rubric.yaml"] = read_text(Path(settings["rubric_file"]))  # a missing file is one line
    changed = [name for name, digest in (spec.prompts or {}).items() if text_hash(files.get(f"prompts/{name}.j2", "")) != digest]
    if changed:
        raise UserError(f"prompt file(s) {', '.join(sorted(changed))} changed since the run was made: a bundle of today's "
                        "files would not re-create it")  # fmt: skip
    return files


def write_bundle(run_id: str, db: Path, output: Path, cache, *, force: bool = False) -> dict:
    """Write the bundle of run `run_id` to `output` (gzip if it ends in .gz); returns {'episodes', 'responses'}.

    `cache` is the response cache the run's calls went through; every response its records (and the verdicts re-grading
    replaced) used must still be there.
    """
    output_file(output, "--bundle", force=force)
    if cache is None:
        raise UserError("a bundle is made from the response cache, which is off (--no-cache or NEXTSTEP_CACHE=0)")
    with Store(db) as store:
        run = store.run(run_id)
        records = store.episodes(run_id)
        replaced = store.replaced_verdicts(run_id)
    calls = [c for r in records for c in r.all_calls()] + [c for v in replaced for c in v.calls]
    if any(c.key is None for c in calls):
        raise UserError(f"run {run_id} has calls made without the response cache (with --no-cache, or by an older "
                        "nextstep): make it again with the cache on to bundle it")  # fmt: skip
    responses, missing = {}, 0
    for key in dict.fromkeys(c.key for c in calls):
        hit = cache.get(key)
        if hit is None:
            missing += 1
        else:
            responses[key] = stored(hit)
    if missing:
        raise UserError(f"{missing} of the {len(responses) + missing} responses run {run_id} used are no longer in the response "
                        f"cache ({cache.path}: evicted, expired or cleared), so it cannot be bundled")  # fmt: skip
    settings = run["settings"] or {}
    spec: RunSpec = run["spec"]
    bundle = {
        "format": FORMAT, "version": package_version(),
        "run": {"id": run_id, "spec": spec.model_dump(mode="json"), "settings": settings | {"base_url": redact(settings.get("base_url"))}},
        "endpoint": endpoint_identity(spec.backend or "local", settings.get("base_url")),
        "files": _files(settings, spec),
        "episodes": [json.loads(r.model_dump_json()) for r in records],
        "responses": responses,
        "regraded": bool(replaced),  # its verdicts came from `grade` after the batch: `grade --replay` makes them again
    }  # fmt: skip
    data = json.dumps(bundle, ensure_ascii=False, indent=1).encode()
    _write_atomically(output, gzip.compress(data, mtime=0) if output.suffix == ".gz" else data)
    return {"episodes": len(records), "responses": len(responses)}


def _write_atomically(output: Path, data: bytes) -> None:
    """All of `data` at `output`, or nothing: written beside it, then renamed over it."""
    handle, temp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temp, output)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass
class Bundle:
    path: Path
    run_id: str
    spec: RunSpec
    settings: dict
    identity: str
    file_texts: dict[str, str]
    episodes: list[Episode]
    responses: dict[str, str]
    regraded: bool = False

    @contextlib.contextmanager
    def files(self) -> Iterator[dict]:
        """The run's prompt and persona files in a temporary directory: {'prompts_dir', 'personas_dir', 'rubric_file'}."""
        with tempfile.TemporaryDirectory(prefix="nextstep-replay-") as tmp:
            for name, text in self.file_texts.items():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            yield {"prompts_dir": Path(tmp) / "prompts", "personas_dir": Path(tmp) / "personas",
                   "rubric_file": Path(tmp) / "prompts" / "rubric.yaml"}  # fmt: skip

    def config(self, files: dict, evaluator_model: str | None = None) -> Config:
        """The run's settings as they were, with the bundle's files; no endpoint, no key, no response cache."""
        s, models = self.settings, self.spec.models or {}
        return Config(practitioner_model=models.get("practitioner"), persona_model=models.get("persona"),
                      evaluator_model=evaluator_model or ",".join(models.get("evaluators") or []) or None,
                      output_mode=s.get("output_mode"),
                      reasks=self.spec.reasks if self.spec.reasks is not None else s.get("reasks", 2),
                      timeout=s.get("timeout") or 120.0, prompts_dir=files["prompts_dir"], personas_dir=files["personas_dir"],
                      cache=False)  # fmt: skip

    def endpoint(self) -> Endpoint:
        """An endpoint that answers from the bundle alone: a request it does not hold fails that call, nothing is sent."""
        backend = self.spec.backend or "local"
        mode = self.settings.get("output_mode") or ("llguidance" if backend == "local" else "json_schema")
        return Endpoint(backend, None, "", mode, "replay", 8, identity=self.identity, replay=Responses(self.responses, str(self.path)))


def read_bundle(path: Path) -> Bundle:
    """A bundle file, checked: one line saying what is wrong with a file that is not one."""
    try:
        data = Path(path).read_bytes()
        bundle = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except FileNotFoundError:
        raise UserError(f"--replay {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--replay {path}: not a nextstep bundle ({e})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        found = bundle.get("format") if isinstance(bundle, dict) else None
        raise UserError(f"--replay {path}: not a nextstep bundle (format {found!r}, this nextstep reads {FORMAT})")
    try:
        run = bundle["run"]
        return Bundle(Path(path), run["id"], RunSpec.model_validate(run["spec"]), run["settings"] or {}, bundle["endpoint"],
                      bundle["files"], [Episode.model_validate(e) for e in bundle["episodes"]], bundle["responses"],
                      bool(bundle.get("regraded")))  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"--replay {path}: a damaged bundle ({type(e).__name__}: {e})") from None


def differences(bundle: Bundle, records: list[Episode], *, verdicts: bool = True) -> list[str]:
    """Where a replay's records differ from the bundle's ([] when they are equal): one line per episode that differs.
    `verdicts=False` leaves the verdicts (and the status and error they decide) out: a batch cannot make a later
    re-grading's verdicts."""

    def form(record: Episode) -> dict:
        found = replayable(record, verdicts=verdicts)
        return found if verdicts else {k: v for k, v in found.items() if k not in ("status", "error")}

    made = {(r.cell, r.rep): form(r) for r in records}
    lines = []
    for e in bundle.episodes:
        again, want = made.get((e.cell, e.rep)), form(e)
        if again is None:
            lines.append(f"{e.cell} rep {e.rep}: not made again")
        elif again != want:
            fields = sorted(k for k in want.keys() | again.keys() if want.get(k) != again.get(k))
            lines.append(f"{e.cell} rep {e.rep}: {', '.join(fields)} differ")
    return lines


async def replay_batch(path: Path, *, db: Path, on_progress=None) -> tuple[str, list[str]]:
    """Make a bundled run again into `db` from the bundle alone: (run id, `differences` from the bundle's records).

    The run's episodes keep their ids. If the run was re-graded after its batch, its verdicts are left out of the
    comparison: `replay_grading` makes those again.
    """
    bundle = read_bundle(path)
    with bundle.files() as files, Store(db) as store:
        config = bundle.config(files)
        catalog = load_catalog(config.personas_dir, config.prompts_dir)
        experiment = as_experiment(bundle.spec.experiment).resolved(catalog)
        batch = Batch(experiment, catalog, config, bundle.endpoint(), store, bundle.run_id, rubric_file=files["rubric_file"],
                      on_progress=on_progress, expected=bundle.spec, settings=bundle.settings,
                      episode_ids={(e.cell, e.rep): e.id for e in bundle.episodes})  # fmt: skip
        run_id, _ = await batch.run()
        records = store.episodes(run_id)
    return run_id, differences(bundle, records, verdicts=not bundle.regraded)


async def replay_grading(path: Path, names: list[str], *, db: Path, judges: int | None = None, seed: int | None = None,
                         on_graded=None) -> tuple:
    """Grade stored episodes again as the bundled run's latest verdicts were made, answered from the bundle alone:
    the judges, seeds, models and fidelity check are those of the bundle's verdicts unless `judges`/`seed` are given.
    Returns (`grading.Regraded`, `differences` of the run in `db` from the bundle's records)."""
    bundle = read_bundle(path)
    graded = max(bundle.episodes, key=lambda e: len(e.verdicts), default=None)
    panel = graded.verdicts if graded else []
    if not panel and judges is None:
        raise UserError(f"--replay {path}: the bundled run has no verdicts to make again")
    judges = judges if judges is not None else len(panel)
    if seed is None:  # judge i of an episode is seeded seed + the episode's seed + i (grading.grade_episodes)
        seed = panel[0].seed - (graded.seed or 0) if panel and panel[0].seed is not None else 0
    with bundle.files() as files:
        config = bundle.config(files, evaluator_model=",".join(v.model for v in panel) or None)
        catalog = load_catalog(config.personas_dir, config.prompts_dir)
        done = await regrade(names, config, catalog, db=db, judges=judges, seed=seed, rubric_file=files["rubric_file"],
                             fidelity_judge=any(v.fidelity for v in panel), on_graded=on_graded,
                             replay=bundle.endpoint())  # fmt: skip
    with Store(db) as store:
        records = store.episodes(bundle.run_id) if any(r["id"] == bundle.run_id for r in store.runs()) else []
    return done, differences(bundle, records)
