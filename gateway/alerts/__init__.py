"""Local rules and closed-loop alerts, decided on the board (see docs/alerts.md)."""
