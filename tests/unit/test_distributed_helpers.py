"""Data-parallel helpers in one process: every helper is the identity, shards partition the items."""
from __future__ import annotations

import pytest
import torch

from agmask import distributed
from agmask.errors import AgmaskError


def test_one_process_is_rank_zero_of_one():
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main()
    distributed.barrier()  # no process group: returns at once


def test_without_a_launcher_init_joins_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.init("cpu")
    assert not torch.distributed.is_initialized() and distributed.world_size() == 1


def test_device_auto_with_several_processes_is_a_clean_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AgmaskError, match="--device auto"):
        distributed.init("auto")


def test_helpers_are_the_identity_with_one_process():
    items = list("abcdefg")
    assert distributed.shard(items) == items
    assert distributed.gather(items) == items
    assert distributed.map_sharded(lambda xs: [x.upper() for x in xs], items) == list("ABCDEFG")
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    t = torch.arange(6.0).reshape(2, 3)
    assert distributed.all_reduce_sum(t) is t


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_every_item_in_order(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:]))  # back to back, in rank order
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_cpu_or_gpu_backend_follows_the_device():
    assert distributed.use_cpu("cpu")
    assert not distributed.use_cpu("cuda") and not distributed.use_cpu("cuda:1") and not distributed.use_cpu("auto")
    assert distributed.process_device("cuda") == "cuda"  # one process: as given
    assert distributed.process_device("cpu") == "cpu"
