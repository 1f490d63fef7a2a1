"""Benchmark tables, printed as text and, with ``--markdown FILE``, appended to a Markdown file
(``docs/benchmarks.md``) under a header naming the command, commit, date and machine."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fashion_search.settings import REPO_ROOT

Cell = str | float | int


def add_markdown_option(parser: argparse.ArgumentParser) -> None:
    """The ``--markdown FILE`` option every bench script takes."""
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also append the tables to FILE (Markdown)"
    )


def _commit() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT)
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "*.py") else "")


def machine() -> str:
    """CPU model, core count and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (OSError, ValueError):
        memory = ""
    return f"{cpu}, {os.cpu_count()} cores{memory}"


def _format(cell: Cell) -> str:
    return f"{cell:.2f}" if isinstance(cell, float) else str(cell)


@dataclass
class Table:
    """A titled table: a header row and data rows."""

    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)

    def text(self) -> str:
        """Aligned plain text."""
        cells = [self.header, *([_format(c) for c in row] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        return "\n".join([self.title, *lines])

    def markdown(self) -> str:
        """A Markdown table under its title."""
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(_format(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Report:
    """What one bench run found: tables and notes, in order."""

    name: str
    parts: list[Table | str] = field(default_factory=list)

    def add(self, part: Table | str) -> None:
        """Print a table or a note now, and keep it for the Markdown file."""
        print(f"\n{part.text()}" if isinstance(part, Table) else part, flush=True)
        self.parts.append(part)

    def write_markdown(self, path: Path | None) -> None:
        """Append the report to ``path`` (nothing when None)."""
        if path is None:
            return
        command = " ".join(["python -m", self.name, *sys.argv[1:]])
        header = (
            f"\n## {self.name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"`{command}` at commit {_commit()} on {machine()}.\n"
        )
        body = "\n\n".join(p.markdown() if isinstance(p, Table) else p for p in self.parts)
        with path.open("a") as out:
            out.write(f"{header}\n{body}\n")
        print(f"\nappended to {path}")
