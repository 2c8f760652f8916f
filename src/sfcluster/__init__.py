"""sfcluster: launch SecretFlow clusters (simulation and production mode) the right way."""
__version__ = "0.1.0"
