"""Which ops of a model a target cannot run at all, each with why: one checker per ``TargetRules.support`` kind.

- ``onnx``: ops of the standard domains (ai.onnx, ai.onnx.ml) the ONNX schema registry knows; any
  custom domain is unknown to a generic runtime.
- ``onnxruntime``: as ``onnx``, plus onnxruntime's contrib domains (com.microsoft, ...).
- ``openvino``: asked of OpenVINO itself (its ONNX frontend's conversion rules, then its CPU
  plugin's ``query_model``); needs the openvino extra.
- ``denylist`` / ``allowlist``: the target's documented lists (:mod:`onnxq.targets._ops`).

Control flow: QNN's documentation excludes Loop and If; its allowlist does not list them.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from .. import ir
from ._profile import TargetProfile, TargetRules

__all__ = ["unsupported_ops", "SUPPORT_CHECKERS"]

_STANDARD = ("", "ai.onnx", "ai.onnx.ml")
_ORT_DOMAINS = _STANDARD + ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc", "ai.onnx.preview.training")

Checker = Callable[[ir.Model, TargetRules], dict[str, str]]


def _label(node: ir.Node) -> str:
    domain = node.domain or ""
    return node.op if domain in ("", "ai.onnx") else f"{domain}.{node.op}"


def _schema_known(node: ir.Node, model: ir.Model) -> bool:
    domain = node.domain or ""
    version = model.opsets.get(domain, model.opsets.get("ai.onnx" if domain == "" else domain, 1))
    try:
        onnx.defs.get_schema(node.op, max_inclusive_version=int(version), domain=domain)
    except onnx.defs.SchemaError:
        return False
    return True


def _by_domains(domains: tuple[str, ...], who: str) -> Checker:
    def check(model: ir.Model, rules: TargetRules) -> dict[str, str]:
        found: dict[str, str] = {}
        for node in ir.iter_nodes(model.graph):
            domain = node.domain or ""
            if domain not in domains:
                found[_label(node)] = f"custom domain '{domain}': {who} has no kernel for it"
            elif domain in _STANDARD and not _schema_known(node, model):
                found[_label(node)] = f"not an operator of {domain or 'ai.onnx'} at opset {model.opset}"
        return found

    return check


def _openvino(model: ir.Model, rules: TargetRules) -> dict[str, str]:
    from ..runtime.openvino import openvino_unsupported_ops

    return openvino_unsupported_ops(model)


def _denylist(model: ir.Model, rules: TargetRules) -> dict[str, str]:
    found = _by_domains(_STANDARD, "the target")(model, rules)
    for node in ir.iter_nodes(model.graph):
        if node.op in rules.unsupported_ops and (node.domain or "") in ("", "ai.onnx"):
            found[node.op] = "listed as unsupported in the target's operator table"
    return found


def _allowlist(model: ir.Model, rules: TargetRules) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in ir.iter_nodes(model.graph):
        if (node.domain or "") not in ("", "ai.onnx") or node.op not in rules.supported_ops:
            found[_label(node)] = "not in the target's supported-operator table"
    return found


#: ``TargetRules.support`` → checker.
SUPPORT_CHECKERS: dict[str, Checker] = {
    "onnx": _by_domains(_STANDARD, "a generic runtime"),
    "onnxruntime": _by_domains(_ORT_DOMAINS, "onnxruntime"),
    "openvino": _openvino,
    "denylist": _denylist,
    "allowlist": _allowlist,
}


def unsupported_ops(profile: TargetProfile, model: ir.Model) -> dict[str, str]:
    """``{op: why}`` for every op type of ``model`` that ``profile``'s target cannot run (empty: none).

    Raises:
        ConfigError: the check needs OpenVINO and it is not installed.
    """
    return dict(sorted(SUPPORT_CHECKERS[profile.rules.support](model, profile.rules).items()))
