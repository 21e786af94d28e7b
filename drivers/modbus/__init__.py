"""Modbus drivers: TCP endpoints, RTU/ASCII lines, framing, codec, read planning, device profiles."""

import logging

# pymodbus logs every frame, retry and unanswered request, some at ERROR.  Canopy reports the same
# events itself, once and rate-limited, through its counters and FailureLog; left on, pymodbus fills
# an SD card with duplicates.  Silenced here, once: every user of pymodbus in this repository (the
# drivers, the simulator, the benches) imports this package.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
