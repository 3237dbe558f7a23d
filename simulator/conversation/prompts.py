"""Prompt templates: files under prompts/, rendered by one function with strict variables."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from simulator.core.errors import UserError
from simulator.core.files import read_text

SIMULATION_PROMPTS = ("practitioner", "practitioner_parting", "practitioner_intent", "persona", "persona_now", "persona_state")  # what the conversation renders


def text_hash(text: str) -> str:
    """sha256 of a text, 16 hex digits: `text_hash('hi')` -> '8f434346648f6b96'."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def static_text(source: str) -> str:
    """A template's own words, its Jinja tags blanked: `static_text('Hi {{ name }}!')` -> 'Hi  !'."""
    return re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", source, flags=re.S)


def repeated_run(output: str, text: str, words: int = 8) -> str | None:
    """The first run of `words` consecutive words of `text` that `output` repeats (case and punctuation ignored),
    or None: how a model's answer copying a prompt's own wording, e.g. an example, is caught."""
    tokens = lambda s: re.sub(r"[^\w\s]", " ", s.lower()).split()  # noqa: E731
    said = " " + " ".join(tokens(output)) + " "
    source = tokens(text)
    for i in range(len(source) - words + 1):
        run = " ".join(source[i : i + words])
        if f" {run} " in said:
            return run
    return None


class Prompts:
    """Loads `<name>.j2` from the first directory that has it and renders it strictly, in Jinja's sandbox."""

    def __init__(self, dirs: tuple[Path, ...]):
        self.dirs = dirs
        # A --prompts-dir may be shared: the sandbox keeps a template to its variables and filters, away from
        # Python's internals (attributes such as __globals__), so a template cannot run code.
        self.env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        self._cache: dict[str, tuple[str, jinja2.Template, set[str], Path, str]] = {}

    def _load(self, name: str):
        if name not in self._cache:
            path = next((d / f"{name}.j2" for d in self.dirs if (d / f"{name}.j2").is_file()), None)
            if path is None:
                raise UserError(f"prompt template {name}.j2 not found in {', '.join(map(str, self.dirs))}")
            source = read_text(path)
            try:
                variables = meta.find_undeclared_variables(self.env.parse(source))
                template = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as e:
                raise UserError(f"{path}: line {e.lineno}: {e.message}") from None
            self._cache[name] = (source, template, variables, path, text_hash(source))
        return self._cache[name]

    def source(self, name: str) -> str:
        return self._load(name)[0]

    def hash(self, name: str) -> str:
        """The template's `text_hash`, as provenance records it."""
        return self._load(name)[4]

    def variables(self, name: str) -> set[str]:
        """The variables the template uses."""
        return self._load(name)[2]

    def render(self, name: str, **variables) -> str:
        """The rendered template; a missing variable fails naming every missing one."""
        _, template, needed, path, _ = self._load(name)
        missing = sorted(needed - variables.keys())
        if missing:
            raise UserError(f"{path}: undefined variable(s): {', '.join(missing)}")
        try:
            return template.render(**variables).strip()
        except jinja2.UndefinedError as e:
            raise UserError(f"{path}: {e.message}") from None
        except jinja2.exceptions.SecurityError as e:
            raise UserError(f"{path}: refused by the template sandbox: {e}") from None

    def hashes(self) -> dict[str, str]:
        """{template name: hash} of every template loaded so far."""
        return {name: entry[4] for name, entry in sorted(self._cache.items())}
