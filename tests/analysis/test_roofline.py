"""Roofline floors against the numbers in ../shared/spec/kernels.md."""
from __future__ import annotations

import pytest

from vimbench.analysis.roofline import (add_rmsnorm_work, bimamba_scan_work, ceilings_for, conv1d_bidir_work,
                                     roofline, scan_work)
from vimbench.errors import VimbenchError


def test_scan_floors_match_the_spec():
    h200 = ceilings_for("NVIDIA H200")
    # Vim-Ti at 1248 px, one image, one direction: ~4.4 us HBM in bf16, ~8.9 in fp32, ~10 us of ex2.
    bf16 = roofline(scan_work(1, 384, 6085, dtype="bf16"), 1e-3, h200)
    fp32 = roofline(scan_work(1, 384, 6085, dtype="fp32"), 1e-3, h200)
    assert bf16.hbm_floor_s * 1e6 == pytest.approx(4.4, rel=0.05)
    assert fp32.hbm_floor_s * 1e6 == pytest.approx(8.9, rel=0.05)
    assert 8e-6 < bf16.mufu_floor_s < 11e-6
    assert bf16.bound == "mufu" and bf16.mufu_floor_s == fp32.mufu_floor_s


def test_bidirectional_scan_floor_and_percentages():
    h200 = ceilings_for("h200")
    work = bimamba_scan_work(64, 384, 6085, dtype="bf16")
    assert work.mufu == 2 * scan_work(64, 384, 6085).mufu
    # one launch with both directions reads z once and writes y once: less than two single scans
    assert work.bytes < 2 * scan_work(64, 384, 6085).bytes
    r = roofline(work, 1.6e-3, h200)
    assert 1.0e-3 < r.floor_s < 1.6e-3           # the spec's ~1.3 ms floor
    row = r.as_row()
    assert row["pct_floor"] == pytest.approx(100 * r.floor_s / 1.6e-3)
    assert 0 < row["pct_hbm"] < row["pct_mufu"] <= 100


def test_conv_and_norm_are_bandwidth_bound():
    h200 = ceilings_for("H200")
    assert roofline(conv1d_bidir_work(64, 384, 6085), 1e-3, h200).bound == "hbm"
    norm = add_rmsnorm_work(64 * 6085, 192, "bf16")
    assert norm.bytes == 64 * 6085 * 192 * (2 + 4 + 2 + 4) + 4 * 192
    assert roofline(norm, 1e-3, h200).bound == "hbm"


def test_bad_inputs():
    with pytest.raises(VimbenchError):
        ceilings_for("Tesla K80")
    with pytest.raises(VimbenchError):
        roofline(scan_work(1, 8, 8), 0.0, ceilings_for("H200"))
    with pytest.raises(VimbenchError):
        scan_work(1, 8, 8, dtype="int8")


def test_registered_ops_use_the_roofline_work_of_each_op():
    from vimbench.kerneltools.registry import OpShape, get_op

    shape = OpShape(batch=64, channels=384, length=6085)
    scan = get_op("bimamba_scan").work(shape, "bf16")
    assert scan.mufu == 2 * 64 * 384 * 6085 * 16  # one exp per (direction, batch, channel, token, state)
    assert get_op("selective_scan").work(shape, "bf16").mufu == scan.mufu / 2
    norm = get_op("add_rmsnorm").work(shape, "bf16")
    # x, y in bf16; residual in and out in fp32; plus the weight
    assert norm.bytes == 64 * 6085 * 192 * (2 + 2 + 4 + 4) + 192 * 4
    assert get_op("conv1d_silu_bidir").work(shape, "bf16").bytes > 3 * 64 * 384 * 6085 * 2 - 1
