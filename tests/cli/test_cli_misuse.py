"""CLI misuse: outputs that would overwrite inputs, unusable output folders, malformed and conflicting flags.

Every row is refused before anything is written (one line, exit code 2, every file unchanged, no
file added); the disk-full and unwritable-folder cases, which need a real process or a patched OS
call, follow the table.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import pytest

from tests.cli._corpus import (
    Case,
    assert_refused,
    deep_json,
    ids,
    mlp,
    npy,
    npy_folder,
    ranges_file,
    recipe,
    samples,
    saved_with_external_data,
    snapshot,
    write,
)
from tests.helpers import invoke


def out(d: Path, name: str = "out.onnx") -> str:
    return str(d / name)


def dyn(d: Path, *extra: str, to: str | None = None) -> list[str]:
    """``convert --mode dynamic`` of the mlp (fast), writing ``to`` (default ``out.onnx``)."""
    return ["convert", mlp(d), "-o", to or out(d), "--mode", "dynamic", *extra]


def static(d: Path, *extra: str, dim: str = "N=1", data: str = "synthetic:2", to: str | None = None) -> list[str]:
    """``convert`` (static, untuned) of the mlp on ``data``, writing ``to`` (default ``out.onnx``)."""
    return ["convert", mlp(d), "-o", to or out(d), "--data", data, "--dim", dim, "--no-tune", *extra]


def cal(d: Path, *extra: str, data: str = "synthetic:1") -> list[str]:
    """``calibrate`` of the mlp writing ``r.json``."""
    return ["calibrate", mlp(d), "--data", data, "-o", str(d / "r.json"), *extra]


def with_recipe(d: Path, text: str) -> list[str]:
    return ["convert", mlp(d), "--mode", "dynamic", "--recipe", write(d, "r.toml", text), "-o", out(d)]


def report_json(d: Path, name: str = "report.json", **fields: object) -> str:
    """A conversion report (hand-made: only what ``--replay`` reads)."""
    data = {"schema_version": 1, "model": "other.onnx", "mode": "static", "model_digest": "0" * 64, "float_nodes": []}
    return write(d, name, json.dumps({**data, **fields}))


def _images_cmd(d: Path, preprocess: str) -> list[str]:
    """calibrate the cnn on one real PNG with ``--image-preprocess preprocess``."""
    from PIL import Image

    from models import build

    (d / "images").mkdir()
    Image.new("RGB", (40, 40), (200, 30, 90)).save(d / "images" / "0.png")
    src = write(d, "cnn.onnx", build("cnn"))
    return ["calibrate", src, "--data", str(d / "images"), "--image-preprocess", preprocess, "-o", str(d / "r.json")]


def _labels(d: Path) -> str:
    return write(d, "labels.txt", "1\n")


def _linked(d: Path, how: str) -> list[str]:
    src = mlp(d)
    link = d / "link.onnx"
    os.link(src, link) if how == "hard" else link.symlink_to(src)
    return dyn(d, to=str(link))


def _old_output_shares_input_data(d: Path) -> list[str]:
    """out.onnx, an earlier copy of the input, references the input's data file ``out.onnx.data``:
    saving over out.onnx would remove that file as the old output's."""
    model, _ = saved_with_external_data(d, "in.onnx", "out.onnx.data")
    shutil.copy(model, out(d))
    return ["optimize", model, "-o", out(d), "--external-data"]


def _ext(d: Path, flag: str) -> list[str]:
    model, data = saved_with_external_data(d)
    return ["convert", model, "--mode", "dynamic", "-o", out(d), flag, data] if flag != "-o" else ["convert", model, "--mode", "dynamic", "-o", data]


