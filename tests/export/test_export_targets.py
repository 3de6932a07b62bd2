"""`gru-serve export --target`: cpu stays the GRU-node artifact, cuda writes the graph whose
every node runs on the CUDA provider, both checked against the torch module before writing."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from export_helpers import TOL, run_reference, write_checkpoint
from test_bundled_artifact import ARTIFACT, CHECKPOINT, real_looking_batch

from export.contract import META_PREFIX, ArtifactMeta
from export.cuda_kernels import unsupported_nodes
from export.verify import max_abs_error, random_batch, run_onnx
from model.checkpoint import load_checkpoint
from service.cli import main


def export(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["export", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def quiet(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("variant", ["cho2014", "cudnn"])
def test_cuda_target_writes_a_matching_artifact(tmp_path, capsys, variant):
    ckpt = write_checkpoint(tmp_path / "c.pt", variant)
    out = tmp_path / "out" / "gru-cuda.onnx"
    rc, stdout, err = export(
        capsys, "--checkpoint", str(ckpt), "--target", "cuda", "--out", str(out)
    )
    assert (rc, err) == (0, "") and "target cuda" in stdout
    assert sorted(os.listdir(out.parent)) == ["gru-cuda.onnx"]
    session = quiet(out)
    meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)
    assert (meta.target, meta.variant, meta.name) == ("cuda", variant, "tiny-ckpt")
    proto = onnx.load(out)
    assert unsupported_nodes(proto) == []
    model, _ = load_checkpoint(ckpt)
    x, h0, lengths = random_batch(1, 2, 8, 6, 40, seed=5)
    got = run_onnx(session, x, h0, lengths)
    assert max_abs_error(got, run_reference(model, x, h0, lengths), lengths) <= TOL


def test_default_out_follows_the_target(tmp_path, capsys, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    monkeypatch.chdir(tmp_path)
    assert export(capsys, "--checkpoint", str(ckpt), "--target", "cuda")[0] == 0
    assert export(capsys, "--checkpoint", str(ckpt))[0] == 0
    assert sorted(os.listdir(tmp_path / "artifacts")) == ["gru-cuda.onnx", "gru.onnx"]
    cpu = {p.key for p in onnx.load(tmp_path / "artifacts" / "gru.onnx").metadata_props}
    assert META_PREFIX + "target" not in cpu  # the default artifact is unchanged by targets


def test_cuda_export_is_deterministic(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        assert (
            export(capsys, "--checkpoint", str(ckpt), "--target", "cuda", "--out", str(out))[0] == 0
        )
    assert a.read_bytes() == b.read_bytes()


def test_unknown_target_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--target", "tpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'tpu'" in err


def test_cuda_export_refuses_a_graph_that_fails_parity(tmp_path, capsys, monkeypatch):
    from export import cuda_graph

    real = cuda_graph.build_cuda_model

    def other_variant(weights, meta, recurrence="scan"):
        flipped = "cudnn" if meta.variant == "cho2014" else "cho2014"
        return real(weights, replace(meta, variant=flipped), recurrence)

    monkeypatch.setattr(cuda_graph, "build_cuda_model", other_variant)
    out = tmp_path / "out" / "g.onnx"
    ckpt = write_checkpoint(tmp_path / "c.pt")
    rc, _, err = export(capsys, "--checkpoint", str(ckpt), "--target", "cuda", "--out", str(out))
    assert rc == 2 and err.count("\n") == 1 and "parity check failed" in err
    assert not out.exists()


def test_cuda_export_refuses_nodes_off_the_gpu(tmp_path, capsys, monkeypatch):
    from export import cuda_kernels

    monkeypatch.setattr(cuda_kernels, "unsupported_nodes", lambda proto: ["node 7 (Foo): x"])
    out = tmp_path / "g.onnx"
    ckpt = write_checkpoint(tmp_path / "c.pt")
    rc, _, err = export(capsys, "--checkpoint", str(ckpt), "--target", "cuda", "--out", str(out))
    assert rc == 2 and err.count("\n") == 1
    assert "1 node(s) the CUDA provider would not run (node 7 (Foo): x)" in err
    assert not out.exists()


def test_bundled_checkpoint_cuda_graph_equals_the_committed_artifact(tmp_path, capsys):
    """The bundled model's cuda graph on realistic scaled series (fresh and carried states)
    equals the committed cpu artifact and the reference."""
    import numpy as np

    out = tmp_path / "gru-cuda.onnx"
    args = ("--checkpoint", str(CHECKPOINT), "--target", "cuda", "--out", str(out))
    assert export(capsys, *args)[0] == 0
    cuda, committed = quiet(out), quiet(ARTIFACT)
    meta = ArtifactMeta.from_props(committed.get_modelmeta().custom_metadata_map)
    cuda_meta = ArtifactMeta.from_props(cuda.get_modelmeta().custom_metadata_map)
    assert replace(cuda_meta, target="cpu", versions={}) == replace(meta, versions={})
    model, _ = load_checkpoint(CHECKPOINT)
    for steps in (1, 72, 104):
        x, lengths = real_looking_batch(meta, steps, seed=steps)
        rng = np.random.default_rng(steps)
        h0 = rng.uniform(-1, 1, (meta.num_layers, len(lengths), meta.hidden_size)).astype("f4")
        got = run_onnx(cuda, x, h0, lengths)
        assert max_abs_error(got, run_onnx(committed, x, h0, lengths), lengths) <= TOL
        assert max_abs_error(got, run_reference(model, x, h0, lengths), lengths) <= TOL
