"""Site configuration: the site model (site.py), broker and delivery models, loading with file:line (load.py), cross-checks (checks.py)."""
