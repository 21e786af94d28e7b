"""Operating a board nobody will touch for a year: supervision, install, update, rollback, provision, doctor.

``supervisor`` talks to systemd from inside the daemon (READY, WATCHDOG, STATUS);
``bundle``, ``install``, ``releases``, ``health_gate`` and ``update`` are the
privileged side (the installer and the applier unit) that puts a signed release
on the board and takes it back when it does not come up healthy; ``provision``
and ``doctor`` are the installer's tools on site.  docs/operations.md.
"""
