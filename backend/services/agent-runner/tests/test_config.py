"""`Config.from_env`: defaults, parsing and errors that name the variable and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_runner.config import Config, ConfigError


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.mode == "local"
    assert config.backend_endpoint == "localhost:7234"
    assert (config.backend_host, config.backend_port) == ("localhost", 7234)
    assert config.backend_url == "http://localhost:7234"
    assert config.temporal_address == "localhost:7233"
    assert config.temporal_namespace == "default"
    assert config.task_queue == "agent_execution_runner"
    assert config.sandbox_type == "filesystem"
    assert config.workspace_root == Path("/workspace")
    assert config.log_level == "INFO"
    assert config.health_port == 7235
    assert config.bind_host == "127.0.0.1"
    assert config.max_upload_bytes == 10 * 1024 * 1024
    assert config.ollama_base_url is None
    assert config.ollama_model == "llama3.2"


def test_explicit_values() -> None:
    config = Config.from_env(
        {
            "STIGMER_BACKEND_ENDPOINT": "127.0.0.1:9000",
            "TEMPORAL_SERVICE_ADDRESS": "host.docker.internal:17233",
            "TEMPORAL_NAMESPACE": "stigmer-local",
            "STIGMER_TASK_QUEUE": "queue-2",
            "WORKSPACE_ROOT": "/tmp/ws",
            "LOG_LEVEL": "debug",
            "STIGMER_RUNNER_HEALTH_PORT": "7299",
            "STIGMER_MAX_UPLOAD_BYTES": "1024",
            "OLLAMA_BASE_URL": "http://localhost:11434/",
            "OLLAMA_MODEL": "qwen2.5",
        }
    )
    assert config.backend_endpoint == "127.0.0.1:9000"
    assert config.temporal_address == "host.docker.internal:17233"
    assert config.temporal_namespace == "stigmer-local"
    assert config.task_queue == "queue-2"
    assert config.workspace_root == Path("/tmp/ws")
    assert config.log_level == "DEBUG"
    assert config.health_port == 7299
    assert config.max_upload_bytes == 1024
    assert config.ollama_base_url == "http://localhost:11434"
    assert config.ollama_model == "qwen2.5"


def test_empty_value_means_default() -> None:
    assert Config.from_env({"STIGMER_RUNNER_HEALTH_PORT": ""}).health_port == 7235


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODE", "cloud", "MODE='cloud' is not supported; allowed: local"),
        ("SANDBOX_TYPE", "docker", "allowed: filesystem"),
        ("STIGMER_RUNNER_HEALTH_PORT", "0", "STIGMER_RUNNER_HEALTH_PORT=0 is out of range; allowed: 1..65535"),
        ("STIGMER_RUNNER_HEALTH_PORT", "70000", "allowed: 1..65535"),
        ("STIGMER_RUNNER_HEALTH_PORT", "abc", "STIGMER_RUNNER_HEALTH_PORT='abc' is not an integer"),
        ("STIGMER_MAX_UPLOAD_BYTES", "-1", "STIGMER_MAX_UPLOAD_BYTES=-1 is out of range; allowed: 1..1073741824"),
        ("STIGMER_BACKEND_ENDPOINT", "http://localhost:7234", "must be host:port"),
        ("STIGMER_BACKEND_ENDPOINT", "localhost", "must be host:port"),
        ("STIGMER_BACKEND_ENDPOINT", "localhost:99999", "port=99999 is out of range; allowed: 1..65535"),
        ("STIGMER_TASK_QUEUE", "a/b", "STIGMER_TASK_QUEUE='a/b' is invalid"),
        ("TEMPORAL_SERVICE_ADDRESS", "http://localhost:7233", "must be host:port (no scheme), e.g. localhost:7233"),
        ("TEMPORAL_SERVICE_ADDRESS", "localhost", "TEMPORAL_SERVICE_ADDRESS='localhost' must be host:port"),
        ("TEMPORAL_SERVICE_ADDRESS", "localhost:0", "TEMPORAL_SERVICE_ADDRESS port=0 is out of range"),
        ("TEMPORAL_NAMESPACE", "my namespace", "TEMPORAL_NAMESPACE='my namespace' is invalid"),
        ("WORKSPACE_ROOT", "workspace", "WORKSPACE_ROOT='workspace' must be an absolute path"),
        ("LOG_LEVEL", "LOUD", "allowed: DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("OLLAMA_BASE_URL", "localhost:11434", "OLLAMA_BASE_URL='localhost:11434' must start with http://"),
    ],
)
def test_errors_name_variable_and_range(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        Config.from_env({name: value})
    assert expected in str(caught.value)
    assert name.split()[0] in str(caught.value)


def test_bind_host_is_loopback_or_all_interfaces_only() -> None:
    assert Config.from_env({"STIGMER_RUNNER_BIND_HOST": "0.0.0.0"}).bind_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="STIGMER_RUNNER_BIND_HOST"):
        Config.from_env({"STIGMER_RUNNER_BIND_HOST": "10.0.0.5"})
