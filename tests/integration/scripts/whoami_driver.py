"""A sanctioned driver that says which user it runs as, here and in a task on every party."""
import getpass

from sfcluster import runtime

runtime.guard()
cfg = runtime.load()
import ray  # noqa: E402

ray.init(address=cfg["ray_address"], log_to_driver=False)
print("DRIVER_USER", getpass.getuser(), flush=True)
for party in cfg["parties"]:
    who = ray.get(ray.remote(resources={party: 1})(lambda: __import__("getpass").getuser()).remote())
    print("TASK_USER", party, who, flush=True)
