"""`vpmu --version` and `vpmu info` (cli.py, commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpmu import __version__
from vpmu.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"vpmu {__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: vpmu" in capsys.readouterr().out


def test_info_default_is_intel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "vendor: intel, PMU version 5"
    assert "GP counters: 2 x 48 bits" in lines
    assert "fixed counters: 1 x 48 bits" in lines
    assert "mediated vPMU capable host: yes" in lines
    feats = next(line for line in lines if line.startswith("features: "))
    for feat in (
        "global ctrl/status",
        "status set",
        "full-width writes",
        "VMX save PERF_GLOBAL_CTRL",
        "host PMI ack: late",
        "freeze: streamlined (v4)",
    ):
        assert feat in feats
    for msr_line in (
        "0x0000038f  IA32_PERF_GLOBAL_CTRL          RW",
        "0x0000038e  IA32_PERF_GLOBAL_STATUS        R",
        "0x00000391  IA32_PERF_GLOBAL_STATUS_SET    W",
        "0x000004c1  IA32_PMC0                      RW",
        "0x00000309  IA32_FIXED_CTR0                RW",
    ):
        assert f"  {msr_line}" in lines
    assert "PerfCntrGlobalCtl" not in out


def test_info_amd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--vendor", "amd"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "vendor: amd, PMU version perfmonv2"
    assert "GP counters: 2 x 48 bits" in lines
    assert not any(line.startswith("fixed counters") for line in lines)
    assert "freeze: PMCF" in out
    assert "mediated vPMU capable host: yes" in lines
    for msr_line in (
        "0xc0000301  PerfCntrGlobalCtl              RW",
        "0xc0000300  PerfCntrGlobalStatus           R",
        "0xc0000302  PerfCntrGlobalStatusClr        W",
        "0xc0010004  K7_PERFCTR0                    RW",
        "0xc0010201  PerfCtr0                       RW",
    ):
        assert f"  {msr_line}" in lines
    assert "IA32_PERF_GLOBAL_CTRL" not in out


def test_info_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "skylake.toml"
    cfg.write_text(
        '[machine]\nvendor = "intel"\npmu_version = 4\nnum_gp = 4\nnum_fixed = 3\n'
        'gp_width = 3\nvmx_save_global_ctrl = false\nmasked_pmi = "latch"\n',
        encoding="utf-8",
    )
    assert main(["info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vendor: intel, PMU version 4\n")
    assert "GP counters: 4 x 3 bits" in out
    assert "fixed counters: 3 x 48 bits" in out
    assert "VMX MSR-store list for PERF_GLOBAL_CTRL" in out
    assert "masked PMI latch" in out
    assert "IA32_FIXED_CTR2" in out and "IA32_FIXED_CTR3" not in out


def test_info_amd_legacy_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k7.toml"
    cfg.write_text('vendor = "amd"\npmu_version = "legacy"\nnum_gp = 4\n', encoding="utf-8")
    assert main(["info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "mediated vPMU capable host: no" in out
    assert "K7_PERFCTR3" in out
    assert "PerfCntrGlobalCtl" not in out and "PerfCtr0 " not in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[machine]\nvendor = \n", "malformed TOML: ", id="malformed"),
        pytest.param(
            "[machine]\nnum_gp = 9\n", "num_gp = 9 is not allowed; allowed: an integer from 1 to 8", id="bad-value"
        ),
        pytest.param(
            "[machine]\ncolour = 'blue'\n",
            'colour = "blue" is not allowed; unknown field; known fields: ',
            id="unknown",
        ),
        pytest.param("machine = 'intel'\n", 'machine = "intel" is not allowed; must be a TOML table', id="not-a-table"),
    ],
)
def test_info_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text, encoding="utf-8")
    assert main(["info", "--config", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"vpmu: error: {cfg}: {message}")
    assert captured.err.count("\n") == 1, "one line"
    assert "Traceback" not in captured.err


def test_info_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["info", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vpmu: error: {missing}: cannot read: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_info_bad_vendor_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["info", "--vendor", "via"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "vpmu: error: " in err and "invalid choice: 'via'" in err
    assert "Traceback" not in err
