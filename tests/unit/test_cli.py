import pytest

from apps import cli

pytestmark = pytest.mark.unit


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_a_clear_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err


def test_no_arguments_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: parkmon" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_target_exists(name):
    import importlib

    module_name, func_name = cli.COMMANDS[name][0].split(":")
    assert callable(getattr(importlib.import_module(module_name), func_name))


@pytest.mark.parametrize("name", ["park", "simulate", "gateway", "detect", "evaluate", "demo", "edge"])
def test_command_help_exits_cleanly(name, capsys):
    try:
        code = cli.main([name, "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()
