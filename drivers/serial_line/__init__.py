"""Serial ports for RS-485/RS-232 buses: settings and timing, an asyncio port, line-oriented sensors.

``settings``  character time and inter-frame gap from baud/parity/stop bits.
``port``      a pyserial port read through the event loop (``loop.add_reader``), pty-aware.
``parsers``   line parsers (NMEA 0183, key=value) behind one small interface.
``bus``       a ``serial_line`` bus: one owner task per port, readings mapped to points.
"""
