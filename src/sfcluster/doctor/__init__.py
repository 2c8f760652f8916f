"""Preflight: every known SecretFlow simulation-cluster mistake, found before training starts."""
from sfcluster.doctor.checks import Check, Report, Status, run_checks

__all__ = ["Check", "Report", "Status", "run_checks"]
