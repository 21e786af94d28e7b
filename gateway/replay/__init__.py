"""Gap repair, gateway side: records a centre missed, sent again on a signed ``replay`` request.

The outbox keeps acknowledged records for a while (gateway/outbox/retention.py);
on ``…/replay`` (docs/protocol.md#replay) a signed envelope names a lane, an
epoch and a range of seqs, and the gateway re-publishes what it still holds of
it -- same seq, same body, same topics -- then answers ``replay.result``.

- ``gate.py``: who may ask, and the checks a message passes before it takes a queue slot (junk is counted);
- ``request.py``: what an authentic envelope asks for (action and params);
- ``tally.py``: which seqs of the range were re-sent, are still pending, are gone (pure);
- ``sender.py``: the messages, paced, behind live alarms;
- ``service.py``: the topic handler, the worker, the answers.
"""
