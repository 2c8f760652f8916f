"""Wheels for the nodes' venvs: the hash lock provision installs from (lock.py), and the
wheelhouse `sfcluster wheelhouse` makes for the nodes' Python and platform (make.py), with the
PEP 508 markers it evaluates for that Python rather than the controller's (markers.py)."""
