"""Dynamic batching: many callers' images encoded together give each caller exactly its own embeddings."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from cliplabel_pipeline.core.encoding.batcher import ImageBatcher, padded_size
from cliplabel_pipeline.core.encoding.embedding import embed_images
from cliplabel_pipeline.core.reading.images import load_picture
from cliplabel_pipeline.core.values import EmbeddedItem


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jobs(names: list[str], broken: set[str] = frozenset()):
    data = {n: (b"not an image" if n in broken else _png(sum(map(ord, n)))) for n in names}
    return [(EmbeddedItem(n, "image"), lambda d=data[n]: load_picture(io.BytesIO(d))) for n in names]


@pytest.mark.parametrize("n, expected", [(1, 1), (2, 2), (3, 4), (17, 32), (32, 32), (40, 40)])
def test_batches_are_padded_to_a_power_of_two_within_the_maximum(n, expected):
    assert padded_size(n, 32) == expected


def test_concurrent_callers_each_get_their_own_rows_from_shared_batches(labeller):
    handle = labeller.encoder
    requests = [[f"r{r}-{i}" for i in range(n)] for r, n in enumerate([1, 3, 1, 5, 2, 1, 7, 1, 4, 1, 2, 6])]
    results = {}
    start = threading.Barrier(len(requests))
    with ImageBatcher(handle, max_batch=8, max_wait_s=0.05) as batcher:
        arrivals = [batcher.announce() for _ in requests]  # as a server announces uploads still arriving

        def call(i: int) -> None:
            start.wait()
            results[i] = batcher.submit(_jobs(requests[i]), arrivals[i]).result(timeout=60)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = batcher.stats
    for i, names in enumerate(requests):
        alone = embed_images(handle, _jobs(names), batch_size=8)
        assert [item.path for item in results[i].items] == names
        np.testing.assert_allclose(results[i].embeddings, alone.embeddings, atol=1e-5)
    assert stats.images == sum(len(r) for r in requests)
    assert stats.batches < len(requests), "callers that arrived together were encoded one by one"
    assert stats.mean_batch > 2


def test_a_request_larger_than_a_batch_is_encoded_in_several_passes_in_order(labeller):
    names = [f"big-{i}" for i in range(19)]
    with ImageBatcher(labeller.encoder, max_batch=8, max_wait_s=0) as batcher:
        got = batcher.submit(_jobs(names)).result(timeout=60)
    assert [i.path for i in got.items] == names
    np.testing.assert_allclose(got.embeddings, embed_images(labeller.encoder, _jobs(names), 8).embeddings, atol=1e-5)


def test_an_unreadable_image_is_that_caller_s_skip_and_not_its_neighbours_failure(labeller):
    with ImageBatcher(labeller.encoder, max_batch=8, max_wait_s=0.05) as batcher:
        first = batcher.submit(_jobs(["ok-1", "bad-1"], broken={"bad-1"}))
        second = batcher.submit(_jobs(["ok-2"]))
        one, two = first.result(timeout=60), second.result(timeout=60)
    assert [i.path for i in one.items] == ["ok-1"] and [s.path for s in one.skipped] == ["bad-1"]
    assert "JPEG, PNG or WEBP" in one.skipped[0].reason or "cannot identify" in one.skipped[0].reason
    assert [i.path for i in two.items] == ["ok-2"]


def test_nobody_announced_means_no_waiting_and_an_empty_request_is_answered_at_once(labeller):
    with ImageBatcher(labeller.encoder, max_batch=32, max_wait_s=30) as batcher:
        assert batcher.submit([]).result(timeout=1).embeddings.shape[0] == 0
        assert batcher.submit(_jobs(["lone"])).result(timeout=20).embeddings.shape[0] == 1  # not 30 s
        assert batcher.stats.batches == 1


def test_a_broken_request_fails_its_caller_and_the_batcher_serves_the_next(labeller):
    with ImageBatcher(labeller.encoder, max_batch=4, max_wait_s=0) as batcher:
        wrong = batcher.submit([("not a job",)])
        with pytest.raises(ValueError):
            wrong.result(timeout=30)
        assert batcher.submit(_jobs(["after"])).result(timeout=30).embeddings.shape[0] == 1
