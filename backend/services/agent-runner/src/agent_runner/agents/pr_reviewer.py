"""The `pr-reviewer` agent: a LangGraph `StateGraph` from a diff to a review.

    load_diff -> check_diff -> [ask_model, when OLLAMA_BASE_URL is set] -> summarize

Input is a unified diff; empty input means the first `*.diff`/`*.patch` file in the
execution directory, else in the workspace root (sorted by name, so the choice is
stable). `check_diff` applies the deterministic rules of `diff_checks`; `ask_model`
adds Ollama's view when it answers and a note saying why not otherwise. The review
is returned and written to `review.md` in the execution directory.

The agent's `AgentContext` reaches the nodes as LangGraph's run-scoped context
(`Runtime.context`), so the compiled graph is built once per process and shared.
https://langchain-ai.github.io/langgraph/concepts/low_level/#runtime-context
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent_runner.agents.context import AgentError
from agent_runner.agents.diff_checks import DiffReview, review_diff
from agent_runner.agents.ollama import OllamaUnavailable, ask_for_review

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from agent_runner.agents.context import AgentContext

DIFF_SUFFIXES = (".diff", ".patch")


class ReviewState(TypedDict, total=False):
    text: str
    diff: str
    source: str
    review: DiffReview
    model_section: list[str]
    report: str


@dataclass(frozen=True)
class ReviewRun:
    """LangGraph's run-scoped context: what one execution gives the nodes."""

    ctx: AgentContext


def run(text: str, ctx: AgentContext) -> str:
    final = review_graph().invoke({"text": text}, context=ReviewRun(ctx))
    return final["report"]


@cache
def review_graph() -> CompiledStateGraph[ReviewState, ReviewRun, ReviewState, ReviewState]:
    # Compiled on first use rather than at import: compiling costs tens of
    # milliseconds, which a freshly reloaded runner should not spend before it answers.
    graph = StateGraph(ReviewState, context_schema=ReviewRun)
    graph.add_node("load_diff", load_diff)
    graph.add_node("check_diff", check_diff)
    graph.add_node("ask_model", ask_model)
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "load_diff")
    graph.add_edge("load_diff", "check_diff")
    graph.add_conditional_edges("check_diff", route_after_checks, ["ask_model", "summarize"])
    graph.add_edge("ask_model", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile()


def load_diff(state: ReviewState, runtime: Runtime[ReviewRun]) -> ReviewState:
    ctx = runtime.context.ctx
    text = state.get("text", "")
    diff, source = (text, "input") if text.strip() else _find_diff_file(ctx)
    ctx.progress(f"reviewing diff from {source}")
    return {"diff": diff, "source": source}


def check_diff(state: ReviewState, runtime: Runtime[ReviewRun]) -> ReviewState:
    review = review_diff(state["diff"])
    runtime.context.ctx.progress(review.summary())
    return {"review": review}


def route_after_checks(state: ReviewState, runtime: Runtime[ReviewRun]) -> Literal["ask_model", "summarize"]:
    return "ask_model" if runtime.context.ctx.ollama.base_url is not None else "summarize"


def ask_model(state: ReviewState, runtime: Runtime[ReviewRun]) -> ReviewState:
    ctx = runtime.context.ctx
    base_url = ctx.ollama.base_url
    if base_url is None:  # routed here only when set; kept for the type checker
        return {"model_section": []}
    ctx.progress(f"asking Ollama model {ctx.ollama.model}")
    try:
        answer = ask_for_review(base_url, ctx.ollama.model, state["diff"])
    except OllamaUnavailable as error:
        return {"model_section": ["", f"Note: deterministic findings only; Ollama unavailable: {error}"]}
    return {"model_section": ["", f"## Model review ({ctx.ollama.model})", "", answer]}


def summarize(state: ReviewState, runtime: Runtime[ReviewRun]) -> ReviewState:
    ctx = runtime.context.ctx
    review = state["review"]
    lines = [f"# Review of {state['source']}", "", "## Findings", ""]
    lines += [finding.render() for finding in review.findings] or ["(none)"]
    lines += ["", review.summary()]
    lines += state.get("model_section", [])
    report = "\n".join(lines) + "\n"
    ctx.execution_dir.mkdir(parents=True, exist_ok=True)
    (ctx.execution_dir / "review.md").write_text(report, encoding="utf-8")
    return {"report": report}


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
