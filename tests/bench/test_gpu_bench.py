"""bench/gpu.py's logic (no timing is asserted): options, statistics, the goal, the report,
and a whole quick run on this machine, whose CUDA rows say why they are missing when no GPU is
present."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from bench import gpu
from model.checkpoint import save_checkpoint
from model.gru import GRUConfig, GRUForecaster
from service.runtime import cuda_device_count

NO_GPU = cuda_device_count() == 0


def test_batches_option():
    assert gpu.parse_batches("1,64,4096") == (1, 64, 4096)
    for bad in ("1,x", "0,4", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu.parse_batches(bad)


def test_percentile_and_cell():
    assert gpu.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert gpu.percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    c = gpu.cell(64, [0.002, 0.002, 0.004, 0.004])
    assert c["throughput"] == pytest.approx(64 / 0.003)
    assert c["p50_ms"] == pytest.approx(3.0) and c["calls"] == 4


def rows(cpu: float | None, cuda: float | None) -> list[dict]:
    out = [{"workload": "forecast", "provider": gpu.CUDA, "batch": 4096, "throughput": 1e9}]
    if cpu is not None:
        out.append({"workload": "step", "provider": gpu.CPU, "batch": 4096, "throughput": cpu})
        out.append({"workload": "step", "provider": gpu.CPU, "batch": 4096, "throughput": cpu / 2})
    if cuda is not None:
        out.append({"workload": "step", "provider": gpu.CUDA, "batch": 4096, "throughput": cuda})
    else:
        out.append({"workload": "step", "provider": gpu.CUDA, "batch": 4096, "unavailable": "x"})
    return out


def test_step_goal_compares_the_best_cpu_row_at_batch_4096():
    g = gpu.step_goal(rows(1000.0, 12000.0))
    assert g["measured"] and g["ratio"] == pytest.approx(12.0) and g["met"]
    assert not gpu.step_goal(rows(1000.0, 9000.0))["met"]
    assert gpu.step_goal(rows(1000.0, None)) == {"measured": False, "goal": ">= 10x"}


def test_markdown_names_the_card_the_gaps_and_the_goal():
    result = {
        "machine": {"gpu": "NVIDIA Test Card", "cpus": 8, "cpu": "x86", "onnxruntime": "1.0"},
        "measured_at": "2030-01-01T00:00:00Z",
        "settings": {"cpu_threads": 8},
        "rows": [
            {"workload": "step", "provider": gpu.CPU, "artifact": "cpu", "batch": 4096,
             "throughput": 1000.0, "p50_ms": 1.0, "p99_ms": 2.0, "calls": 5},
            {"workload": "step", "provider": gpu.CUDA, "artifact": "cuda", "batch": 4096,
             "throughput": 20000.0, "p50_ms": 0.1, "p99_ms": 0.2, "calls": 50,
             "state": "cuda:0 slot buffer", "buffer_moved": False, "steps": 60,
             "state_uploads": 4096, "state_reads": 0},
            {"workload": "forecast", "provider": gpu.CUDA, "artifact": "cuda", "batch": 1,
             "unavailable": "no CUDA device"},
        ],
        "forms": [{"provider": gpu.CPU, "T": 72, "B": 1, "scan": 1.0, "loop": 1.1, "host loop": 9.0}],
        "goal": gpu.step_goal(rows(1000.0, 20000.0)),
    }  # fmt: skip
    md = gpu.markdown(result)
    assert "GPU **NVIDIA Test Card**" in md
    assert "| step | CUDAExecutionProvider | cuda | 4096 | 20,000 | 0.100 | 0.200 | 50 |" in md
    assert "| forecast | CUDAExecutionProvider | cuda | 1 | unavailable | | | |" in md
    assert "Unavailable: no CUDA device." in md
    assert "20.0x (goal >= 10x: met)" in md
    assert "over 60 steps, states read back to the host: 0, states uploaded: 4096 (the 4,096 " in md
    assert "buffer moved: False" in md
    assert "| CPUExecutionProvider | 72 | 1 | 1.000 | 1.100 | 9.000 |" in md


@pytest.mark.skipif(not NO_GPU, reason="asserts the CPU-only report")
def test_a_quick_run_on_a_cpu_only_machine(tmp_path):
    torch.manual_seed(0)
    model = GRUForecaster(GRUConfig(1, 8, 1, 1, 0.0, "cho2014")).eval()
    ckpt = save_checkpoint(tmp_path / "c.pt", model, {"name": "t", "version": "1"})
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--batches", "1,3", "--seconds", "0", "--min-calls", "1"]
    assert gpu.main([*args, "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "throughput.png"]
    result = json.loads((out / "results.json").read_text())
    assert result["machine"]["gpu"] is None
    measured = [r for r in result["rows"] if "throughput" in r]
    missing = [r for r in result["rows"] if "unavailable" in r]
    assert {(r["provider"], r["artifact"]) for r in measured} == {
        (gpu.CPU, "cpu"),
        (gpu.CPU, "cuda"),
    }
    assert len(measured) == 8 and all(r["calls"] >= 1 for r in measured)
    assert len(missing) == 4 and all(r["provider"] == gpu.CUDA for r in missing)
    assert missing[0]["unavailable"] == gpu.cuda_unavailable()
    assert result["goal"]["measured"] is False
    assert [(f["T"], f["B"]) for f in result["forms"]] == list(gpu.FORM_CASES)
    assert "not measured" in (out / "results.md").read_text()
