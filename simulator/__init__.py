"""Believable devices on real transports (Modbus TCP on loopback), for tests and demos.

Run ``python -m simulator farm|community``; build sites with :mod:`simulator.sites`.
"""
