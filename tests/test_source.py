"""vpmu source: the C reader, the anchors, drift checks and designs derived from a tree.

The kernel trees here are generated from the model's own anchors (vpmu.source.gen, the same
C ``vpmu diff --c`` prints) and then mutated; tests/data/source/macros.c is written for the tests.
No kernel source is in the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vpmu.cli import main
from vpmu.designs import DESIGNS, UPSTREAM, get_design
from vpmu.errors import VpmuError
from vpmu.source import model
from vpmu.source.anchors import COMPLETE, FUNCTIONS
from vpmu.source.cparse import parse_file, tokens
from vpmu.source.derive import derive
from vpmu.source.gen import diff_c, write_tree
from vpmu.source.match import match_tree

DATA = Path(__file__).parent / "data" / "source"


@pytest.fixture(scope="module")
def upstream_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upstream")
    write_tree(UPSTREAM, root)
    return root


def copy(tree: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "linux"
    shutil.copytree(tree, dst)
    return dst


def apply_patch(root: Path, text: str, tmp_path: Path) -> None:
    """Apply a unified diff with patch(1), or git apply where patch is missing."""
    f = tmp_path / "change.patch"
    f.write_text(text)
    if shutil.which("patch"):
        subprocess.run(["patch", "-p1", "-s", "-i", str(f)], cwd=root, check=True)
    elif shutil.which("git"):
        subprocess.run(["git", "apply", str(f)], cwd=root, check=True)
    else:  # pragma: no cover - every CI image has one of them
        pytest.skip("neither patch nor git is installed")


def edit(root: Path, path: str, old: str, new: str) -> None:
    f = root / path
    text = f.read_text()
    assert old in text, f"{old!r} not in {path}"
    f.write_text(text.replace(old, new, 1))


# --- the C reader ------------------------------------------------------------------------------


def test_macro_forms_parse() -> None:
    cf = parse_file(DATA / "macros.c")
    assert set(cf.functions) == {"demo_inline", "demo_noinstr", "demo_twice", "demo_split_header"}
    texts = [s.text for s in cf.functions["demo_inline"][0].statements]
    assert texts == ["guard(irqsave)();", "this_cpu_write(demo_flag, true);"]
    st = cf.functions["demo_noinstr"][0].statements
    assert [(s.text, s.depth) for s in st] == [
        ("scoped_guard (raw_spinlock_irqsave, &demo_lock)", 0),
        ("demo_count_inc();", 1),
        ("demo_flag_clear();", 1),
        ("demo_after();", 0),
    ]
    split = [(s.text, s.depth) for s in cf.functions["demo_split_header"][0].statements]
    assert split == [
        ("if (demo_gate()) return 0;", 0),
        ("for_each_set_bit(bit, mask, 64)", 0),
        ("demo_bit(bit);", 1),
        ("if (cmd)", 0),
        ("demo_a( cmd);", 1),
        ("else", 0),
        ("demo_b();", 1),
        ("done:", 0),
        ("return ret;", 0),
    ]


def test_macros_around_anchored_functions_do_not_trip_the_check(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    f = root / "arch/x86/events/core.c"
    text = f.read_text()
    text = text.replace(
        "void perf_load_guest_lvtpc(", "#ifdef CONFIG_PERF_GUEST_MEDIATED_PMU\nnoinstr void perf_load_guest_lvtpc("
    )
    text = text.replace("void perf_put_guest_lvtpc(void)", "static __always_inline void perf_put_guest_lvtpc(void)")
    f.write_text(
        "DEFINE_PER_CPU(bool, guest_lvtpc_loaded);\n"
        + text.replace(
            "static int perf_event_nmi_handler",
            'EXPORT_SYMBOL_FOR_MODULES(perf_put_guest_lvtpc, "kvm");\n#endif\nstatic int perf_event_nmi_handler',
        )
    )
    edit(
        root,
        "arch/x86/kvm/x86.c",
        "\tlocal_irq_disable();\n",
        "\tguard(srcu)(&vcpu->kvm->srcu);\n\tscoped_guard (irqsave) {\n\t\tdemo();\n\t}\n\tlocal_irq_disable();\n",
    )
    assert all(r.ok for r in match_tree(root, UPSTREAM))


def test_function_defined_twice_under_ifdef_else() -> None:
    defs = parse_file(DATA / "macros.c").functions["demo_twice"]
    assert [d.condition for d in defs] == ["#ifdef CONFIG_DEMO_FEATURE", "#else of CONFIG_DEMO_FEATURE"]
    # the #ifdef inside the body is read through; the comment is not a statement
    assert [s.text for s in defs[0].statements] == ["demo_write(value);", "demo_trace(value);", "demo_done();"]
    assert [s.text for s in defs[1].statements] == ["demo_stub();"]


def test_tokens_ignore_whitespace_comments_and_line_breaks() -> None:
    assert tokens("wrmsrq( MSR_X,\n\t0 ) /* why */ ;") == tokens("wrmsrq(MSR_X, 0);")
    assert tokens("a->b") == ("a", "->", "b")


# --- the anchors table ---------------------------------------------------------------------------


def test_every_upstream_kernel_step_is_anchored_or_explained() -> None:
    assert model.unanchored_labels(UPSTREAM) == []
    # the check can fail: v5 inserts steps into perf_load_guest_context that no statement stands for
    assert "perf_load_guest_context:arch_load_lvtpc" in model.unanchored_labels(get_design("v5"))


def test_anchor_order_is_upstream_order() -> None:
    """The table lists each function's anchored statements in upstream's step order (a step is where its
    last statement is, as when a tree is matched)."""
    for cf in FUNCTIONS:
        last = {st.step: i for i, st in enumerate(cf.body) if st.step and st.applies(("upstream",))}
        steps = sorted(last, key=lambda k: last[k])
        present = model.present_keys(UPSTREAM, cf)
        for seq in model.key_orders(UPSTREAM, cf):
            assert [k for k in steps if k in seq and k in present] == [k for k in seq if k in present], cf.name


@pytest.mark.parametrize(
    "name",
    [
        "upstream",
        "flag-first",
        "perf-stays-disabled",
        "linux-next",
        "fixed-refilter",
        "put-drains-latch",
        # i13/i14a ablations whose change is anchored C (only/unless forms or deleted statements)
        "no-nmi-swallow",
        "amd-no-nmi-window",
        "amd-no-overflow-wait",
        "no-mediated-exclusion",
        "filter-no-reprogram",
        "no-fastpath-guard",
    ],
)
def test_generated_tree_matches_and_derives_its_design(name: str, tmp_path: Path) -> None:
    design = get_design(name)
    write_tree(design, tmp_path)
    assert all(r.ok for r in match_tree(tmp_path, design))
    assert derive(str(tmp_path)).design.name == name


# --- drift ---------------------------------------------------------------------------------------------


def test_exact_match_exits_0(upstream_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["source", "check", "--kernel", str(upstream_tree), "-v"]) == 0
    out = capsys.readouterr().out
    assert f"match: {len(FUNCTIONS)} functions" in out
    assert "left out  kernel/events/core.c:" in out and "lockdep check" in out


def test_reorder_is_drift(upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(
        root,
        "arch/x86/events/core.c",
        "\tapic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR | masked);\n"
        "\tthis_cpu_write(guest_lvtpc_loaded, true);\n",
        "\tthis_cpu_write(guest_lvtpc_loaded,\n\t\t       true); /* moved */\n"
        "\tapic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR | masked);\n",
    )
    assert main(["source", "check", "--kernel", str(root)]) == 1
    out = capsys.readouterr().out
    assert "reordered perf_load_guest_lvtpc:set_flag" in out
    assert main(["source", "check", "--kernel", str(root), "--design", "flag-first"]) == 0
    d = derive(str(root))
    assert d.design.name == "flag-first" and d.edits == ()


def test_deletion_is_drift_and_derives_an_edit(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/pmu.c", "\tperf_put_guest_lvtpc();\n", "")
    results = {r.cf.name: r for r in match_tree(root, UPSTREAM)}
    put = results["kvm_mediated_pmu_put"]
    assert not put.ok and [a.step for a in put.anchors if a.status == "missing"] == ["put_lvtpc"]
    d = derive(str(root))
    assert d.base.name == "upstream" and [e.describe() for e in d.edits] == ["delete kvm_mediated_pmu_put:put_lvtpc"]
    assert all(r.ok for r in match_tree(root, d.design))


def test_known_design_by_deletion(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/pmu.c", "\twrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0);\n", "")
    assert derive(str(root)).design.name == "no-clear"


def test_unknown_statement_in_complete_function(
    upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy(upstream_tree, tmp_path)
    put = "\tperf_put_guest_context();\n"
    edit(root, "arch/x86/kvm/pmu.c", put, put + "\tdemo_extra(vcpu);\n")
    line = next(
        n + 1 for n, t in enumerate((root / "arch/x86/kvm/pmu.c").read_text().splitlines()) if "demo_extra" in t
    )
    assert main(["source", "check", "--kernel", str(root)]) == 1
    assert f"unknown   arch/x86/kvm/pmu.c:{line}  demo_extra(vcpu);" in capsys.readouterr().out
    assert main(["check", "--kernel", str(root), "--vendor", "intel"]) == 2
    err = capsys.readouterr().err
    assert f"arch/x86/kvm/pmu.c:{line}: kvm_mediated_pmu_put(): statement `demo_extra(vcpu);`" in err
    assert "design file" in err and "Traceback" not in err


def test_partial_function_ignores_other_statements(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/x86.c", "\tlocal_irq_disable();\n", "\tdemo_unmodelled();\n\tlocal_irq_disable();\n")
    assert all(r.ok for r in match_tree(root, UPSTREAM))


def test_absent_function(upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/events/core.c", "void perf_put_guest_lvtpc(void)", "void perf_put_guest_lvtpc_renamed(void)")
    assert main(["source", "check", "--kernel", str(root), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    fn = next(f for f in doc["functions"] if f["function"] == "perf_put_guest_lvtpc")
    assert doc["schema"] == "vpmu.source/1" and doc["verdict"] == "drift" and fn["found"] is False
    assert main(["source", "design", "--kernel", str(root)]) == 2
    assert "perf_put_guest_lvtpc() is absent" in capsys.readouterr().err


def test_double_definition_picks_the_matching_one(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    f = root / "arch/x86/kvm/svm/pmu.c"
    f.write_text(
        "#ifdef CONFIG_DEMO_OFF\nstatic void amd_mediated_pmu_put(struct kvm_vcpu *vcpu)\n{\n}\n#else\n"
        + f.read_text().replace("static void amd_mediated_pmu_put", "#endif\nstatic void amd_mediated_pmu_put", 0)
    )
    text = f.read_text()
    # close the #else after the real definition
    f.write_text(text.rstrip("\n") + "\n#endif /* CONFIG_DEMO_OFF */\n")
    r = next(r for r in match_tree(root, UPSTREAM) if r.cf.name == "amd_mediated_pmu_put")
    assert r.ok and len(r.definitions) == 2 and r.condition == "#else of CONFIG_DEMO_OFF"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: shutil.rmtree(root), "no such directory"),
        (lambda root: (root / "Makefile").write_text("all:\n"), "not a kernel tree"),
        (lambda root: (root / "arch/x86/kvm/svm/svm.c").unlink(), "modelled file arch/x86/kvm/svm/svm.c is missing"),
    ],
)
def test_bad_trees_exit_2(
    upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: object, message: str
) -> None:
    root = copy(upstream_tree, tmp_path)
    setup(root)  # type: ignore[operator]
    assert main(["source", "check", "--kernel", str(root)]) == 2
    assert message in capsys.readouterr().err


# --- linux-next (V9) -----------------------------------------------------------------------------


def test_linux_next_change_is_drift_for_upstream(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/vmx/pmu_intel.c", "= pmu->fixed_ctr_ctrl;", "= pmu->fixed_ctr_ctrl_hw;")
    r = next(r for r in match_tree(root, UPSTREAM) if r.cf.name == "reprogram_fixed_counters")
    assert not r.ok and [h.stmt.text for h in r.foreign] == ["u64 old_fixed_ctr_ctrl = pmu->fixed_ctr_ctrl_hw;"]
    assert derive(str(root)).design.name == "linux-next"


# --- the reverse direction: diff --c -------------------------------------------------------------------


def test_diff_c_applies_and_gives_back_the_design(
    upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "upstream", "perf-stays-disabled", "--c"]) == 0
    out = capsys.readouterr().out
    assert "-\tperf_ctx_enable(&cpuctx->ctx, EVENT_GUEST);\n" in out
    assert out == out.split("\n\n", 1)[0] + "\n\n" + diff_c(UPSTREAM, get_design("perf-stays-disabled"))
    root = copy(upstream_tree, tmp_path)
    apply_patch(root, diff_c(UPSTREAM, get_design("perf-stays-disabled")), tmp_path)
    assert derive(str(root)).design.name == "perf-stays-disabled"


@pytest.mark.parametrize("name", ["perf-stays-disabled", "linux-next", "put-drains-latch", "no-lvtpc-switch"])
def test_diff_c_against_a_tree_is_a_patch_to_it(
    name: str, upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy(upstream_tree, tmp_path)
    # the tree's own layout (a comment, a statement over two lines) survives the patch
    new = "\n\t/* a comment */\n\tperf_load_guest_context(\n\t);\n"
    edit(root, "arch/x86/kvm/pmu.c", "\tperf_load_guest_context();\n", new)
    assert main(["diff", "upstream", name, "--c", "--kernel", str(root)]) == 0
    apply_patch(root, capsys.readouterr().out, tmp_path)
    assert derive(str(root)).design.name == name
    # the tree is now `name`, not upstream: a second patch from upstream is refused
    assert main(["diff", "upstream", name, "--c", "--kernel", str(root)]) == 2
    assert "is not design 'upstream'" in capsys.readouterr().err
    assert main(["diff", "upstream", name, "--kernel", str(root)]) == 2


def test_check_kernel_names_the_derived_design(
    upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy(upstream_tree, tmp_path)
    apply_patch(root, diff_c(UPSTREAM, get_design("flag-first")), tmp_path)
    status = main(["check", "--kernel", str(root), "--vendor", "intel", "--json"])
    cap = capsys.readouterr()
    assert "design from kernel tree" in cap.err and ": flag-first" in cap.err
    assert "swap perf_load_guest_lvtpc:write_lvtpc <-> set_flag" in cap.err
    doc = json.loads(cap.out)
    result = doc["results"][0]
    assert result["design"] == "flag-first" and status == (1 if result["verdict"] == "violated" else 0)
    assert main(["check", "--kernel", str(root), "--design", "upstream"]) == 2


def test_scenarios_and_conform_take_the_tree(
    upstream_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/vmx/pmu_intel.c", "= pmu->fixed_ctr_ctrl;", "= pmu->fixed_ctr_ctrl_hw;")
    # F2 expects upstream's event-filter violation; the linux-next tree no longer has it
    assert main(["scenarios", "F2", "--kernel", str(root), "--json"]) == 1
    cap = capsys.readouterr()
    (row,) = json.loads(cap.out)["scenarios"]
    assert row["design"] == "linux-next" and row["observed"]["property"] != "event-filter"
    edit(root, "arch/x86/kvm/pmu.c", "\tperf_put_guest_lvtpc();\n", "")  # linux-next minus put_lvtpc: no built-in
    assert main(["conform", "--kernel", str(root), "--case", "intel/kut/check_invalid_rdpmc_gp"]) == 2
    assert "conform runs built-in designs only" in capsys.readouterr().err


def test_designs_without_anchored_c_are_said(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "upstream", "v5", "--c"]) == 0
    out = capsys.readouterr().out
    assert "not in the C below: perf_load_guest_context:arch_load_lvtpc" in out
    assert main(["diff", "upstream", "v5", "--c", "--vendor", "amd"]) == 2  # no option is silently ignored
    assert "drop --world/--vendor" in capsys.readouterr().err


def test_complete_functions_list_every_statement_on_the_real_layout() -> None:
    """Every complete function's omitted statements carry a reason; anchored ones a step."""
    for cf in FUNCTIONS:
        for st in cf.body:
            assert bool(st.step) != bool(st.why), (cf.name, st.c)
            if cf.kind != COMPLETE:
                assert st.step, (cf.name, st.c)
    assert set(DESIGNS) >= {"linux-next", "upstream"}


