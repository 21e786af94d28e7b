"""Acting for people: the centre signs acks and commands for the person who made them, at send time.

A person's intent is recorded when they act (a ``pending`` row in ``commands`` with a
validity they can see); the sender signs a v2 envelope (``on_behalf_of`` = the person)
only when the gateway is online, re-sends it with the same id until the gateway answers,
and marks it ``expired`` when its validity ends unanswered -- never silently.  The issuer
keys are files under ``keys_dir`` (one per site, 0600, never in the database).
"""
