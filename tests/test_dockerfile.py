"""The Dockerfile, checked against the project without docker: its base, its user, and that its
install line and entry point are the ones pyproject.toml declares."""

from __future__ import annotations

import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import typer.main

from truth_forge.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_image_is_slim_python_311_and_runs_as_a_user_of_its_own() -> None:
    steps = instructions()
    bases = [arg for op, arg in steps if op == "FROM"]
    assert bases and all(b.split()[0] == "python:3.11-slim" for b in bases)
    assert pyproject()["project"]["requires-python"] == ">=3.11"
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert all(op != "RUN" for op, _ in steps[last_user:])  # nothing installed as that user after


def test_the_install_line_takes_the_wheel_with_an_extra_pyproject_declares() -> None:
    installs = [arg for op, arg in instructions() if op == "RUN" and "pip install" in arg]
    assert len(installs) == 1
    extras = re.findall(r"truth_forge-\*\.whl\)?\[([a-z,-]+)\]", installs[0])
    assert extras == ["bigquery"]
    declared = pyproject()["project"]["optional-dependencies"]
    assert all(name in declared for name in extras[0].split(","))
    constraints = re.search(r"-c (\S+)", installs[0])
    assert constraints is not None  # installed with the pins the tests ran
    assert (REPO / "requirements" / "constraints.txt").is_file()


def test_the_entry_point_is_the_console_script_and_the_default_command_exists() -> None:
    steps = dict(instructions())
    entry, command = json.loads(steps["ENTRYPOINT"]), json.loads(steps["CMD"])
    assert entry == ["truth-forge"] and entry[0] in pyproject()["project"]["scripts"]
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert command[0] in commands


def test_everything_the_build_copies_is_in_the_build_context() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def sent(path: str) -> bool:
        keep = True
        for pattern in patterns:  # later lines win, as docker reads them
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, bare) or path.startswith(bare + "/"):
                keep = negated
        return keep

    copies = [arg.split()[:-1] for op, arg in instructions() if op == "COPY" and "--from" not in arg]
    sources = [source for args in copies for source in args]
    assert "truth_forge" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert sent(source), f"{source} is left out by .dockerignore"
    assert not sent("tests/conftest.py") and not sent(".venv/bin/python")
