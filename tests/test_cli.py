"""The command line: every command has --help, and the print/chart commands call the library."""

import pytest
from typer.testing import CliRunner

from patchsim.cli import app
from tests.printing.conftest import write_run

COMMANDS = [[], ["sim"], ["sim", "render"], ["data", "generate"], ["victims"], ["victims", "train-detector"],
            ["victims", "train-lanekeeper"], ["victims", "eval"], ["attack"], ["validate"], ["pipeline"], ["print"],
            ["chart"], ["calibrate"], ["scenario"], ["scenario", "run"], ["scenario", "sweep"], ["field"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "patchsim")
def test_every_command_has_help(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_print_and_chart_write_pdfs(tmp_path):
    run = write_run(tmp_path / "run", (0.75, 0.75), 40.0)
    out = tmp_path / "poster.pdf"
    result = CliRunner().invoke(app, ["print", str(run), "--out", str(out), "--svg", str(tmp_path / "cut.svg")])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF") and (tmp_path / "cut.svg").is_file()
    chart = tmp_path / "chart.pdf"
    result = CliRunner().invoke(app, ["chart", "--out", str(chart)])
    assert result.exit_code == 0 and chart.read_bytes().startswith(b"%PDF")


def test_cli_errors_name_the_problem(tmp_path):
    result = CliRunner().invoke(app, ["print", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pdf")])
    assert result.exit_code == 2 and "error:" in result.output and "nothing" in result.output
    assert not (tmp_path / "x.pdf").exists()
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "missing.jpg"), "--name", "mine"])
    assert result.exit_code == 2 and "missing.jpg" in result.output
    result = CliRunner().invoke(app, ["data", "generate", "--out", str(tmp_path / "d"), "--task", "nope"])
    assert result.exit_code == 2 and "--task must be detector or lanekeeper" in result.output


@pytest.mark.parametrize("args, culprit", [
    (["--steps", "-3"], "key 'steps': -3 is out of range"),
    (["--batch", "0"], "key 'batch': 0 is out of range"),
    (["--device", "banana"], "device must be cpu, cuda or cuda:N"),
    (["--sim", "carla"], "label render"),
])
def test_attack_command_line_values_are_checked_before_any_work(tmp_path, args, culprit):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["attack", "--out", str(out), *args])
    assert result.exit_code == 2 and culprit in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_attack_refuses_cuda_on_a_machine_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(app, ["attack", "--out", str(tmp_path / "run"), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_cache_command_shows_and_clears_the_shared_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHSIM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "scenes").mkdir(parents=True)
    (tmp_path / "cache" / "scenes" / "abc.pt").write_bytes(b"x" * 2_000_000)
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 0 and "2.0 MB" in r.output and "scenes: 1 entries" in r.output
    r = CliRunner().invoke(app, ["cache", "--clear"])
    assert r.exit_code == 0 and "cleared 2.0 MB" in r.output
    assert not (tmp_path / "cache" / "scenes").exists()


def test_print_into_a_path_that_cannot_be_a_folder_is_a_clear_error(tmp_path):
    run = write_run(tmp_path / "run", (0.75, 0.75), 40.0)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["print", str(run), "--out", str(blocker / "poster.pdf")])
    assert result.exit_code == 2 and "file.txt" in result.output and "Traceback" not in result.output
