"""A loopback endpoint whose people follow the rules of their own files, and whose judge reads the transcript.

`tests/stub_server.py` answers every request with random schema-valid JSON, so most of its personas start out of
character and its numbers mean little. Here every call is answered by a small script that plays by the rules:

- the practitioner makes small talk, then (its second line) the strategy's move, read from its system prompt:
  a plain ask to meet again with a number (common_interest, high_point_exit), an email (work_need), a goodbye then a
  plain ask for an email at the parting (turn_back), a "just friends" pretext (friends_pretext), an Instagram handle
  (social_media), or a goodbye (no_ask); it accepts a no. An ask is *plain* when it says it wants to see them again.
- the persona's first state is drawn inside her file's `expected_first_turn` (uniform, from the request's seed) and
  kept after that. When asked: friendly shares what was asked for; aloof shares only when the ask is plain, else
  says a cool no; unsure hedges (a decline) unless the ask is plain, and then shares if she likes them, that is if
  her interest is above her file's baseline interest (so, drawn uniformly from 2-6, in 2 of 5 episodes).
- the judge finds the turns that ask, grades them from their words (`GRADES`), raises `sketchy` on a masked aim
  (a "just friends" ask), reads the outcome from the stranger's line that gave contact (next meeting when a day was
  proposed and contact given) and finds every persona in character.

Variants for checks that must fail for a known reason (`rule_server(mode=...)`): 'random' personas report a state
drawn uniformly from 0-10 on every turn and share or refuse at random; 'always_share' personas follow the rules in
all else but give whatever is asked for; with 'random_judge' the people follow the rules and the judge answers at
random (a score 1-5 or not applicable per condition, each flag one time in two, any outcome); 'rules_in_prompt'
personas follow their rules only when their file's rules are in their prompt: given the ablation set's prompt
(`--personas-dir ablation`, no rules) every persona turns the rules around, sharing when the ask does not say it wants
to see her again and declining when it does (`without_rules`). Every mode knows the ablation set's people by their
summary or temperament, so outside 'rules_in_prompt' the same grid with the ablation personas plays the same way.
A transcript of the shipped gold set (`evaluations/gold/team.jsonl`, as `calibrate` sends it) is graded, outside
'random_judge', with the labels people gave it: a stand-in for a judge that agrees with people, so that a check
reading calibration has a known pass; it says nothing about any real judge.

So a run's figures are known in advance: `would_share(persona, strategy, interest)` is the rule, for tests that
want to state the expected figure in code as well as by hand.

    with StubServer(fault=by_the_rules) as url: ...       # or: with rule_server() as url: ...
    python tests/rule_stub.py PORT [MODE]                  # serve in the foreground, e.g. for the CLI
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

from stub_server import StubServer, completion

from evaluations.judge.rules import sentences
from simulator.conversation.catalog import load_catalog

SMALL_TALK = "Hi! This place gets busy around now, doesn't it?"
GOODBYE = "Well, I should get going. It was really nice talking to you!"
ACCEPT_NO = "No problem at all, it was lovely talking to you."
MOVES = {  # strategy -> its move, the practitioner's second line
    "common_interest": "You like hiking too? I'd love to see you again and go hiking together on Saturday. "
                       "My number is 555 0142, can I have yours?",
    "high_point_exit": "I'm sorry, my friend is waiting and I have to go, but I'd love to see you again. "
                       "Shall we swap numbers?",
    "work_need": "I'll need to reach you about the rota. Could I get your email? "
                 "And honestly, I'd like to see you again outside work.",
    "friends_pretext": "I'm only looking for new friends around here. Can I have your number?",
    "social_media": "Which app are you on? What's your Instagram handle, so I can follow you?",
    "turn_back": GOODBYE,
    "no_ask": GOODBYE,
}  # fmt: skip
PARTING = "Sorry, one more thing: do you have an email? I'd like to see you again."
KEEP_TALKING = "So what else keeps you busy these days?"
GIVES = {"number": "Sure, it's 555 0199.", "email": "Sure, my email is sam@example.com.",
         "social_handle": "Sure, I'm @sam.smiles on Instagram."}  # fmt: skip
NO = {"aloof": "No, I'd rather not.", "unsure": "That's kind of you, but I'd rather not.",
      "friendly": "Oh, I'd rather not, sorry."}  # fmt: skip
HEDGE = "Oh... I'm not sure, maybe another time?"
CHAT = {  # each persona's small talk, one line per reply so that nobody repeats herself
    "friendly": ["Oh hi! It really does, I love it here though. Do you come often?", "Ha, that's so true!",
                 "I know, right? Tell me more!", "That sounds like fun."],
    "aloof": ["It does.", "I suppose.", "Mm, maybe.", "Right."],
    "unsure": ["Oh, um, yes, it does, I think?", "I guess so, yes.", "Hm, maybe, I don't know.", "Oh. Okay."],
}  # fmt: skip
BYE = ["Bye, take care!", "Okay, bye then.", "See you around."]

ASK = re.compile(r"\b(number|numbers|e-?mail|handle|instagram)\b", re.I)
PLAIN = re.compile(r"see you again", re.I)
MASKED = re.compile(r"\b(just|only looking for new) friends\b", re.I)
GRADES = {  # the judge's scores at an ask, by what the ask says: (plain, masked) -> condition scores
    "plain": {"agenda_clarity": 5, "congruence": 5, "genuine_interest": 4, "timing": 4, "natural_bridge": 4, "setting_fit": 4},
    "masked": {"agenda_clarity": 1, "congruence": 2, "genuine_interest": 3, "timing": 3, "natural_bridge": 2, "setting_fit": 3},
    "vague": {"agenda_clarity": 2, "congruence": 3, "genuine_interest": 3, "timing": 3, "natural_bridge": 2, "setting_fit": 3},
    "none": {"agenda_clarity": None, "congruence": None, "genuine_interest": 3, "timing": 1, "natural_bridge": None, "setting_fit": None},
}  # fmt: skip


@lru_cache(maxsize=1)
def _catalog():
    return load_catalog()


@lru_cache(maxsize=1)
def _ablation():
    """The shipped ablation set: the same people, their files' decision rules left out."""
    return load_catalog(Path("ablation"))


