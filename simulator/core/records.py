"""What an episode, a verdict and a run contain: the records every layer passes around, and the sums over them.

The JSON of a record is what the store keeps, `nextstep export` writes and `nextstep run` saves. Records written by
nextstep 0.1.0 carry no `schema_version` (they are schema 1) and read as they are: every field added since has a
default, and no field was renamed. A field that is absent in a record is None (a turn leaves it out of its JSON).
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_serializer

SCHEMA_VERSION = 2  # 1: nextstep 0.1.0 (no schema_version field); 2: typed records (0.2.0)
CONTACT = ("number", "email")  # a social handle only puts the real next step off (the article), so it is counted apart


def is_contact(exchanged: str | None) -> bool | None:
    """Whether what was exchanged is contact: `is_contact('email')` -> True, `is_contact('social_handle')` -> False."""
    return None if exchanged is None else exchanged in CONTACT


Gender = Literal["man", "woman", "nonbinary"]
Status = Literal["succeeded", "ungraded", "failed"]


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return version("nextstep")
    except PackageNotFoundError:
        return "unknown"


class _Record(BaseModel):
    """Our own data: a key we do not know is an error, not something to carry along unread."""

    model_config = ConfigDict(extra="forbid")


class _Versioned(_Record):
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known(cls, value: int) -> int:
        if not 1 <= value <= SCHEMA_VERSION:
            raise ValueError(f"schema {value} is not one this nextstep reads (1 to {SCHEMA_VERSION}): upgrade nextstep")
        return value


class Profile(_Record):
    """The practitioner's gender and the persona's: factors the article asks about."""

    model_config = ConfigDict(frozen=True)
    practitioner_gender: Gender = "man"
    persona_gender: Gender = "woman"

    @property
    def id(self) -> str:
        return f"{self.practitioner_gender}-{self.persona_gender}"


class Turn(_Record):
    """One line of the conversation with what its speaker declared: the practitioner's intent, the persona's private state."""

    index: int
    speaker: Literal["practitioner", "persona"]
    text: str
    intent: str | None = None  # persona turns from before persona intents have only shares_contact
    phase: Literal["parting"] | None = None  # the practitioner's one more line at the parting
    by: Literal["person"] | None = None  # a person wrote it (`nextstep play`)
    interest: int | None = None  # the persona's private state after its line, 0-10
    comfort: int | None = None
    shares_contact: bool | None = None  # contact given in this very line
    would_share: bool | None = None  # a person playing the persona says they would have shared

    @model_serializer(mode="wrap")
    def _present(self, handler) -> dict:
        """A practitioner turn has no interest key rather than `interest: null`: the shape turns have always had."""
        return {k: v for k, v in handler(self).items() if v is not None}


class Call(_Record):
    """One model call, as recorded in an episode."""

    role: str
    purpose: str
    model: str
    seed: int | None
    prompt_tokens: int | None  # None: unknown, the endpoint reported no usage
    completion_tokens: int | None
    latency_s: float
    finish_reason: str | None
    retries: int = 0
    ok: bool = True
    error: str | None = None
    cached_tokens: int | None = None  # of the prompt tokens, where the server says
    cost_usd: float | None = None  # US dollars; None: no known price (or no usage), never a made-up zero
    from_cache: bool = False  # answered by the response cache: its tokens were saved, not spent
    key: str | None = None  # the request's response-cache key (a hash of what decides the answer)


class Usage(_Record):
    """Calls and latency summed over an episode, and tokens (None: some call's endpoint reported none) spent at the
    endpoint apart from those saved by calls the response cache answered."""

    calls: int
    prompt_tokens: int | None  # spent: calls that reached the endpoint
    completion_tokens: int | None
    cached_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float
    cache_hits: int = 0
    saved_prompt_tokens: int | None = 0  # what the calls the cache answered had cost when first asked
    saved_completion_tokens: int | None = 0


class Outcome(_Record):
    """What the structured turns say happened (the judges read the text for next_meeting)."""

    exchanged: str
    next_meeting: bool | None = None
    asked: bool
    first_ask_turn: int | None = None
    turned_back: bool | None = None
    asks_after_no: int | None = None
    final_interest: int | None = None
    final_comfort: int | None = None
    end_reason: str
    ended_by: str


class Fidelity(_Record):
    """The persona-fidelity rules on the telemetry."""

    ok: bool
    problems: list[str] = []


class Provenance(_Record):
    """How an episode was made: endpoint, models, sampling, and the hash (and text) of every prompt and catalog entry."""

    backend: str
    models: dict[str, str]
    temperature: float
    seed: int
    max_turns: int
    reasks: int
    prompts: dict[str, str]  # name -> hash
    prompt_texts: dict[str, str] = {}  # hash -> text
    catalog: dict[str, str] = {}  # 'setting/NAME' -> hash
    version: str


class Branch(_Record):
    """Where a continuation (`nextstep branch`) comes from: prefix `at` turns of `parent`, continued in `arm`."""

    parent: str
    at: int
    prefix: str
    arm: Literal["control", "treatment"]
    treatment: str | None = None  # the change, e.g. 'strategy=turn_back'; None in the control arm


# --- a judge's verdict -------------------------------------------------------------------------------

PartStatus = Literal["scored", "unscored"]


class Grade(_Record):
    """One condition at one transition: a score with the sentence it rests on, 'not_applicable', or 'unscored' with why."""

    status: Literal["scored", "not_applicable", "unscored"]
    score: int | None = None
    reason: str | None = None
    sentence: str | None = None  # the cited sentence id, 'turn.n'
    turn: int | None = None
    quote: str | None = None


class Timing(_Record):
    """Where the ask fell on the persona's private interest curve."""

    ask_turn: int
    peak_turn: int
    turns_from_peak: int
    interest_at_ask: int
    peak_interest: int
    gap_to_peak: int | None = None


class Transition(_Record):
    """A run of practitioner turns moving toward the exchange, with its condition grades."""

    turns: list[int]
    turn: int | None
    ask_turn: int | None
    has_ask: bool
    source: Literal["declared", "judge", "both", "none"]
    conditions: dict[str, Grade] = {}
    timing_objective: Timing | None = None


class Flag(_Record):
    """A flag raised with its evidence, or rejected (its evidence did not hold: no turn or quote)."""

    flag: str
    sentence: str | None = None
    turn: int | None = None
    quote: str | None = None
    reason: str | None = None


class Flags(_Record):
    status: PartStatus
    reason: str | None = None  # why unscored
    raised: list[Flag] = []
    rejected: list[Flag] = []


class JudgedOutcome(_Record):
    """A judge's reading of what was exchanged, with the stranger's sentence that gave it."""

    status: PartStatus
    reason: str | None = None
    exchanged: str | None = None
    sentence: str | None = None
    turn: int | None = None
    quote: str | None = None
    next_meeting: bool | None = None
    final_interest: int | None = None
    final_comfort: int | None = None
    score: None = None  # an unscored part is written like an unscored grade, with score null


class JudgedFidelity(_Record):
    """The optional judge check of whether the persona stayed in character."""

    status: PartStatus
    reason: str | None = None
    in_character: bool | None = None
    score: None = None  # as in JudgedOutcome


class Verdict(_Versioned):
    """One judge's verdict on one episode. 'ungraded': the judge's endpoint failed (`error`), so it holds no grades."""

    judge: int
    model: str
    seed: int | None = None
    temperature: float | None = None
    rubric_hash: str | None = None
    prompts: dict[str, str] = {}  # evaluator prompt name -> hash
    status: Literal["graded", "ungraded"] = "graded"
    error: str | None = None
    transitions: list[Transition] = []
    judge_added: list[int] = []  # practitioner turns the judge named as moves that no declared transition holds: not graded
    flags: Flags | None = None
    outcome: JudgedOutcome | None = None
    fidelity: JudgedFidelity | None = None
    unscored: list[str] = []  # why each unscored part is unscored
    calls: list[Call] = []

    @property
    def graded(self) -> bool:
        return self.status != "ungraded"


# --- the episode -------------------------------------------------------------------------------------


class Episode(_Versioned):
    """One simulated (or played) conversation with everything it produced; `status` says how far it got.

    run_id, cell and rep are set once a run stores it; branch for a continuation; person when a person played a role.
    """

    id: str
    run_id: str | None = None
    cell: str | None = None
    rep: int | None = None
    setting: str
    persona: str
    strategy: str
    profile: Profile | None = None
    seed: int | None = None
    caution: str | None = None  # a negative baseline's transcripts are not advice
    started_at: str | None = None
    provenance: Provenance | None = None  # None: it crashed before it began
    status: Status
    error: str | None = None
    turns: list[Turn] = []
    outcome: Outcome | None = None
    fidelity: Fidelity | None = None
    verdicts: list[Verdict] = []
    calls: list[Call] = []
    usage: Usage | None = None
    duration_s: float | None = None
    branch: Branch | None = None
    person: Literal["practitioner", "persona"] | None = None
    verdict_history: list[Verdict] = []  # earlier verdicts of an episode file re-graded (the store keeps a table of them)

    # The one definition of what researchers count: the store's columns, the frame, compare, plan and the report read these.
    @property
    def in_character(self) -> bool | None:
        """False if the persona-fidelity rules or any judge's fidelity check found the persona out of character; None
        if neither checked (a failed episode, say); else True."""
        rules = self.fidelity.ok if self.fidelity else None
        judged = [v.fidelity.in_character for v in self.verdicts if v.graded and v.fidelity and v.fidelity.status == "scored"]
        return False if rules is False or False in judged else rules if rules is not None else (True if judged else None)

    @property
    def abandoned(self) -> bool:
        """Ended by a person (`play`: an empty line) before the persona answered an ask: its outcome is unknown, not 'none'."""
        o = self.outcome
        if o is None or o.end_reason != "ended_by_person":
            return False
        return o.first_ask_turn is None or not any(t.speaker == "persona" and t.index > o.first_ask_turn for t in self.turns)

    @property
    def completed(self) -> bool:
        """Succeeded (simulated and graded) and not abandoned."""
        return self.status == "succeeded" and not self.abandoned

    @property
    def usable(self) -> bool:
        """What aggregates and `compare` count: completed and not out of character (an unchecked one is kept)."""
        return self.completed and self.in_character is not False

    def all_calls(self) -> list[Call]:
        """Every call the episode made: the simulation's, then each verdict's."""
        return self.calls + [c for v in self.verdicts for c in v.calls]

    def transcript(self) -> dict:
        """What a judge reads: the turns (as the graph holds them), the scenario's names, and how many turns are a
        branch's kept prefix (its parent's persona said those)."""
        return {"turns": [t.model_dump() for t in self.turns], "setting": self.setting, "persona": self.persona,
                "strategy": self.strategy, "kept": self.branch.at if self.branch else 0}  # fmt: skip

    def with_verdicts(self, verdicts: list[Verdict]) -> Episode:
        """Graded anew: usage counts the new verdicts' calls; a simulated episode's status follows them, a failed one stays."""
        graded = self.model_copy(update={"verdicts": verdicts})
        update: dict[str, Any] = {"usage": usage(graded.all_calls())}
        if self.status != "failed":
            update |= {"status": episode_status(verdicts), "error": judge_errors(verdicts)}
        return graded.model_copy(update=update)


class RunSpec(_Versioned):
    """What makes a run what it is: a grid (`experiment`), a branch run (`branch`) or a played one (`play`).

    Its `identity()` is what a resume must match and what a run id hashes: the fields a run was made with, as 0.1.0
    wrote them, so runs stored then still resume under the same id.
    """

    experiment: dict[str, Any] | None = None  # the grid, as runs.batch.Experiment writes it
    branch: dict[str, Any] | None = None
    play: dict[str, Any] | None = None
    backend: str | None = None
    models: dict[str, Any] | None = None  # role -> model name (a branch run: arm -> role -> name)
    reasks: int | None = None
    prompts: dict[str, str] | None = None  # name -> hash
    rubric_hash: str | None = None
    catalog: dict[str, str] | None = None  # 'personas/NAME' -> hash
    # How many episodes the run is meant to have (a grid's cells x reps, a branch's continuations); None: open-ended
    # (played and watched episodes) or stored before it was kept. No part of the run's identity.
    planned: int | None = None

    def identity(self) -> dict:
        """The fields that were given, without the schema version or the plan: `RunSpec(play={}).identity()` -> {'play': {}}."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"schema_version", "planned"})


def total(values: list[int | None]) -> int | None:
    """A sum that is unknown if any part is: `total([3, 4])` -> 7; `total([3, None])` -> None."""
    return None if None in values else sum(values)


def usage(calls: list[Call]) -> Usage:
    """Token and latency totals: `usage([])` -> Usage(calls=0, prompt_tokens=0, ...); a call without usage makes tokens None.

    Tokens of calls the response cache answered are saved, not spent: they count apart.
    """
    asked, hits = [c for c in calls if not c.from_cache], [c for c in calls if c.from_cache]
    return Usage(
        calls=len(calls),
        prompt_tokens=total([c.prompt_tokens for c in asked]),
        completion_tokens=total([c.completion_tokens for c in asked]),
        cached_tokens=total([c.cached_tokens for c in asked]),
        cost_usd=total([c.cost_usd for c in asked]),  # what was paid: an answer from the response cache costs nothing
        latency_s=round(sum(c.latency_s for c in calls), 3),
        cache_hits=len(hits),
        saved_prompt_tokens=total([c.prompt_tokens for c in hits]),
        saved_completion_tokens=total([c.completion_tokens for c in hits]),
    )


def episode_status(verdicts: list[Verdict]) -> Status:
    """'ungraded' when a judge's endpoint failed (a resumed batch grades it again, the conversation is kept), else 'succeeded'."""
    return "succeeded" if all(v.graded for v in verdicts) else "ungraded"


def judge_errors(verdicts: list[Verdict]) -> str | None:
    """Why the ungraded verdicts are ungraded: `judge 1: APIConnectionError: ...`, or None."""
    return "; ".join(f"judge {v.judge}: {v.error}" for v in verdicts if not v.graded) or None
