"""Jobs that must run once across centre instances: the leader lease and the jobs it guards.

Blind-site checks, sending pending commands, gap repair and notifications each run on one
instance only.  That instance holds the *lease* (a PostgreSQL advisory lock on a connection
of its own; on SQLite the single instance is always the leader) and runs the jobs while it
holds it; when it dies, its connection dies, the lock is released and another instance
takes over within seconds (docs/centre.md#running-several-instances).
"""