@lru_cache(maxsize=1)
def _gold() -> dict[tuple[str, ...], dict]:
    """The shipped gold items by their turns' texts."""
    lines = (Path(__file__).resolve().parents[1] / "evaluations" / "gold" / "team.jsonl").read_text().splitlines()
    return {tuple(t["text"] for t in item["turns"]): item for item in map(json.loads, filter(str.strip, lines))}


def kind_asked(line: str) -> str:
    """What an ask asks for: `kind_asked('your Instagram handle?')` -> 'social_handle'."""
    return "social_handle" if re.search(r"instagram|handle", line, re.I) else "email" if re.search(r"e-?mail", line, re.I) else "number"


def manner(line: str) -> str:
    """'plain' (says it wants to see them again), 'masked' (a friendship pretext), 'vague', or 'none' (no ask)."""
    if not ASK.search(line):
        return "none"
    return "masked" if MASKED.search(line) else "plain" if PLAIN.search(line) else "vague"


def would_share(persona: str, line: str, interest: int) -> bool:
    """The persona rules above for an ask `line`: `would_share('aloof', MOVES['friends_pretext'], 5)` -> False."""
    plain = manner(line) == "plain"
    if persona == "friendly":
        return True
    if persona == "aloof":
        return plain
    return plain and interest > _catalog().personas[persona].baseline.interest


def _schema(body: dict) -> dict | None:
    fmt = body.get("response_format") or {}
    if body.get("grammar", "").startswith("%llguidance"):
        return json.loads(body["grammar"].partition("%json ")[2])
    return fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")


def _last_line(prompt: str) -> str:
    """The line a state or intent prompt asks about: the quoted rest of its 'Your last line was: "..."' line."""
    found = re.search(r'^Your last line was: "(.*)"$', prompt, re.M)
    return found.group(1) if found else ""


