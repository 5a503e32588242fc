"""Helpers shared by CLI commands: loading models, staging outputs, JSON reports, data options."""

from __future__ import annotations

from typing import Any

from .. import ir
from ..api._loading import load_model as _load
from ..api._loading import raise_ir_floor
from ..errors import ConfigError
from ._output import write_json
from ._paths import Input, Output, RunOutputs

__all__ = ["load_model", "load_for_rewrite", "maybe_write_report", "parse_shapes", "data_options", "open_data", "Input", "Output", "RunOutputs"]


def load_model(path: str) -> ir.Model:
    """Load and validate a model given on the command line (sparse initializers densified)."""
    return _load(path)


def load_for_rewrite(path: str) -> ir.Model:
    """:func:`load_model` for commands that write a new model (IR version raised to one onnxq writes)."""
    return raise_ir_floor(_load(path))


def maybe_write_report(outs: RunOutputs, role: str, path: str | None, data: Any) -> None:
    """Stage the JSON report of ``role`` (``--report``) when it was given."""
    if path:
        outs.write(role, lambda staged: write_json(staged, data))


def parse_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    """``("x=1,3,48,320",)`` → ``{"x": [1, 3, 48, 320]}``."""
    shapes: dict[str, list[int]] = {}
    for item in values:
        name, sep, dims = item.partition("=")
        try:
            parsed = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            parsed = []
        if not sep or not name.strip() or not parsed:
            raise ConfigError(f"--shape expects INPUT=D0,D1,..., got '{item}'")
        shapes[name.strip()] = parsed
    return shapes


def data_options(fn: Any) -> Any:
    """Options every data-consuming command shares (--data, --samples, --dim, --image-preprocess)."""
    import click

    fn = click.option("--image-preprocess", metavar="SPEC", help="Image pipeline, e.g. 'size=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225'.")(fn)
    fn = click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Size of a symbolic input dim (repeatable), e.g. --dim batch=1.")(fn)
    fn = click.option("--samples", type=click.IntRange(min=1), help="Use at most N samples.")(fn)
    return fn


def open_data(
    spec: str, model: ir.Model, *, samples: int | None, dims: tuple[str, ...], image_preprocess: str | None, labels: str | None = None, seed: int = 0
) -> Any:
    """Open a data source for ``model`` from CLI options."""
    from ..data import open_source
    from ..data import parse_dims as parse_data_dims

    return open_source(
        spec,
        ir.to_proto(model, weights=False),  # input specs only: no copy of the weights
        dims=parse_data_dims(dims),
        samples=samples,
        seed=seed,
        image_preprocess=image_preprocess,
        labels_file=labels,
    )
