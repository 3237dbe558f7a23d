"""`nextstep play`: a person takes one role; the graph pauses (LangGraph's interrupt) for each of their turns.

An empty line at `you:`, the end of input or Ctrl-C at any prompt ends the episode: it is finished, graded and stored
as ended by the person. An empty answer to a question about a line already typed asks again (the line is kept), as
does a rating that is not a whole number from 0 to 10, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from .episode import PersonaIntent

ROLES = ("practitioner", "persona")
# What a person playing the persona is asked after each line they type (the README shows the same).
PROMPTS = {"interest": "your interest in them (0-10):", "comfort": "your comfort (0-10):",
           "intent": "what did your line do? chat, decline, leave or give_contact (c/d/l/g):",
           "would_share": "would you share your contact now? (y/n):"}  # fmt: skip


class Ended(Exception):
    """The person ended the episode (an empty line, end of input or Ctrl-C)."""


def parse_rating(text: str) -> int:
    """A 0-10 rating: `parse_rating(' 7 ')` -> 7; `parse_rating('11')` raises ValueError with the reason."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a whole number from 0 to 10") from None
    if not 0 <= value <= 10:
        raise ValueError(f"{value} is outside 0-10")
    return value


def parse_yes_no(text: str) -> bool:
    """`parse_yes_no('Y')` -> True; `parse_yes_no('maybe')` raises ValueError with the reason."""
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("n", "no"):
        return False
    raise ValueError(f"{text.strip()!r}: answer y or n")


def parse_intent(text: str) -> str:
    """What the persona's line did: `parse_intent('g')` -> 'give_contact'; an unknown answer raises ValueError."""
    answer = text.strip().lower()
    found = [i for i in get_args(PersonaIntent) if i == answer or i.startswith(answer[:1]) and len(answer) == 1]
    if len(found) != 1:
        raise ValueError(f"{text.strip()!r}: answer " + ", ".join(f"{i} ({i[0]})" for i in get_args(PersonaIntent)))
    return found[0]


class Person:
    """Asks a person for their turns through `read` (like `input`) and tells them things through `say`."""

    def __init__(self, read: Callable[[str], str] = input, say: Callable[[str], None] = print):
        self.read, self.say = read, say

    def line(self, prompt: str) -> str:
        """What the person typed; an empty line, end of input or Ctrl-C ends the episode."""
        try:
            text = self.read(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            text = ""
        if not text:
            raise Ended
        return text

    def ask(self, prompt: str, parse: Callable[[str], object]):
        """Ask about the line just typed until `parse` accepts the answer; each refusal is one line saying why.

        An empty answer asks again, so Enter cannot drop a typed line; the end of input or Ctrl-C still ends the episode.
        """
        while True:
            try:
                text = self.read(prompt).strip()
            except (EOFError, KeyboardInterrupt):
                raise Ended from None
            if not text:
                self.say("  your line is kept: answer the question (end of input or Ctrl-C ends the episode without it)")
                continue
            try:
                return parse(text)
            except ValueError as e:
                self.say(f"  {e}; try again")

    def answer(self, request: dict) -> object:
        """The value a paused graph resumes with: {'text'} (and, as the persona, their state); an empty text ends it."""
        try:
            if request["role"] == "practitioner":
                return {"text": self.line("you: ")}
            return {"text": self.line("you: "), "interest": self.ask(f"  {PROMPTS['interest']} ", parse_rating),
                    "comfort": self.ask(f"  {PROMPTS['comfort']} ", parse_rating),
                    "intent": self.ask(f"  {PROMPTS['intent']} ", parse_intent),
                    "would_share": self.ask(f"  {PROMPTS['would_share']} ", parse_yes_no)}  # fmt: skip
        except Ended:
            self.say("(you ended the episode)")
            return {"text": ""}
