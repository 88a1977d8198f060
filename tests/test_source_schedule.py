"""Step schedule and record sharding: shares, lockstep, disjoint ranks, exact continuation."""

import itertools

import numpy as np
import pytest

from sca.data.source_schedule import MultiSourceSampler, SourceSchedule


def steps(sampler, count):
    """The first ``count`` steps, each the flat list of its keys."""
    return [[key for batch in step for key in batch] for step in itertools.islice(sampler.steps(), count)]


@pytest.mark.parametrize("ratios", [[1.0, 0.25], [0.5, 0.5, 0.2], [0.1]])
def test_each_source_takes_its_share_of_steps_and_no_step_is_empty(ratios):
    schedule = SourceSchedule(ratios, seed=3)
    taken = np.zeros((5000, len(ratios)), dtype=bool)
    for step in range(5000):
        taken[step, schedule.sources_at(step)] = True
    assert taken.any(axis=1).all()
    np.testing.assert_allclose(taken.mean(axis=0), schedule.expected_share(), atol=0.025)
    if 1.0 in ratios:
        np.testing.assert_allclose(schedule.expected_share(), ratios)
    # counts_before is what the sampler resumes from: it must agree with the step-by-step view.
    for step in (0, 1, 1023, 1024, 1500, 5000):
        np.testing.assert_array_equal(SourceSchedule(ratios, seed=3).counts_before(step), taken[:step].sum(axis=0))


def test_schedule_depends_on_the_seed_only():
    first, second, other = (SourceSchedule([0.5, 0.5], seed=s) for s in (7, 7, 8))
    a, b, c = ([tuple(s.sources_at(t)) for t in range(300)] for s in (first, second, other))
    assert a == b  # every rank builds its own schedule: same seed, same steps (lockstep)
    assert a != c


def test_ranks_draw_disjoint_records_and_cover_each_epoch_once():
    num_records, batch_sizes, world = [60, 40], [3, 2], 2
    ranks = [MultiSourceSampler(num_records, batch_sizes, [1.0, 0.5], seed=1, rank=r, world_size=world) for r in range(world)]
    per_rank = [steps(sampler, 30) for sampler in ranks]
    for step in range(30):
        assert [{k.source for k in per_rank[r][step]} for r in range(world)] == [{k.source for k in per_rank[0][step]}] * world
        sizes = {s: sum(k.source == s for k in per_rank[0][step]) for s in (0, 1)}
        assert all(n in (0, batch_sizes[s]) for s, n in sizes.items())
    for source, n in enumerate(num_records):
        drawn = [[k.record for step in keys for k in step if k.source == source] for keys in per_rank]
        assert not set(drawn[0][: n // world]) & set(drawn[1][: n // world])
        # Interleaving the ranks step by step gives the source's stream: each epoch a permutation.
        size = batch_sizes[source]
        chunks = [[d[i : i + size] for i in range(0, len(d), size)] for d in drawn]
        stream = [record for participation in zip(*chunks) for chunk in participation for record in chunk]
        assert sorted(stream[:n]) == list(range(n))


def test_batches_are_per_source_in_step_order():
    sampler = MultiSourceSampler([50, 13], [4, 3], [1.0, 0.3], seed=2)
    grouped = list(itertools.islice(sampler.steps(), 20))
    assert list(itertools.islice(iter(sampler), sum(map(len, grouped)))) == [batch for step in grouped for batch in step]
    for step in grouped:
        assert [{k.source for k in batch} for batch in step] == [{0}] + [{1}] * (len(step) - 1)
        assert [len(batch) for batch in step] == [4, 3][: len(step)]


def test_resuming_at_step_k_continues_the_stream_exactly():
    args = ([50, 13], [4, 3], [0.7, 0.3])
    full = steps(MultiSourceSampler(*args, seed=5, rank=1, world_size=3), 40)
    for k in (1, 17, 39):
        assert steps(MultiSourceSampler(*args, seed=5, rank=1, world_size=3, start_iter=k), 40 - k) == full[k:]
    assert steps(MultiSourceSampler(*args, seed=6, rank=1, world_size=3), 40) != full
    seeds = [key.seed for keys in full for key in keys]
    assert len(set(seeds)) == len(seeds)  # every sample draws its own augmentation


def test_invalid_ratios_are_rejected():
    with pytest.raises(ValueError, match="ratios"):
        SourceSchedule([1.0, 0.0], seed=0)
