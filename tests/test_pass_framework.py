"""The pass contract, registry, pass manager and TOML pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from onnxq import ConfigError, PassError, PassManager, PreconditionError, ir, make_pass, registered_passes
from onnxq.pass_base import Pass, PassConfig, PassContext, PassResult, register_pass
from onnxq.pipeline import load_pipeline, pipeline_from_data
from tests.helpers import parse

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) {
    a = Identity(x)
    dead = Neg(a)
    y = Relu(a)
}
"""


def test_registry_lists_cleanup_passes() -> None:
    names = set(registered_passes())
    assert {"cleanup", "fold-batchnorm", "fold-constants", "remove-noops", "constants-to-initializers", "upgrade-opset"} <= names


def test_duplicate_registration_refused() -> None:
    with pytest.raises(ConfigError, match="already registered"):

        @register_pass("fold-batchnorm")
        class Other(Pass):
            def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
                return PassResult(model, False)


def test_unknown_pass_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown pass 'nope'.*fold-batchnorm"):
        make_pass("nope")


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown option.*bogus.*valid options: max_growth_mb, fold_shapes"):
        make_pass("fold-constants", {"bogus": 1})


def test_option_type_is_checked() -> None:
    with pytest.raises(ConfigError, match="max_growth_mb.*number"):
        make_pass("fold-constants", {"max_growth_mb": "big"})
    with pytest.raises(ConfigError, match="target must be"):
        make_pass("upgrade-opset", {"target": 2})


@dataclass(frozen=True)
class _BreakConfig(PassConfig):
    mode: str = "raise"


@register_pass("test-break-model")
class _Break(Pass):
    """Test pass: raises, or produces an invalid model."""

    Config = _BreakConfig

    def requires(self, model: ir.Model) -> None:
        if self.config.mode == "precondition":
            raise PreconditionError("needs something")

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        if self.config.mode == "raise":
            raise ValueError("kaput")
        model.graph.nodes[-1].op = "NotAnOp"
        return PassResult(model, True)


def test_pass_error_names_pass_and_history() -> None:
    pm = PassManager([make_pass("remove-noops"), _Break(mode="raise")])
    with pytest.raises(PassError, match=r"pass 'test-break-model' failed \(after: remove-noops\).*kaput"):
        pm.run(ir.load(parse(TEXT)))


def test_precondition_error_keeps_its_type() -> None:
    pm = PassManager([_Break(mode="precondition")])
    with pytest.raises(PreconditionError, match="needs something") as info:
        pm.run(ir.load(parse(TEXT)))
    assert isinstance(info.value, PassError)


def test_check_after_each_pass_catches_invalid_model() -> None:
    pm = PassManager([_Break(mode="corrupt")], check=True)
    with pytest.raises(PassError, match="produced an invalid model"):
        pm.run(ir.load(parse(TEXT)))


def test_manager_normalizes_after_modifying_pass() -> None:
    model = ir.load(parse(TEXT))
    res = PassManager([make_pass("remove-noops")]).run(model)
    assert res.modified
    assert [n.op for n in res.model.graph.nodes] == ["Relu"]  # dead Neg removed by normalization
    assert [r.name for r in res.records] == ["remove-noops"]


def test_manager_steps_stop_when_nothing_changes() -> None:
    model = ir.load(parse(TEXT))
    res = PassManager([make_pass("remove-noops")], steps=5).run(model)
    assert len(res.records) == 2  # one modifying round, one confirming round


def test_toml_pipeline(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[[passes]]\npass = "remove-noops"\n\n[[passes]]\npass = "fold-constants"\nmax_growth_mb = 2\n')
    pm = load_pipeline(f)
    assert [p.name for p in pm.passes] == ["remove-noops", "fold-constants"]
    assert pm.passes[1].config.max_growth_mb == 2.0


def test_toml_pipeline_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[[passes]]\npass = "remove-noops"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="entry 1.*unknown option.*colour"):
        load_pipeline(f)
    f.write_text("passes = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_pipeline(f)
    f.write_text('[[steps]]\npass = "x"\n')
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_pipeline(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(tmp_path / "missing.toml")


def test_pipeline_from_data_requires_pass_key() -> None:
    with pytest.raises(ConfigError, match="'pass' key"):
        pipeline_from_data([{"name": "cleanup"}])


def test_cleanup_is_idempotent() -> None:
    model = ir.load(parse(TEXT))
    first = PassManager([make_pass("cleanup")]).run(model)
    assert first.modified
    second = PassManager([make_pass("cleanup")]).run(first.model)
    assert not second.modified
    assert isinstance(ir.to_proto(second.model), onnx.ModelProto)
