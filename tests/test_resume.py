"""Checkpoint and resume (``vpmu check --checkpoint FILE`` / ``--resume FILE``, issue 15).

A search interrupted (Ctrl-C, the state cap) and resumed from its checkpoint ends with
the result of an uninterrupted run: verdict, counts, counterexample. A checkpoint made
for another design, world, mode or vpmu version is refused with a one-line error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import vpmu
from vpmu.check.explore import INCOMPLETE, Result, Stats, check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.cli import main
from vpmu.designs import get_design
from vpmu.errors import VpmuError
from vpmu.scenarios import load_catalog


def _system(design: str = "upstream", world: str = "intel-default") -> System:
    return System(get_design(design), resolve_world(world))


def _scenario_system(sid: str) -> System:
    scn = load_catalog().by_id[sid]
    assert scn.world is not None
    return System(get_design(scn.design), scn.world, scn.properties or None)


def _key(r: Result) -> tuple[Any, ...]:
    st = r.stats
    return (r.verdict, r.prop, r.message, st.states, st.transitions, st.depth, r.moves, r.collision_probability)


def _interrupt_after(calls: int) -> Any:
    """A progress callback that presses Ctrl-C on its ``calls``-th call."""
    n = [0]

    def progress(stats: Stats, width: int) -> None:
        n[0] += 1
        if n[0] == calls:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("fingerprint", [False, True])
@pytest.mark.parametrize(("make", "calls"), [(lambda: _system(), 3000), (lambda: _scenario_system("F1-fix"), 9000)])
def test_interrupt_twice_and_resume_gives_the_uninterrupted_result(
    tmp_path: Path, fingerprint: bool, make: Any, calls: int
) -> None:
    want = check(make(), fingerprint=fingerprint)
    ckpt = str(tmp_path / "run.ckpt")
    r1 = check(make(), fingerprint=fingerprint, checkpoint=ckpt, progress=_interrupt_after(calls), progress_every=0)
    assert r1.verdict == INCOMPLETE and r1.reason.startswith("interrupted; checkpoint saved")
    assert 1 < r1.stats.states < want.stats.states
    prog = _interrupt_after(calls)
    r2 = check(make(), fingerprint=fingerprint, checkpoint=ckpt, resume=ckpt, progress=prog, progress_every=0)
    assert r2.verdict == INCOMPLETE and r1.stats.states < r2.stats.states < want.stats.states
    got = check(make(), fingerprint=fingerprint, checkpoint=ckpt, resume=ckpt)
    assert _key(got) == _key(want)
    assert [r.label for r in got.records] == [r.label for r in want.records]


def test_periodic_checkpoint_resumes_to_the_same_result(tmp_path: Path) -> None:
    """A checkpoint saved after every layer (the last save of a complete run) resumes to its result."""
    ckpt = str(tmp_path / "run.ckpt")
    want = check(_scenario_system("S8"), fingerprint=True, checkpoint=ckpt, checkpoint_every=1e-9)
    assert Path(ckpt).exists() and not Path(ckpt + ".tmp").exists()
    assert _key(check(_scenario_system("S8"), fingerprint=True, resume=ckpt)) == _key(want)


def test_state_cap_then_resume(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "run.ckpt")
    want = check(_system())
    capped = check(_system(), max_states=5000, checkpoint=ckpt)
    assert capped.verdict == INCOMPLETE and "state cap" in capped.reason
    assert _key(check(_system(), resume=ckpt)) == _key(want)


@pytest.fixture
def saved(tmp_path: Path) -> str:
    ckpt = str(tmp_path / "run.ckpt")
    check(_system(), max_states=2000, checkpoint=ckpt, fingerprint=True)
    return ckpt


@pytest.mark.parametrize(
    ("system", "fingerprint", "error"),
    [
        (lambda: _system("perf-stays-disabled"), True, "the checkpoint's design is 'upstream'; this run's is"),
        (lambda: _system(world="amd-default"), True, "the checkpoint's world is 'intel-default'; this run's is"),
        (lambda: _system(), False, "the checkpoint's mode is 'fingerprint'; this run's is 'exact'"),
        (lambda: System(get_design("upstream"), resolve_world("intel-default"), ("no-warn",)), True, "changed since"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(saved: str, system: Any, fingerprint: bool, error: str) -> None:
    with pytest.raises(VpmuError, match=error):
        check(system(), fingerprint=fingerprint, resume=saved)


def test_a_checkpoint_of_another_version_is_refused(saved: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vpmu, "__version__", "0.0.0-other")
    with pytest.raises(VpmuError, match=re.escape("vpmu version is '0.1.0'; this run's is '0.0.0-other'")):
        check(_system(), fingerprint=True, resume=saved)


def test_damaged_checkpoints_are_refused(saved: str, tmp_path: Path) -> None:
    data = Path(saved).read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(VpmuError, match="truncated"):
        check(_system(), fingerprint=True, resume=str(cut))
    other = tmp_path / "other.ckpt"
    other.write_text("name = 'a world'\n")
    with pytest.raises(VpmuError, match="not a vpmu checkpoint file"):
        check(_system(), fingerprint=True, resume=str(other))
    with pytest.raises(VpmuError, match="cannot read it"):
        check(_system(), fingerprint=True, resume=str(tmp_path / "missing.ckpt"))
    with pytest.raises(VpmuError, match="cannot write it"):
        check(_system(), checkpoint=str(tmp_path / "no" / "such" / "dir.ckpt"))


def test_cli_checkpoint_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(tmp_path / "run.ckpt")
    args = ["check", "--vendor", "intel", "--no-trace", "--checkpoint", ckpt]
    assert main([*args, "--max-states", "3000"]) == 3
    assert "checkpoint saved to" in capsys.readouterr().out
    assert main([*args, "--resume", ckpt]) == 1
    assert "16827" in capsys.readouterr().out
    assert main(["check", "--resume", ckpt]) == 2
    assert "--resume checks one world; 2 worlds were given" in capsys.readouterr().err
    assert main(["check", "--vendor", "amd", "--resume", ckpt]) == 2
    assert "the checkpoint's world is 'intel-default'" in capsys.readouterr().err