OUTPUT_CASES = [
    Case("out-missing-folder", lambda d: dyn(d, to=str(d / "nowhere" / "out.onnx")), r"nowhere.*does not exist"),
    Case("out-parent-is-a-file", lambda d: dyn(d, to=str(d / "mlp.onnx" / "out.onnx")), r"mlp\.onnx.*not a folder"),
    Case("out-is-a-folder", lambda d: dyn(d, to=str(d)), r"(folder|directory)"),
    Case("out-trailing-slash", lambda d: dyn(d, to=str(d / "newdir") + "/"), r"newdir/' names a folder"),
    Case("out-is-a-device", lambda d: dyn(d, to=os.devnull), r"/dev/null.*not a regular file"),
    Case("out-name-too-long", lambda d: dyn(d, to=str(d / ("x" * 300 + ".onnx"))), r"-o '.*xxxx.*too long"),
    Case("report-missing-folder", lambda d: dyn(d, "--report", str(d / "nowhere" / "r.json")), r"--report.*nowhere.*does not exist"),
    Case("report-parent-is-a-file", lambda d: static(d, "--report", str(d / "mlp.onnx" / "r.json")), r"--report.*not a folder"),
    Case("convert-out-is-input", lambda d: ["convert", mlp(d), "-o", str(d / "mlp.onnx"), "--mode", "dynamic"], r"-o .*mlp\.onnx.* is input model"),
    Case("convert-report-is-input", lambda d: dyn(d, "--report", str(d / "mlp.onnx")), r"--report .*mlp\.onnx.* is input model"),
    Case("optimize-out-is-input", lambda d: ["optimize", mlp(d), "-o", str(d / "mlp.onnx")], r"is input model"),
    Case("optimize-report-is-input", lambda d: ["optimize", mlp(d), "-o", out(d), "--report", str(d / "mlp.onnx")], r"--report.*is input model"),
    Case("prune-out-is-input", lambda d: ["prune", mlp(d), "-o", str(d / "mlp.onnx"), "--method", "nm"], r"is input model"),
    Case("prune-report-is-input", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "nm", "--report", str(d / "mlp.onnx")], r"--report.*is input model"),
    Case("calibrate-out-is-input", lambda d: ["calibrate", mlp(d), "--data", "synthetic:1", "-o", str(d / "mlp.onnx")], r"-o .*is input model"),
    Case("calibrate-report-is-input", lambda d: cal(d, "--report", str(d / "mlp.onnx")), r"--report.*is input model"),
    Case("eval-report-is-candidate", lambda d: ["eval", mlp(d), mlp(d, "b.onnx"), "--data", "synthetic:1", "--report", str(d / "b.onnx")], r"is candidate"),
    Case("bench-report-is-model", lambda d: ["bench", mlp(d), mlp(d, "b.onnx"), "--runs", "1", "--report", str(d / "b.onnx")], r"--report.*is model #2"),
    Case("out-hard-link-to-input", lambda d: _linked(d, "hard"), r"link\.onnx.*is input model"),
    Case("out-symlink-to-input", lambda d: _linked(d, "sym"), r"link\.onnx.*is input model"),
    Case("out-is-external-data", lambda d: _ext(d, "-o"), r"-o .*big\.data.* is the external-data file .*big\.data.* of input model"),
    Case("report-is-external-data", lambda d: _ext(d, "--report"), r"--report .*big\.data.* is the external-data file"),
    Case("old-output-shares-input-data", _old_output_shares_input_data, r"-o '.*' exists and its external-data file .*out\.onnx\.data.* of input model"),
    Case("out-is-data-file", lambda d: static(d, data=npy(d, "x.npy", samples(2)), to=str(d / "x.npy")), r"-o .*x\.npy.* is --data"),
    Case("calibrate-out-is-data", lambda d: ["calibrate", mlp(d), "--data", npy(d, "x.npy", samples(2)), "-o", str(d / "x.npy")], r"is --data"),
    Case("out-inside-data-folder", lambda d: ["calibrate", mlp(d), "--data", npy_folder(d), "-o", str(d / "calib" / "r.json")], r"is inside --data"),
    Case("out-is-ranges", lambda d: ["convert", mlp(d), "--ranges", ranges_file(d), "-o", str(d / "ranges.json")], r"is --ranges"),
    Case("report-is-ranges", lambda d: ["convert", mlp(d), "--ranges", ranges_file(d), "-o", out(d), "--report", ranges_file(d)], r"report.*is --ranges"),
    Case("out-is-recipe", lambda d: ["convert", mlp(d), "--recipe", recipe(d), "-o", str(d / "recipe.toml")], r"is --recipe"),
    Case("report-is-recipe", lambda d: ["convert", mlp(d), "--recipe", recipe(d), "-o", out(d), "--report", str(d / "recipe.toml")], r"--report.*is --recipe"),
    Case("report-is-replay", lambda d: static(d, "--tune", "--replay", report_json(d), "--report", str(d / "report.json")), r"--report.*is --replay"),
    Case("optimize-out-is-pipeline", lambda d: ["optimize", mlp(d), "--pipeline", recipe(d), "-o", str(d / "recipe.toml")], r"is --pipeline"),
    Case("eval-report-is-labels", lambda d: ["eval", mlp(d), mlp(d), "--data", "synthetic:1", "--labels", _labels(d), "--report", _labels(d)], r"is --labels"),
    Case("out-is-report", lambda d: dyn(d, "--report", out(d)), r"--report '.*out\.onnx' and -o '.*out\.onnx' are the same file"),
    Case("calibrate-out-is-report", lambda d: cal(d, "--report", str(d / "r.json")), r"same file"),
]  # fmt: skip

