"""Optional Ollama second opinion: probe `/api/tags`, then `/api/generate` once.

Every failure becomes `OllamaUnavailable` with a reason, so the reviewer can fall
back to its deterministic findings and say why.
https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-completion
"""

from __future__ import annotations

import httpx

PROBE_TIMEOUT_SECONDS = 1.0
GENERATE_TIMEOUT_SECONDS = 120.0
MAX_DIFF_CHARS = 20_000


class OllamaUnavailable(Exception):
    """Ollama is not configured, not answering, or answered something unusable."""


def ask_for_review(base_url: str, model: str, diff: str) -> str:
    prompt = (
        "You review code changes. List concrete problems in this unified diff, "
        "one per line, most important first. Be brief.\n\n" + diff[:MAX_DIFF_CHARS]
    )
    with httpx.Client(base_url=base_url) as client:
        try:
            client.get("/api/tags", timeout=PROBE_TIMEOUT_SECONDS).raise_for_status()
        except httpx.HTTPError as error:
            raise OllamaUnavailable(f"{base_url}/api/tags did not answer within 1 s: {error}") from None
        try:
            response = client.post(
                "/api/generate",
                json={"model": model, "prompt": prompt, "stream": False},
                timeout=GENERATE_TIMEOUT_SECONDS,
            )
            response.raise_for_status()
            answer = response.json().get("response")
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            raise OllamaUnavailable(f"{base_url}/api/generate failed: {error}") from None
    if not isinstance(answer, str) or not answer.strip():
        raise OllamaUnavailable(f"model {model!r} returned no text")
    return answer.strip()
