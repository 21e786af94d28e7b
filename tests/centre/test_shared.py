"""Two centre instances share the subscription (MQTT 5 $share) and one store: the load splits, nothing doubles."""

from __future__ import annotations

from centre.store import schema
from tests.centre.support import CentreRun, Publisher, centre_config, count, reading, wait_for

T0 = 1_795_348_800.0


async def test_two_instances_split_the_load(db_url, broker):
    a = await CentreRun(centre_config(db_url, broker.port, instance="a")).start()
    b = await CentreRun(centre_config(db_url, broker.port, instance="b")).start()
    pubs = [Publisher(broker.port, gateway=f"gw-{i}") for i in range(2)]
    try:
        for first in range(1, 5001, 50):
            for pub in pubs:
                pub.telemetry([reading(s, T0 + s) for s in range(first, first + 50)])
        pubs[0].state("online")
        for pub in pubs:
            pub.flush()

        async def all_in():
            return await count(a.engine, schema.telemetry) == 10_000

        await wait_for(all_in, what="10,000 readings")
        got = a.ingest.counters["records"], b.ingest.counters["records"]
        assert min(got) > 1000, f"the shared subscription did not split the load: {got}"
        assert sum(got) == 10_000  # each message went to one instance only
        # the retained state reaches every instance (plain subscription), and both wrote it idempotently;
        # it was published after the telemetry, so it may still be on its way when the last reading is in

        async def state_everywhere():
            return a.ingest.counters["messages"] + b.ingest.counters["messages"] >= 200 + 2

        await wait_for(state_everywhere, what="the gateway's state at both instances")
    finally:
        for pub in pubs:
            pub.close()
        await a.stop()
        await b.stop()
