"""The gateway's health as others read it: ``…/state``'s extra figures, the status file, `canopy status`, metrics.

``host`` (disk, memory, temperature), ``backlog`` (oldest undelivered record, last PUBACK), ``reporter`` (when
snapshots go out), ``status_file`` (the file and who wrote it), ``verdict`` (running / stale / not running),
``metrics`` (Prometheus textfile and loopback endpoint).
"""
