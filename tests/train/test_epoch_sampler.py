import pytest

from sam3tune.train.sampler import EpochBatchSampler


def _batches(sampler, epoch, start=0):
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_same_seed_and_epoch_give_the_same_order_and_epochs_differ():
    a = EpochBatchSampler(10, 2, seed=5)
    b = EpochBatchSampler(10, 2, seed=5)
    assert _batches(a, 0) == _batches(b, 0)
    assert _batches(a, 0) != _batches(a, 1)
    assert sorted(i for batch in _batches(a, 3) for i in batch) == list(range(10))


def test_incomplete_batches_are_dropped():
    sampler = EpochBatchSampler(7, 3, seed=0)
    assert len(sampler) == 2
    assert [len(b) for b in _batches(sampler, 0)] == [3, 3]


def test_resume_skips_the_consumed_batches():
    sampler = EpochBatchSampler(12, 2, seed=1)
    full = _batches(sampler, 4)
    assert _batches(sampler, 4, start=2) == full[2:]
    assert _batches(sampler, 4, start=len(full)) == []
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(0, len(full) + 1)


def test_shards_split_each_global_batch():
    world, per_rank_batch = 3, 2
    single = EpochBatchSampler(20, per_rank_batch * world, seed=9)
    shards = [EpochBatchSampler(20, per_rank_batch, seed=9, rank=r, world_size=world) for r in range(world)]
    global_batches = _batches(single, 2)
    per_rank = [_batches(s, 2) for s in shards]
    assert all(len(p) == len(global_batches) == 3 for p in per_rank)
    for j, global_batch in enumerate(global_batches):
        union = sorted(i for rank_batches in per_rank for i in rank_batches[j])
        assert union == sorted(global_batch)
    seen = [i for p in per_rank for b in p for i in b]
    assert len(seen) == len(set(seen))  # no sample on two processes


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="3 image"):
        EpochBatchSampler(3, 2, seed=0, rank=0, world_size=2)
