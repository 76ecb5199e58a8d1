"""The README's code blocks stay true: every fenced block is extracted and checked by its language.

- ```toml: parsed by `tomllib` (a repeated key fails) and loaded through `load_settings`;
- ```python: parsed by `ast`; the gRPC example must run its `main()` and does, against a live
  gateway;
- ```bash: every `make` target named exists in the Makefile, every script and repository folder
  named exists, a TypeScript package tarball has the name `npm pack` gives it, a tool run with
  `npx` is one the block installs.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from tunegate.server.cli import _parser, load_settings

from tests.conftest import Gateway

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block in `text`, in order."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if language is None:
            if fence:
                language, lines = fence.group(1), []
        elif line.strip() == "```":
            blocks.append((language, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(line)
    assert language is None, "README.md has an unclosed code block"
    return blocks


def _blocks(language: str) -> list[str]:
    found = [body for lang, body in fenced_blocks(README.read_text(encoding="utf-8")) if lang == language]
    assert found, f"README.md has no {language} block"
    return found


def test_fence_extraction_sees_every_block() -> None:
    text = "x\n```toml\na = 1\n```\n```\nplain\n```\n```python\nprint(1)\n```\n"
    assert fenced_blocks(text) == [("toml", "a = 1\n"), ("", "plain\n"), ("python", "print(1)\n")]


@pytest.mark.parametrize("body", _blocks("toml"))
def test_toml_blocks_load_through_the_config_loader(body: str, tmp_path: Path) -> None:
    tomllib.loads(body)  # a repeated key raises here
    path = tmp_path / "tunegate.toml"
    path.write_text(body, encoding="utf-8")
    args = argparse.Namespace(config=str(path), data_dir=None, grpc_port=None, http_port=None)
    settings = load_settings(args, env={})
    assert settings.server.port == 50051
    assert settings.edge.port == 8787


def test_a_repeated_toml_key_is_caught() -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads("[edge]\nport = 1\nport = 2\n")


@pytest.mark.parametrize("body", _blocks("python"))
def test_python_blocks_parse(body: str) -> None:
    ast.parse(body)


def _grpc_example() -> str:
    (example,) = [body for body in _blocks("python") if "grpc.aio.insecure_channel" in body]
    return example


def test_the_grpc_example_runs_its_main() -> None:
    calls = [
        node.value
        for node in ast.parse(_grpc_example()).body
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    ]
    assert any("main()" in ast.unparse(call) for call in calls), "main() is defined but never run"


def test_the_grpc_example_lists_files_and_reads_an_error_on_a_live_gateway(gateway: Gateway) -> None:
    source = _grpc_example().replace("127.0.0.1:50051", gateway.grpc_target)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
    first, error = out.getvalue().strip().splitlines()
    assert first.startswith("[")
    assert error.startswith("INVALID_ARGUMENT INVALID_VALUE limit "), error


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.MULTILINE))


def _ts_package_tarball() -> str:
    """The file `npm pack` writes in clients/typescript."""
    package = json.loads((ROOT / "clients" / "typescript" / "package.json").read_text(encoding="utf-8"))
    return f"{package['name'].lstrip('@').replace('/', '-')}-{package['version']}.tgz"


@pytest.mark.parametrize("body", _blocks("bash"))
def test_bash_blocks_name_what_exists(body: str) -> None:
    targets = _make_targets()
    commands = body.replace("\\\n", " ").replace("&&", "\n").splitlines()
    installed = {  # what the block's `npm install` lines install, without versions
        word.rsplit("@", 1)[0] if word.rfind("@") > 0 else word
        for line in commands
        if line.split()[:2] == ["npm", "install"]
        for word in shlex.split(line)[2:]
        if not word.startswith("-")
    }
    for line in commands:
        words = shlex.split(line.split("#", 1)[0])
        if not words:
            continue
        if words[0] == "cd":
            if not words[1].startswith(("~", "/")):  # a folder of the repository; else the reader's
                assert (ROOT / words[1]).is_dir(), f"README changes to {words[1]}, which does not exist"
        elif words[0] == "npm":
            assert words[1] in ("ci", "pack", "install", "test"), f"README runs npm {words[1]}"
            for tarball in (w for w in words if w.endswith(".tgz")):
                assert Path(tarball).name == _ts_package_tarball(), f"README installs {tarball}"
        elif words[0] == "npx":
            assert words[1] in installed, f"README runs npx {words[1]}, which its block does not install"
        elif words[0] == "make":
            for target in words[1:]:
                assert target in targets, f"README runs `make {target}`, which the Makefile lacks"
        elif words[0] in ("bash", ".venv/bin/python"):
            assert (ROOT / words[1]).is_file(), f"README runs {words[1]}, which does not exist"
        elif words[0] == "tunegate":
            _parser().parse_args(words[1:])  # exits (SystemExit) on a command the CLI lacks
        else:
            assert words[0] in ("curl",), f"README's bash block runs an unchecked command: {line}"


def test_inline_commands_name_scripts_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    for script in re.findall(r"`(?:bash |\.venv/bin/python )?(bench/\w+\.(?:py|sh))", text):
        assert (ROOT / script).is_file(), script
    for target in re.findall(r"`make (\w+)`", text):
        assert target in _make_targets(), target


def test_make_run_says_what_it_does_before_installing() -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    install = next(i for i, line in enumerate(dry) if "pip install" in line)
    assert any(line.startswith("echo ") for line in dry[:install]), dry
    start = next(i for i, line in enumerate(dry) if "tunegate run" in line)
    assert any(line.startswith("echo ") for line in dry[install:start]), dry
