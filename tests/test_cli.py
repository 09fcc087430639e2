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


COMMANDS = ["prepare", "train", "eval", "track", "export", "demo"]


def _options(cmd: str) -> list:
    import typer

    group = typer.main.get_command(app)
    command = group.commands[cmd] if cmd else group
    return [p for p in command.params if getattr(p, "opts", [""])[0].startswith("-")]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_that_explains_each_option_with_its_default(cmd):
    r = runner.invoke(app, [cmd, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    usage = next(line for line in r.output.splitlines() if "Usage:" in line)
    assert f"siamtool {cmd} [OPTIONS]" in usage and "{" not in usage  # `train [OPTIONS] CONFIG`, not {config}
    assert "<bool>" not in r.output  # a flag takes no value
    assert "Examples:" in r.output and r.output.count(f"siamtool {cmd} ") >= 2  # usage line + an example
    for param in _options(cmd):
        name = param.opts[0]
        assert param.help, f"{cmd} {name} has no help text"
        assert name in r.output
        shown_by_typer = not any(param.default is v for v in (None, False)) and param.default != () \
            and param.show_default is not False
        says = "Default:" in param.help or "Required" in param.help or "default:" in param.help
        assert shown_by_typer or says, f"{cmd} {name}: the help does not say the default"


def test_set_examples_fit_their_command():
    """Each --set example names a key of the config section the command uses (not train.lr everywhere)."""
    from siamtool.config import load_config

    examples = {}
    for cmd in COMMANDS:
        (opt,) = [p for p in _options(cmd) if p.opts[0] == "--set"]
        example = opt.help.split("--set ", 1)[1].split(". Default")[0]
        load_config(None, [example])  # a valid override
        examples[cmd] = example
    assert len(set(examples.values())) == len(COMMANDS), examples
    assert examples["prepare"].startswith("data.") and examples["train"].startswith("train.")
    assert examples["eval"].startswith("eval.") and examples["track"].startswith("track.")


def test_global_options_say_their_defaults():
    r = runner.invoke(app, ["--help"], terminal_width=200)
    assert r.exit_code == 0 and "<bool>" not in r.output
    for param in _options(""):
        if param.opts[0] == "--version":
            continue
        assert not any(param.default is v for v in (None, False)) or "Default:" in (param.help or ""), param.opts


def test_bad_device_is_one_line():
    from siamtool.device import resolve_device
    from siamtool.errors import SiamtoolError

    with pytest.raises(SiamtoolError, match="expected auto"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
