"""A party function on bob imports a module shipped with --files."""
from sfcluster import runtime

runtime.guard()
cfg = runtime.load()
import secretflow as sf  # noqa: E402

sf.init(parties=list(cfg["parties"]), address=cfg["ray_address"], log_to_driver=True)


def on_party():
    import socket

    import sfc_helper_mod  # shipped with --files, at the same path on every node
    return f"{socket.gethostname()}:{sfc_helper_mod.answer()}"


print("HELPER " + sf.reveal(sf.PYU("bob")(on_party)()), flush=True)