# --- the NMI chain, the AMD handler, the VM's life (i13) and the legacy vPMU (i14b) ------------------


def test_step_deleted_in_two_functions_is_one_edit(upstream_tree: Path, tmp_path: Path) -> None:
    """kvm_destroy_vm stands for a statement of kvm_arch_destroy_vm() and one of perf_release_mediated_pmu();
    the step exists only with the VM lifecycle, so the edit is a pattern that may match nothing elsewhere."""
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/kvm/x86.c", "\tif (kvm->arch.created_mediated_pmu) perf_release_mediated_pmu();\n", "")
    edit(root, "kernel/events/core.c", "\tatomic_dec(&nr_mediated_pmu_vms);\n", "")
    d = derive(str(root))
    assert d.base.name == "upstream" and [e.describe() for e in d.edits] == ["delete vcpu_run:[k]vm_destroy_vm"]


def test_amd_overflow_wait_and_inactive_warn_are_anchored(upstream_tree: Path, tmp_path: Path) -> None:
    root = copy(upstream_tree, tmp_path)
    edit(root, "arch/x86/events/amd/core.c", "\tamd_pmu_check_overflow();\n", "")
    assert derive(str(root)).design.name == "amd-no-overflow-wait"
    edit(root, "arch/x86/events/amd/core.c", "\t\tWARN(new_bits, ...);\n", "")
    r = next(r for r in match_tree(root, get_design("amd-no-overflow-wait")) if r.cf.name == "amd_pmu_v2_handle_irq")
    assert [a.step for a in r.anchors if a.status == "missing"] == ["ack_status"]
    with pytest.raises(VpmuError, match="amd_pmu_v2_handle_irq"):
        derive(str(root))  # the ack is there, its WARN is not: no deletion of a whole step


def test_legacy_designs_are_refused(upstream_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["source", "check", "--kernel", str(upstream_tree), "--design", "legacy"],
        ["diff", "upstream", "legacy-no-fold", "--c"],
    ):
        assert main(argv) == 2
        assert "enable_mediated_pmu" in capsys.readouterr().err
    assert main(["diff", "upstream", "perf-pmu-disabled", "--c"]) == 0
    out = capsys.readouterr().out
    # V18's perf_pmu_disable() has no C in any tree: said, not invented
    assert "not in the C below: perf_load_guest_context:perf_pmu_disable" in out
    assert "-\tperf_ctx_enable(&cpuctx->ctx, EVENT_GUEST);" in out
