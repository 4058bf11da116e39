"""The model server's admission: a key's share of the places, the order in which waiting keys run."""

import asyncio

import pytest

from lmtune.admission import Admission, Refused


def test_one_key_holds_at_most_half_the_places_and_another_key_runs_next():
    async def scenario():
        admission = Admission(running=2, waiting=2)
        flood = [admission.admit("flood") for _ in range(2)]
        with pytest.raises(Refused, match="its share of the model server's 4 places"):
            admission.admit("flood")
        running = asyncio.ensure_future(flood[0].run())
        waiting = asyncio.ensure_future(flood[1].run())
        await asyncio.sleep(0)
        assert running.done() and not waiting.done()  # a key runs at most half the answering places
        other = admission.admit("other")
        await asyncio.wait_for(other.run(), 1)  # the second running place is the other key's at once
        flood[0].release()
        await asyncio.wait_for(waiting, 1)  # the flood's next one runs when its first ends
        for place in (flood[1], other):
            place.release()
        assert admission.admitted == 0 and not admission.busy

    asyncio.run(scenario())


def test_a_freed_place_goes_to_the_key_that_runs_fewest_and_an_abandoned_one_leaves_the_line():
    async def scenario():
        admission = Admission(running=4, waiting=8)
        runners = [admission.admit(key) for key in ("a", "a", "b", "d")]
        for place in runners:
            await place.run()
        line = [admission.admit(key) for key in ("gone", "a", "b", "c")]  # in this order
        turns = [asyncio.ensure_future(place.run()) for place in line]
        await asyncio.sleep(0)
        line[0].abandon()
        line[0].release()
        runners[3].release()  # d's place frees
        await asyncio.sleep(0)
        # "a" already runs its half, "b" runs one, "c" none: "c" goes first though it came last
        assert turns[0].cancelled() and turns[3].done() and not turns[1].done() and not turns[2].done()
        with pytest.raises(Refused, match="busy"):
            for n in range(12):
                admission.admit(f"key-{n}")

    asyncio.run(scenario())
