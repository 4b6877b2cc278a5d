"""``--executor ray`` gives the local results: campaigns (one run per Ray task) and the search
partitioned over Ray actors, on a local Ray cluster this module starts (2 CPUs).

Ray is an optional extra (``pip install -e '.[ray]'``); without it these tests skip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vpmu.cli import main

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the module; RayExecutor uses it and leaves it running."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Exit status and the JSON document, without the times (the only thing that may differ)."""
    code = main([*argv, "--json"])
    return code, drop_seconds(json.loads(capsys.readouterr().out))


def drop_seconds(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: drop_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [drop_seconds(v) for v in x]
    return x


def test_check_on_ray_tasks_is_the_local_check(capsys: pytest.CaptureFixture[str]) -> None:
    """Both default worlds, each one Ray task: verdicts, counts and the counterexample trace (the
    AMD one stopped by a state cap, to keep the test short)."""
    argv = ("check", "--max-states", "30000")
    local = run_json(capsys, *argv)
    assert local[0] == 1
    assert [r["verdict"] for r in local[1]["results"]] == ["violated", "incomplete"]
    assert run_json(capsys, *argv, "--executor", "ray") == local


@pytest.mark.parametrize("vendor", ["intel", pytest.param("amd", marks=pytest.mark.slow)])
def test_check_partitioned_over_ray_actors_is_the_local_check(capsys: pytest.CaptureFixture[str], vendor: str) -> None:
    """The default world searched by 2 actors, each owning half the states: the same states,
    transitions, depth, verdict and counterexample (Intel: violated in 81 steps; AMD: holds)."""
    local = run_json(capsys, "check", "--vendor", vendor)
    dist = run_json(capsys, "check", "--vendor", vendor, "--executor", "ray", "--partitions", "2")
    assert dist == local
    assert local[1]["results"][0]["verdict"] == ("violated" if vendor == "intel" else "holds")


def test_conform_on_ray_is_the_local_conform(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("conform", "--case", "intel/kut/check_invalid_rdpmc_gp", "--case", "amd/filter/test_amd_deny_list")
    local = run_json(capsys, *argv)
    assert run_json(capsys, *argv, "--executor", "ray") == local
    assert len(local[1]["results"]) > 2


def test_sweep_on_ray_is_the_local_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("sweep", "--design", "upstream", "--design", "no-clear", "--exits", "0,1", "--nmis", "0")
    local = run_json(capsys, *argv, "--jobs", "1")
    assert run_json(capsys, *argv, "--executor", "ray") == local


TWO_COUNTER_WORLD = """
name = "reads-pmc1"
[machine]
vendor = "intel"
num_gp = 2
gp_width = 5
[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0", "rdpmc 1", "hlt"]
[bounds]
exits = 0
nmis = 0
"""


def test_a_user_error_inside_a_ray_task_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A grid point whose guest program faults on its machine (RDPMC 1 with one counter): the
    task's error comes back as that point's error line, no traceback; the other point holds."""
    world = tmp_path / "w.toml"
    world.write_text(TWO_COUNTER_WORLD, encoding="utf-8")
    code = main(["sweep", "--world", str(world), "--counters", "1,2", "--executor", "ray"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "error: upstream on reads-pmc1 (counters = 1): guest instruction" in out
    assert "holds" in out and "Traceback" not in out + err


def test_a_user_error_inside_an_actor_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The guest faults (RDPMC 1 with one counter) during a partitioned search: exit 2 and the
    message of the local check, no traceback."""
    world = tmp_path / "w.toml"
    world.write_text(TWO_COUNTER_WORLD.replace("num_gp = 2", "num_gp = 1"), encoding="utf-8")
    assert main(["check", "--world", str(world)]) == 2
    local = capsys.readouterr().err
    assert main(["check", "--world", str(world), "--executor", "ray", "--partitions", "2"]) == 2
    err = capsys.readouterr().err
    assert err == local and "Traceback" not in err and err.count("\n") == 1
