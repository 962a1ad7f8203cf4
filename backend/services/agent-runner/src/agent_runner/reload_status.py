"""The reload status file: the supervisor writes the outcome of each child start, `/healthz` shows it.

One small JSON object, `{"generation": n, "state": "ready"|"failed", "error": str|null,
"at": ISO-8601 UTC}`, replaced atomically (write a temp file, rename) so a reader
never sees half of it. It lives in the temp directory, named after the health port,
so two runners on one host (tests, a second stack) keep apart.

The host tells a successful reload (health shows the new `generation`) from a failed
one (`reload.state == "failed"` for the attempted generation) without reading logs.
Stdlib only: the supervisor imports this module.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

ReloadState = Literal["ready", "failed"]


@dataclass(frozen=True)
class ReloadOutcome:
    generation: int
    state: ReloadState
    error: str | None
    at: str

    @classmethod
    def now(cls, generation: int, state: ReloadState, error: str | None = None) -> ReloadOutcome:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(generation=generation, state=state, error=error, at=at)


def status_path(health_port: int, temp_dir: str | None = None) -> Path:
    return Path(temp_dir or tempfile.gettempdir()) / f"stigmer-agent-runner-{health_port}.reload.json"


def write(path: Path, outcome: ReloadOutcome) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(asdict(outcome)) + "\n", encoding="utf-8")
    os.replace(staging, path)


def read(path: Path) -> dict[str, Any] | None:
    """The last outcome as written, or None when no supervisor wrote one (or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
