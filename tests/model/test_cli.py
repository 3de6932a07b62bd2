"""`gru-serve train|evaluate`: bad input is one stderr line and exit 2; a tiny run works end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.checkpoint import load_checkpoint
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--hidden-size",
    "4",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "8",
    "--no-progress",
]


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    t = np.arange(120)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "month": pd.date_range("2010-01-01", periods=120, freq="MS").strftime("%Y-%m-%d"),
            "sales": 50 + 0.2 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, 120),
            "empty": np.nan,
        }
    )
    df.loc[30, "sales"] = np.nan
    df = df.drop(index=[50, 51])
    path = tmp_path_factory.mktemp("csv") / "sales.csv"
    df.to_csv(path, index=False)
    return path


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors (a non-number where a number belongs)
        return e.code


def _fails(capsys, argv: list[str], needle: str) -> str:
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--csv", "nope.csv", "--column", "sales"], "does not exist"),
        (["--column", "nope"], "column 'nope' not in"),
        (["--column", "empty"], "no numeric values"),
        (["--column", "sales", "--horizon", "30"], "need at least"),
        (["--column", "sales", "--variant", "lstm"], "invalid choice: 'lstm'"),
        (["--column", "sales", "--epochs", "0"], "--epochs must be >= 1"),
        (["--column", "sales", "--hidden-size", "abc"], "invalid int value: 'abc'"),
        (["--column", "sales", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--column", "sales", "--time-column", "when"], "column 'when' not in"),
        (["--csv", "x.csv"], "--csv needs --column"),
        (["--column", "sales", "--time-column", "sales"], "has values that are not dates"),
        (["--column", "sales", "--lr", "nan"], "--lr must be > 0"),
        (["--column", "sales", "--name", ""], "--name must be printable"),
        (["--column", "sales", "--version", " 2"], "--version must be printable"),
        (["--column", "sales", "--name", "x" * 256], "holds at most 255"),
    ],
)
def test_train_bad_input_is_one_line_exit_2_and_writes_nothing(
    capsys, tmp_path, csv_file, extra, needle
):
    out = tmp_path / "ck.pt"
    argv = ["train", "--out", str(out), *TINY]
    if "--csv" not in extra:
        argv += ["--csv", str(csv_file)]
    _fails(capsys, argv + extra, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag", [["--season", "12"], ["--column", "sales"], ["--time-column", "month"]]
)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_csv_flags_without_csv_are_refused(capsys, tmp_path, command, flag):
    # without --csv these flags would be silently dropped and another data set used
    out = ["--out", str(tmp_path / "ck.pt")] if command == "train" else []
    _fails(capsys, [command, *out, *flag], "need --csv")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_bad_checkpoint_is_one_line_exit_2(capsys, tmp_path):
    _fails(
        capsys,
        ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--out-dir", str(tmp_path / "r")],
        "does not exist",
    )
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    _fails(
        capsys,
        ["evaluate", "--checkpoint", str(junk), "--out-dir", str(tmp_path / "r")],
        "not a readable checkpoint",
    )
    assert not (tmp_path / "r").exists()


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        # Through the console entry point, as `gru-serve` runs it.
        [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())"]
        + ["train", "--csv", str(tmp_path / "x.csv"), "--column", "v"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gru-serve train: error: CSV file {tmp_path / 'x.csv'} does not exist"
    ]


def test_train_csv_end_to_end_then_evaluate(capsys, tmp_path, csv_file):
    out = tmp_path / "ck.pt"
    argv = [
        "train",
        "--csv",
        str(csv_file),
        "--column",
        "sales",
        "--time-column",
        "month",
        "--out",
        str(out),
    ]
    assert main(argv + TINY + ["--horizon", "6", "--context-length", "36"]) == 0
    model, info = load_checkpoint(out)
    assert model.config.hidden_size == 4 and model.config.variant == "cho2014"
    assert (info["name"], info["version"]) == ("gru-forecaster", "2.3.0")
    assert info["scaler"] == {"rule": "standard", "min_scale": 1e-3}
    assert info["horizon"] == 6 and info["context_length"] == 36
    assert len(info["quantile_offsets"]) == len(info["quantile_levels"]) == 6
    assert all(len(row) == 6 for row in info["quantile_offsets"])
    lows, highs = np.asarray(info["quantile_offsets"][0]), np.asarray(info["quantile_offsets"][-1])
    assert (lows <= highs).all()
    (series,) = info["data"]["series"]
    assert series["missing_filled"] == 3 and series["length"] == 120 and series["period"] == 12
    assert info["data"]["splits"]["sales"] == {"train": 96, "validation": 12, "test": 12}
    assert list(tmp_path.iterdir()) == [out]  # no temp files left

    report_dir = tmp_path / "report"
    assert (
        main(["evaluate", "--checkpoint", str(out), "--out-dir", str(report_dir)]) == 2
    )  # needs its CSV
    capsys.readouterr()
    ev = [
        "evaluate",
        "--checkpoint",
        str(out),
        "--out-dir",
        str(report_dir),
        "--csv",
        str(csv_file),
    ]
    assert main(ev + ["--column", "sales", "--time-column", "month"]) == 0
    assert sorted(p.name for p in report_dir.iterdir()) == [
        "evaluation.json",
        "evaluation.md",
        "forecasts.png",
    ]
    report = json.loads((report_dir / "evaluation.json").read_text())
    row = report["series"]["sales"]
    assert row["origins"] == 7 and set(row["mase"]) == {"gru", "naive", "seasonal_naive", "ets"}
    assert row["mase"]["seasonal_naive"] < row["mase"]["naive"]  # a seasonal series
    assert "| sales | yes |" in (report_dir / "evaluation.md").read_text()
    # calibration: origins 36 .. 102 (context >= 36, horizon ends before the test tail at 108)
    assert info["quantile_calibration"]["origins"] == {"sales": 67}
    assert set(info["metrics"]["validation_interval_coverage"]) == {"90%", "80%", "50%"}
    assert report["validation_coverage"] == info["metrics"]["validation_interval_coverage"]

    # --recalibrate rewrites the offsets in place (here: the same method, the same values),
    # keeps the weights, and leaves no temp file
    before = torch.load(out, weights_only=True)
    capsys.readouterr()
    assert main(ev + ["--column", "sales", "--time-column", "month", "--recalibrate"]) == 0
    assert capsys.readouterr().out.startswith(f"recalibrated {out}: interval coverage 90%")
    after = torch.load(out, weights_only=True)
    assert after["info"]["quantile_offsets"] == before["info"]["quantile_offsets"]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "report"]


def test_cli_parser_does_not_import_torch():
    code = "import sys; from service.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "False", proc.stderr


def test_train_cudnn_variant_from_csv(tmp_path, csv_file):
    out = tmp_path / "cudnn.pt"
    argv = [
        "train",
        "--csv",
        str(csv_file),
        "--column",
        "sales",
        "--out",
        str(out),
        "--variant",
        "cudnn",
    ]
    assert main(argv + TINY + ["--horizon", "4", "--layers", "2", "--dropout", "0.1"]) == 0
    model, info = load_checkpoint(out)
    assert model.config.variant == "cudnn" and model.config.num_layers == 2
    assert model.config.dropout == 0.1 and info["train"]["variant"] == "cudnn"
    # without a time column the rows are taken in file order; the NaN cell is still filled
    assert info["data"]["series"][0]["missing_filled"] == 1


def test_train_on_the_competitions_then_export(tmp_path, capsys):
    """The bundled recipe end to end at toy size: members combined, context chosen, intervals
    per frequency, all of it carried into the artifact's metadata."""
    from export.contract import ArtifactMeta
    from model.bundled import CONTEXT_CANDIDATES
    from model.competitions import FREQUENCIES
    from model.corpus import HORIZONS

    out = tmp_path / "ck.pt"
    argv = ["train", "--out", str(out), "--members", "2", *TINY, "--epochs", "1"]
    assert main(argv) == 0
    assert "2 member(s), validation sMAPE M3" in capsys.readouterr().out
    model, info = load_checkpoint(out)
    assert model.config.hidden_size == 2 * 4  # two members of 4 units, one block-diagonal GRU
    assert info["frequencies"] == list(FREQUENCIES)
    assert info["context_length"] in CONTEXT_CANDIDATES
    assert info["horizon"] == 18
    for f, rows in info["quantile_offsets_by_frequency"].items():
        assert len(rows) == 6 and all(len(r) == HORIZONS[f] for r in rows)
    assert set(info["data"]["datasets"]) == {"m1", "m3", "tourism"}
    assert len(info["metrics"]["members"]) == 2
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(out), "--out", str(onnx_path)]) == 0
    import onnx

    proto = onnx.load(onnx_path)
    meta = ArtifactMeta.from_props({p.key: p.value for p in proto.metadata_props})
    assert meta.frequencies == tuple(FREQUENCIES)
    assert meta.context_length == info["context_length"] and meta.horizon == 18
    assert set(meta.quantile_offsets_by_frequency) == set(FREQUENCIES)


def test_train_takes_the_models_name_and_version(tmp_path, csv_file):
    from model.checkpoint import load_checkpoint

    out = tmp_path / "ck.pt"
    argv = ["train", "--csv", str(csv_file), "--column", "sales", "--out", str(out), *TINY]
    assert _run([*argv, "--name", "sales-model", "--version", "7.1"]) == 0
    _, info = load_checkpoint(out)
    assert (info["name"], info["version"]) == ("sales-model", "7.1")
