import importlib
import subprocess
import sys

import pytest

from tinytitan.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_table_entry_has_a_module_with_configure_and_run(command):
    module = importlib.import_module(COMMANDS[command][0])
    assert callable(module.configure) and callable(module.run)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tinytitan " + command in capsys.readouterr().out


def test_top_level_help_lists_every_subcommand():
    help_text = build_parser().format_help()
    for command in COMMANDS:
        assert command in help_text


def test_console_script_is_installed_and_dispatches():
    out = subprocess.run([sys.executable, "-m", "tinytitan.cli", "models"], capture_output=True, text=True, check=True)
    assert "tiny" in out.stdout and "debug" in out.stdout
