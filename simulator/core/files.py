"""Reading the user-editable data files (YAML, templates) with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .errors import UserError

MAX_FILE_BYTES = 1_000_000


def data_dir(name: str) -> Path:
    """The shipped copy of a data folder: inside the wheel, or at the repo root when editable."""
    package = Path(__file__).parents[1]
    installed = package / "_data" / name
    return installed if installed.is_dir() else package.parent / name


def read_text(path: Path) -> str:
    """The file's text, or a UserError naming the file and what is wrong with it."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UserError(f"{path}: file is larger than {MAX_FILE_BYTES:,} bytes")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    return text


def read_yaml(path: Path):
    """Parsed YAML; a syntax error is reported with its line and column."""
    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(f"{path}: {where}invalid YAML: {problem}") from None


def validation_message(error: ValidationError) -> str:
    """'loc: msg' for every error, e.g. 'baseline.interest: Input should be a valid integer'."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in error.errors()
    )


def validate(model: type[BaseModel], data, where: str):
    """`model.model_validate(data)`, or a UserError that says where the data came from."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {validation_message(e)}") from None


def output_file(path: Path | str, flag: str, *, force: bool = True) -> Path:
    """`path` if a file can be written there, else a UserError naming the flag: checked before any work is paid for.

    Its folder must exist and be writable, and the path must not be a folder; with `force=False` an existing file is
    refused too. `output_file('no/such/x.csv', '-o')` raises "-o no/such/x.csv: no such directory no/such".
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file name")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: no such directory {folder}")
    if path.exists() and not force:
        raise UserError(f"{flag} {path}: the file exists; pass --force to replace it")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise UserError(f"{flag} {path}: not writable")
    return path
