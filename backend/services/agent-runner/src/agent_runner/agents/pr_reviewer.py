"""The `pr-reviewer` agent: deterministic diff findings, plus Ollama's view when available.

Input is a unified diff; empty input means the first `*.diff`/`*.patch` file in the
execution directory, else in the workspace root (sorted by name, so the choice is
stable). The review is returned and written to `review.md` in the execution dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent_runner.agents.context import AgentError
from agent_runner.agents.diff_checks import review_diff
from agent_runner.agents.ollama import OllamaUnavailable, ask_for_review

if TYPE_CHECKING:
    from agent_runner.agents.context import AgentContext

DIFF_SUFFIXES = (".diff", ".patch")


def run(text: str, ctx: AgentContext) -> str:
    diff, source = (text, "input") if text.strip() else _find_diff_file(ctx)
    ctx.progress(f"reviewing diff from {source}")
    review = review_diff(diff)
    lines = [f"# Review of {source}", "", "## Findings", ""]
    lines += [finding.render() for finding in review.findings] or ["(none)"]
    lines += ["", review.summary()]
    ctx.progress(review.summary())

    if ctx.ollama.base_url is not None:
        ctx.progress(f"asking Ollama model {ctx.ollama.model}")
        try:
            answer = ask_for_review(ctx.ollama.base_url, ctx.ollama.model, diff)
            lines += ["", f"## Model review ({ctx.ollama.model})", "", answer]
        except OllamaUnavailable as error:
            lines += ["", f"Note: deterministic findings only; Ollama unavailable: {error}"]

    report = "\n".join(lines) + "\n"
    ctx.execution_dir.mkdir(parents=True, exist_ok=True)
    (ctx.execution_dir / "review.md").write_text(report, encoding="utf-8")
    return report


def _find_diff_file(ctx: AgentContext) -> tuple[str, str]:
    for directory in (ctx.execution_dir, ctx.workspace_root):
        if not directory.is_dir():
            continue
        candidates = sorted(
            p for p in directory.iterdir() if p.is_file() and p.suffix in DIFF_SUFFIXES
        )
        if candidates:
            path: Path = candidates[0]
            return path.read_text(encoding="utf-8", errors="replace"), str(path)
    raise AgentError(
        "empty input and no *.diff or *.patch file in the execution directory or workspace root"
    )
