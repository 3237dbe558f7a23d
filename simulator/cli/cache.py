"""`nextstep cache info` and `nextstep cache clear`: the response cache every model call passes."""

from __future__ import annotations

import datetime as dt

import typer

import simulator.api as api

from .options import config_options
from .show import console

app = typer.Typer()
cache = typer.Typer(name="cache", help="The response cache: a request asked before is answered from it, not the endpoint.",
                    no_args_is_help=True)  # fmt: skip
app.add_typer(cache)


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


@cache.command()
@config_options("cache", "cache_dir")
def info(*, config: dict) -> None:
    """Where the cache is, how many responses it holds, its size and bound."""
    i = api.cache_info(**config)
    state = "on" if i["on"] else "off (--no-cache, NEXTSTEP_CACHE=0 or cache = false)"
    console.print(f"response cache: {state}\npath: {i['path']}", soft_wrap=True)
    if i["broken"]:
        console.print(f"[red]unusable[/]: {i['broken']}; `nextstep cache clear` deletes it", soft_wrap=True)
        raise typer.Exit(1)
    expiry = "none" if i["expiry_s"] is None else f"{i['expiry_s']:,.0f} s"
    console.print(f"entries: {i['entries']:,}\nsize: {i['used_bytes'] / 2**20:,.1f} MiB in use, "
                  f"{i['disk_bytes'] / 2**20:,.1f} MiB on disk, bound {i['max_bytes'] / 2**20:,.0f} MiB\n"
                  f"expiry: {expiry}\noldest: {_when(i['oldest'])}\nnewest: {_when(i['newest'])}")  # fmt: skip


@cache.command()
@config_options("cache", "cache_dir")
def clear(*, config: dict) -> None:
    """Remove every cached response (a damaged cache file is deleted)."""
    done = api.clear_cache(**config)
    removed = "a damaged cache" if done["removed"] < 0 else f"{done['removed']:,} responses"
    console.print(f"removed {removed} from {done['path']}", soft_wrap=True)
