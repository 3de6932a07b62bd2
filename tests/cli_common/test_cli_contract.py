"""What a newcomer hits first: every mistake is one line on stderr and exit 2, found before
any long work starts (training, report writing, loading the model)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cli_common import CliError
from cli_common.extras import TRAIN_MODULES, require_train_extra
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
GRU_SERVE = Path(sys.executable).parent / "gru-serve"


def gru_serve(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(GRU_SERVE)] if GRU_SERVE.exists() else [sys.executable, "-m", "service.cli"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRU_SERVE_")}
    return subprocess.run(
        cmd + list(argv),
        cwd=ROOT,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def fails(capsys, argv: list[str]) -> str:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_long_work(monkeypatch):
    """Training, report writing and checkpoint loading fail the test if they are reached."""
    import model.benchmark
    import model.bundled
    import model.checkpoint
    import model.evaluate
    import model.train

    def reached(*args, **kwargs):
        raise AssertionError("the long work started before the input was checked")

    for module, name in (
        (model.bundled, "train_bundled"),
        (model.train, "train_and_save"),
        (model.evaluate, "write_report"),
        (model.benchmark, "write_benchmark"),
        (model.checkpoint, "load_checkpoint"),
    ):
        monkeypatch.setattr(module, name, reached)


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("ppm\n" + "\n".join(str(300 + i % 7) for i in range(200)) + "\n")
    return path


# ---- 1: the train, evaluate and export commands on a serving-only install ----------------------
@pytest.mark.parametrize("command", ["train", "evaluate", "export"])
def test_missing_train_extra_is_one_line_naming_it(capsys, monkeypatch, command):
    # As after `make serve`: torch is not importable (a None entry makes the import fail).
    monkeypatch.setitem(sys.modules, "torch", None)
    err = fails(capsys, [command])
    assert err == (
        f"gru-serve {command}: error: this command needs the 'train' extra, which is not "
        "installed (missing: torch); install it with: pip install -e '.[train]'\n"
    )


def test_train_modules_are_the_train_extra_of_pyproject():
    import tomllib

    from packaging.requirements import Requirement

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {Requirement(r).name for r in extra["optional-dependencies"]["train"]}
    assert set(TRAIN_MODULES) == names  # the import names equal the distribution names
    require_train_extra()  # all installed here: no error


# ---- 2: output paths are checked before the work ------------------------------------------------
def test_train_out_under_a_file_fails_before_training(capsys, no_long_work, csv_file):
    out = csv_file / "x.pt"
    argv = ["train", "--csv", str(csv_file), "--column", "ppm", "--out", str(out)]
    err = fails(capsys, argv)
    assert err == f"gru-serve train: error: --out {out}: {csv_file} is a file, not a directory\n"


def test_train_out_that_is_a_directory_fails_before_training(capsys, no_long_work, tmp_path):
    err = fails(capsys, ["train", "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a directory" in err


def test_train_out_in_an_unwritable_place_fails_before_training(capsys, no_long_work, tmp_path):
    # /proc refuses new files even to root, which directory permissions would not stop
    err = fails(capsys, ["train", "--out", "/proc/gru/x.pt"])
    assert "--out /proc/gru/x.pt: cannot write in /proc" in err


@pytest.mark.parametrize("benchmark", [[], ["--benchmark", "m3"]])
def test_evaluate_out_dir_under_a_file_fails_before_the_report(
    capsys, no_long_work, csv_file, benchmark
):
    out_dir = csv_file / "rep"
    data = [] if benchmark else ["--csv", str(csv_file), "--column", "ppm"]
    err = fails(capsys, ["evaluate", *benchmark, *data, "--out-dir", str(out_dir)])
    assert err == (
        f"gru-serve evaluate: error: --out-dir {out_dir}: {csv_file} is a file, not a directory\n"
    )


def test_evaluate_out_dir_that_is_a_file_fails(capsys, no_long_work, csv_file):
    err = fails(capsys, ["evaluate", "--out-dir", str(csv_file)])
    assert f"--out-dir {csv_file} is a file, expected a directory" in err


def test_output_checks_create_nothing(no_long_work, tmp_path):
    # a good path under directories that do not exist yet passes, and they are not made yet
    with pytest.raises(AssertionError, match="the long work started"):
        main(["train", "--out", str(tmp_path / "a" / "b" / "ck.pt")])
    with pytest.raises(AssertionError, match="the long work started"):
        main(["evaluate", "--out-dir", str(tmp_path / "r" / "s")])
    assert list(tmp_path.iterdir()) == []


# ---- 3: dropout with one layer ----------------------------------------------------------------------
def test_dropout_with_one_layer_is_an_error(capsys, no_long_work, tmp_path):
    err = fails(capsys, ["train", "--dropout", "0.2", "--out", str(tmp_path / "ck.pt")])
    assert err == "gru-serve train: error: --dropout 0.2 needs --layers 2 or more, got 1\n"
    assert list(tmp_path.iterdir()) == []


def test_dropout_with_two_layers_passes_the_checks(monkeypatch, tmp_path):
    import model.bundled

    seen = {}

    def stop(settings, progress):
        seen["settings"] = settings
        raise CliError("stopped here by the test")

    monkeypatch.setattr(model.bundled, "train_bundled", stop)
    argv = ["train", "--dropout", "0.2", "--layers", "2", "--out", str(tmp_path / "ck.pt")]
    assert main(argv) == 2
    assert (seen["settings"].dropout, seen["settings"].num_layers) == (0.2, 2)


# ---- 7: serve's settings, version, port --------------------------------------------------------------
def test_setting_from_the_environment_is_named_by_its_variable(tiny_artifact):
    line = one_error_line(
        gru_serve("serve", "--model-path", str(tiny_artifact), env={"GRU_SERVE_MAX_HORIZON": "-5"})
    )
    assert line == (
        "gru-serve serve: error: GRU_SERVE_MAX_HORIZON=-5: "
        "Input should be greater than or equal to 1"
    )


def test_setting_from_a_flag_is_named_by_the_flag(capsys, tiny_artifact):
    err = fails(capsys, ["serve", "--model-path", str(tiny_artifact), "--max-horizon", "-5"])
    assert err == (
        "gru-serve serve: error: --max-horizon -5: Input should be greater than or equal to 1\n"
    )


def test_flag_beats_a_bad_environment_value_and_both_bad_are_both_named(capsys, monkeypatch):
    monkeypatch.setenv("GRU_SERVE_MAX_ITEMS", "0")
    monkeypatch.setenv("GRU_SERVE_DEVICE", "gpu")
    err = fails(capsys, ["serve", "--max-items", "-1"])
    assert err.startswith("gru-serve serve: error: ")
    assert "--max-items -1: Input should be greater than or equal to 1" in err
    assert "GRU_SERVE_DEVICE=gpu: Input should be 'auto', 'cuda' or 'cpu'" in err
    assert "GRU_SERVE_MAX_ITEMS" not in err  # the flag replaced it


def test_bad_choice_on_the_command_line_names_the_choices(capsys):
    err = fails(capsys, ["serve", "--device", "gpu"])
    assert "argument --device: invalid choice: 'gpu' (choose from" in err


def test_version():
    p = gru_serve("--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, f"gru-serve {version('gru-serve')}\n", "")


def test_port_in_use_is_one_line_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A model path that does not exist: the port is checked first, so it is what is named.
        p = gru_serve("serve", "--port", str(port), "--model-path", str(tmp_path / "none.onnx"))
    line = one_error_line(p)
    assert line.startswith(f"gru-serve serve: error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in line and "--port" in line


def test_unknown_host_is_one_line(tiny_artifact):
    line = one_error_line(
        gru_serve("serve", "--host", "no-such-host.invalid", "--model-path", str(tiny_artifact))
    )
    assert line.startswith("gru-serve serve: error: cannot listen on no-such-host.invalid:8000:")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["fly"], "argument COMMAND: invalid choice: 'fly'"),
        (["train", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
        (["export", "--bogus"], "unrecognized arguments: --bogus"),
        (["serve", "--port"], "argument --port: expected one argument"),
        (["evaluate", "--benchmark", "m4"], "argument --benchmark: invalid choice: 'm4'"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle):
    assert needle in fails(capsys, argv)
