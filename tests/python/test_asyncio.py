"""await on transfer statuses: one event loop, many transfers, no thread per transfer."""
import asyncio
import threading

import numpy as np
import pytest

from ringxfer import StatusCode, TransferError


def test_hundred_transfers_awaited_concurrently(pair):
    a, b = pair
    n, size = 100, 8192
    src = np.random.randint(0, 255, n * size, dtype=np.uint8)
    dst = np.zeros(n * size, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    threads_before = threading.active_count()

    async def main():
        statuses = [a.write(ms, i * size, md, i * size, size, a.allocate_transfer_uid())
                    for i in range(n)]
        done = await asyncio.gather(*statuses)
        return done

    done = asyncio.run(main())
    assert len(done) == n and all(s.Succeeded() for s in done)
    assert np.array_equal(src, dst)
    assert threading.active_count() == threads_before  # no thread per transfer


def test_await_raises_transfer_error_and_finished_statuses_resolve_at_once(pair):
    a, b = pair
    src, dst = np.zeros(64, np.uint8), np.zeros(64, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)

    async def main():
        ok = a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid())
        await ok
        again = await ok  # already final: resolves at once
        b.deregister_memory(md)
        bad = a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid())
        with pytest.raises(TransferError) as info:
            await bad
        return again, info.value.code

    again, code = asyncio.run(main())
    assert again.Succeeded()
    assert code == StatusCode.ERR_NOT_FOUND