FLAG_CASES = [
    Case("dim-without-size", lambda d: static(d, dim="N"), r"--dim 'N'"),
    Case("dim-zero", lambda d: static(d, dim="N=0"), r"--dim 'N=0'"),
    Case("dim-negative", lambda d: static(d, dim="N=-1"), r"--dim 'N=-1'"),
    Case("dim-no-name", lambda d: static(d, dim="=3"), r"--dim '=3'"),
    Case("dim-word", lambda d: static(d, dim="N=many"), r"--dim 'N=many'"),
    Case("shape-malformed", lambda d: ["inspect", mlp(d), "--shape", "input=a,b"], r"--shape.*input=a,b"),
    Case("shape-unknown-input", lambda d: ["inspect", mlp(d), "--shape", "nope=1,32"], r"no input 'nope'"),
    Case("shape-wrong-rank", lambda d: ["inspect", mlp(d), "--shape", "input=1,32,5"], r"rank 3.*'input' has rank 2"),
    Case("shape-wrong-static-dim", lambda d: ["inspect", mlp(d), "--shape", "input=1,16"], r"axis 1 is 16.*declares 32"),
    Case("shape-zero", lambda d: ["inspect", mlp(d), "--shape", "input=0,32"], r"axis 0 is 0"),
    Case("image-preprocess-for-npy", lambda d: cal(d, "--image-preprocess", "size=8x8", data=npy(d, "x.npy", samples(2))), r"--image-preprocess applies to"),
    Case("image-preprocess-for-synthetic", lambda d: cal(d, "--image-preprocess", "size=8x8"), r"--image-preprocess applies to image data"),
    Case("image-preprocess-malformed", lambda d: _images_cmd(d, "size=abc"), r"image preprocessing 'size=abc'"),
    Case("image-preprocess-unknown-key", lambda d: _images_cmd(d, "bogus=1"), r"image preprocessing 'bogus=1'.*valid"),
    Case("ranges-is-a-model", lambda d: ["convert", mlp(d), "--ranges", mlp(d, "other.onnx"), "-o", out(d)], r"other\.onnx.*not UTF-8"),
    Case("ranges-empty-object", lambda d: ["convert", mlp(d), "--ranges", write(d, "r.json", "{}"), "-o", out(d)], r"r\.json.*format"),
    Case("ranges-not-json", lambda d: ["convert", mlp(d), "--ranges", write(d, "r.json", "min=1"), "-o", out(d)], r"r\.json.*not valid JSON"),
    Case("ranges-deep-json", lambda d: ["convert", mlp(d), "--ranges", write(d, "r.json", deep_json()), "-o", out(d)], r"r\.json.*not valid JSON"),
    Case("ranges-nan", lambda d: ["convert", mlp(d), "--ranges", write(d, "r.json", '{"format": NaN}'), "-o", out(d)], r"r\.json.*NaN"),
    Case("ranges-other-model", lambda d: ["convert", mlp(d), "--ranges", ranges_file(d), "-o", out(d)], r"none of this model's tensors"),
    Case("ranges-missing", lambda d: ["convert", mlp(d), "--ranges", str(d / "nope.json"), "-o", out(d)], r"nope\.json"),
    Case("recipe-is-a-model", lambda d: ["convert", mlp(d), "--mode", "dynamic", "--recipe", mlp(d, "r.onnx"), "-o", out(d)], r"r\.onnx.*TOML"),
    Case("recipe-bad-toml", lambda d: with_recipe(d, "[[passes]\npass="), r"r\.toml.*TOML"),
    Case("recipe-unknown-pass", lambda d: with_recipe(d, '[[passes]]\npass = "nope"\n'), r"unknown pass 'nope'"),
    Case("recipe-unknown-option", lambda d: with_recipe(d, '[[passes]]\npass = "cleanup"\nbogus = 1\n'), r"bogus"),
    Case("recipe-with-method", lambda d: ["convert", mlp(d), "--recipe", recipe(d), "--method", "minmax", "-o", out(d)], r"--method would be ign"),
    Case("replay-empty-object", lambda d: static(d, "--tune", "--replay", write(d, "r.json", "{}")), r"r\.json.*not an onnxq conversion report"),
    Case("replay-list", lambda d: static(d, "--tune", "--replay", write(d, "r.json", "[1, 2]")), r"r\.json.*not an onnxq conversion report"),
    Case("replay-malformed-nodes", lambda d: static(d, "--tune", "--replay", report_json(d, float_nodes=[1])), r"report\.json.*malformed"),
    Case("replay-other-model", lambda d: static(d, "--tune", "--replay", report_json(d)), r"report\.json.*another model.*other\.onnx"),
    Case("replay-without-digest", lambda d: static(d, "--tune", "--replay", report_json(d, model_digest="")), r"report\.json.*which model"),
    Case("replay-of-dynamic-run", lambda d: static(d, "--tune", "--replay", report_json(d, mode="dynamic")), r"report\.json.*dynamic conversion"),
    Case("replay-is-a-model", lambda d: static(d, "--tune", "--replay", mlp(d, "r.onnx")), r"r\.onnx.*cannot read the report"),
    Case("replay-deep-json", lambda d: static(d, "--tune", "--replay", write(d, "r.json", deep_json())), r"r\.json.*cannot read the report"),
    Case("replay-missing", lambda d: static(d, "--tune", "--replay", str(d / "nope.json")), r"nope\.json.*does not exist"),
    Case("replay-without-tuning", lambda d: static(d, "--replay", report_json(d)), r"--replay.*--no-tune"),
    Case("dynamic-with-qoperator", lambda d: dyn(d, "--format", "qoperator"), r"--format does not apply to --mode dynamic"),
    Case("fp16-with-ranges", lambda d: ["convert", mlp(d), "--mode", "fp16", "--ranges", ranges_file(d), "-o", out(d)], r"--ranges applies to --mode static"),
    Case("fp16-with-data", lambda d: ["convert", mlp(d), "--mode", "fp16", "--data", "synthetic:2", "-o", out(d)], r"--data does not apply to --mode fp16"),
    Case("weight-only-with-per-tensor", lambda d: ["convert", mlp(d), "--mode", "weight-only", "--per-tensor", "-o", out(d)], r"--per-channel does not apply"),
    Case("static-with-weight-bits", lambda d: static(d, "--weight-bits", "8"), r"--weight-bits does not apply to --mode static"),
    Case("uint16-qoperator", lambda d: static(d, "--activation-type", "uint16", "--format", "qoperator"), r"qoperator.*uint16.*16-bit QLinear"),
    Case("int16-qoperator", lambda d: static(d, "--activation-type", "int16", "--format", "qoperator"), r"qoperator.*int16"),
    Case("min-agreement-2", lambda d: static(d, "--min-agreement", "2"), r"min_agreement must be in \[0, 1\]"),
    Case("min-cosine-nan", lambda d: static(d, "--min-cosine", "nan"), r"min_cosine"),
    Case("percentile-with-minmax", lambda d: static(d, "--method", "minmax", "--percentile", "99"), r"--percentile applies to --method percentile"),
    Case("percentile-out-of-range", lambda d: static(d, "--percentile", "200"), r"percentile must be in"),
    Case("smooth-out-of-range", lambda d: static(d, "--smooth", "2"), r"smooth"),
    Case("max-memory-zero", lambda d: static(d, "--max-memory", "0"), r"max_memory_mb"),
    Case("max-memory-nan", lambda d: static(d, "--max-memory", "nan"), r"max_memory_mb"),
    Case("concat-range-ratio-nan", lambda d: static(d, "--concat-range-ratio", "nan"), r"concat_range_ratio"),
    Case("exclude-nodes-bad-regex", lambda d: static(d, "--exclude-nodes", "("), r"invalid node-name regex"),
    Case("threads-negative", lambda d: static(d, "--threads", "-1"), r"--threads"),
    Case("pass-option-unknown-pass", lambda d: static(d, "--pass-option", "nope.x=1"), r"nope.*does not run"),
    Case("pass-option-malformed", lambda d: static(d, "--pass-option", "garbage"), r"--pass-option.*garbage"),
    Case("pass-option-bad-value", lambda d: static(d, "--pass-option", "calibrate.samples=-5"), r"calibrate: samples"),
    Case("calibrate-percentile-with-minmax", lambda d: cal(d, "--method", "minmax", "--percentile", "99"), r"--percentile"),
    Case("calibrate-percentile-out-of-range", lambda d: cal(d, "--percentile", "20"), r"percentile"),
    Case("calibrate-max-memory-negative", lambda d: cal(d, "--max-memory", "-1"), r"max_memory"),
    Case("calibrate-threads-negative", lambda d: cal(d, "--threads", "-1"), r"--threads"),
    Case("prune-sparsity-too-big", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "magnitude", "--sparsity", "1.5"], r"sparsity"),
    Case("prune-sparsity-nan", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "magnitude", "--sparsity", "nan"], r"sparsity"),
    Case("prune-flag-of-other-method", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "nm", "--rank", "3"], r"--rank does not apply to --method nm"),
    Case("prune-nm-invalid", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "nm", "--nm", "5:4"], r"n must be in"),
    Case("prune-unknown-layer", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "magnitude", "--sparsity", "0.5", "--layer", "nope"], r"layer 'nope'"),
    Case("prune-steps-not-numbers", lambda d: ["prune", mlp(d), "-o", out(d), "--method", "magnitude", "--max-drop", "0.1", "--steps", "a,b"], r"--steps"),
    Case("eval-threads-negative", lambda d: ["eval", mlp(d), mlp(d), "--data", "synthetic:1", "--threads", "-1"], r"--threads"),
    Case("bench-no-runs", lambda d: ["bench", mlp(d), "--runs", "0"], r"--runs"),
    Case("models-unknown", lambda d: ["models", "nope", "-o", out(d)], r"unknown model 'nope'"),
    Case("models-bad-setting", lambda d: ["models", "mlp", "-o", out(d), "--set", "bogus=1"], r"bogus"),
    Case("models-out-missing-folder", lambda d: ["models", "mlp", "-o", str(d / "nowhere" / "m.onnx")], r"nowhere.*does not exist"),
    Case("unknown-command", lambda d: ["frobnicate"], r"No such command"),
]  # fmt: skip


