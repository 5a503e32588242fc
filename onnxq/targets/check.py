"""Everything a conversion for a target checks on its result, in one call: the ops the target cannot run,
the profile's validation step (:mod:`.validate`) and the Q/DQ linter (:mod:`onnxq.lint`).

:func:`check_target` never raises for a failed check: it returns a :class:`TargetReport` whose
``problems()`` list what failed, and the caller decides (``onnxq convert --strict`` turns them into
one :class:`~onnxq.targets.TargetError`). It raises only when a check cannot run at all (the
``.ort`` converter fails, OpenVINO is missing, the runtime refuses the model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ir
from ..lint import RULES, LintReport, lint
from ..plan import AccuracyGuardConfig
from ._profile import TargetProfile
from .support import unsupported_ops
from .validate import Validation, validate

__all__ = ["TargetReport", "check_target"]


@dataclass
class TargetReport:
    """What the target checks found (the ``target`` section of a conversion report).

    ``overrides``: the profile settings the user replaced with values of their own, ``{option: {"user":
    value, "profile": setting}}`` (filled by the conversion, which knows what the user set).
    """

    profile: TargetProfile
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    validation: Validation | None = None
    lint: LintReport | None = None
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One sentence per failed check (empty: everything passed)."""
        out = [f"{self.profile.name} cannot run {op} ({why})" for op, why in self.unsupported.items()]
        if self.validation is not None:
            out += [f"validation on {self.validation.runtime} failed: {f}" for f in self.validation.failures()]
        if self.lint is not None:
            out += [f"lint {f.rule}: {f.message}" for f in self.lint.errors]
        return out

    def to_dict(self) -> dict[str, Any]:
        lint_part = None
        if self.lint is not None:
            lint_part = {"errors": len(self.lint.errors), "warnings": len(self.lint.warnings), "by_rule": self.lint.by_rule(),
                         "findings": [f.as_dict() for f in self.lint.findings], "notes": self.lint.notes}
        return {
            **self.profile.describe(),
            "overrides": self.overrides,
            "passed": not self.problems(),
            "unsupported_ops": self.unsupported,
            "validation": self.validation.as_dict() if self.validation is not None else None,
            "lint": lint_part,
            "notes": self.notes,
        }


def check_target(
    profile: TargetProfile,
    model: ir.Model,
    source: ir.Model,
    samples: Sequence[Mapping[str, np.ndarray]] = (),
    guard: AccuracyGuardConfig | None = None,
    *,
    threads: int = 1,
    power_of_two: bool = False,
) -> TargetReport:
    """Check the converted ``model`` (from the float ``source``) for ``profile``'s target."""
    report = TargetReport(profile, notes=list(profile.notes))
    report.unsupported = unsupported_ops(profile, model)
    if report.unsupported:
        report.notes.append(f"{profile.name} cannot run: {', '.join(report.unsupported)} (validation skipped)")
    else:
        report.validation = validate(profile, model, source, samples, guard, threads=threads)
        report.notes.extend(report.validation.notes)
    rules = [r for r in RULES if r != "unsupported-op"]  # checked above, on the same model
    report.lint = lint(model, profile.name, data=list(samples[:4]) or None, power_of_two=power_of_two, rules=rules)
    return report
