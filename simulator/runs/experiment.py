"""What a batch runs and what it reports, apart from running it: the grid, its defaults and the batch's counters.

Light on purpose (pydantic and the catalog's records, no model client or graph): the command line reads the
defaults for its help, and `nextstep --help` must not wait for the stack that runs episodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulator.conversation.catalog import Catalog, Profile, profile_of
from simulator.core.errors import UserError
from simulator.core.files import read_yaml, validate

FAIL_FAST = 3  # a batch stops when its first this-many finished episodes all failed with one error (0: never)
RUN_MAX_TURNS = 8  # one episode watched turn by turn; the default batch is a quick demo of 3 (Experiment.max_turns)


class Experiment(BaseModel):
    """The grid: settings x personas x strategies x profiles x reps, each cell seeded from `seed`."""

    model_config = ConfigDict(extra="forbid")

    settings: list[str] = ["supermarket"]
    personas: list[str] = ["friendly", "aloof", "unsure"]
    strategies: list[str] = ["common_interest"]
    profiles: list[Profile] = [Profile()]
    reps: int = Field(1, ge=1)
    seed: int = 0
    max_turns: int = Field(3, ge=1, le=100)
    temperature: float = Field(0.7, ge=0, le=2)
    judges: int = Field(1, ge=0, le=10)

    @field_validator("settings", "personas", "strategies", "profiles", mode="before")
    @classmethod
    def _comma_list(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    def resolved(self, catalog: Catalog) -> Experiment:
        """With 'all' expanded and every name checked against the catalog."""
        names = {kind: catalog.names(kind, ",".join(getattr(self, kind))) for kind in ("settings", "personas", "strategies")}
        return self.model_copy(update=names)


def load_experiment(path: Path) -> Experiment:
    return validate(Experiment, read_yaml(path), str(path))


def as_experiment(experiment: Experiment | dict | Path | None) -> Experiment:
    """An Experiment from itself, a dict of its fields, or an experiment YAML path."""
    if isinstance(experiment, (str, Path)):
        return load_experiment(Path(experiment))
    if isinstance(experiment, Experiment):
        return experiment
    return validate(Experiment, experiment or {}, "experiment")


def grid(experiment: Experiment | dict | Path | None = None, **fields) -> Experiment | None:
    """An experiment (file, dict or Experiment) with the `fields` given (not None) over it; None if neither is given.

    Only what the file or the fields set counts as set, so the environment and the config file fill in the rest
    (`with_config`). `profiles` may be written 'man-woman,woman-man'.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    if experiment is None and not fields:
        return None
    if isinstance(fields.get("profiles"), str):
        fields["profiles"] = profiles_from(fields["profiles"])
    base = as_experiment(experiment).model_dump(exclude_unset=True) if experiment is not None else {}
    return validate(Experiment, base | fields, str(experiment) if isinstance(experiment, (str, Path)) else "grid flags")


def profiles_from(spec: str) -> list[Profile]:
    """`profiles_from('man-woman,woman-man')` -> two profiles (practitioner-persona genders)."""
    profiles = []
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        genders = pair.split("-")
        if len(genders) != 2:
            raise UserError(f"--profiles {pair!r}: write practitioner-persona genders, e.g. man-woman")
        profiles.append(profile_of(*genders, flags=(f"--profiles {pair}",) * 2))
    return profiles


@dataclass
class Progress:
    """Counters a batch updates as episodes end; the CLI renders them."""

    run_id: str
    total: int
    skipped: int = 0
    done: int = 0
    ungraded: int = 0  # simulated, but a judge's endpoint failed: graded on resume; not a failure
    failed: int = 0
    running: int = 0
    tokens: int = 0  # spent: reported by the endpoint, the preflight's test calls included; calls without usage apart
    unknown_usage_calls: int = 0
    test_calls: int = 0  # the preflight's: one per distinct model, before the episodes
    cost_usd: float = 0.0  # of the calls whose cost is known
    unknown_cost_calls: int = 0  # no known price (or no usage): their cost is not in cost_usd
    cache_hits: int = 0  # calls the response cache answered
    saved_tokens: int = 0  # what those calls had cost when first asked
    started: float = field(default_factory=time.monotonic)
    stopped: str | None = None
    fault: bool = False  # stopped because something broke (not a budget): the CLI exits 1
    finished: bool = False

    @property
    def cost(self) -> float | None:
        """Dollars spent this session, None if some call's cost is unknown: a partial sum would read as the whole."""
        return None if self.unknown_cost_calls else self.cost_usd

    @property
    def per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60 * self.ended / elapsed if elapsed > 0 else 0.0

    @property
    def ended(self) -> int:
        return self.done + self.ungraded + self.failed
