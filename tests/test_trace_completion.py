"""`vpmu completion bash|zsh` (generated from the argument parser) and `--help` of the new commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vpmu.check.world import builtin_worlds
from vpmu.cli import build_parser, main
from vpmu.designs import DESIGNS


def script(capsys: pytest.CaptureFixture[str], shell: str) -> str:
    assert main(["completion", shell]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def bash_complete(path: Path, tmp_path: Path, *words: str) -> list[str]:
    """COMPREPLY for a command line whose last word is being completed."""
    quoted = " ".join(f"'{w}'" for w in words)
    prog = f"""
source {path}
COMP_WORDS=({quoted}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=()
_vpmu
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    p = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, cwd=tmp_path, check=True, timeout=30)
    return [line for line in p.stdout.splitlines() if line]


@pytest.fixture
def bash_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    if shutil.which("bash") is None:  # pragma: no cover - bash is everywhere the tests run
        pytest.skip("no bash")
    f = tmp_path / "vpmu.bash"
    f.write_text(script(capsys, "bash"))
    return f


def test_bash_commands_and_options(bash_script: Path, tmp_path: Path) -> None:
    top = bash_complete(bash_script, tmp_path, "vpmu", "")
    assert {"check", "simulate", "trace", "completion"} <= set(top)
    assert set(top) == set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert bash_complete(bash_script, tmp_path, "vpmu", "trace", "") == ["render", "show", "validate", "itf"]
    assert bash_complete(bash_script, tmp_path, "vpmu", "trace", "render", "--") == [
        "--help",
        "--result",
        "--html",
        "--context",
        "--lane",
        "--debug",
        "--color",
    ]
    assert bash_complete(bash_script, tmp_path, "vpmu", "check", "--vendor", "") == ["intel", "amd"]
    assert bash_complete(bash_script, tmp_path, "vpmu", "completion", "") == ["bash", "zsh", "fish"]
    assert bash_complete(bash_script, tmp_path, "vpmu", "explain", "lvtpc-r") == ["lvtpc-route-consistent"]


def test_bash_values_from_the_catalogs(bash_script: Path, tmp_path: Path) -> None:
    assert bash_complete(bash_script, tmp_path, "vpmu", "check", "--design", "") == list(DESIGNS)
    # an option's value that looks like a command is not taken for one
    assert bash_complete(bash_script, tmp_path, "vpmu", "check", "--design", "show", "--vendor", "a") == ["amd"]
    (tmp_path / "trace.json").write_text("{}")
    worlds = bash_complete(bash_script, tmp_path, "vpmu", "simulate", "--world", "")
    assert set(worlds) == set(builtin_worlds()) | {"trace.json", "vpmu.bash"}  # names and files
    assert bash_complete(bash_script, tmp_path, "vpmu", "trace", "show", "tr") == ["trace.json"]
    assert bash_complete(bash_script, tmp_path, "vpmu", "check", "--html", "tr") == ["trace.json"]


def test_zsh_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = script(capsys, "zsh")
    assert text.startswith("#compdef vpmu\n")
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed: the zsh script was generated but not run")
    f = tmp_path / "_vpmu"
    f.write_text(text)
    subprocess.run([zsh, "-n", str(f)], check=True, timeout=30)
    # Run the dispatch with _arguments stubbed: it must get the specs of the command being completed,
    # with the words shifted so that the command is words[1].
    prog = f"""
compdef() {{ }}
source {f}
_arguments() {{ print -r -- "words[1]=$words[1] CURRENT=$CURRENT"; print -rl -- "$@" }}
words=(vpmu trace render --html out.html --l); CURRENT=6
_vpmu
"""
    p = subprocess.run([zsh, "-f", "-c", prog], capture_output=True, text=True, check=True, timeout=30)
    lines = p.stdout.splitlines()
    assert lines[0] == "words[1]=render CURRENT=4"
    assert "--html[write the HTML page here]:out:_files" in lines
    assert "*--lane[also draw a lane for this state slot (repeatable)]:slot: " in lines
    assert ":file:_files" in lines
    prog = prog.replace("words=(vpmu trace render --html out.html --l); CURRENT=6", "words=(vpmu check --v); CURRENT=3")
    lines = subprocess.run([zsh, "-f", "-c", prog], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0] == "words[1]=check CURRENT=2"
    assert "--vendor[only the default world of this vendor]:vendor:(intel amd)" in lines


@pytest.mark.parametrize(
    "argv",
    [
        ("trace",),
        ("trace", "render"),
        ("trace", "show"),
        ("trace", "validate"),
        ("trace", "itf"),
        ("completion",),
        ("check",),
        ("simulate",),
    ],
)
def test_help_has_examples(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "\nexamples:\n  " in out
    if argv[0] in ("check", "simulate"):
        assert "--html OUT" in out and "--html " in out.split("examples:")[1]
