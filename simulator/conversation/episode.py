"""An episode's turns, the stop rules and the outcome: pure functions over plain data."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .catalog import Rating

Intent = Literal["small_talk", "bridge", "ask", "accept_no", "goodbye"]
PersonaIntent = Literal["chat", "decline", "leave", "give_contact"]
Exchanged = Literal["number", "email", "social_handle", "none"]
EndReason = Literal["exchanged", "refused", "goodbye", "left", "degenerate", "max_turns", "error", "ended_by_person"]


class PractitionerLabel(BaseModel):
    """What the practitioner declares its last line was doing."""

    model_config = ConfigDict(extra="forbid", title="practitioner_intent")
    intent: Intent = Field(description="What the line just said was doing.")


class PersonaState(BaseModel):
    """The persona's private state after its reply, and what the reply did; never shown to the practitioner."""

    model_config = ConfigDict(extra="forbid", title="persona_state")
    interest: Rating = Field(description="How interested the persona is in the practitioner, 0-10.")
    comfort: Rating = Field(description="How comfortable the persona feels, 0-10.")
    intent: PersonaIntent = Field(description="What the line just said did: chat, decline (plain or soft), leave, give_contact.")

    def turn_fields(self) -> dict:
        """The turn's record: `shares_contact` means contact was given in this very line, as the intent says."""
        return self.model_dump() | {"shares_contact": self.intent == "give_contact"}


_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # sam@example.com
_PHONE = re.compile(r"\+?\(?\d[\d\s().-]*\d")  # a run of digits and separators; seven digits or more make a number
_AT_HANDLE = re.compile(r"(?<![\w.+-])@\w[\w.]*")  # @sam.smiles, not part of an address
_NAMED = {  # words that name a kind of contact, in the order a line naming several is read
    "email": re.compile(r"\be-?mail\b", re.I),
    "number": re.compile(r"\b(?:number|phone|digits|call me|text me|ring me|whatsapp)\b", re.I),
    "social_handle": re.compile(r"\b(?:instagram|insta|ig|snapchat|snap me|tiktok|facebook|twitter|linkedin|dm me|follow me|"
                                r"my handle|handle is|social media)\b", re.I),
}
_CLAUSE = re.compile(r"[,;:.!?]|\bbut\b", re.I)
_NEGATION = re.compile(r"\b(?:not|never|no|don't|dont|do not|isn't|won't|rather not|without)\b", re.I)


def _negated(text: str, at: int) -> bool:
    """Whether the word at `at` is denied earlier in its clause: 'I'm not on Instagram' denies Instagram."""
    clause = _CLAUSE.split(text[:at])[-1]
    return bool(_NEGATION.search(clause))


def _named(text: str) -> Exchanged | None:
    """The first kind of contact a line names without denying it, or None: `_named('I never use email, text me')` -> 'number'."""
    for kind, words in _NAMED.items():
        if any(not _negated(text, m.start()) for m in words.finditer(text)):
            return kind
    return None


def contact_kind(text: str) -> Exchanged:
    """What an ask asks for: `contact_kind('What is your insta?')` -> 'social_handle'; a number unless it names another."""
    return _named(text) or "number"


def given_in(text: str) -> Exchanged | None:
    """What a giving line gives, or None if it does not say: an address, then a phone number (7+ digits), then an
    @handle, then the kinds it names without denying them. `given_in("I'm not on Instagram, but it's 555 0199")` -> 'number'."""
    if _ADDRESS.search(text):
        return "email"
    if any(sum(c.isdigit() for c in m.group()) >= 7 for m in _PHONE.finditer(text)):
        return "number"
    if _AT_HANDLE.search(text):
        return "social_handle"
    return _named(text)


def given_kind(turns: list[dict]) -> Exchanged:
    """What the last line gave: what it says itself (`given_in`), else what the last ask asked for."""
    asks = [t for t in turns if t.get("intent") == "ask"]
    return given_in(turns[-1]["text"]) or (contact_kind(asks[-1]["text"]) if asks else "number")


