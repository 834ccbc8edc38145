"""`vigil rollout MODEL ...` reads as typed in its usage and error hints, not as the hidden
`start` subcommand it resolves to."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vigil_cli.cli import cli

pytestmark = pytest.mark.unit


def test_usage_and_hint_name_the_model_form() -> None:
    result = CliRunner().invoke(cli, ["rollout", "fraud"], prog_name="vigil")
    assert result.exit_code == 2
    assert "Usage: vigil rollout MODEL --version V [OPTIONS]" in result.output
    assert "Try 'vigil rollout fraud --help'" in result.output
    assert "rollout start" not in result.output
    assert "Missing option '--version'" in result.output


def test_help_of_the_model_form() -> None:
    result = CliRunner().invoke(cli, ["rollout", "fraud", "--help"], prog_name="vigil")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: vigil rollout MODEL --version V [OPTIONS]")
