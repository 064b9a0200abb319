"""Sharding and case costs: every case in exactly one shard, the same split whatever the order, balanced loads;
worker slots from --gpus/--workers. No model is built here."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vimbench.bench import sweep as sweeps
from vimbench.bench.grid import SweepConfig, expand_cases
from vimbench.bench.partition import case_cost, costliest_first, parse_shard, partition, shard_cases
from vimbench.bench.workers import make_slots, parse_gpus
from vimbench.errors import VimbenchError
from vimbench.results import CaseKey

MODELS = ("vim_t", "vim_s", "vim_b", "deit_t", "deit_s", "deit_b", "vim_test", "deit_test")

sweeps_strategy = st.builds(
    lambda models, res, batch, dtypes, attn, backends: SweepConfig(
        models=tuple(models), res=tuple(sorted(res)), batch=tuple(sorted(batch)), dtypes=tuple(dtypes),
        attn=tuple(attn), backends=tuple(backends), device="cuda", warmup=1, iters=5),
    st.lists(st.sampled_from(MODELS), min_size=1, max_size=4, unique=True),
    st.sets(st.integers(16, 1536), min_size=1, max_size=6),
    st.sets(st.sampled_from([1, 2, 8, 64, 128]), min_size=1, max_size=3),
    st.lists(st.sampled_from(["fp32", "tf32", "bf16", "fp16"]), min_size=1, max_size=4, unique=True),
    st.lists(st.sampled_from(["sdpa", "eager"]), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from(["torch", "triton"]), min_size=1, max_size=2, unique=True),
)


@settings(max_examples=60, deadline=None)
@given(config=sweeps_strategy, n=st.integers(1, 12), seed=st.integers(0, 2 ** 16))
def test_shards_cover_every_case_exactly_once(config, n, seed):
    cases, _ = expand_cases(config)
    shards = [shard_cases(cases, k, n) for k in range(1, n + 1)]
    flat = [c for s in shards for c in s]
    assert sorted(map(repr, flat)) == sorted(map(repr, cases))      # each case once, none invented
    # the split depends on the cases, not on their order: a shuffled list gives the same shards
    shuffled = list(cases)
    random.Random(seed).shuffle(shuffled)
    assert [set(shard_cases(shuffled, k, n)) for k in range(1, n + 1)] == [set(s) for s in shards]
    # each shard keeps the sweep's own order
    position = {c: i for i, c in enumerate(cases)}
    assert all([position[c] for c in s] == sorted(position[c] for c in s) for s in shards)
    # greedy balance: no part is heavier than the lightest by more than the costliest case
    loads = [sum(case_cost(c) for c in s) for s in shards]
    assert max(loads) - min(loads) <= max(case_cost(c) for c in cases) * (1 + 1e-9)


def test_costs_grow_with_tokens_batch_size_and_mode():
    base = CaseKey("vim_t", 224, 8, "bf16", "triton", None, "cuda")
    assert case_cost(base.__class__(**{**base.__dict__, "res": 1248})) > case_cost(base)
    assert case_cost(base.__class__(**{**base.__dict__, "batch": 64})) > case_cost(base)
    assert case_cost(base.__class__(**{**base.__dict__, "model": "vim_b"})) > case_cost(base)
    assert case_cost(base.__class__(**{**base.__dict__, "mode": "train"})) > case_cost(base)
    order = costliest_first([base, base.__class__(**{**base.__dict__, "res": 1248})])
    assert order[0].res == 1248


def test_sweep_with_a_shard_runs_only_its_part():
    config = sweeps.make_config({"models": "vim_t,deit_t", "res": "224..1248", "batch": 64,
                                 "attn": "sdpa,eager"}, cuda_available=True)
    everything = sweeps.plan_sweep(config).cases
    parts = [sweeps.plan_sweep(config, shard=(k, 3)).cases for k in (1, 2, 3)]
    assert sum(len(p) for p in parts) == len(everything) and set().union(*map(set, parts)) == set(everything)


@pytest.mark.parametrize("text, message", [("3", "K/N"), ("0/4", "between 1 and N"), ("5/4", "between 1 and N"),
                                           ("a/b", "whole numbers"), ("1/0", "between 1 and N")])
def test_bad_shard(text, message):
    with pytest.raises(VimbenchError, match=message):
        parse_shard(text)


def test_parse_shard_and_too_few_parts():
    assert parse_shard(" 2/4 ") == (2, 4)
    with pytest.raises(VimbenchError, match="at least 1"):
        partition([], 0)


def test_gpus_are_indices_into_the_visible_devices():
    assert parse_gpus("all", None, 4) == ["0", "1", "2", "3"]
    assert parse_gpus("0,2", None, 4) == ["0", "2"]
    # inside a SLURM job that was given GPUs 4 and 6, --gpus 1 is physical GPU 6
    assert parse_gpus("1", ["4", "6"], 2) == ["6"]
    assert parse_gpus("all", ["GPU-abc"], 1) == ["GPU-abc"]
    for text, message in [("0,0", "twice"), ("4", "does not exist"), ("x", "not a GPU index")]:
        with pytest.raises(VimbenchError, match=message):
            parse_gpus(text, None, 4)
    with pytest.raises(VimbenchError, match="no GPU is visible"):
        parse_gpus("all", None, 0)


def test_slots():
    slots = make_slots("cuda", "1,3", visible=None, gpu_count=4)
    assert [(s.index, s.gpu, s.label()) for s in slots] == [(0, "1", "GPU 1"), (1, "3", "GPU 3")]
    assert [s.gpu for s in make_slots("cuda", workers=2, gpu_count=4)] == ["0", "1"]
    cpu = make_slots("cpu", workers=3, cpu_count=6)
    assert [(s.device, s.gpu, s.threads) for s in cpu] == [("cpu", None, 2)] * 3
    with pytest.raises(VimbenchError, match="--gpus needs --device cuda"):
        make_slots("cpu", gpus="0")
    with pytest.raises(VimbenchError, match="does not match"):
        make_slots("cuda", "0,1", workers=3, gpu_count=4)
    with pytest.raises(VimbenchError, match="only 2 GPUs"):
        make_slots("cuda", workers=3, gpu_count=2)
