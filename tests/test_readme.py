"""The README's two commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_install_and_test_commands():
    install, test = _readme_commands()
    assert "pip install -e '.[test]'" in install and install.endswith("backmap demo")
    assert test == ".venv/bin/python -m pytest -q"


def test_ci_runs_exactly_the_readme_test_command_after_installing():
    install, test = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == test
    assert ".venv/bin/pip install --quiet -e '.[test]'" in ci_lines
    assert "python3.11 -m venv .venv" in install and "python3.11 -m venv .venv" in ci_lines
