"""pr-reviewer: deterministic findings on a sample diff, review.md, Ollama fallback."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent_runner.agents import pr_reviewer
from agent_runner.agents.context import OllamaSettings
from agent_runner.agents.diff_checks import review_diff

SAMPLE_DIFF = """\
diff --git a/app/main.py b/app/main.py
index 1111111..2222222 100644
--- a/app/main.py
+++ b/app/main.py
@@ -1,3 +1,8 @@
 import os
+x = 1 \n+\tindent = True
+print("debug")
+# TODO remove this
+AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
+db_password = "hunter2"
 def main():
+    return "%s"
     pass
diff --git a/old.txt b/old.txt
deleted file mode 100644
index 3333333..0000000
--- a/old.txt
+++ /dev/null
@@ -1 +0,0 @@
-gone
"""


@dataclass
class FakeContext:
    execution_id: str
    execution_dir: Path
    workspace_root: Path
    ollama: OllamaSettings
    messages: list[str] = field(default_factory=list)

    def progress(self, message: str) -> None:
        self.messages.append(message)


def test_findings_on_sample_diff() -> None:
    long_line = "+" + "y" * 130
    review = review_diff(SAMPLE_DIFF.replace('+    return "%s"', long_line))
    assert [finding.render() for finding in review.findings] == [
        "app/main.py:2: [trailing-whitespace] trailing whitespace added",
        "app/main.py:3: [tab] tab character added",
        "app/main.py:4: [debug-print] print( call added; debugging leftover?",
        "app/main.py:5: [todo] TODO added",
        "app/main.py:6: [secret] looks like an AWS access key id",
        "app/main.py:7: [secret] looks like a hard-coded password",
        "app/main.py:9: [long-line] line is 130 chars (> 120)",
        "old.txt:0: [deleted-file] file deleted",
    ]
    assert review.summary() == "Summary: 8 finding(s) in 2 file(s), 7 added line(s) checked"


def test_large_hunk_flagged() -> None:
    added = "".join(f"+line {n}\n" for n in range(250))
    diff = f"--- a/big.py\n+++ b/big.py\n@@ -0,0 +1,250 @@\n{added}"
    findings = review_diff(diff).findings
    assert findings[0].rule == "large-hunk"
    assert findings[0].render().startswith("big.py:1: [large-hunk] hunk touches 250 lines")


def test_empty_input_reads_first_diff_file_and_notes_ollama_failure(tmp_path: Path) -> None:
    (tmp_path / "b.patch").write_text("--- a/z\n+++ b/z\n@@ -1 +1 @@\n+fine\n")
    (tmp_path / "a.diff").write_text(SAMPLE_DIFF)
    ctx = FakeContext(
        execution_id="exec-1",
        execution_dir=tmp_path / "exec-1",
        workspace_root=tmp_path,
        # Port 9 (discard) refuses: the reviewer must fall back, not fail.
        ollama=OllamaSettings(base_url="http://127.0.0.1:9", model="llama3.2"),
    )
    report = pr_reviewer.run("", ctx)
    assert f"# Review of {tmp_path / 'a.diff'}" in report
    assert "old.txt:0: [deleted-file] file deleted" in report
    assert "Note: deterministic findings only; Ollama unavailable" in report
    assert (tmp_path / "exec-1" / "review.md").read_text() == report
    assert ctx.messages[0] == f"reviewing diff from {tmp_path / 'a.diff'}"


def test_the_review_is_a_langgraph_state_graph() -> None:
    graph = pr_reviewer.review_graph().get_graph()
    assert list(graph.nodes) == ["__start__", "load_diff", "check_diff", "ask_model", "summarize", "__end__"]
    edges = sorted((edge.source, edge.target, edge.conditional) for edge in graph.edges)
    assert edges == [
        ("__start__", "load_diff", False),
        ("ask_model", "summarize", False),
        ("check_diff", "ask_model", True),
        ("check_diff", "summarize", True),
        ("load_diff", "check_diff", False),
        ("summarize", "__end__", False),
    ]


def test_without_ollama_the_model_node_is_skipped(tmp_path: Path) -> None:
    ctx = FakeContext("exec-2", tmp_path / "exec-2", tmp_path, OllamaSettings(base_url=None, model="llama3.2"))
    report = pr_reviewer.run("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n+ok = True\n", ctx)
    assert report == (
        "# Review of input\n\n## Findings\n\n(none)\n\n"
        "Summary: no findings in 1 file(s), 1 added line(s) checked\n"
    )
    assert ctx.messages == ["reviewing diff from input", "Summary: no findings in 1 file(s), 1 added line(s) checked"]
