"""What the linter reports: one :class:`Finding` per problem (rule, severity, nodes, message, fix) and a
:class:`LintReport` with a versioned JSON form."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Finding", "LintReport", "Severity", "LINT_SCHEMA_VERSION"]

Severity = Literal["error", "warning"]
#: Version of the report's JSON layout.
LINT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """One problem in a Q/DQ graph.

    Attributes:
        rule: the rule's id (``bias-overflow``).
        severity: ``error`` (the target rejects the model or computes wrong values) or ``warning``
            (it runs, slower or less accurately than it could).
        nodes: the node names involved.
        message: what is wrong, with the values found.
        fix: what to do about it.
    """

    rule: str
    severity: Severity
    nodes: tuple[str, ...]
    message: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "nodes": list(self.nodes), "message": self.message, "fix": self.fix}


@dataclass
class LintReport:
    """Every finding of one lint run, and which rules ran."""

    model: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """1 when there are errors, else 0 (``onnxq lint``'s exit code)."""
        return 1 if self.errors else 0

    def by_rule(self) -> dict[str, int]:
        """How many findings each rule made."""
        return dict(Counter(f.rule for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": LINT_SCHEMA_VERSION,
            "model": self.model,
            "target": self.target,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "rules": self.rules,
            "notes": self.notes,
            "findings": [f.as_dict() for f in self.findings],
        }
