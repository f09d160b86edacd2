"""dlt's `rest_api` source pulling every person from the sandbox into DuckDB, for comparison with
truth-forge's pull.

dlt is not a dependency of truth-forge: the benchmark makes a throwaway venv under `.bench/`
(reused by later runs, `--fresh-dlt-venv` rebuilds it), pip-installs `dlt[duckdb]` there from the
package registry, and runs the small script below in it. The source is configured as a user of dlt
would for Twenty: cursor pagination on `pageInfo.endCursor` -> `starting_after`, stopping on
`pageInfo.hasNextPage`, 200 records a page (Twenty's maximum), a DuckDB destination.
Its requests are counted by the sandbox's request log, like everyone else's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DLT_VERSION = "1.31.0"

SCRIPT = r'''
import json, sys, time
import dlt
from dlt.sources.rest_api import rest_api_source

base_url, api_key, db_path, pipelines_dir = sys.argv[1:5]
source = rest_api_source({
    "client": {
        "base_url": base_url + "/rest/",
        "auth": {"type": "bearer", "token": api_key},
        "paginator": {"type": "cursor", "cursor_path": "pageInfo.endCursor",
                      "cursor_param": "starting_after", "has_more_path": "pageInfo.hasNextPage"},
    },
    "resources": [{
        "name": "people",
        "primary_key": "id",
        "write_disposition": "merge",
        "endpoint": {"path": "people", "params": {"limit": 200}, "data_selector": "data.people"},
    }],
})
pipeline = dlt.pipeline(pipeline_name="twenty_people", destination=dlt.destinations.duckdb(db_path),
                        dataset_name="twenty", pipelines_dir=pipelines_dir)
started = time.perf_counter()
pipeline.run(source)
seconds = time.perf_counter() - started
with pipeline.sql_client() as client:
    rows = client.execute_sql("SELECT count(*) FROM people")[0][0]
print(json.dumps({"seconds": seconds, "rows": rows, "dlt": dlt.__version__}))
'''


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(root: Path, *, fresh: bool = False, timeout: float = 600.0) -> tuple[Path, float]:
    """The dlt venv's interpreter, and the seconds spent building it (0 when reused)."""
    venv = root / f"dlt-venv-{DLT_VERSION}"
    stamp = venv / ".installed"
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if stamp.exists():
        return venv_python(venv), 0.0
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "-q", f"dlt[duckdb]=={DLT_VERSION}"],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise OSError(f"pip install dlt[duckdb]=={DLT_VERSION} failed: {done.stderr.strip()[-500:]}")
    stamp.write_text(DLT_VERSION + "\n")
    return venv_python(venv), time.perf_counter() - started


def run_dlt_pull(python: Path, base_url: str, api_key: str, *, timeout: float = 900.0) -> dict:
    """Run the pull in the dlt venv; returns {"seconds" (pipeline.run), "wall" (whole process), "rows", "dlt"}."""
    with tempfile.TemporaryDirectory(prefix="tf-dlt-") as tmp:
        script = Path(tmp) / "pull_people.py"
        script.write_text(SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        env.update({
            "RUNTIME__DLTHUB_TELEMETRY": "false",  # no network beyond the loopback sandbox
            "DLT_DATA_DIR": str(Path(tmp) / "dlt-data"),
            "HOME": tmp,
            "RUNTIME__LOG_LEVEL": "WARNING",
        })
        started = time.perf_counter()
        done = subprocess.run([str(python), str(script), base_url, api_key, str(Path(tmp) / "people.duckdb"),
                               str(Path(tmp) / "pipelines")], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=tmp)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"the dlt pull failed ({done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall"] = wall
        return result
