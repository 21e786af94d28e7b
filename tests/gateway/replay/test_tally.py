"""Range selection: which seqs of a requested range are sent again, still pending, or gone (pure)."""

from __future__ import annotations

from gateway.replay.tally import MAX_RUNS, Tally


def rows(*seqs):
    return [(s, b'{"n":%d}' % s, None) for s in seqs]


def test_retained_rows_are_sent_pending_ones_counted_and_the_rest_is_gone_in_runs():
    t = Tally(1, 20, top=50)
    send = t.window(1, 10, pending=[9, 10], retained=rows(3, 4, 5, 7))
    assert [r[0] for r in send] == [3, 4, 5, 7]
    t.sent_rows(send)
    t.window(11, 20, pending=[], retained=[])
    assert (t.sent, t.first_sent, t.last_sent, t.pending) == (4, 3, 7, 2)
    assert t.missing == 2 + 1 + 1 + 10 and t.runs == [[1, 2], [6, 6], [8, 8], [11, 20]]
    assert t.status == "partial"
    assert t.describe() == ("sent again 4 record(s) (seqs 3-7) of seqs 1-20; 2 not delivered yet (they follow in "
                            "order); 14 no longer held: 1-2, 6, 8, 11-20")


def test_a_range_held_whole_is_done():
    t = Tally(5, 8, top=8)
    t.sent_rows(t.window(5, 8, pending=[8], retained=rows(5, 6, 7)))
    assert (t.status, t.sent, t.pending, t.missing) == ("done", 3, 1, 0)


def test_a_row_seen_pending_and_retained_moved_in_between_and_is_sent():
    t = Tally(1, 3, top=3)
    send = t.window(1, 3, pending=[1, 2, 3], retained=rows(2))
    assert [r[0] for r in send] == [2] and (t.pending, t.missing) == (2, 0)


def test_runs_stay_bounded_however_ragged_the_range_and_the_count_stays_exact():
    t = Tally(1, 1000, top=1000)
    t.window(1, 1000, pending=[], retained=rows(*range(2, 1001, 2)))  # thinned: every other seq kept
    assert t.missing == 500 and len(t.runs) == MAX_RUNS and t.runs[0] == [1, 1]
    assert t.describe().endswith(", …")


def test_seqs_above_the_lanes_last_seq_were_never_given_and_are_not_counted_gone():
    t = Tally(8, 20, top=10)
    assert t.end == 10
    t.sent_rows(t.window(8, 10, pending=[], retained=rows(8, 9, 10)))
    assert (t.status, t.missing) == ("done", 0) and "none above 10 was ever given" in t.describe()


def test_an_interrupted_replay_is_partial_even_with_nothing_gone():
    t = Tally(1, 5, top=5)
    t.interrupted = "the broker link stayed down for 60 s"
    assert t.status == "partial" and "stopped early" in t.describe()
