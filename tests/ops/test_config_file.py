"""`truth-forge.toml` beside `.env`: settings by their lower-case names, overridden by the environment;
a file that does not parse or names no setting stops the command with one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.conftest import Cli, clean_env


@pytest.fixture
def bare(tmp_path: Path) -> Cli:
    """No setting in the environment at all: only what the config file says."""
    return Cli(clean_env(), tmp_path)


def test_the_config_file_sets_what_the_environment_does_not(bare: Cli, tmp_path: Path) -> None:
    (tmp_path / "truth-forge.toml").write_text('warehouse_url = "duckdb:///from-file.duckdb"\n')
    done = bare("init")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-file.duckdb").exists()

    env_wins = bare("init", TRUTH_FORGE_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'from-env.duckdb'}")
    assert env_wins.returncode == 0, env_wins.stderr
    assert (tmp_path / "from-env.duckdb").exists()


def test_a_config_file_elsewhere_is_named_by_a_variable(bare: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "conf" / "tf.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f'warehouse_url = "duckdb:///{tmp_path / "named.duckdb"}"\n')
    done = bare("init", TRUTH_FORGE_CONFIG_FILE=str(elsewhere))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "named.duckdb").exists()
    assert "not a truth-forge setting" not in done.stderr  # the variable is known

    missing = bare("init", TRUTH_FORGE_CONFIG_FILE=str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: TRUTH_FORGE_CONFIG_FILE={tmp_path / 'nope.toml'}: no such file"]


@pytest.mark.parametrize(("text", "said"), [
    ('warehouse_url = "duckdb:///x.duckdb\n', "is not valid TOML"),
    ('warehous_url = "duckdb:///x.duckdb"\n', "'warehous_url' is not a truth-forge setting (did you mean 'warehouse_url'?)"),
    ('[truth-forge]\nwarehouse_url = "x"\n', "'truth-forge' is not a truth-forge setting"),
    ("twenty_requests_per_minute = \"lots\"\n", "twenty_requests_per_minute in truth-forge.toml='lots'"),
])
def test_a_malformed_config_file_is_one_line_and_exit_2(bare: Cli, tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "truth-forge.toml").write_text(text)
    for command in (("sync",), ("status", "--offline"), ("init",)):
        done = bare(*command)
        assert done.returncode == 2, (command, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and said in line