def _persona_in(text: str) -> str:
    """Whose prompt this is, from her summary or temperament in the article's set or the ablation set."""
    people = [*_catalog().personas.values(), *_ablation().personas.values()]
    return next((p.id for p in people if p.summary in text or p.temperament in text), "friendly")


def rules_stated(persona: str, prompt: str) -> bool:
    """Whether the persona's decision rules from her file are in the prompt (they are not in the ablation set's)."""
    p = _catalog().personas[persona]
    return any(rule and rule in prompt for rule in (p.on_agendas, p.on_ambiguity, p.on_pressure))


def without_rules(line: str) -> bool:
    """'rules_in_prompt' personas told no rules: wary of an ask that says it wants to see them again, at ease with one
    that does not (a friendship, an app): `without_rules(MOVES['friends_pretext'])` -> True."""
    return manner(line) != "plain"


def _practitioner(messages: list[dict]) -> str:
    system = messages[0]["content"]
    mine = [m["content"] for m in messages if m["role"] == "assistant"]
    heard = [m["content"] for m in messages[2:] if m["role"] == "user"]
    if messages[-1]["role"] == "system" and "Now: " in messages[-1]["content"]:  # the parting cue, after the conversation
        return PARTING
    if heard and heard[-1] in set(NO.values()) | {HEDGE}:
        return ACCEPT_NO
    if not mine:
        return SMALL_TALK
    if len(mine) == 1:
        strategy = next((s for s, v in _catalog().strategies.items() if v.instructions in system), "common_interest")
        return MOVES.get(strategy, MOVES["common_interest"])
    return f"{KEEP_TALKING} ({len(mine)})"


def _persona(messages: list[dict], mode: str = "rules") -> str:
    persona = _persona_in(messages[0]["content"])
    mine = [m["content"] for m in messages if m["role"] == "assistant"]
    heard = messages[-2]["content"] if messages[-2]["role"] == "user" else ""  # the line she answers, before her feelings now
    interest = int(re.search(r"your interest in them is (\d+)", messages[-1]["content"]).group(1))
    if heard in (GOODBYE, ACCEPT_NO):
        return BYE[len([m for m in mine if m in BYE])]
    if ASK.search(heard):
        coin = random.Random(json.dumps(messages)).random() < 0.5  # the random persona's answer, fixed by the request
        if mode == "rules_in_prompt" and not rules_stated(persona, messages[0]["content"]):
            shares = without_rules(heard)
        else:
            shares = mode == "always_share" or (coin if mode == "random" else would_share(persona, heard, interest))
        if shares:
            return GIVES[kind_asked(heard)]
        return NO[persona] if manner(heard) == "plain" or persona == "aloof" else HEDGE
    return CHAT[persona][min(len(mine), len(CHAT[persona]) - 1)] + ("" if len(mine) < len(CHAT[persona]) else f" ({len(mine)})")


def _state(prompt: str, seed: int, mode: str = "rules") -> dict:
    """The persona's private state after her line: drawn inside her file's range on her first turn, then kept."""
    said = _last_line(prompt)
    intent = "give_contact" if said in GIVES.values() else "decline" if said in set(NO.values()) | {HEDGE} else "chat"
    if mode == "random":  # anywhere, every turn
        rng = random.Random(f"{seed} {prompt}")
        return {"interest": rng.randint(0, 10), "comfort": rng.randint(0, 10), "intent": intent}
    transcript = prompt.partition("(Me) and a stranger (Them):\n")[2].partition("\n\nYour last line")[0]
    if sum(line.startswith("Me:") for line in transcript.splitlines()) == 1:
        first = _catalog().personas[_persona_in(prompt)].expected_first_turn
        rng = random.Random(seed)
        return {"interest": rng.randint(*first.interest), "comfort": rng.randint(*first.comfort), "intent": intent}
    felt = re.search(r"interest (\d+) out of 10, comfort (\d+) out of 10", prompt)
    return {"interest": int(felt.group(1)), "comfort": int(felt.group(2)), "intent": intent}


