"""Static check: compile a small Triton kernel for sm_90 without a GPU, read registers and SASS counts, and
compare with expectations."""
from __future__ import annotations

import json
import textwrap

import pytest

from vimbench.kerneltools import static_check as sc
from vimbench.errors import VimbenchError

PROBE = textwrap.dedent('''
    import triton
    import triton.language as tl


    @triton.jit
    def exp2_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        tl.store(y_ptr + offs, tl.exp2(x), mask=mask)
''')


def _probe_specs():
    aligned = sc.KernelSpec("probe/aligned", "vimbench_probe_kernels", "exp2_kernel",
                            {"x_ptr": "*fp32:16", "y_ptr": "*fp32:16", "n": "i32:16"}, {"BLOCK": 1024},
                            state_elements=1024)
    scalar = sc.KernelSpec("probe/unaligned", "vimbench_probe_kernels", "exp2_kernel",
                           {"x_ptr": "*fp32:16", "y_ptr": "*fp32:16", "n": "i32"}, {"BLOCK": 1024},
                           state_elements=1024)
    return [aligned, scalar]


@pytest.fixture(scope="module")
def probe_reports(tmp_path_factory):
    """The probe specs compiled by two subprocesses at once (one spec each), reports in the specs' order."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "vimbench_probe_kernels.py").write_text(PROBE)
    specs = _probe_specs()
    reports = sc.static_reports(specs[::-1], extra_paths=[str(folder)], workers=2)
    assert [r.name for r in reports] == [s.name for s in specs[::-1]]
    return {r.name: r for r in reports}, folder


def test_compiles_for_sm90_and_reads_the_binary(probe_reports):
    reports, _ = probe_reports
    aligned, scalar = reports["probe/aligned"], reports["probe/unaligned"]
    for rep in (aligned, scalar):
        assert 0 < rep.registers <= 255
        assert not rep.spills
        # 1024 elements / 128 threads = 8 exp2 per thread, each one MUFU.EX2 in the binary
        assert rep.mufu_ex2 == 8
        assert rep.ex2_per_state_element == pytest.approx(8 / 1024)
    # n divisible by 16 lets Triton prove 16-byte alignment: 128-bit loads; otherwise scalar loads
    assert aligned.ldg_128 == 2 and aligned.ldg == 2
    assert scalar.ldg_128 == 0 and scalar.ldg == 8


def test_expectations_round_trip_and_pass(probe_reports, tmp_path):
    reports, _ = probe_reports
    path = tmp_path / "expect.json"
    sc.write_expectations(path, list(reports.values()))
    data = sc.load_expectations(path)
    assert data["arch"] == "sm_90" and set(data["kernels"]) == set(reports)
    findings = sc.compare_static(list(reports.values()), data["kernels"])
    assert [f.status for f in findings] == ["ok", "ok"]


def _report(**kw):
    base = dict(name="k", registers=40, stack_bytes=0, local_bytes=0, shared_bytes=0, mufu_ex2=16, ldg=4, ldg_128=4, ldg_64=0,
                stg_128=2, stl=0, ldl=0, instructions=300, state_elements=16)
    base.update(kw)
    return sc.StaticReport(**base)


def _expected(**kw):
    return {"k": _report(**kw).to_json()}


@pytest.mark.parametrize("change, message", [
    (dict(registers=49), "registers"),
    (dict(local_bytes=8, stl=2, ldl=2), "spills"),
    (dict(stack_bytes=24, stl=3, ldl=3), "spills"),
    (dict(ldg_128=2, ldg_64=2), "128-bit loads"),
    (dict(mufu_ex2=32), "MUFU.EX2"),
    (dict(shfl=128), "SHFL"),
])
def test_regressions_fail(change, message):
    (finding,) = sc.compare_static([_report(**change)], _expected())
    assert finding.status == "fail" and any(message in m for m in finding.messages)


def test_an_accepted_spill_passes_up_to_its_bytes():
    (ok,) = sc.compare_static([_report(stack_bytes=48, stl=10, ldl=12, accepted_spill_bytes=48)], _expected())
    assert ok.status == "ok" and any("spill accepted" in m for m in ok.messages)
    (more,) = sc.compare_static([_report(stack_bytes=56, stl=12, ldl=14, accepted_spill_bytes=48)], _expected())
    assert more.status == "fail" and any("spills" in m and "accepted: up to 48 B" in m for m in more.messages)


def test_tolerated_and_improved():
    (ok,) = sc.compare_static([_report(registers=48)], _expected())   # within the margin of 8
    assert ok.status == "ok"
    (better,) = sc.compare_static([_report(ldg_128=8, mufu_ex2=8)], _expected())
    assert better.status == "improved"


def test_new_and_missing_kernels():
    findings = sc.compare_static([_report(name="new_one")], _expected())
    assert {f.kernel: f.status for f in findings} == {"new_one": "new", "k": "missing"}


def test_bad_expectation_files(tmp_path):
    with pytest.raises(VimbenchError, match="does not exist"):
        sc.load_expectations(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kernels": {}}))
    with pytest.raises(VimbenchError, match="not a vimbench static expectation"):
        sc.load_expectations(bad)


def test_sass_parsing():
    sass = """
        /*00e0*/              @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*00f0*/                   LDG.E.64 R8, desc[UR4][R2.64+0x10] ;
        /*0150*/                   MUFU.EX2 R4, R4 ;
        /*0160*/              @P1 STL [R1+0x4], R5 ;
        /*0170*/                   LDL R6, [R1+0x4] ;
        /*0180*/                   SHFL.BFLY PT, R7, R6, 0x1, 0x1f ;
    """
    counts = sc.count_sass(sass)
    assert counts == {"instructions": 6, "mufu_ex2": 1, "ldg": 2, "ldg_128": 1, "ldg_64": 1, "stg_128": 0,
                      "stl": 1, "ldl": 1, "shfl": 1}
    assert sc.parse_resource_usage(" Function k:\n  REG:28 STACK:24 SHARED:0 LOCAL:16 CONSTANT[0]:568") == {
        "registers": 28, "stack_bytes": 24, "shared_bytes": 0, "local_bytes": 16}


def _static_app():
    import typer

    from vimbench.cli import kernels_checks

    app = typer.Typer()
    kernels_checks.register(app)
    return app


def test_cli_static_update_check_and_fail(probe_reports, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    _, folder = probe_reports
    monkeypatch.setattr(sc, "kernel_specs", _probe_specs)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    path = tmp_path / "expect.json"
    runner = CliRunner()
    missing = runner.invoke(_static_app(), ["static", "--expect", str(path)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert runner.invoke(_static_app(), ["static", "--expect", str(path), "--update"]).exit_code == 0
    ok = runner.invoke(_static_app(), ["static", "--expect", str(path)])
    assert ok.exit_code == 0, ok.output
    flat = " ".join(ok.output.split())   # the caption says what each number is
    assert "regs = registers per thread" in flat and "spill B = stack + local memory per thread, bytes" in flat
    data = json.loads(path.read_text())
    data["kernels"]["probe/aligned"]["ldg_128"] = 4   # pretend the kernel used to vectorize more
    path.write_text(json.dumps(data))
    failed = runner.invoke(_static_app(), ["static", "--expect", str(path)])
    assert failed.exit_code == 1 and "128-bit loads" in failed.output
    assert "probe/aligned [fail]:" in failed.output   # the status in brackets was taken for Rich markup


@pytest.mark.parametrize("where, words", [("file/expect.json", "is a file, not a folder"),
                                          ("folder", "is a folder; give the path of a file")])
def test_cli_static_update_refuses_an_unwritable_file_before_compiling(tmp_path, monkeypatch, where, words):
    """--update checks that the expectation file can be written before it compiles anything (minutes)."""
    from typer.testing import CliRunner

    def compile_nothing(specs):
        raise AssertionError("compiled before the output path was checked")

    monkeypatch.setattr(sc, "static_reports", compile_nothing)
    (tmp_path / "file").write_text("a file, not a folder\n")
    (tmp_path / "folder").mkdir()
    result = CliRunner().invoke(_static_app(), ["static", "--update", "--expect", str(tmp_path / where)])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output


@pytest.mark.slow
def test_shipped_kernels_meet_the_committed_expectations():
    """What CI's `vimbench kernels static` checks, from the library."""
    from pathlib import Path

    expect = Path(__file__).resolve().parents[2] / "kernels" / "static_expectations.json"
    specs = sc.kernel_specs()
    reports = sc.static_reports(specs)
    assert {r.name for r in reports} == {s.name for s in specs}
    findings = sc.compare_static(reports, sc.load_expectations(expect)["kernels"])
    assert all(f.status in ("ok", "improved") for f in findings), findings


def test_spec_from_args_compiles_declared_constexprs_with_their_values():
    """An argument the kernel declares tl.constexpr (the one-pass scan's token strides) becomes a constexpr of the
    spec with its value, as Triton's JIT compiles it, not a typed runtime argument; the others keep their types."""
    from vimbench.kerneltools.kernel_ops import _scan_spec
    from vimbench.kerneltools.registry import OpShape

    spec = _scan_spec("bf16", "halves", OpShape(batch=64, channels=384, length=6085))
    assert spec.constexprs["stride_u_l"] == 384  # u: a (2, B, E, L) view of (2, B, L, E)
    assert spec.constexprs["stride_out_l"] == 2 * 384  # the halves: a view of (B, L, 2, E)
    assert "stride_u_l" not in spec.signature and spec.signature["stride_u_b"] == "i32:16"
    assert sc._constexpr_params("kernels.selective_scan.fwd", "_scan_kernel") >= {
        "stride_u_l", "stride_dt_l", "stride_B_l", "stride_C_l", "stride_z_l", "stride_out_l", "BLOCK_C"}
    assert sc._constexpr_params("kernels.selective_scan.fwd", "no_such_kernel") == set()
