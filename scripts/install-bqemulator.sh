#!/usr/bin/env bash
# Builds .venv-bqemu: the BigQuery emulator (bqemulator) that the warehouse contract tests drive
# through the official google-cloud-bigquery client. Idempotent: re-running only repairs what is missing.
#
# Why a separate venv: bqemulator pins sqlglot<30.12 and needs DuckDB 1.5.5, while the project runs
# duckdb 2.0.1 and a newer sqlglot. Why the extension step: bqemulator loads DuckDB's `spatial`
# extension at start-up and would download it from the internet; we install the PyPI-shipped copy
# into a HOME kept inside the venv (.venv-bqemu/home), which the test fixture also uses for the server.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${BQEMU_VENV:-.venv-bqemu}"
REQ="requirements/bqemulator.txt"
EMU_HOME="$VENV/home"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$REQ" -c requirements/bqemulator-constraints.txt

mkdir -p "$EMU_HOME"
# Same HOME as the server will use: DuckDB looks for extensions under $HOME/.duckdb/extensions.
HOME="$(cd "$EMU_HOME" && pwd)" "$VENV/bin/python" - <<'PY'
import duckdb
from duckdb_extensions import import_extension

import_extension("spatial")
con = duckdb.connect()
con.execute("LOAD spatial")  # proves the emulator will start offline
print("bqemulator venv ready: duckdb", duckdb.__version__, "with spatial")
PY
