"""Signed remote commands for valves and locks, with fail-safes enforced on the board."""
