"""The adaptive in-flight window: fills a fast link, keeps queueing in front of alarms small on a slow one."""

from __future__ import annotations

from gateway.uplink.window import QueueDelayWindow

MSG = 16 * 1024


def drive(window: QueueDelayWindow, rate_at, seconds: float, base: float = 0.002, size: int = MSG, start: float = 0.0):
    """Discrete simulation of a saturated uplink behind the window.

    A message is sent whenever it fits in the window; the link serialises
    bytes at ``rate_at(t)`` bytes/s; its PUBACK returns ``base`` after its
    last byte.  Returns (end time, queueing seen by an alarm sent at the end).
    """
    t, link_free, inflight, acks = start, start, 0, []  # acks: (time, sent, size)
    end = start + seconds
    while t < end:
        while inflight + size <= window.bytes or inflight == 0:  # fill the window
            done = max(link_free, t) + size / rate_at(t)
            link_free = done
            acks.append((done + base, t, size))
            inflight += size
        acks.sort()
        at, sent, sz = acks.pop(0)
        t = at
        inflight -= sz
        window.on_ack(t, t - sent, sz)
    return t, max(0.0, link_free - t)


def test_fixed_cap_when_disabled():
    w = QueueDelayWindow(1024 * 1024, None)
    assert w.bytes == 1024 * 1024
    drive(w, lambda t: 1_000_000, 5)
    assert w.bytes == 1024 * 1024


def test_grows_to_the_cap_while_nothing_queues():
    w = QueueDelayWindow(1024 * 1024, 0.03)
    assert w.bytes == 64 * 1024  # starts small on every connection
    drive(w, lambda t: 1e12, 3)  # loopback: the link is never the bottleneck
    assert w.bytes == 1024 * 1024


def test_on_a_slow_link_queueing_stays_near_the_target(target=0.03):
    """1 MB/s link: the bytes ahead of a new alarm stay around the 30 ms target, and the link stays busy."""
    w = QueueDelayWindow(1024 * 1024, target)
    queues = []
    t = 0.0
    for _ in range(60):  # a minute, sampled every second
        t, queued = drive(w, lambda t: 1_000_000, 1.0, start=t)
        queues.append(queued)
    steady = sorted(queues[10:])
    p90 = steady[int(0.9 * len(steady))]
    assert p90 < 0.1, f"an alarm would wait {p90 * 1000:.0f} ms behind telemetry (p90)"
    assert w.bytes >= MSG


def test_shrinks_when_the_link_slows_down():
    w = QueueDelayWindow(1024 * 1024, 0.03)
    t, _ = drive(w, lambda t: 1e12, 3)
    assert w.bytes == 1024 * 1024
    queues = []
    for _ in range(30):  # the link drops to 100 kB/s
        t, queued = drive(w, lambda t: 100_000, 1.0, start=t)
        queues.append(queued)
    assert sorted(queues[15:])[-2] < 0.5, [round(q, 2) for q in queues]


def test_reset_starts_over():
    w = QueueDelayWindow(1024 * 1024, 0.03)
    drive(w, lambda t: 1e12, 3)
    w.reset()
    assert w.bytes == 64 * 1024 and w.samples == 0
