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
