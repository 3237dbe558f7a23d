"""An episode's turns, the stop rules and the outcome: pure functions over plain data."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .catalog import Rating

Intent = Literal["small_talk", "bridge", "ask", "accept_no", "goodbye"]
Exchanged = Literal["number", "email", "social_handle", "none"]
EndReason = Literal["exchanged", "refused", "goodbye", "degenerate", "max_turns", "error", "ended_by_person"]


class PractitionerLabel(BaseModel):
    """What the practitioner declares its last line was doing."""

    model_config = ConfigDict(extra="forbid", title="practitioner_intent")
    intent: Intent = Field(description="What the line just said was doing.")


class PersonaState(BaseModel):
    """The persona's private state after its reply; never shown to the practitioner."""

    model_config = ConfigDict(extra="forbid", title="persona_state")
    interest: Rating = Field(description="How interested the persona is in the practitioner, 0-10.")
    comfort: Rating = Field(description="How comfortable the persona feels, 0-10.")
    shares_contact: bool = Field(description="Whether the persona would share contact details now.")


_SOCIAL = re.compile(r"instagram|insta\b|snapchat|snap\b|tiktok|facebook|twitter|linkedin|handle|follow (you|me)|social media|\bdm\b", re.I)
_EMAIL = re.compile(r"e-?mail", re.I)


def contact_kind(text: str) -> Exchanged:
    """What an ask asks for: `contact_kind('What is your insta?')` -> 'social_handle'."""
    if _SOCIAL.search(text):
        return "social_handle"
    if _EMAIL.search(text):
        return "email"
    return "number"


def normalize(text: str) -> str:
    """Lowercase words without punctuation: `normalize("Hi,  THERE!")` -> 'hi there'."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def _was_refused(turns: list[dict]) -> bool:
    """Whether some ask was answered by a persona that would not share its contact."""
    return any(a.get("intent") == "ask" and not b["shares_contact"] for a, b in zip(turns[::2], turns[1::2]))


def _repeats(turns: list[dict], turn: dict) -> bool:
    """Whether `turn` says word for word a line its own speaker said earlier in `turns`."""
    return normalize(turn["text"]) in {normalize(t["text"]) for t in turns if t["speaker"] == turn["speaker"]}


def stop_rule(turns: list[dict], max_turns: int) -> dict | None:
    """{'reason', 'by'} when the conversation must end after the last turn, else None.

    Checked when a round ends (after the persona's reply), in this order: an exchange, the practitioner's
    goodbye, an accepted refusal; then a speaker repeating one of their own earlier lines; then the turn limit.
    Echoing the other speaker ("Bye." / "Bye.") is not a repeat.
    """
    if turns[-1]["speaker"] != "persona":
        return None
    said, answer = turns[-2], turns[-1]
    if said["intent"] == "ask" and answer["shares_contact"]:
        return {"reason": "exchanged", "by": "persona"}
    if said["intent"] == "goodbye":
        return {"reason": "goodbye", "by": "practitioner"}
    if said["intent"] == "accept_no" and _was_refused(turns[:-2]):
        return {"reason": "refused", "by": "practitioner"}
    for turn in (said, answer):
        if _repeats(turns[:-2], turn):
            return {"reason": "degenerate", "by": turn["speaker"]}
    if len(turns) // 2 >= max_turns:
        return {"reason": "max_turns", "by": "limit"}
    return None


def outcome(turns: list[dict], end: dict) -> dict:
    """The outcome computed from the structured turns (the evaluator may refine it)."""
    asks = [t for t in turns if t.get("intent") == "ask"]
    persona_turns = [t for t in turns if t["speaker"] == "persona"]
    exchanged = contact_kind(asks[-1]["text"]) if end["reason"] == "exchanged" else "none"
    return {
        "exchanged": exchanged,
        "next_meeting": None,  # needs a reading of the text: the evaluator's job
        "asked": bool(asks),
        "first_ask_turn": asks[0]["index"] if asks else None,
        "final_interest": persona_turns[-1]["interest"] if persona_turns else None,
        "final_comfort": persona_turns[-1]["comfort"] if persona_turns else None,
        "end_reason": end["reason"],
        "ended_by": end["by"],
    }


def fidelity_problems(turns: list[dict], expected: dict[str, tuple[int, int]]) -> list[str]:
    """Rules on the telemetry: the first persona turn's values outside the persona's expected ranges.

    `expected` maps 'interest'/'comfort' to an inclusive (low, high) range from the persona file.
    """
    first = next((t for t in turns if t["speaker"] == "persona" and "interest" in t), None)
    if first is None:
        return []
    return [
        f"first-turn {key} {first[key]} is outside the expected {low}-{high}"
        for key, (low, high) in expected.items()
        if not low <= first[key] <= high
    ]
