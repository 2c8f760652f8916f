"""sfcluster: launch SecretFlow simulation-mode clusters the right way."""
__version__ = "0.1.0"