def normalize(text: str) -> str:
    """Lowercase words without punctuation: `normalize("Hi,  THERE!")` -> 'hi there'."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def _was_refused(turns: list[dict]) -> bool:
    """Whether some ask was answered by a persona that would not share its contact."""
    return any(a.get("intent") == "ask" and not b["shares_contact"] for a, b in zip(turns[::2], turns[1::2]))


def _repeats(turns: list[dict], turn: dict) -> bool:
    """Whether `turn` says word for word a line its own speaker said earlier in `turns`."""
    return normalize(turn["text"]) in {normalize(t["text"]) for t in turns if t["speaker"] == turn["speaker"]}


def parting_due(turns: list[dict]) -> bool:
    """Whether the two are parting and the practitioner's one more line has not come yet: the last round
    ended in the practitioner's goodbye or the persona's leaving, and no earlier line was the parting one."""
    if len(turns) < 2 or turns[-1]["speaker"] != "persona" or any(t.get("phase") == "parting" for t in turns):
        return False
    return turns[-2].get("intent") == "goodbye" or turns[-1].get("intent") == "leave"


def stop_rule(turns: list[dict], max_turns: int, *, parting: bool = False) -> dict | None:
    """{'reason', 'by'} when the conversation must end after the last turn, else None.

    Checked when a round ends (after the persona's reply), in this order: contact given; the practitioner's
    goodbye or the persona's leaving, unless `parting` (the strategy has a parting line) and it is still due,
    when the practitioner gets one more line; an accepted refusal; then a speaker repeating one of their own
    earlier lines; then the turn limit (which a due parting line may pass by one round).
    Echoing the other speaker ("Bye." / "Bye.") is not a repeat.
    """
    if turns[-1]["speaker"] != "persona":
        return None
    said, answer = turns[-2], turns[-1]
    if answer["intent"] == "give_contact":
        return {"reason": "exchanged", "by": "persona"}
    if said["intent"] == "goodbye" or answer["intent"] == "leave":
        if parting and parting_due(turns):
            return None
        return {"reason": "goodbye", "by": "practitioner"} if said["intent"] == "goodbye" else {"reason": "left", "by": "persona"}
    if said["intent"] == "accept_no" and _was_refused(turns[:-2]):
        return {"reason": "refused", "by": "practitioner"}
    for turn in (said, answer):
        if _repeats(turns[:-2], turn):
            return {"reason": "degenerate", "by": turn["speaker"]}
    if len(turns) // 2 >= max_turns:
        return {"reason": "max_turns", "by": "limit"}
    return None


def max_rounds(max_turns: int, parting: bool) -> int:
    """The most rounds an episode can have: `max_turns`, one more when the strategy has a parting line, which
    `stop_rule` lets pass the limit by one round: `max_rounds(3, True)` -> 4."""
    return max_turns + parting


def asks_after_no(turns: list[dict]) -> int:
    """How many asks came after the persona had said no, plainly or softly: the turns' own record of pressing on."""
    declined, asks = False, 0
    for t in turns:
        declined = declined or (t["speaker"] == "persona" and t.get("intent") == "decline")
        asks += declined and t["speaker"] == "practitioner" and t.get("intent") == "ask"
    return asks


def outcome(turns: list[dict], end: dict) -> dict:
    """The outcome computed from the structured turns (the evaluator may refine it)."""
    asks = [t for t in turns if t.get("intent") == "ask"]
    persona_turns = [t for t in turns if t["speaker"] == "persona"]
    exchanged = given_kind(turns) if end["reason"] == "exchanged" else "none"
    return {
        "exchanged": exchanged,
        "next_meeting": None,  # needs a reading of the text: the evaluator's job
        "asked": bool(asks),
        "first_ask_turn": asks[0]["index"] if asks else None,
        "turned_back": any(t.get("phase") == "parting" and t.get("intent") == "ask" for t in turns),
        "asks_after_no": asks_after_no(turns),
        "final_interest": persona_turns[-1]["interest"] if persona_turns else None,
        "final_comfort": persona_turns[-1]["comfort"] if persona_turns else None,
        "end_reason": end["reason"],
        "ended_by": end["by"],
    }


def fidelity_problems(turns: list[dict], expected: dict[str, tuple[int, int]], kept: int = 0) -> list[str]:
    """Rules on the telemetry: the first persona turn's values outside the persona's expected ranges.

    `expected` maps 'interest'/'comfort' to an inclusive (low, high) range from the persona file. The first `kept`
    turns are a stored prefix a branch continues: they are not this episode's to judge (they keep the verdict of the
    episode they come from), so a first persona turn among them is not checked.
    """
    first = next((t for t in turns if t["speaker"] == "persona" and "interest" in t), None)
    if first is None or first["index"] < kept:
        return []
    return [
        f"first-turn {key} {first[key]} is outside the expected {low}-{high}"
        for key, (low, high) in expected.items()
        if not low <= first[key] <= high
    ]
