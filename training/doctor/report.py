"""What the doctor found: one `Result` per measured thing, gathered in a `Report`.

A check (say `initial_loss`) gives one or more results (`loss at init`, `predictions at init`),
each with what was measured, what was expected, a verdict and, unless it passed, advice.
"""

import dataclasses
import json
import pathlib
import textwrap

from training import rundir

VERDICTS = ("pass", "warn", "fail")  # in rising order of gravity


def worst(verdicts):
    """The gravest of `verdicts` ("pass" for none)."""
    return max(verdicts, key=VERDICTS.index, default="pass")


@dataclasses.dataclass
class Result:
    check: str
    name: str
    measured: str
    expected: str
    verdict: str
    advice: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclasses.dataclass
class Report:
    results: list = dataclasses.field(default_factory=list)
    # PNG bytes by file name (augmented.png, lr_range.png, activations.png).
    images: dict = dataclasses.field(default_factory=dict)
    # What a check worked out for the others or for the user, e.g. suggested_lr.
    findings: dict = dataclasses.field(default_factory=dict)
    seconds: dict = dataclasses.field(default_factory=dict)

    @property
    def checks(self) -> dict:
        """{check name: its worst verdict}, in the order the checks ran."""
        verdicts = {}
        for result in self.results:
            verdicts[result.check] = worst([verdicts.get(result.check, "pass"), result.verdict])
        return verdicts

    @property
    def verdict(self) -> str:
        return worst(result.verdict for result in self.results)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def result(self, check, name) -> Result:
        """The result called `name` of `check`."""
        for result in self.results:
            if (result.check, result.name) == (check, name):
                return result
        raise KeyError(f"no result {name!r} of check {check!r}")

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "checks": self.checks,
            "results": [dataclasses.asdict(result) for result in self.results],
            "findings": self.findings,
            "images": sorted(self.images),
            "seconds": self.seconds,
        }

    def table(self, advice_width=60) -> str:
        """A plain-text table: check, what, measured, expected, verdict, advice (wrapped)."""
        header = ("check", "what", "measured", "expected", "verdict", "advice")
        rows = [
            (r.check, r.name, r.measured, r.expected, r.verdict.upper(), r.advice or "-")
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
        lines = []
        for row in [header, *rows]:
            advice = textwrap.wrap(row[5], advice_width) or [""]
            cells = "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths))
            lines.append(f"{cells}  {advice[0]}".rstrip())
            indent = " " * (sum(widths) + 2 * len(widths))
            lines.extend(indent + more for more in advice[1:])
        lines.insert(1, "-" * max(len(line) for line in lines))
        return "\n".join(lines)

    def save(self, directory, extra=None) -> pathlib.Path:
        """Write report.json (with `extra` keys) and the images into `directory`, each file
        atomically; returns the directory."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, png in self.images.items():
            rundir.write_bytes_atomic(directory / name, png)
        rundir.write_text_atomic(
            directory / "report.json",
            json.dumps({**self.to_dict(), **(extra or {})}, indent=2) + "\n",
        )
        return directory
