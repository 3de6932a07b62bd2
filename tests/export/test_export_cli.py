"""`gru-serve export`: a good checkpoint gives a loadable, checked artifact; bad input gives
one stderr line, exit 2 and no file (not even a temp file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from export_helpers import TOL, run_reference, write_checkpoint

from export.contract import ArtifactMeta
from export.verify import max_abs_error, random_batch, run_onnx
from model.checkpoint import FORMAT, load_checkpoint
from service.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["export", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("variant", ["cho2014", "cudnn"])
def test_export_writes_an_artifact_that_loads_and_matches(tmp_path, capsys, variant):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", variant)
    out = tmp_path / "nested" / "gru.onnx"
    rc, stdout, err = run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(out))
    assert (rc, err) == (0, "")
    assert f"wrote {out}" in stdout
    assert sorted(os.listdir(out.parent)) == ["gru.onnx"]  # no temp file left over
    assert os.stat(out).st_mode & 0o044  # readable by a container's other user

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)
    model, info = load_checkpoint(ckpt)
    assert (meta.name, meta.version, meta.variant) == ("tiny-ckpt", "0.1.0", variant)
    assert (meta.input_size, meta.hidden_size, meta.num_layers) == (1, 8, 2)
    assert meta.quantile_levels == (0.1, 0.9)
    assert meta.quantile_offsets == ((-1.0, -1.5), (1.0, 1.5))
    assert (meta.context_length, meta.horizon, meta.frequencies) == (24, 0, ())
    assert meta.metrics == info["metrics"] and meta.data == info["data"]
    assert meta.versions["torch"] == str(torch.__version__)
    assert {"onnx", "onnxruntime", "export_torch"} <= meta.versions.keys()

    x, h0, lengths = random_batch(1, 2, 8, 6, 40, seed=5)
    assert (
        max_abs_error(
            run_onnx(session, x, h0, lengths), run_reference(model, x, h0, lengths), lengths
        )
        <= TOL
    )


def test_export_overwrites_an_existing_artifact(tmp_path, capsys):
    out = tmp_path / "gru.onnx"
    out.write_bytes(b"old")
    rc, _, _ = run_cli(
        capsys, "--checkpoint", str(write_checkpoint(tmp_path / "c.pt")), "--out", str(out)
    )
    assert rc == 0 and out.read_bytes() != b"old"


def _missing(tmp_path):
    return tmp_path / "nope.pt"


def _not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("this is not a checkpoint\n")
    return p


def _foreign_torch_file(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, p)
    return p


def _unknown_variant(tmp_path):
    p = write_checkpoint(tmp_path / "c.pt")
    blob = torch.load(p, weights_only=True)
    blob["config"]["variant"] = "lstm"
    torch.save(blob, p)
    return p


def _info_without_name(tmp_path):
    p = write_checkpoint(tmp_path / "c.pt")
    blob = torch.load(p, weights_only=True)
    del blob["info"]["name"]
    torch.save(blob, p)
    return p


def _malformed_frequency_table(tmp_path):
    return write_checkpoint(
        tmp_path / "c.pt",
        frequencies=["yearly", "monthly"],
        quantile_offsets_by_frequency={"monthly": [[-1.0, -1.5]]},  # 2 levels, 1 row
    )


@pytest.mark.parametrize(
    ("make_ckpt", "message"),
    [
        (_missing, "does not exist"),
        (_not_a_checkpoint, "not a readable checkpoint"),
        (_foreign_torch_file, f"not a {FORMAT} file"),
        (_unknown_variant, "unknown variant 'lstm'"),
        (_info_without_name, "no 'name'"),
        (_malformed_frequency_table, "quantile_offsets_by_frequency['monthly'] must hold 2"),
    ],
)
def test_export_rejects_bad_checkpoint(tmp_path, capsys, make_ckpt, message):
    ckpt = make_ckpt(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, _, err = run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(out_dir / "gru.onnx"))
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("gru-serve export: error: ")
    assert message in err
    assert os.listdir(out_dir) == []


def test_export_rejects_unwritable_out_dir(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    rc, _, err = run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(blocker / "gru.onnx"))
    assert rc == 2 and err.count("\n") == 1
    assert "is a file, not a directory" in err
    assert blocker.read_text() == "a file where a directory should be"


def test_export_rejects_read_only_out_dir(tmp_path, capsys, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    # root (CI) writes through directory permissions: ask the check what a normal user gets
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode)
    )
    try:
        rc, _, err = run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(ro / "gru.onnx"))
    finally:
        ro.chmod(0o755)
    assert rc == 2 and "not writable" in err and os.listdir(ro) == []


def test_export_rejects_a_directory_as_out(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    rc, _, err = run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(tmp_path))
    assert rc == 2 and "is a directory" in err


def test_export_refuses_to_write_when_parity_fails(tmp_path, capsys, monkeypatch):
    """The bug docs/design.md warns about (an exporter emitting the other variant): the parity
    gate must catch it and leave nothing behind."""
    from export import graph

    real = graph.to_onnx_gates

    def wrong_variant(layer, variant):
        return real(layer, "cudnn" if variant == "cho2014" else "cho2014")

    monkeypatch.setattr(graph, "to_onnx_gates", wrong_variant)
    out = tmp_path / "out" / "gru.onnx"
    rc, _, err = run_cli(
        capsys, "--checkpoint", str(write_checkpoint(tmp_path / "c.pt")), "--out", str(out)
    )
    assert rc == 2 and err.count("\n") == 1
    assert "parity check failed" in err and "nothing written" in err
    assert os.listdir(out.parent) == []


def test_export_help_and_cli_import_do_not_load_torch():
    """The dispatcher imports export.commands for every command, `serve` included."""
    code = (
        "import sys; from service.cli import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    helped = subprocess.run(
        [sys.executable, "-m", "service.cli", "export", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--checkpoint" in helped.stdout and "--out" in helped.stdout


def test_export_output_is_deterministic(tmp_path, capsys):
    """`make export` reproduces the committed artifact byte for byte on the same versions."""
    ckpt = write_checkpoint(tmp_path / "c.pt")
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        assert run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(out))[0] == 0
    assert a.read_bytes() == b.read_bytes()


def _meta_of(path: Path) -> ArtifactMeta:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)


def test_export_records_the_weights_digest_and_takes_name_and_version(tmp_path, capsys):
    from export.checkpoint_weights import weights_from_model
    from export.digest import weights_digest

    ckpt = write_checkpoint(tmp_path / "ckpt.pt")
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    plain, renamed, cuda, second = (tmp_path / f"{n}.onnx" for n in ("a", "b", "c", "d"))
    assert run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(plain))[0] == 0
    argv = ["--checkpoint", str(ckpt), "--out", str(renamed), "--name", "demo", "--version", "7"]
    assert run_cli(capsys, *argv)[0] == 0
    assert (
        run_cli(capsys, "--checkpoint", str(ckpt), "--out", str(cuda), "--target", "cuda")[0] == 0
    )
    assert run_cli(capsys, "--checkpoint", str(other), "--out", str(second))[0] == 0
    model, _ = load_checkpoint(ckpt)
    digest = weights_digest(weights_from_model(model), model.config.variant)
    a, b, c, d = (_meta_of(p) for p in (plain, renamed, cuda, second))
    assert a.weights_sha256 == b.weights_sha256 == c.weights_sha256 == digest  # one set of weights
    assert d.weights_sha256 != digest and len(digest) == 64  # other weights, same name
    assert (a.name, a.version) == ("tiny-ckpt", "0.1.0") and (b.name, b.version) == ("demo", "7")


@pytest.mark.parametrize("flag", ["--name", "--version"])
def test_export_refuses_an_unusable_name_or_version(tmp_path, capsys, flag):
    out = tmp_path / "gru.onnx"
    rc, _, err = run_cli(
        capsys,
        "--checkpoint",
        str(write_checkpoint(tmp_path / "c.pt")),
        "--out",
        str(out),
        flag,
        "",
    )
    assert rc == 2 and err.count("\n") == 1 and f"{flag} must be printable" in err
    assert not out.exists()


@pytest.mark.parametrize("digest", ["zz" * 32, "abc", "AB" * 32, 7])
def test_metadata_with_a_malformed_weights_digest_is_refused(digest):
    props = {f"gru_serve.{k}": json.dumps(v) for k, v in {
        "name": "m", "version": "1", "variant": "cho2014", "input_size": 1, "hidden_size": 2,
        "num_layers": 1, "output_size": 1, "weights_sha256": digest}.items()}  # fmt: skip
    with pytest.raises(ValueError, match="weights_sha256"):
        ArtifactMeta.from_props(props)
