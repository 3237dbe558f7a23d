"""Reading the user-editable data files (YAML, templates) with one-line errors."""

from __future__ import annotations

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
