"""Fast tier: the `vault` command line's settings (flag > environment > settings file > default),
its help (every option documented with its default and variable) and its exit codes for bad usage."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from vault.cli import CLIENT_COMMANDS, cli, main


def resolved(argv: list[str]) -> dict:
    """The parameters a command would run with, without running it."""
    at = next(i for i, word in enumerate(argv) if word in cli.commands)
    group = cli.make_context("vault", argv[: at + 1])  # the group's options, then the command's name
    return cli.commands[argv[at]].make_context(argv[at], argv[at + 1:], parent=group).params


@pytest.fixture
def settings_file(tmp_path) -> Path:
    path = tmp_path / "vault.toml"
    path.write_text('[serve]\nlisten = "127.0.0.1:7000"\nmax-failures-per-subject = 9\nlog-format = "json"\n'
                    '[client]\nserver = "vault.example:443"\n')
    return path


def test_flag_beats_environment_beats_settings_file_beats_default(settings_file, monkeypatch):
    for variable in ("VAULT_LISTEN", "VAULT_MAX_FAILURES_PER_SUBJECT", "VAULT_LOG_FORMAT", "VAULT_SERVER", "VAULT_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    assert resolved(["serve"])["listen"] == "127.0.0.1:50051"  # default
    from_file = resolved(["--config", str(settings_file), "serve"])
    assert (from_file["listen"], from_file["max_failures_per_subject"], from_file["log_format"]) == ("127.0.0.1:7000", 9, "json")
    assert from_file["lockout"] == 300.0  # not in the file: the default
    monkeypatch.setenv("VAULT_LISTEN", "127.0.0.1:8000")
    assert resolved(["--config", str(settings_file), "serve"])["listen"] == "127.0.0.1:8000"
    assert resolved(["--config", str(settings_file), "serve", "--listen", "127.0.0.1:9000"])["listen"] == "127.0.0.1:9000"
    monkeypatch.setenv("VAULT_CONFIG", str(settings_file))  # the file named by the environment
    assert resolved(["verify", "--subject", "a", str(settings_file)])["server"] == "vault.example:443"


def test_a_bad_settings_file_is_refused_by_name(tmp_path, capsys):
    for content, named in [("[serve]\nlisten-on = 1\n", "listen-on"), ("[serever]\n", "serever"),
                           ("[serve]\nmax-failures-per-subject = \"many\"\n", "many"), ("listen = ", "cannot read")]:
        path = tmp_path / "bad.toml"
        path.write_text(content)
        assert main(["--config", str(path), "serve", "--plaintext"]) == 2
        assert named in capsys.readouterr().err


def test_every_option_has_help_and_settings_show_their_variable():
    commands = [cli.commands[name] for name in cli.commands if not isinstance(cli.commands[name], click.Group)]
    for command in commands:
        for option in (p for p in command.params if isinstance(p, click.Option)):
            assert option.help, f"vault {command.name} {option.opts[0]} has no help"
    serve = cli.commands["serve"]
    assert all(o.envvar and o.show_envvar for o in serve.params if isinstance(o, click.Option))
    assert set(CLIENT_COMMANDS) >= {"enroll", "verify", "identify", "revoke", "reissue", "list", "token", "key",
                                    "audit", "health"}


def test_help_names_the_exit_codes_and_bad_usage_exits_2(capsys):
    assert main(["--help"]) == 0
    assert "3  verify: NO_MATCH" in capsys.readouterr().out
    assert main(["verify", "--subject", "a", "--template", "b", __file__]) == 2  # two claims
    assert "exactly one of --subject or --template" in capsys.readouterr().err
    assert main(["serve", "--identify-fpir", "2"]) == 2
    assert main(["no-such-command"]) == 2
