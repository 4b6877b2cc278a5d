"""MachineConfig: validation, vendor defaults, TOML loading (config.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vpmu.config import MachineConfig
from vpmu.errors import ConfigError, VpmuError, show_value

# (keyword arguments, field named in the error, bad value, text of what is allowed)
INVALID: list[Any] = [
    pytest.param({"vendor": "via"}, "vendor", "via", "allowed: intel, amd", id="vendor"),
    pytest.param({"vendor": "Intel"}, "vendor", "Intel", "allowed: intel, amd", id="vendor-case"),
    # Intel architectural perfmon versions 1..6 (F-1.1).
    pytest.param({"pmu_version": 7}, "pmu_version", 7, "an integer from 1 to 6", id="intel-v7"),
    pytest.param({"pmu_version": -1}, "pmu_version", -1, "an integer from 1 to 6", id="intel-v-1"),
    pytest.param({"pmu_version": "5"}, "pmu_version", "5", "an integer from 1 to 6", id="intel-v-str"),
    pytest.param({"pmu_version": 4.0}, "pmu_version", 4.0, "an integer from 1 to 6", id="intel-v-float"),
    pytest.param({"pmu_version": True}, "pmu_version", True, "an integer from 1 to 6", id="intel-v-bool"),
    pytest.param(
        {"pmu_version": "perfmonv2"},
        "pmu_version",
        "perfmonv2",
        "an integer from 1 to 6",
        id="intel-amd-version",
    ),
    # AMD flavours (F-3.1, F-3.6).
    pytest.param(
        {"vendor": "amd", "pmu_version": 2},
        "pmu_version",
        2,
        "allowed: legacy, perfctrextcore, perfmonv2",
        id="amd-int-version",
    ),
    pytest.param(
        {"vendor": "amd", "pmu_version": "v2"},
        "pmu_version",
        "v2",
        "allowed: legacy, perfctrextcore, perfmonv2",
        id="amd-bad-version",
    ),
    # Counter counts: Intel up to 8 GP (F-1.1.3), AMD 4 legacy / 6 extended (F-3.2).
    pytest.param({"num_gp": 0}, "num_gp", 0, "an integer from 1 to 8", id="intel-gp-0"),
    pytest.param({"num_gp": 9}, "num_gp", 9, "an integer from 1 to 8", id="intel-gp-9"),
    pytest.param({"vendor": "amd", "num_gp": 7}, "num_gp", 7, "an integer from 1 to 6", id="amd-v2-gp-7"),
    pytest.param(
        {"vendor": "amd", "pmu_version": "perfctrextcore", "num_gp": 7},
        "num_gp",
        7,
        "an integer from 1 to 6",
        id="amd-ext-gp-7",
    ),
    pytest.param(
        {"vendor": "amd", "pmu_version": "legacy", "num_gp": 5},
        "num_gp",
        5,
        "an integer from 1 to 4",
        id="amd-legacy-gp-5",
    ),
    pytest.param({"num_fixed": 5}, "num_fixed", 5, "an integer from 0 to 4", id="intel-fixed-5"),
    pytest.param({"num_fixed": -2}, "num_fixed", -2, "an integer from 0 to 4", id="intel-fixed-neg"),
    pytest.param(
        {"pmu_version": 1, "num_fixed": 1},
        "num_fixed",
        1,
        "allowed: 0 (PMU v1 has no fixed counters, F-1.1.1)",
        id="intel-v1-fixed",
    ),
    pytest.param(
        {"vendor": "amd", "num_fixed": 1},
        "num_fixed",
        1,
        "allowed: 0 (AMD has no fixed counters)",
        id="amd-fixed",
    ),
    # Widths.
    pytest.param({"gp_width": 1}, "gp_width", 1, "an integer from 2 to 48", id="gp-width-1"),
    pytest.param({"gp_width": 49}, "gp_width", 49, "an integer from 2 to 48", id="gp-width-49"),
    pytest.param({"gp_width": "48"}, "gp_width", "48", "an integer from 2 to 48", id="gp-width-str"),
    pytest.param({"gp_width": True}, "gp_width", True, "an integer from 2 to 48", id="gp-width-bool"),
    pytest.param({"fixed_width": 1}, "fixed_width", 1, "an integer from 2 to 48", id="fx-width-1"),
    pytest.param({"fixed_width": 64}, "fixed_width", 64, "an integer from 2 to 48", id="fx-width-64"),
    # Booleans.
    pytest.param({"full_width_writes": 1}, "full_width_writes", 1, "allowed: true or false", id="fw-int"),
    pytest.param(
        {"vmx_save_global_ctrl": "yes"},
        "vmx_save_global_ctrl",
        "yes",
        "allowed: true or false",
        id="vmx-save-str",
    ),
    pytest.param(
        {"status_set_raises_pmi": 0},
        "status_set_raises_pmi",
        0,
        "allowed: true or false",
        id="status-set-int",
    ),
    # Choices and open points (x86-pmu-hardware.md §8).
    pytest.param({"host_ack": "never"}, "host_ack", "never", "allowed: early, mid, late", id="ack"),
    pytest.param({"masked_pmi": "queue"}, "masked_pmi", "queue", "allowed: drop, latch", id="masked-pmi"),
    pytest.param({"pmi_skid": -1}, "pmi_skid", -1, "an integer from 0 to 16", id="skid-neg"),
    pytest.param({"pmi_skid": 17}, "pmi_skid", 17, "an integer from 0 to 16", id="skid-17"),
    pytest.param(
        {"transition_cycles": 17},
        "transition_cycles",
        17,
        "an integer from 0 to 16",
        id="transition-17",
    ),
    pytest.param(
        {"transition_cycles": -1},
        "transition_cycles",
        -1,
        "an integer from 0 to 16",
        id="transition-neg",
    ),
    pytest.param(
        {"fixed_high_bits": "ignore"},
        "fixed_high_bits",
        "ignore",
        "allowed: gp, truncate",
        id="fixed-high-bits",
    ),
    pytest.param({"svme_off_filter": "bios"}, "svme_off_filter", "bios", "allowed: linux, apm", id="svme-off"),
    pytest.param({"rdpmc_fast": "ignore"}, "rdpmc_fast", "ignore", "allowed: gp, low32", id="rdpmc-fast"),
    pytest.param(
        {"vendor": "amd", "status_set_raises_pmi": True},
        "status_set_raises_pmi",
        True,
        "allowed: false on AMD (StatusSet has no side effects, F-3.6.5)",
        id="amd-status-set-pmi",
    ),
]


@pytest.mark.parametrize(("kwargs", "field", "value", "allowed"), INVALID)
def test_invalid_value_is_rejected_with_field_value_and_allowed(
    kwargs: dict[str, Any], field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        MachineConfig(**kwargs)
    e = info.value
    msg = str(e)
    assert e.field == field
    assert e.value == value and type(e.value) is type(value)
    assert msg.startswith(f"{field} = {show_value(value)} is not allowed; ")
    assert allowed in msg
    assert "\n" not in msg
    assert isinstance(e, VpmuError)


@pytest.mark.parametrize(("kwargs", "field", "value", "allowed"), INVALID)
def test_invalid_value_from_mapping_names_the_source(
    kwargs: dict[str, Any], field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        MachineConfig.from_mapping(kwargs, where="world.toml")
    assert str(info.value).startswith(f"world.toml: {field} = {show_value(value)} is not allowed; ")
    assert allowed in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "version", "num_fixed"),
    [
        pytest.param({}, 5, 1, id="default-is-intel-v5-1-fixed"),
        pytest.param({"vendor": "intel"}, 5, 1, id="intel-v5-1-fixed"),
        pytest.param({"vendor": "amd"}, "perfmonv2", 0, id="amd-perfmonv2-0-fixed"),
        pytest.param({"vendor": "intel", "pmu_version": 0}, 5, 1, id="intel-version-0-is-default"),
        pytest.param({"vendor": "intel", "pmu_version": 2}, 2, 1, id="intel-v2-1-fixed"),
        # v1 has no fixed counters (F-1.1.1): the default follows.
        pytest.param({"vendor": "intel", "pmu_version": 1}, 1, 0, id="intel-v1-0-fixed"),
        pytest.param({"vendor": "amd", "pmu_version": "legacy"}, "legacy", 0, id="amd-legacy-0-fixed"),
        pytest.param({"vendor": "intel", "num_fixed": 3}, 5, 3, id="intel-explicit-fixed"),
    ],
)
def test_vendor_defaults(kwargs: dict[str, Any], version: object, num_fixed: int) -> None:
    c = MachineConfig(**kwargs)
    assert c.pmu_version == version
    assert c.num_fixed == num_fixed


def test_open_point_defaults_follow_the_reference() -> None:
    c = MachineConfig()
    assert (c.num_gp, c.gp_width, c.fixed_width) == (2, 48, 48)
    assert c.full_width_writes and c.vmx_save_global_ctrl
    assert c.host_ack == "late"
    assert c.masked_pmi == "drop"  # F-2.8: KVM drops
    assert c.pmi_skid == 0  # open point 4
    assert c.status_set_raises_pmi is False  # open point 2
    assert c.transition_cycles == 0  # open point 3
    assert c.fixed_high_bits == "gp"  # open point 5
    assert c.svme_off_filter == "linux"  # open point 6
    assert c.rdpmc_fast == "gp"  # open point 7


@pytest.mark.parametrize(
    ("kwargs", "global_regs", "status_set", "streamlined", "mediated"),
    [
        pytest.param({"pmu_version": 1, "num_fixed": 0}, False, False, False, False, id="intel-v1"),
        pytest.param({"pmu_version": 2}, True, False, False, False, id="intel-v2"),
        pytest.param({"pmu_version": 3}, True, False, False, False, id="intel-v3"),
        pytest.param({"pmu_version": 4}, True, True, True, True, id="intel-v4"),
        pytest.param(
            {"pmu_version": 4, "full_width_writes": False},
            True,
            True,
            True,
            False,
            id="intel-v4-no-fw",
        ),
        pytest.param({"pmu_version": 6}, True, True, True, True, id="intel-v6"),
        pytest.param({"vendor": "amd"}, True, True, False, True, id="amd-perfmonv2"),
        pytest.param(
            {"vendor": "amd", "pmu_version": "perfctrextcore"},
            False,
            False,
            False,
            False,
            id="amd-perfctrextcore",
        ),
        pytest.param({"vendor": "amd", "pmu_version": "legacy"}, False, False, False, False, id="amd-legacy"),
    ],
)
def test_derived_facts(
    kwargs: dict[str, Any], global_regs: bool, status_set: bool, streamlined: bool, mediated: bool
) -> None:
    c = MachineConfig(**kwargs)
    assert c.has_global_regs is global_regs
    assert c.has_status_set is status_set
    assert c.streamlined_freeze is streamlined
    assert c.mediated_capable is mediated


def test_frozen_and_round_trips_through_a_mapping() -> None:
    c = MachineConfig(vendor="amd", num_gp=3, gp_width=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.num_gp = 4  # type: ignore[misc]
    assert MachineConfig.from_mapping(c.to_dict()) == c
    assert hash(c) == hash(MachineConfig.from_mapping(c.to_dict()))


# -- TOML ----------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "machine.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_load_machine_table(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        '# a world\n[machine]\nvendor = "intel"\npmu_version = 4\nnum_gp = 1\ngp_width = 3\n'
        'vmx_save_global_ctrl = false\nmasked_pmi = "latch"\n',
    )
    c = MachineConfig.load(p)
    assert c == MachineConfig(
        vendor="intel",
        pmu_version=4,
        num_gp=1,
        gp_width=3,
        vmx_save_global_ctrl=False,
        masked_pmi="latch",
    )


def test_load_top_level_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, 'vendor = "amd"\nnum_gp = 6\nsvme_off_filter = "apm"\n')
    c = MachineConfig.load(str(p))
    assert c == MachineConfig(vendor="amd", num_gp=6, svme_off_filter="apm")
    assert c.pmu_version == "perfmonv2" and c.num_fixed == 0


def test_load_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert MachineConfig.load(_write(tmp_path, "")) == MachineConfig()


def test_load_unknown_key(tmp_path: Path) -> None:
    p = _write(tmp_path, '[machine]\nvendor = "intel"\nnum_counters = 4\n')
    with pytest.raises(ConfigError) as info:
        MachineConfig.load(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: num_counters = 4 is not allowed; unknown field; known fields: ")
    assert "num_gp" in msg and "vendor" in msg
    assert "\n" not in msg


def test_load_invalid_value_names_file_field_value_and_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, "[machine]\ngp_width = 64\n")
    with pytest.raises(ConfigError) as info:
        MachineConfig.load(p)
    assert str(info.value) == f"{p}: gp_width = 64 is not allowed; allowed: an integer from 2 to 48"


def test_load_machine_not_a_table(tmp_path: Path) -> None:
    p = _write(tmp_path, "machine = 3\n")
    with pytest.raises(ConfigError) as info:
        MachineConfig.load(p)
    assert str(info.value) == f"{p}: machine = 3 is not allowed; must be a TOML table"


def test_load_malformed_toml(tmp_path: Path) -> None:
    p = _write(tmp_path, "[machine]\nvendor = \n")
    with pytest.raises(VpmuError) as info:
        MachineConfig.load(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: malformed TOML: ")
    assert "line 2" in msg
    assert "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_load_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(VpmuError) as info:
        MachineConfig.load(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: cannot read: ")
    assert "No such file" in msg
    assert "\n" not in msg
    assert not isinstance(info.value, ConfigError)


def test_load_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(VpmuError) as info:
        MachineConfig.load(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")
    assert "\n" not in str(info.value)
