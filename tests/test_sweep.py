"""``vpmu sweep``: the grid (flags and file), its validation, the verdict table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.cli import main
from vpmu.designs import get_design

SMALL = ["--exits", "0,1", "--nmis", "0"]
V1_FIXED = (
    "grid point intel-default (pmu_version = 1) [machine]: num_fixed = 1 is not allowed; allowed: 0 "
    "(PMU v1 has no fixed counters, F-1.1.1)"
)


def sweep_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["sweep", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_table_has_a_row_per_point_and_a_column_per_design(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", "--design", "upstream", "--design", "no-clear", *SMALL, "--jobs", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # no-clear is violated
    assert lines[0].split() == ["world", "vendor", "pmu", "ack", "gp", "exits", "nmis", "perf_ops", "upstream",
                                "no-clear"]  # fmt: skip
    rows = [ln.split() for ln in lines[1:5]]
    assert [(r[0], r[5]) for r in rows] == [("intel-default", "0"), ("intel-default", "1"), ("amd-default", "0"),
                                            ("amd-default", "1")]  # fmt: skip
    assert all(r[8] == "holds" and "violated" in r for r in rows)
    assert lines[5] == "4 grid points x 2 design(s) = 8 runs on 1 local process"


def test_each_cell_is_the_check_of_that_world(capsys: pytest.CaptureFixture[str]) -> None:
    """A point's verdict and counts are those of ``vpmu check`` on the world the point describes."""
    _, doc = sweep_json(capsys, "--vendor", "amd", "--exits", "1", "--nmis", "0", "--ack", "early")
    (point,) = doc["points"]
    assert (point["vendor"], point["exits"], point["nmis"], point["ack"]) == ("amd", 1, 0, "early")
    base = resolve_world("amd-default")
    from dataclasses import replace

    w = replace(base, bounds=replace(base.bounds, exits=1, nmis=0), guest=replace(base.guest, ack="early"))
    r = check(System(get_design("upstream"), w))
    (res,) = point["results"]
    assert (res["verdict"], res["states"], res["transitions"], res["depth"]) == (
        r.verdict,
        r.stats.states,
        r.stats.transitions,
        r.stats.depth,
    )


def test_local_processes_give_the_same_json_as_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    def strip(doc: dict[str, Any]) -> Any:
        return [[{k: v for k, v in r.items() if k != "seconds"} for r in p["results"]] for p in doc["points"]]

    one = sweep_json(capsys, *SMALL, "--jobs", "1")
    two = sweep_json(capsys, *SMALL, "--jobs", "2")
    assert one[0] == two[0] and strip(one[1]) == strip(two[1])


def test_pmu_versions_apply_to_their_vendor(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = sweep_json(capsys, "--pmu-version", "4,perfmonv2,5", "--exits", "0", "--nmis", "0")
    assert [(p["vendor"], p["pmu_version"]) for p in doc["points"]] == [
        ("intel", 4),
        ("intel", 5),
        ("amd", "perfmonv2"),
    ]


def test_a_grid_file_and_flags_that_replace_its_axes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'designs = ["upstream", "perf-stays-disabled"]\nmax_states = 100000\n'
        '[grid]\nvendor = ["intel"]\nexits = [0, 1]\nnmis = [0]\ncounters = [1, 2]\n',
        encoding="utf-8",
    )
    code, doc = sweep_json(capsys, "--grid", str(grid))
    assert doc["designs"] == ["upstream", "perf-stays-disabled"] and doc["max_states"] == 100000
    # Axes vary in table order, the last fastest: counters, then exits.
    assert [(p["counters"], p["exits"]) for p in doc["points"]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    code, doc = sweep_json(capsys, "--grid", str(grid), "--exits", "1", "--counters", "1")
    assert [(p["exits"], p["counters"]) for p in doc["points"]] == [(1, 1)]
    assert code == 0 and all(r["verdict"] == "holds" for r in doc["points"][0]["results"])


@pytest.mark.parametrize(
    ("argv", "grid", "message"),
    [
        (["--exits", "0,x"], None, "--exits: exits = 'x' is not allowed; allowed: an integer from 0 to 16"),
        (["--nmis", "17"], None, "--nmis: nmis = 17 is not allowed; allowed: an integer from 0 to 16"),
        (["--ack", "never"], None, "--ack: ack = 'never' is not allowed; allowed: early, mid, late"),
        (["--vendor", "arm"], None, "--vendor: vendor = 'arm' is not allowed; allowed: intel, amd"),
        (["--pmu-version", "7"], None, "pmu_version = 7 is not allowed; allowed: 1-6 (Intel) or legacy"),
        (["--vendor", "intel", "--pmu-version", "perfmonv2"], None, "no value for the intel world 'intel-default'"),
        (["--vendor", "intel", "--pmu-version", "1"], None, V1_FIXED),
        (["--design", "nonesuch"], None, "nonesuch"),
        (["--max-states", "0"], None, "--max-states = 0 is not allowed"),
        ([], "[grid]\nspeed = [1]\n", "unknown axis 'speed'; allowed: vendor, pmu_version, ack, counters"),
        ([], "colour = 1\n", "unknown key 'colour'; allowed: designs, worlds, max_states, fingerprint, grid"),
        ([], "[grid]\nexits = []\n", "exits has no values; give at least one"),
        ([], "max_states = -3\n", "max_states = -3 is not allowed; allowed: an integer >= 1"),
        ([], "[grid]\npmu_version = [true]\n", "pmu_version = True is not allowed; allowed: 1-6 (Intel)"),
    ],
)
def test_bad_grids_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], grid: str | None, message: str
) -> None:
    if grid is not None:
        f = tmp_path / "g.toml"
        f.write_text(grid, encoding="utf-8")
        argv = [*argv, "--grid", str(f)]
    assert main(["sweep", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_the_example_grid_file_is_the_readme_grid() -> None:
    """docs/examples/sweep-grid.toml describes the README's sweep: 8 points, two designs."""
    from vpmu.check.sweep import load_grid, points

    grid = load_grid(str(Path(__file__).parent.parent / "docs" / "examples" / "sweep-grid.toml"))
    assert grid.designs == ("upstream", "perf-stays-disabled")
    pts = points(grid)
    assert [(p.values["vendor"], p.values["ack"], p.values["nmis"]) for p in pts][:4] == [
        ("intel", "early", 1),
        ("intel", "early", 2),
        ("intel", "late", 1),
        ("intel", "late", 2),
    ]
    assert len(pts) == 8
