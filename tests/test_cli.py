import pytest
from typer.testing import CliRunner

from siamtool import __version__
from siamtool.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("prepare", "train", "eval", "track", "export", "demo"):
        assert cmd in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


@pytest.mark.parametrize("cmd", ["prepare", "train", "eval", "track", "export", "demo"])
def test_every_command_has_help(cmd):
    r = runner.invoke(app, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_bad_device_is_one_line():
    from siamtool.device import resolve_device
    from siamtool.errors import SiamtoolError

    with pytest.raises(SiamtoolError, match="expected auto"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
