"""Optional Ollama second opinion: probe `/api/tags`, then `/api/generate` once.

Every failure becomes `OllamaUnavailable` with a reason, so the reviewer can fall
back to its deterministic findings and say why.
"""

from __future__ import annotations

import json

PROBE_TIMEOUT_SECONDS = 1.0
GENERATE_TIMEOUT_SECONDS = 120.0
MAX_DIFF_CHARS = 20_000


class OllamaUnavailable(Exception):
    """Ollama is not configured, not answering, or answered something unusable."""


def ask_for_review(base_url: str, model: str, diff: str) -> str:
    # Imported here: urllib.request (with ssl) is a fifth of the runner's import time, and
    # only a configured Ollama needs it.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/api/tags", timeout=PROBE_TIMEOUT_SECONDS) as response:
            response.read()
    except (OSError, urllib.error.URLError) as error:
        raise OllamaUnavailable(f"{base_url}/api/tags did not answer within 1 s: {error}") from None

    prompt = (
        "You review code changes. List concrete problems in this unified diff, "
        "one per line, most important first. Be brief.\n\n" + diff[:MAX_DIFF_CHARS]
    )
    request = urllib.request.Request(
        f"{base_url}/api/generate",
        data=json.dumps({"model": model, "prompt": prompt, "stream": False}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=GENERATE_TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read()).get("response")
    except (OSError, urllib.error.URLError, ValueError, AttributeError) as error:
        raise OllamaUnavailable(f"{base_url}/api/generate failed: {error}") from None
    if not isinstance(answer, str) or not answer.strip():
        raise OllamaUnavailable(f"model {model!r} returned no text")
    return answer.strip()