def _intent(prompt: str) -> str:
    said = _last_line(prompt)
    if said == GOODBYE:
        return "goodbye"
    if said == ACCEPT_NO:
        return "accept_no"
    return "ask" if ASK.search(said) else "small_talk"


def _turns(prompt: str) -> list[dict]:
    """The judge's numbered transcript as turns: [{'index', 'speaker', 'text', 'ids'}]."""
    turns = []
    for index, speaker, text in re.findall(r"^Turn (\d+), (practitioner|persona): (.*)$", prompt, re.M):
        plain = re.sub(r"\[\d+\.\d+\] ", "", text)
        turns.append({"index": int(index), "speaker": speaker, "text": plain,
                      "ids": [f"{index}.{n}" for n in range(1, len(sentences(plain)) + 1)]})  # fmt: skip
    return turns


def _sentence(turns: list[dict], turn: dict, pattern: re.Pattern) -> str:
    """The id of the first sentence of `turn` that matches `pattern`, else its first."""
    said = sentences(turn["text"])
    return next((turn["ids"][i] for i, s in enumerate(said) if pattern.search(s)), turn["ids"][0])


def _enum(schema: dict, *path: str) -> list:
    node = schema
    for key in path:
        node = node["properties"][key] if key != "items" else node["items"]
        node = schema.get("$defs", {}).get(node.get("$ref", "").rsplit("/", 1)[-1], node) if "$ref" in node else node
    options = node.get("anyOf", [node])
    return next((o["enum"] for o in options if "enum" in o), [])


def _from_labels(name: str, turns: list[dict], schema: dict, item: dict | None, rng: random.Random | None) -> dict:
    """The answer a gold item's labels give (`item`), or a random one (`rng`)."""
    practitioner = [t for t in turns if t["speaker"] == "practitioner"]
    labels = item["labels"] if item else {c: rng.choice([None, 1, 2, 3, 4, 5]) for c in schema.get("properties", {})}
    if name == "transition_turns":
        graded = rng.random() < 0.8 if rng else any(v is not None for v in labels.values())
        return {"turns": [practitioner[-1]["index"]] if graded and practitioner else []}
    if name == "transition_grades":
        out = {}
        for c in schema["properties"]:
            allowed, score = _enum(schema, c, "sentence"), labels.get(c)
            out[c] = {"sentence": (allowed or [None])[0] if score is not None else None, "reason": "As labelled.", "score": score}
        return out
    if name == "flags":
        names, cited = _enum(schema, "flags", "items", "flag"), _enum(schema, "flags", "items", "sentence")
        raised = item["flags"] if item else [f for f in names if rng.random() < 0.5]
        return {"flags": [{"flag": f, "sentence": cited[0], "reason": "As labelled."} for f in raised if f in names and cited]}
    if name == "outcome":
        exchanged = item["exchanged"] if item else rng.choice(["number", "email", "social_handle", "none"])
        cited = _enum(schema, "sentence")
        sentence = None if exchanged == "none" else (cited or [t["ids"][-1] for t in turns if t["speaker"] == "persona"])[-1]
        return {"reason": "As labelled.", "exchanged": exchanged, "sentence": sentence, "next_meeting": False}
    if name == "fidelity":
        return {"reason": "As labelled.", "in_character": True}
    raise ValueError(f"rule stub: no rule for a structured request named {name!r}")


