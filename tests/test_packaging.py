"""What installing tunegate puts on a user's path, and what the tests may read."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_only_the_tunegate_namespace(tmp_path: Path) -> None:
    """Everything importable lives under `tunegate.` (a user's own `server.py` or `edge/` must not
    shadow the gateway), and `tunegate` itself is a namespace package spread over three folders."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tunegate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"tunegate"}
    assert "tunegate/__init__.py" not in names
    for part in ("server", "edge", "v1", "openai_json"):
        assert f"tunegate/{part}/__init__.py" in names
    # The web console's files ship built: every one in the source folder is in the wheel.
    console = sorted(p.name for p in (ROOT / "edge/tunegate/edge/console").iterdir())
    assert "index.html" in console
    assert [n for n in console if f"tunegate/edge/console/{n}" not in names] == []
    assert any(name.startswith("tunegate/server/store/migrations/versions/") for name in names)
    assert "tunegate/edge/openapi.json" in names  # served at GET /openapi.json


def test_tests_read_nothing_outside_the_repository() -> None:
    """A clone in any folder runs the tests: oracles are copied into `tests/oracles/`."""
    outside = re.compile(r"\.\./shared|['\"]/work/|/work/shared")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path != Path(__file__).resolve() and outside.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
