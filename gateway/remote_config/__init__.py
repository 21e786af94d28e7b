"""Remote configuration, the gateway's side: a signed ``config`` envelope on ``…/config`` becomes a new site config.

``trust`` says whether an envelope comes from an issuer with the ``configure``
permission and is fresh; ``bundle`` checks the pushed site document with the same
loader as ``canopy validate`` (problems as ``site.yaml:LINE: key: message``);
``handover`` is the folder the unprivileged daemon and the privileged applier
(``gateway/ops/config_apply.py``) share; ``service`` runs it all in the daemon and
relays the applier's results.  docs/operations.md#remote-configuration.
"""