def _judge(name: str, prompt: str, schema: dict, mode: str = "rules") -> dict:
    if name == "preflight":  # the one test call a command makes to each model before it fans out
        return {"ok": True}
    turns = _turns(prompt)
    if mode == "random_judge":
        return _from_labels(name, turns, schema, None, random.Random(prompt))
    if (item := _gold().get(tuple(t["text"] for t in turns))) is not None:
        return _from_labels(name, turns, schema, item, None)
    practitioner = [t for t in turns if t["speaker"] == "practitioner"]
    asks = [t for t in practitioner if ASK.search(t["text"])]
    if name == "transition_turns":
        return {"turns": [t["index"] for t in asks]}
    if name == "transition_grades":
        found = re.search(r"Grade the move at turns ([\d, ]+) by", prompt)
        at = [t for t in turns if found and str(t["index"]) in found.group(1).replace(" ", "").split(",")]
        how = manner(at[-1]["text"]) if at else "none"
        out = {}
        for c in schema["properties"]:
            allowed = _enum(schema, c, "sentence")
            cite = next((i for t in at for i in t["ids"] if i in allowed), allowed[0] if allowed else None)
            score = GRADES[how][c]
            out[c] = {"sentence": cite if score is not None else None, "reason": f"The ask reads as {how}.", "score": score}
        return out
    if name == "flags":
        masked = [t for t in asks if MASKED.search(t["text"])]
        if not masked or "sketchy" not in _enum(schema, "flags", "items", "flag"):
            return {"flags": []}
        return {"flags": [{"flag": "sketchy", "sentence": _sentence(turns, masked[0], MASKED),
                           "reason": "The ask hides its aim behind friendship."}]}  # fmt: skip
    if name == "outcome":
        gave = next((t for t in turns if t["speaker"] == "persona" and t["text"] in GIVES.values()), None)
        if gave is None:
            return {"reason": "Nothing was given.", "exchanged": "none", "sentence": None, "next_meeting": False}
        kind = next(k for k, v in GIVES.items() if v == gave["text"])
        day = any("Saturday" in t["text"] for t in practitioner)
        return {"reason": f"The stranger gave her {kind}.", "exchanged": kind, "sentence": gave["ids"][-1], "next_meeting": day}
    if name == "fidelity":
        return {"reason": "She keeps to her rules.", "in_character": True}
    raise ValueError(f"rule stub: no rule for a structured request named {name!r}")


MODES = ("rules", "random", "always_share", "random_judge", "rules_in_prompt")


def answer(body: dict, mode: str = "rules") -> str:
    """The scripted answer to one chat completion request (`mode`: see the module's docstring)."""
    messages, schema = body["messages"], _schema(body)
    # The judge's parts share a system message (the rubric and the transcript) before their question; a re-ask
    # appends to the first prompt.
    prompt = "\n".join(m["content"] for m in messages[: next(i for i, m in enumerate(messages) if m["role"] == "user") + 1])
    if schema is None:
        first = messages[0]["content"]
        return _practitioner(messages) if "You have just started chatting" in first else _persona(messages, mode)
    name = schema.get("title")
    if name == "practitioner_intent":
        return json.dumps({"intent": _intent(prompt)})
    if name == "persona_state":
        return json.dumps(_state(prompt, body.get("seed") or 0, mode))
    return json.dumps(_judge(name, prompt, schema, mode))


def by_the_rules(n: int, body: dict):
    """A `StubServer` fault hook that answers every request by the rules above."""
    return 200, {}, completion(body, answer(body))


def playing(mode: str):
    """A fault hook answering in `mode`: `playing('rules')` is `by_the_rules`."""
    if mode not in MODES:
        raise ValueError(f"rule stub: no mode {mode!r} (one of {', '.join(MODES)})")
    return lambda n, body: (200, {}, completion(body, answer(body, mode)))


def rule_server(latency: float = 0.0, mode: str = "rules") -> StubServer:
    """A StubServer playing by the rules (or a variant, `mode`): `with rule_server() as url: ...`."""
    return StubServer(latency, fault=playing(mode))


if __name__ == "__main__":  # `python tests/rule_stub.py PORT`: serve in the foreground
    import sys

    mode = sys.argv[2] if len(sys.argv) > 2 else "rules"
    stub = StubServer(port=int(sys.argv[1]), fault=playing(mode))
    print(f"rule stub ({mode}) serving on {stub.url}", flush=True)
    stub.server.serve_forever()
