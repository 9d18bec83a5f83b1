"""The numbers each scenario records: load, injection, loss, recovery time.

Printed (run pytest with ``-s`` to see them) and, when ``USAGELOG_FAULTS_REPORT`` names a file
(default: unset, nothing written), appended to it as one JSON object per line: the source of the
numbers in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.faults.load import Load
from tests.faults.stack import Verdict

ENV_REPORT = "USAGELOG_FAULTS_REPORT"


@dataclass
class Report:
    scenario: str
    apis: int
    workers: int
    target_rate: float  # requests per second, all API processes together
    achieved_rate: float
    load_seconds: float
    injected: str
    answered: int
    stored: int
    lost: int
    duplicates: int
    gaps: int
    archived: int
    archive_rows: int
    recovery_seconds: float  # as ``recovery_from`` says
    recovery_from: str = "the fault cleared to stored == answered"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        scenario: str,
        load: Load,
        verdict: Verdict,
        *,
        apis: int,
        workers: int,
        injected: str,
        recovery_seconds: float,
        recovery_from: str = "the fault cleared to stored == answered",
        **extra: Any,
    ) -> Report:
        return cls(
            scenario=scenario,
            apis=apis,
            workers=workers,
            target_rate=load.rate,
            achieved_rate=round(load.achieved_rate, 1),
            load_seconds=round(load.seconds, 1),
            injected=injected,
            answered=verdict.answered,
            stored=verdict.stored,
            lost=verdict.lost,
            duplicates=verdict.stored - verdict.distinct + verdict.duplicates,
            gaps=verdict.gaps,
            archived=verdict.archived,
            archive_rows=verdict.archive_rows,
            recovery_seconds=round(recovery_seconds, 1),
            recovery_from=recovery_from,
            extra=extra,
        )

    def publish(self) -> None:
        lines = [
            f"== fault scenario: {self.scenario}",
            f"   load      {self.apis} API processes, {self.workers} workers, {self.target_rate:.0f} req/s "
            f"target, {self.achieved_rate:.1f} req/s achieved for {self.load_seconds:.0f}s",
            f"   injected  {self.injected}",
            f"   result    {self.answered} answered, {self.stored} stored, {self.lost} lost, "
            f"{self.duplicates} duplicates, {self.gaps} gaps, {self.archived} archived "
            f"({self.archive_rows} archive rows)",
            f"   recovery  {self.recovery_seconds:.1f}s from {self.recovery_from}",
        ]
        lines += [f"   {key:<9} {value}" for key, value in self.extra.items()]
        print("\n" + "\n".join(lines), flush=True)
        target = os.environ.get(ENV_REPORT, "").strip()
        if target:
            with open(target, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")
