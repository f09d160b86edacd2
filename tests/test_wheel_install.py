"""What a data engineer does first: build the wheel, install it into a fresh venv without extras,
and run it. `--help`, `init`, `sample-data`, `setup` and a `sync` against the sandbox, from the
installed console script in a folder outside the repository, with an environment that names no
source tree: a missing package file, dependency or entry point fails here, not on their machine.

Slow (a venv and its dependencies from the package index, cached by pip after the first time);
part of `make test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT = 900  # seconds: the first install downloads every dependency


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def bare_env(**values: str) -> dict[str, str]:
    """The machine's environment without any truth-forge, Twenty or Google setting, or a PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWENTY", "TRUTH_FORGE", "GOOGLE", "GCP", "PYTHON", "VIRTUAL_ENV"))}
    env.update(COLUMNS="200", **values)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this tree and its dependencies, no extras."""
    where = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the Dockerfile's build stage gets, so the build leaves nothing in the
    # checkout (setuptools writes build/ beside the sources) and that context is shown to be enough.
    source = where / "source"
    shutil.copytree(REPO / "truth_forge", source / "truth_forge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    built = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(where / "dist")],
                cwd=where, timeout=INSTALL_TIMEOUT)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (where / "dist").glob("truth_forge-*.whl")
    venv = where / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=where)
    assert made.returncode == 0, made.stderr
    done = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
                str(REPO / "requirements" / "constraints.txt"), str(wheel)], cwd=where, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


@pytest.mark.slow
def test_the_wheel_installs_without_extras_and_its_script_runs(installed: Path, tmp_path: Path) -> None:
    python, script = installed / "bin" / "python", installed / "bin" / "truth-forge"
    probe = ("import importlib.util, truth_forge; print(truth_forge.__file__)\n"
             "try:\n    import google.cloud.bigquery\nexcept ImportError:\n    print('True')\nelse:\n    print('False')\n"
             "print(importlib.util.find_spec('pyarrow') is None)")
    where = run([str(python), "-c", probe], cwd=tmp_path, env=bare_env())
    assert where.returncode == 0, where.stderr
    package_file, no_bigquery, no_pyarrow = where.stdout.split()
    assert Path(package_file).is_relative_to(installed) and no_bigquery == "True"  # the installed copy, no extras
    assert no_pyarrow == "True"  # 170 MB that DuckDB's batches no longer need (warehouse/duckdb.py)
    assert (Path(package_file).parent / "py.typed").is_file()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script.name in scripts

    shown = run([str(script), "--help"], cwd=tmp_path, env=bare_env())
    assert shown.returncode == 0 and "Usage: truth-forge" in shown.stdout and "sync" in shown.stdout


@pytest.mark.slow
def test_the_installed_script_inits_and_syncs_against_the_sandbox(installed: Path, tmp_path: Path,
                                                                   sandbox: Any) -> None:
    script = str(installed / "bin" / "truth-forge")
    env = bare_env(TWENTY_BASE_URL=sandbox.base_url, TWENTY_API_KEY=sandbox.api_key,
                   TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'contacts.duckdb'}",
                   TRUTH_FORGE_TWENTY_REQUESTS_PER_MINUTE="100000")
    for step in (["init"], ["sample-data", "--contacts", "25", "--businesses", "4"], ["setup"]):
        done = run([script, *step], cwd=tmp_path, env=env)
        assert done.returncode == 0, (step, done.stdout, done.stderr)

    synced = run([script, "sync", "--json"], cwd=tmp_path, env=env)

    assert synced.returncode == 0, synced.stderr
    result = json.loads(synced.stdout)
    assert result["status"] == "succeeded"
    assert result["counts"]["push_person"]["upserted"] == 25 and result["counts"]["push_company"]["upserted"] == 4
    status = run([script, "status", "--json"], cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
