"""People: users, their roles and scopes, passwords, sessions, login throttling and the audit log.

Nothing here knows about HTTP: the web layer (``centre.web``) and the command line
(``canopy-centre users``) both call these functions, so a refusal reads the same and is
audited the same whichever door it came through.
"""
