"""Deterministic review rules over a unified diff: pure functions from text to findings.

Only added lines are judged (the author is responsible for what they add), with
line numbers in the new file so `path:line` points at the change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE_LENGTH = 120
LARGE_HUNK_LINES = 200

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
DEBUG_PRINT = re.compile(r"(?<![\w.])print\(")
TODO_MARKER = re.compile(r"\b(TODO|FIXME)\b")
AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
PASSWORD_ASSIGNMENT = re.compile(r"password\s*[=:]\s*['\"]?[^\s'\"]+", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str

    def render(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class DiffReview:
    findings: list[Finding]
    files: int
    added_lines: int

    def summary(self) -> str:
        if not self.findings:
            return f"Summary: no findings in {self.files} file(s), {self.added_lines} added line(s) checked"
        return (
            f"Summary: {len(self.findings)} finding(s) in {self.files} file(s), "
            f"{self.added_lines} added line(s) checked"
        )


def review_diff(diff: str) -> DiffReview:
    findings: list[Finding] = []
    files: set[str] = set()
    added_lines = 0
    old_path = new_path = ""
    new_line = 0
    for raw in diff.splitlines():
        if raw.startswith("diff --git "):
            old_path = new_path = ""
        elif raw.startswith("--- "):
            old_path = _strip_prefix(raw[4:])
        elif raw.startswith("+++ "):
            new_path = _strip_prefix(raw[4:])
            if new_path == "/dev/null":
                files.add(old_path)
                findings.append(Finding(old_path, 0, "deleted-file", "file deleted"))
            else:
                files.add(new_path)
        elif match := HUNK_HEADER.match(raw):
            new_line = int(match.group(3))
            old_count = int(match.group(2) or "1")
            new_count = int(match.group(4) or "1")
            if max(old_count, new_count) > LARGE_HUNK_LINES:
                path = new_path if new_path != "/dev/null" else old_path
                findings.append(
                    Finding(
                        path,
                        new_line,
                        "large-hunk",
                        f"hunk touches {max(old_count, new_count)} lines (> {LARGE_HUNK_LINES}); "
                        "consider splitting the change",
                    )
                )
        elif raw.startswith("+") and new_path and new_path != "/dev/null":
            added_lines += 1
            findings.extend(_check_added_line(new_path, new_line, raw[1:]))
            new_line += 1
        elif raw.startswith(" "):
            new_line += 1
    return DiffReview(findings=findings, files=len(files), added_lines=added_lines)


def _strip_prefix(path: str) -> str:
    # `--- a/x` / `+++ b/x` (git) may carry a tab and a timestamp (diff -u).
    path = path.split("\t", 1)[0].strip()
    if path.startswith(("a/", "b/")):
        return path[2:]
    return path


def _check_added_line(path: str, line: int, text: str) -> list[Finding]:
    found = []
    if text != text.rstrip(" \t\r"):
        found.append(Finding(path, line, "trailing-whitespace", "trailing whitespace added"))
    if "\t" in text:
        found.append(Finding(path, line, "tab", "tab character added"))
    if len(text) > MAX_LINE_LENGTH:
        found.append(
            Finding(path, line, "long-line", f"line is {len(text)} chars (> {MAX_LINE_LENGTH})")
        )
    if DEBUG_PRINT.search(text):
        found.append(Finding(path, line, "debug-print", "print( call added; debugging leftover?"))
    if marker := TODO_MARKER.search(text):
        found.append(Finding(path, line, "todo", f"{marker.group(1)} added"))
    if AWS_ACCESS_KEY_ID.search(text):
        found.append(Finding(path, line, "secret", "looks like an AWS access key id"))
    if PASSWORD_ASSIGNMENT.search(text):
        found.append(Finding(path, line, "secret", "looks like a hard-coded password"))
    return found
