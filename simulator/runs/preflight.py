"""One cheap call per distinct model before a command fans out: a wrong model name, path or key stops it at once."""

from __future__ import annotations

from simulator.core.errors import ModelError, UserError
from simulator.core.records import Call
from simulator.models.chat import ChatModel, chat

# A structured call, so that an endpoint refusing the output mode fails here too; its answer is not used.
SCHEMA = {"title": "preflight", "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}  # fmt: skip
MESSAGES = [{"role": "user", "content": 'Reply with {"ok": true}.'}]


def distinct(roles: dict[str, ChatModel]) -> dict[str, tuple[ChatModel, list[str]]]:
    """{model name: (the model, the roles that use it)}: `distinct({'practitioner': m, 'persona': m})` has one entry."""
    found: dict[str, tuple[ChatModel, list[str]]] = {}
    for role, model in roles.items():
        found.setdefault(model.name, (model, []))[1].append(role)
    return found


async def preflight(roles: dict[str, ChatModel]) -> list[Call]:
    """One call to each distinct model of `roles` ({role: model}), in turn; returns the calls made, to be counted.

    The endpoint refusing one (HTTP error, unreachable) is a UserError naming the roles, the model and the error.
    """
    calls: list[Call] = []
    for name, (model, users) in distinct(roles).items():
        try:  # through the response cache: a model this endpoint answered before is not asked again
            await chat(model, MESSAGES, role=users[0], purpose="preflight", calls=calls, schema=SCHEMA, max_tokens=16,
                       temperature=0.0)  # fmt: skip
        except ModelError as e:
            error = " ".join(str(e).split())
            raise UserError(f"the {' and '.join(users)} model {name!r} failed a first test call, so nothing was run: {error}") from None
    return calls


def roles_of(models: dict, *, simulate: bool, judges: int, arm: str = "") -> dict[str, ChatModel]:
    """The roles a command will call, from `Endpoint.models`: {'practitioner', 'persona', 'evaluator', 'evaluator 2'...}.

    Judges take the evaluator models in turn, so `judges` of them are used at most; `arm` prefixes the names.
    """
    roles = {"practitioner": models["practitioner"], "persona": models["persona"]} if simulate else {}
    used = models["evaluators"][:judges]
    roles |= {("evaluator" if i == 0 else f"evaluator {i + 1}"): m for i, m in enumerate(used)}
    return {f"{arm} {role}".strip(): m for role, m in roles.items()}
