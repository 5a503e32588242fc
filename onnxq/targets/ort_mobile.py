"""onnxruntime mobile: the ``.ort`` file from onnxruntime's own converter, and what a reduced build needs.

onnxruntime's mobile packages load the ORT format (a flatbuffer with the graph already optimized)
and can be built with only the kernels a set of models uses. Both come from one tool,
``python -m onnxruntime.tools.convert_onnx_models_to_ort`` (onnxruntime docs, "ORT model format" and
"Create a custom (reduced) build"): it writes ``<name>.ort`` and ``<name>.required_operators.config``,
whose lines are ``domain;opset;Op1,Op2,...`` — the operators to pass to ``build.py
--include_ops_by_config``. The converter runs in a subprocess (it configures logging and reads
``sys.argv``-style options); a failure is one line naming the tool and its last message.

Options used: ``--optimization_style Fixed`` (optimizations baked in, the guidance for the CPU
provider) and ``--target_platform arm`` (phones are ARM: no x86-only NCHWc layouts baked into the
file). The ``.ort`` still loads on this x86 machine, which is how it is checked.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ir
from ._profile import TargetError

__all__ = ["OrtConversion", "convert_to_ort", "parse_required_operators"]

CONVERTER = "onnxruntime.tools.convert_onnx_models_to_ort"
#: Seconds the converter may take (a large model's optimization can be slow).
TIMEOUT_S = 600


@dataclass
class OrtConversion:
    """What the converter wrote: the ``.ort`` bytes and the reduced build's operators."""

    ort: bytes
    config: bytes
    #: ``{domain: {"opset": n, "ops": [...]}}`` parsed from the config
    required_operators: dict[str, dict[str, Any]] = field(default_factory=dict)

    def minimal_build_ops(self) -> list[str]:
        """Every ``domain:op`` a minimal build must include, sorted."""
        return sorted(f"{d or 'ai.onnx'}:{op}" for d, entry in self.required_operators.items() for op in entry["ops"])


def parse_required_operators(text: str) -> dict[str, dict[str, Any]]:
    """Parse a ``required_operators.config`` (``domain;opset;Op1,Op2{"types"...}`` lines, ``#`` comments).

    Type-reduction suffixes (``QuantizeLinear{"outputs": ...}``) are dropped from op names.

    Raises:
        TargetError: a line that is not ``domain;opset;ops``.
    """
    out: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(";", 2)
        if len(parts) != 3 or not parts[1].strip().isdigit():
            raise TargetError(f"required operators config, line {number}: expected 'domain;opset;ops', got '{line[:80]}'")
        domain, opset, ops = parts[0].strip(), int(parts[1]), parts[2]
        names = _op_names(ops)
        entry = out.setdefault(domain, {"opset": opset, "ops": []})
        entry["opset"] = max(entry["opset"], opset)
        entry["ops"] = sorted(set(entry["ops"]) | set(names))
    return out


def _op_names(ops: str) -> list[str]:
    """``'Flatten,QuantizeLinear{"outputs": {"0": ["uint8_t"]}},Transpose'`` → the three op names."""
    names, depth, current = [], 0, ""
    for ch in ops:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        elif depth == 0:
            current += ch
    names.append(current.strip())
    return [n for n in names if n]


def convert_to_ort(model: Any, *, name: str = "model") -> OrtConversion:
    """Run onnxruntime's ``.ort`` converter on ``model`` (a Model, ModelProto, bytes or path).

    Raises:
        TargetError: the converter failed (one line: its last message) or wrote no ``.ort``.
    """
    with tempfile.TemporaryDirectory(prefix="onnxq-ort-") as tmp:
        folder = Path(tmp)
        source = folder / f"{name}.onnx"
        if isinstance(model, (str, Path)):
            source.write_bytes(Path(model).read_bytes())
        else:
            ir.save(model if isinstance(model, ir.Model) else ir.load(model, check=False), source)
        out = folder / "out"
        cmd = [sys.executable, "-m", CONVERTER, str(source), "--output_dir", str(out), "--optimization_style", "Fixed", "--target_platform", "arm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise TargetError(f"ort-mobile: onnxruntime's .ort converter took more than {TIMEOUT_S} s") from e
        ort_file, config = out / f"{name}.ort", out / f"{name}.required_operators.config"
        if proc.returncode != 0 or not ort_file.is_file() or not config.is_file():
            raise TargetError(f"ort-mobile: onnxruntime's .ort converter failed: {_last_message(proc.stdout + proc.stderr)}")
        text = config.read_text(encoding="utf-8")
        return OrtConversion(ort_file.read_bytes(), text.encode("utf-8"), parse_required_operators(text))


def _last_message(output: str) -> str:
    """The converter's most telling line: the last error line, else the last line."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line or "Fail" in line]
    return (errors or lines or ["no output"])[-1][:400]
