"""The `nextstep` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .backends import endpoint
from .catalog import Catalog, Gender, Profile, load_catalog
from .config import load_config
from .errors import UserError
from .graph import Context, Scenario
from .local import serve as serve_local
from .prompts import Prompts
from .runner import run_episode

app = typer.Typer(help="Simulate the step from a pleasant chat to swapping contact details, and grade it.",
                  add_completion=False, pretty_exceptions_enable=False)
console = Console(highlight=False)

# Options shared by the commands that talk to a model.
Backend = Annotated[Optional[str], typer.Option(help="local (embedded model, default) or openai.", show_default=False)]
BaseUrl = Annotated[Optional[str], typer.Option(help="Any OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")]
ApiKeyEnv = Annotated[Optional[str], typer.Option(help="Environment variable holding the API key [default: OPENAI_API_KEY].")]
OutputModeOpt = Annotated[Optional[str], typer.Option("--output-mode", help="json_schema (OpenAI, vLLM, Ollama) or json_object (llama.cpp).")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model for every role.")]
RoleModel = Annotated[Optional[str], typer.Option(help="Model for this role (overrides --model).")]
Temperature = Annotated[Optional[float], typer.Option(help="Sampling temperature of the dialogue [default: 0.7].")]
MaxTurns = Annotated[Optional[int], typer.Option(help="Most rounds (practitioner + persona) per episode [default: 8].")]
PersonasDir = Annotated[Optional[Path], typer.Option("--personas", help="Directory of persona YAML files overriding the shipped ones.")]
PromptsDir = Annotated[Optional[Path], typer.Option("--prompts", help="Directory of prompt files overriding the shipped ones.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML config file [default: ./nextstep.toml if present].")]


def _config(config_file, **flags):
    return load_config(config_file, **flags)


def _catalog(config) -> Catalog:
    return load_catalog(config.personas_dir, config.prompts_dir)


@app.command()
def catalog(personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None) -> None:
    """List the settings, personas, strategies and profile factors."""
    cat = _catalog(_config(config_file, personas_dir=personas_dir, prompts_dir=prompts_dir))
    for kind, entries in (("settings", cat.settings), ("personas", cat.personas), ("strategies", cat.strategies)):
        table = Table(title=kind, title_justify="left", show_header=False, box=None)
        for name, entry in entries.items():
            baseline = " [dim](baseline)[/]" if getattr(entry, "baseline", False) is True else ""
            table.add_row(f"[bold]{name}[/]", entry.summary + baseline)
        console.print(table, "")
    genders = ", ".join(Gender.__args__)
    console.print(f"[bold]profile[/]: --practitioner-gender and --persona-gender, each one of {genders}")


def _print_turn(turn: dict) -> None:
    if turn["speaker"] == "practitioner":
        side = f"[cyan]practitioner[/] [dim]{turn['intent']:>10}[/]"
    else:
        share = "shares" if turn["shares_contact"] else "keeps"
        side = f"[magenta]persona[/]      [dim]i{turn['interest']:>2} c{turn['comfort']:>2} {share}[/]"
    console.print(f"{turn['index']:>3} {side}  {turn['text']}", soft_wrap=True)


def _print_result(record: dict, path: Path) -> None:
    o, u = record.get("outcome") or {}, record["usage"]
    if record["status"] == "failed":
        console.print(f"[red]failed[/]: {record['error']}")
    console.print(
        f"\n[bold]outcome[/]: exchanged {o.get('exchanged')}; ended by {o.get('ended_by')} ({o.get('end_reason')}); "
        f"final interest {o.get('final_interest')}, comfort {o.get('final_comfort')}"
    )
    console.print(
        f"[bold]tokens[/]: {u['prompt_tokens']} prompt + {u['completion_tokens']} completion in {u['calls']} calls; "
        f"[bold]time[/]: {record['duration_s']:.1f}s"
    )
    console.print(f"[bold]saved[/]: {path}")


@app.command()
def run(
    setting: Annotated[str, typer.Option(help="Where they meet (see `nextstep catalog`).")] = "supermarket",
    persona: Annotated[str, typer.Option(help="Who the other person is.")] = "unsure",
    strategy: Annotated[str, typer.Option(help="How the practitioner makes the transition.")] = "common_interest",
    practitioner_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "man",
    persona_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "woman",
    seed: Annotated[int, typer.Option(help="Seed for every request; same seed, same conversation (local backend).")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the episode JSON.")] = Path("episodes"),
    backend: Backend = None, base_url: BaseUrl = None, api_key_env: ApiKeyEnv = None, output_mode: OutputModeOpt = None,
    model: ModelOpt = None, practitioner_model: RoleModel = None, persona_model: RoleModel = None,
    temperature: Temperature = None, max_turns: MaxTurns = None,
    personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None,
) -> None:
    """Simulate one episode and print it turn by turn."""
    config = _config(
        config_file, backend=backend, base_url=base_url, api_key_env=api_key_env, output_mode=output_mode, model=model,
        practitioner_model=practitioner_model, persona_model=persona_model, temperature=temperature,
        max_turns=max_turns, personas_dir=personas_dir, prompts_dir=prompts_dir,
    )  # fmt: skip
    cat = _catalog(config)
    for kind, name in (("settings", setting), ("personas", persona), ("strategies", strategy)):
        cat.pick(kind, name)
    profile = _profile(practitioner_gender, persona_gender)
    scenario = Scenario(setting, persona, strategy, profile)
    with endpoint(config) as ep:
        console.print(f"[dim]{scenario.setting} · {scenario.persona} · {scenario.strategy} · {profile.id} · seed {seed} · {ep.backend}[/]")

        async def go():
            models = ep.models(config)
            ctx = Context(models["practitioner"], models["persona"], cat, Prompts(cat.prompt_dirs), scenario, seed,
                          temperature=config.temperature, max_turns=config.max_turns, reasks=config.reasks)
            return await run_episode(ctx, backend=ep.backend, on_turn=_print_turn)

        record = asyncio.run(go())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record['id']}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    _print_result(record, path)
    if record["status"] == "failed":
        raise typer.Exit(1)


def _profile(practitioner_gender: str, persona_gender: str) -> Profile:
    for flag, value in (("--practitioner-gender", practitioner_gender), ("--persona-gender", persona_gender)):
        if value not in Gender.__args__:
            raise UserError(f"{flag} {value!r}: choose from {', '.join(Gender.__args__)}")
    return Profile(practitioner_gender=practitioner_gender, persona_gender=persona_gender)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    n_ctx: Annotated[int, typer.Option(help="Context window in tokens.")] = 4096,
) -> None:
    """Run the embedded model's OpenAI-compatible server in the foreground (127.0.0.1 only)."""
    console.print(f"serving the embedded model at http://127.0.0.1:{port}/v1 (Ctrl-C to stop)")
    raise typer.Exit(serve_local(port, n_ctx))


def main() -> None:
    """Entry point: user errors are one line on stderr and exit 2; interruption exits 130."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind (and stop servers) on SIGTERM too
    command = typer.main.get_command(app)
    try:
        code = command.main(sys.argv[1:] or ["--help"], standalone_mode=False, prog_name="nextstep")
    except UserError as e:
        _fail(str(e), 2)
    except typer.Abort:
        _fail("interrupted", 130)
    except typer.TyperException as e:  # usage errors from the command-line parser
        ctx = getattr(e, "ctx", None)
        _fail(f"{ctx.command_path}: {e.format_message()}" if ctx else e.format_message(), getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"nextstep: error: {message}" if code == 2 else f"nextstep: {message}", file=sys.stderr)
    sys.exit(code)
