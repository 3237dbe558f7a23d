"""Options shared by several commands, each declared once; `config_options` adds the configuration flags."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from simulator.models.config import Config
from simulator.runs.experiment import RUN_MAX_TURNS, Experiment

_MAX_TURNS = "Most rounds (practitioner + persona) per episode [default: {}; or NEXTSTEP_MAX_TURNS, or max_turns in the config file]."

# What an episode is: run and play.
Setting = Annotated[str, typer.Option(help="Where they meet (see `nextstep catalog`).")]
Persona = Annotated[str, typer.Option(help="Who the other person is.")]
Strategy = Annotated[str, typer.Option(help="How the practitioner makes the transition.")]
PractitionerGender = Annotated[str, typer.Option(help="man, woman or nonbinary.")]
PersonaGender = Annotated[str, typer.Option(help="man, woman or nonbinary.")]
Seed = Annotated[int, typer.Option(help="Seed for every request; same seed, same conversation (local backend).")]

# Grading.
Judges = Annotated[Optional[int], typer.Option(min=0, show_default=False, help="Independent judges per episode, 0 for none [default: 1].")]
JudgeSeed = Annotated[int, typer.Option(help="Seed of the first judge; a stored episode adds its own seed (as a batch does).")]
RubricFile = Annotated[Optional[Path], typer.Option("--rubric", help="Rubric YAML overriding the shipped one.")]
FidelityJudge = Annotated[bool, typer.Option(help="Also ask the judge whether the persona stayed in character.")]

# Where episodes run (batch, branch).
Ray = Annotated[Optional[str], typer.Option(metavar="[ADDRESS]", show_default=False,
                                            help="Run the episodes on Ray actors (pip install 'nextstep[ray]') against the "
                                                 "shared --base-url; this process alone writes the store. ADDRESS joins a "
                                                 "cluster [default: $NEXTSTEP_RAY_ADDRESS, else a new local instance].")]
Actors = Annotated[Optional[int], typer.Option(min=1, help="With --ray: actors, each with --concurrency requests in flight "
                                                           "[default: one per CPU of the cluster].")]

# Stored runs.
Db = Annotated[Path, typer.Option(help="SQLite database of runs.")]
Format = Annotated[str, typer.Option("--format", help="text (tables) or json (for scripts).")]
IncludeUnfaithful = Annotated[bool, typer.Option(help="Keep fidelity-flagged episodes in the statistics.")]

# The grid's own max_turns and temperature (batch); the same as config flags elsewhere.
Temperature = Annotated[Optional[float], typer.Option(
    help=f"Sampling temperature of the dialogue [default: {Config.model_fields['temperature'].default}].")]
GridMaxTurns = Annotated[Optional[int], typer.Option(help=_MAX_TURNS.format(Experiment.model_fields["max_turns"].default))]

# Config fields as flags (see `config_options`); the directories are also read on their own.
PersonasDir = Annotated[Optional[Path], typer.Option(help="Directory of persona YAML files overriding the shipped ones, or a "
                                                         "shipped set: ablation.")]
PromptsDir = Annotated[Optional[Path], typer.Option(help="Directory of prompt files overriding the shipped ones.")]
RoleModel = Annotated[Optional[str], typer.Option(help="Model for this role (overrides --model).")]
CONFIG_OPTIONS = {
    "backend": Annotated[Optional[str], typer.Option(help="local (embedded model, default) or openai.", show_default=False)],
    "base_url": Annotated[Optional[str], typer.Option(help="Any OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")],
    "api_key_env": Annotated[Optional[str], typer.Option(help="Environment variable holding the API key [default: OPENAI_API_KEY].")],
    "output_mode": Annotated[Optional[str], typer.Option(help="json_schema (OpenAI, vLLM, Ollama), json_object (llama.cpp) or "
                                                              "llguidance (llama.cpp built with it; the local default).")],
    "model": Annotated[Optional[str], typer.Option(help="Model for every role.")],
    "practitioner_model": RoleModel,
    "persona_model": RoleModel,
    "evaluator_model": Annotated[Optional[str], typer.Option(help="Evaluator model(s), comma-separated; judges take them in turn.")],
    "timeout": Annotated[Optional[float], typer.Option(help="Seconds one request to the model may take in all, from sending it to "
                                                        "the answer's last byte; then it is abandoned (and retried) "
                                                        f"[default: {Config.model_fields['timeout'].default:g}].")],
    "temperature": Temperature,
    "max_turns": Annotated[Optional[int], typer.Option(help=_MAX_TURNS.format(RUN_MAX_TURNS))],
    "personas_dir": PersonasDir,
    "prompts_dir": PromptsDir,
    "prices_file": Annotated[Optional[Path], typer.Option("--prices", help="TOML of US dollars per million tokens (input, "
                                                          "cached_input, output) per model [default: ./prices.toml if present].")],
    "config_file": Annotated[Optional[Path], typer.Option("--config", help="TOML config file [default: ./nextstep.toml if present].")],
    "cache": Annotated[Optional[bool], typer.Option("--cache/--no-cache", show_default=False, help="Answer requests asked before "
                                                    "from the response cache [default: on; NEXTSTEP_CACHE=0 turns it off].")],
    "cache_dir": Annotated[Optional[Path], typer.Option(help="Directory of the response cache [default: the user cache "
                                                            "directory, see `nextstep cache info`].")],
}
ENDPOINT = ("backend", "base_url", "api_key_env", "output_mode", "model", "timeout", "cache", "cache_dir", "prices_file")
ROLES = ("practitioner_model", "persona_model", "evaluator_model")
FILES = ("personas_dir", "prompts_dir")


def config_options(*names: str):
    """Add the named config flags and --config to a command, which receives them together as `config: dict`.

    `@config_options(*FILES)` on `def catalog(config: dict)` makes `nextstep catalog --personas-dir D --prompts-dir P
    --config F`, and the command gets `config={'personas_dir': D, 'prompts_dir': P, 'config_file': F}`.
    """
    names = (*names, "config_file")

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "config"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=CONFIG_OPTIONS[n]) for n in names]

        @functools.wraps(command)
        def wrapper(**given):
            return command(**{k: v for k, v in given.items() if k not in names}, config={n: given[n] for n in names})

        wrapper.__signature__ = signature.replace(parameters=own + added)  # what typer reads the options from
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate


def ray_address(argv: list[str]) -> list[str]:
    """`--ray [ADDRESS]` for the parser, which knows no option whose value may be left out: a bare --ray becomes --ray=
    (no address), and takes the next word as its address only when it is one (host:port, ray://..., auto or local).

    `ray_address(['batch', '--ray', '--reps', '2'])` -> ['batch', '--ray=', '--reps', '2'];
    `ray_address(['batch', '--ray', '10.0.0.5:6379'])` -> ['batch', '--ray=10.0.0.5:6379'].
    """
    out, words = [], iter(range(len(argv)))
    for i in words:
        if argv[i] != "--ray":
            out.append(argv[i])
            continue
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if not following.startswith("-") and (":" in following or following in ("auto", "local")):
            out.append(f"--ray={following}")
            next(words)
        else:
            out.append("--ray=")
    return out
