"""sfcluster: launch SecretFlow clusters (simulation and production mode) the right way.

`from sfcluster import Cluster` is the Python API (sfcluster.api.Cluster), imported only when
asked for: `import sfcluster` (and `from sfcluster import runtime`, on the nodes) stays light."""
__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: a lazy attribute of the package
    if name == "Cluster":
        from sfcluster.api import Cluster
        return Cluster
    raise AttributeError(f"module 'sfcluster' has no attribute {name!r}")