@pytest.mark.parametrize("case", OUTPUT_CASES + FLAG_CASES, ids=ids(OUTPUT_CASES + FLAG_CASES))
def test_misuse_refused(tmp_path: Path, case: Case) -> None:
    assert_refused(tmp_path, case.make(tmp_path), case.expect)


def test_output_beside_input_data_named_like_its_data(tmp_path: Path) -> None:
    """The input's data file is called out.onnx.data; writing out.onnx (with its own, content-named
    data file) leaves it alone."""
    model, data = saved_with_external_data(tmp_path, "in.onnx", "out.onnx.data")
    before = Path(data).read_bytes()
    code, _, err = invoke("optimize", model, "-o", out(tmp_path), "--external-data")
    assert code == 0, err
    assert Path(data).read_bytes() == before
    written = {p.name for p in tmp_path.iterdir()} - {"in.onnx", "out.onnx.data"}
    assert written - {"out.onnx"} and all(re.fullmatch(r"out\.onnx(\.[0-9a-f]{16}\.data)?", n) for n in written), written
    onnx.checker.check_model(onnx.load(out(tmp_path)), full_check=True)


# --- write failures: a folder we may not write, a full disk ---------------------------------------


def test_unwritable_output_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(root may write anywhere, so the OS refusal is simulated where onnxq first touches the folder.)"""

    def refuse(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))

    args = dyn(tmp_path, "--report", str(tmp_path / "r.json"))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert_refused(tmp_path, args, r"-o .*out\.onnx.*not writable.*Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    args = dyn(tmp_path, to=str(folder / "out.onnx"))
    folder.chmod(0o500)
    try:
        assert_refused(tmp_path, args, r"ro/out\.onnx.*not writable")
    finally:
        folder.chmod(0o700)


def _limit_file_size(limit: int) -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


DISK_FULL = {
    "convert": (lambda d, m: ["convert", m, "-o", out(d), "--mode", "fp16", "--report", str(d / "r.json")], 4096),
    "calibrate": (lambda d, m: ["calibrate", m, "--data", "synthetic:2", "--dim", "N=1", "--method", "minmax", "-o", str(d / "r.json")], 200),
}


@pytest.mark.parametrize("command", sorted(DISK_FULL))
def test_disk_full_leaves_nothing(tmp_path: Path, command: str) -> None:
    """A real process whose writes fail past a few bytes (RLIMIT_FSIZE: what a full disk looks like to it)."""
    make_args, limit = DISK_FULL[command]
    args = make_args(tmp_path, mlp(tmp_path))
    before = snapshot(tmp_path)
    code = "import sys; from onnxq.cli import main; sys.argv[0] = 'onnxq'; main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: _limit_file_size(limit), cwd=Path(__file__).parents[2])  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: cannot write -o") and "too large" in lines[0], proc.stderr
    assert snapshot(tmp_path) == before
