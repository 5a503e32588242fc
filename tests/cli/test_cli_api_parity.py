"""One way in: every ``onnxq convert`` flag has its API twin and vice versa, with the same default.

The CLI and the Python API both build a :class:`ConversionOptions` and call the same
:func:`onnxq.api.convert`; these tests keep the two faces from drifting apart again.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import click
import numpy as np
import onnx
import pytest

from models import build
from onnxq import ConfigError, ir
from onnxq.api import ConversionOptions, ConversionReport, ConversionResult, convert, quantize_static
from onnxq.api.report import SCHEMA_VERSION
from onnxq.cli.cmd_convert import CLI_ONLY, convert_cmd
from tests.helpers import cosine, invoke, random_feeds, run

#: CLI spellings whose API twin has another name.
RENAMED = {"pass_option": "pass_options"}


def _cli_params() -> dict[str, click.Parameter]:
    return {p.name: p for p in convert_cmd.params if p.name}


def _option_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ConversionOptions)}


def test_every_cli_option_has_an_api_twin_and_back() -> None:
    cli = {RENAMED.get(n, n) for n in _cli_params()}
    api_args = set(inspect.signature(convert).parameters) - {"options", "option_values", "progress", "check"}
    fields = set(_option_fields())
    cli_only = {RENAMED.get(n, n) for n in CLI_ONLY}
    # conversion options: the same set on both sides
    assert cli - cli_only == fields, f"CLI-only flags: {sorted(cli - cli_only - fields)}; API-only options: {sorted(fields - cli)}"
    # the CLI's inputs are convert()'s arguments; its outputs are written with the result's methods
    inputs = cli_only - {"output", "report", "report_html"}
    assert inputs <= api_args, f"CLI inputs without an API argument: {sorted(inputs - api_args)}"
    assert callable(ConversionResult.save) and callable(ConversionReport.to_dict) and callable(ConversionResult.write_html)


def test_cli_defaults_are_the_api_defaults() -> None:
    params = _cli_params()
    defaults = ConversionOptions()
    for name in _option_fields():
        param = params["pass_option" if name == "pass_options" else name]
        cli_default = None if "UNSET" in repr(param.default) else param.default  # click 8.3 marks "no default"
        if name == "pass_options":
            assert cli_default in (None, ()) and defaults.pass_options == {}
            continue
        if isinstance(cli_default, str) and isinstance(getattr(defaults, name), int) and not isinstance(getattr(defaults, name), bool):
            cli_default = int(cli_default)
        if param.multiple:
            cli_default = tuple(cli_default or ())
        if isinstance(param, click.Option) and param.is_flag and cli_default is None and not param.secondary_opts:
            cli_default = False  # a plain flag's "unset" is False; an --x/--no-x pair may default to None (auto)
        assert cli_default == getattr(defaults, name), f"--{name}: CLI default {cli_default!r} != API default {getattr(defaults, name)!r}"


def test_api_int16_activations_raise_the_opset_like_the_cli(tmp_path: Path) -> None:
    src = build("cnn")
    data = [random_feeds(src, seed=i, dims={"N": 1}) for i in range(4)]
    api = quantize_static(src, data, activation_dtype="int16", tune=False)
    assert api.model.opset >= 21
    dq = [n for n in api.model.graph.nodes if n.op == "DequantizeLinear"]
    assert any(np.asarray(ir.constant_array(n.inputs[2])).dtype == np.int16 for n in dq)
    path = tmp_path / "cnn.onnx"
    path.write_bytes(src.SerializeToString())
    out = str(tmp_path / "cli.onnx")
    code, _, err = invoke("convert", str(path), "-o", out, "--data", "synthetic:4", "--dim", "N=1", "--activation-type", "int16", "--no-tune")
    assert code == 0, err
    assert onnx.load(str(tmp_path / "cli.onnx")).opset_import[0].version == api.model.opset
    feeds = random_feeds(src, seed=9, dims={"N": 1})
    assert cosine(run(src, feeds)[0], run(api.model, feeds)[0]) > 0.999  # 16-bit activations: near float


def test_report_is_typed_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "cnn.onnx"
    path.write_bytes(build("cnn").SerializeToString())
    report = tmp_path / "report.json"
    code, _, err = invoke("convert", str(path), "-o", str(tmp_path / "q.onnx"), "--data", "synthetic:4", "--dim", "N=1", "--no-tune", "--report", str(report))
    assert code == 0, err
    data = json.loads(report.read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == SCHEMA_VERSION
    assert data["options"] == ConversionOptions(tune=False).as_dict()
    again = ConversionReport.from_dict(data)
    assert again.to_dict() == data  # the JSON form round-trips
    with pytest.raises(ConfigError, match="not an onnxq conversion report"):
        ConversionReport.from_dict({"float_nodes": []})
    with pytest.raises(ConfigError, match="malformed"):
        ConversionReport.from_dict({"schema_version": 1, "model": "m", "mode": "static", "float_nodes": [{"op": "Conv"}]})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mode": "dynamic", "format": "qoperator"}, "--format does not apply to --mode dynamic"),
        ({"mode": "fp16", "weight_bits": 8}, "--weight-bits does not apply to --mode fp16"),
        ({"mode": "weight-only", "tune": False}, "--tune does not apply"),
        ({"min_agreement": 2.0}, "min_agreement must be in"),
        ({"method": "minmax", "percentile": 99.9}, "--percentile applies to --method percentile"),
        ({"recipe": "r.toml", "method": "minmax"}, "would be ignored with --recipe"),
        ({"mode": "int3"}, "unknown mode 'int3'"),
        ({"activation_type": "int8"}, "unknown conversion option"),
    ],
)
def test_options_that_do_not_apply_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConversionOptions.from_values(values)


def test_ranges_refused_outside_static_mode() -> None:
    with pytest.raises(ConfigError, match="--ranges applies to --mode static"):
        convert(build("mlp"), mode="dynamic", ranges="ranges.json")


def test_pass_options_reach_the_pass_and_unknown_passes_are_refused() -> None:
    src = build("mlp")
    plain = convert(src, mode="dynamic")
    forced = convert(src, mode="dynamic", pass_options={"quantize-dynamic": {"min_weight_elements": 0, "guard_latency": False}})
    count = lambda m: sum(n.op == "DynamicQuantizeMatMul" for n in m.graph.nodes)  # noqa: E731
    assert count(forced.model) > count(plain.model)
    with pytest.raises(ConfigError, match="which this pipeline does not run"):
        convert(src, mode="dynamic", pass_options={"calibrate": {"samples": 2}})
