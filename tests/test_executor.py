"""Executors (check/executor.py): the --executor values, and campaigns on local processes
giving the results of the commands' own paths (tests/test_ray.py does the same on Ray)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vpmu.check.executor import LocalExecutor, parse_executor
from vpmu.cli import main
from vpmu.errors import VpmuError


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("local", ("local", None)),
        ("ray", ("ray", None)),
        ("ray://head.example:10001", ("ray", "ray://head.example:10001")),
        ("10.0.0.5:6379", ("ray", "10.0.0.5:6379")),
    ],
)
def test_executor_values(spec: str, parsed: tuple[str, str | None]) -> None:
    assert parse_executor(spec) == parsed


@pytest.mark.parametrize("spec", ["", "Ray", "ray:", "ray://head", "head:0", "head:65536", "spark://x:1"])
def test_other_executor_values_are_refused(spec: str) -> None:
    with pytest.raises(VpmuError, match=f"--executor = {spec!r} is not allowed; allowed: local, ray"):
        parse_executor(spec)


def square(x: int) -> int:
    return x * x


def test_local_processes_return_results_in_order() -> None:
    seen: list[int] = []
    assert LocalExecutor(2).map(square, list(range(12)), seen.append) == [x * x for x in range(12)]
    assert seen == [x * x for x in range(12)]
    # What pickle cannot carry (a lambda) runs in this process, with the same result.
    assert LocalExecutor(2).map(lambda f: f(3), [square, square]) == [9, 9]


def json_of(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) in (0, 1)
    return json.loads(capsys.readouterr().out)


def drop_seconds(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: drop_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [drop_seconds(v) for v in x]
    return x


def test_scenarios_on_local_processes_are_the_sequential_run(capsys: pytest.CaptureFixture[str]) -> None:
    ids = ("S1-seed-amd", "S1-seed-intel", "S2-hostonly", "S3-sched-out")
    one = json_of(capsys, "scenarios", *ids, "--trace")
    two = json_of(capsys, "scenarios", *ids, "--trace", "--jobs", "2")
    # Traces too: a worker returns its result without the System, which is rebuilt to render it.
    assert sum("trace" in s for s in two["scenarios"]) == 4
    assert drop_seconds(two) == drop_seconds(one)


def test_conform_with_an_executor_is_the_default_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("conform", "--case", "intel/kut/check_invalid_rdpmc_gp", "--case", "amd/filter/test_amd_deny_list")
    assert drop_seconds(json_of(capsys, *argv, "--executor", "local", "--jobs", "2")) == drop_seconds(
        json_of(capsys, *argv, "--jobs", "1")
    )
