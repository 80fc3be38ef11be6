"""The table: each figure beside the limit it was measured against, its target and verdict;
then the commands that produced the figures, and the notes (checks, profiles)."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, MISS, INVALID = "PASS", "MISS", "INVALID"


@dataclass
class Row:
    figure: str  # "1", "3", ...
    name: str
    measured: str
    beside: str = ""  # the limit, measured in the same run
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # PASS, MISS, INVALID (answers were not all successes), or "" (no target)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)  # figure -> commands
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def command(self, figure: str, text: str) -> None:
        seen = self.commands.setdefault(figure, [])
        if text not in seen:
            seen.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        head = ("#", "figure", "measured", "beside (limit, same run)", "ratio", "target", "result")
        cells = [head] + [
            (r.figure, r.name, r.measured, r.beside, r.ratio, r.target, r.verdict) for r in self.rows
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
        line = "-+-".join("-" * w for w in widths)
        out = [" | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)), line]
        previous = None
        for c in cells[1:]:
            if previous is not None and c[0] != previous:
                out.append(line)
            previous = c[0]
            out.append(" | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
        misses = [r for r in self.rows if r.verdict in (MISS, INVALID)]
        out.append("")
        if misses:
            out.append(f"{len(misses)} target(s) MISSED or INVALID:")
            out += [
                f"  MISS  [{r.figure}] {r.name}: {r.ratio or r.measured} (target {r.target})"
                if r.verdict == MISS
                else f"  INVALID  [{r.figure}] {r.name}: {r.measured}"
                for r in misses
            ]
        elif self.rows:
            out.append("every target met")
        if self.commands:
            out += ["", "Commands run:"]
            for figure, commands in self.commands.items():
                out += [f"  [{figure}] {c}" for c in commands]
        if self.notes:
            out += ["", "Notes:"]
            out += [f"  - {n}" for n in self.notes]
        return "\n".join(out)


def pct(value: float, of: float) -> str:
    return f"{100 * value / of:.0f}%" if of else "n/a"


def verdict(ok: bool, valid: bool = True) -> str:
    if not valid:
        return INVALID
    return PASS if ok else MISS
