"""The committed stubs in clients/python are exactly what `make proto` generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "clients" / "python" / "tunegate" / "v1"


def _assert_same(fresh: dict[str, bytes], committed: dict[str, bytes], what: str) -> None:
    """The freshly generated files are the committed ones, byte for byte."""
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated {what}, run `make proto`: {stale}"


def test_regeneration_changes_nothing(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto" / "tunegate" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = ("--python_out", "--mypy_out", "--grpc_python_out", "--mypy_grpc_out")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", "-Ithird_party", f"-I{include}"]
        + [f"{flag}={tmp_path}" for flag in outputs]
        + protos,
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "tunegate" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes() for p in GENERATED.iterdir() if p.name != "__init__.py" and p.is_file()
    }
    _assert_same(fresh, committed, "code")


TS_GENERATED = ROOT / "clients" / "typescript" / "src" / "gen"
BUF = ROOT / "node_modules" / ".bin" / "buf"
PROTOC_GEN_ES = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "protoc-gen-es"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_typescript_regeneration_changes_nothing(tmp_path: Path) -> None:
    """buf.gen.yaml's TypeScript output, generated afresh under `tmp_path`, is what is committed."""
    missing = [str(tool.relative_to(ROOT)) for tool in (BUF, PROTOC_GEN_ES) if not tool.exists()]
    assert not missing, f"{missing} not installed: `make test` (or `make proto`) installs them"
    # `--output` prefixes the template's `out`, so the fresh tree lands under tmp_path.
    subprocess.run(
        [str(BUF), "generate", "--template", "buf.gen.yaml", "--output", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    fresh = _tree(tmp_path / TS_GENERATED.relative_to(ROOT))
    committed = _tree(TS_GENERATED)
    _assert_same(fresh, committed, "TypeScript")
