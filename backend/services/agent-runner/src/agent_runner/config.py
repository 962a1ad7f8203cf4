"""Runner configuration: the environment contract, read once into a frozen `Config`.

Every variable the runner understands is parsed and validated here, so the rest of
the code receives typed values and never touches `os.environ`. A bad value raises
`ConfigError` whose message names the variable and the values it accepts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

MEBIBYTE = 1024 * 1024
MAX_UPLOAD_CEILING = 1024 * MEBIBYTE
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A variable holds a value outside its allowed range."""


@dataclass(frozen=True)
class Config:
    mode: str
    backend_host: str
    backend_port: int
    temporal_address: str
    temporal_namespace: str
    task_queue: str
    sandbox_type: str
    workspace_root: Path
    log_level: str
    health_port: int
    bind_host: str
    max_upload_bytes: int
    ollama_base_url: str | None
    ollama_model: str

    @property
    def backend_endpoint(self) -> str:
        return f"{self.backend_host}:{self.backend_port}"

    @property
    def backend_url(self) -> str:
        return f"http://{self.backend_endpoint}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        def get(name: str, default: str) -> str:
            # An empty value counts as unset: compose and `docker run -e X=` produce
            # empty strings for variables the user did not mean to set.
            return environ.get(name, "").strip() or default

        host, port = _parse_endpoint(
            "STIGMER_BACKEND_ENDPOINT", get("STIGMER_BACKEND_ENDPOINT", "localhost:7234"), "localhost:7234"
        )
        temporal_host, temporal_port = _parse_endpoint(
            "TEMPORAL_SERVICE_ADDRESS", get("TEMPORAL_SERVICE_ADDRESS", "localhost:7233"), "localhost:7233"
        )
        return cls(
            mode=_one_of("MODE", get("MODE", "local"), ("local",)),
            backend_host=host,
            backend_port=port,
            temporal_address=f"{temporal_host}:{temporal_port}",
            temporal_namespace=_name("TEMPORAL_NAMESPACE", get("TEMPORAL_NAMESPACE", "default")),
            task_queue=_name("STIGMER_TASK_QUEUE", get("STIGMER_TASK_QUEUE", "agent_execution_runner")),
            sandbox_type=_one_of("SANDBOX_TYPE", get("SANDBOX_TYPE", "filesystem"), ("filesystem",)),
            workspace_root=_absolute_path("WORKSPACE_ROOT", get("WORKSPACE_ROOT", "/workspace")),
            log_level=_one_of("LOG_LEVEL", get("LOG_LEVEL", "INFO").upper(), LOG_LEVELS),
            health_port=_int_in_range(
                "STIGMER_RUNNER_HEALTH_PORT", get("STIGMER_RUNNER_HEALTH_PORT", "7235"), 1, 65535
            ),
            # Loopback by default: with host networking that is the host's loopback. Bridge
            # networking (Docker Desktop) needs 0.0.0.0 inside the container, and publishes
            # the port on the host's 127.0.0.1 only.
            bind_host=_one_of("STIGMER_RUNNER_BIND_HOST", get("STIGMER_RUNNER_BIND_HOST", "127.0.0.1"), ("127.0.0.1", "0.0.0.0")),
            max_upload_bytes=_int_in_range(
                "STIGMER_MAX_UPLOAD_BYTES",
                get("STIGMER_MAX_UPLOAD_BYTES", str(10 * MEBIBYTE)),
                1,
                MAX_UPLOAD_CEILING,
            ),
            ollama_base_url=_optional_url("OLLAMA_BASE_URL", environ.get("OLLAMA_BASE_URL", "").strip()),
            ollama_model=get("OLLAMA_MODEL", "llama3.2"),
        )

    @property
    def logging_level(self) -> int:
        return logging.getLevelName(self.log_level)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return value


def _int_in_range(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; allowed: {low}..{high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; allowed: {low}..{high}")
    return value


def _parse_endpoint(name: str, raw: str, example: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or "/" in raw:
        raise ConfigError(f"{name}={raw!r} must be host:port (no scheme), e.g. {example}")
    return host, _int_in_range(f"{name} port", port, 1, 65535)


def _name(name: str, raw: str) -> str:
    # Task queue and namespace names appear in logs, URLs and Temporal's UI; keeping
    # them to these characters means no escaping is ever needed.
    if not all(c.isalnum() or c in "_-." for c in raw) or len(raw) > 128:
        raise ConfigError(f"{name}={raw!r} is invalid; allowed: 1..128 chars of [A-Za-z0-9_.-]")
    return raw


def _absolute_path(name: str, raw: str) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise ConfigError(f"{name}={raw!r} must be an absolute path, e.g. /workspace")
    return path


def _optional_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} must start with http:// or https://, or be unset")
    return raw.rstrip("/")
