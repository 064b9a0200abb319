"""The committed JSON files of the kernel checks (the timed check's baselines, the static check's expectations):
one loader that says what is wrong with a file and how to make a good one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vimbench.errors import VimbenchError


def load_checked_json(path: Path, schema: str, section: str, what: str, create_hint: str) -> dict[str, Any]:
    """The JSON object in `path`, which must carry {"schema": schema} and an object under `section`; otherwise
    VimbenchError naming `what` the file should be (missing files: with `create_hint`, the command that writes
    one)."""
    path = Path(path)
    if not path.exists():
        raise VimbenchError(f"{what} {path} does not exist; {create_hint}")
    if path.is_dir():
        raise VimbenchError(f"{what} {path} is a folder; give its JSON file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VimbenchError(f"{what} {path} is binary, not a JSON file") from None
    except OSError as exc:
        raise VimbenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise VimbenchError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(data, dict) or data.get("schema") != schema or not isinstance(data.get(section), dict):
        raise VimbenchError(f"{path} is not a vimbench {what} (schema {schema})")
    return data
