"""Reading the user-editable data files (YAML, templates) with one-line errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; once written it is synced and renamed over `path`, so `path` is always
    either its old contents or the new ones, never half of them (a full disk, a kill). Errors name `path` in one line.

        with replacing(Path("out.csv")) as tmp: frame.to_csv(tmp)
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror}") from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())  # not mkstemp's 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_dir(path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` through `replacing`; returns `path`."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_dir(folder: Path) -> None:
    """Make a rename durable: sync the folder's entry (not possible on every platform or filesystem)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


EXPORT_FORMATS = ("jsonl", "csv", "parquet")


def export_target(run_id: str, output: Path | None, fmt: str | None) -> tuple[str, Path]:
    """The format and file of an export: the format follows the file's extension, the file is named after the run.

    `export_target('r1', None, 'csv')` -> ('csv', Path('r1.csv')); `export_target('r1', Path('a.parquet'), None)` ->
    ('parquet', Path('a.parquet')); a name and a format that disagree are a UserError.
    """
    named = output.suffix.lstrip(".").lower() if output is not None else None
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(EXPORT_FORMATS)}")
    if named is not None and named not in EXPORT_FORMATS:
        raise UserError(f"-o {output}: name the file .jsonl, .csv or .parquet (the format follows the name: "
                        f"{', '.join(EXPORT_FORMATS)})")  # fmt: skip
    if fmt and named and fmt != named:
        raise UserError(f"-o {output} is a .{named} file but --format is {fmt}; give one of them")
    fmt = fmt or named or "jsonl"
    return fmt, output if output is not None else Path(f"{run_id}.{fmt}")
