"""`sfcluster ca`: this controller's CA certificate of a cluster, for the other organisations of
a federation (production mode, `--party`: each organisation keeps its own CA)."""
from __future__ import annotations

import click

from sfcluster.cli.common import emit_result, err_console, handle_errors, inventory_option, json_option, load, party_option
from sfcluster.exitcodes import Exit
from sfcluster.tls.pki import ca_dir, ensure_ca, fingerprint


@click.command("ca")
@inventory_option
@party_option
@json_option
@handle_errors
def ca_cmd(inventory_path: str, parties: tuple, as_json: bool) -> None:
    """Print this controller's CA certificate of the cluster (PEM, on stdout), made first if there
    is none yet. Only the certificate: the key never leaves this controller.

    \b
    A federation (production mode, each organisation operating its own node with --party): every
    operator sends this to the others, over a channel where they can tell it is theirs (compare
    the sha256 fingerprint on stderr by phone), and each saves the others' as files named by
    `nodes.<party>.ca_cert` in the inventory. `sfcluster up --party MINE` then gives this party's
    node a certificate of this CA and makes it trust exactly its own CA and the peers':
      sfcluster ca -i inv.yaml --party alice > alice-ca.pem
    """
    cluster = load(inventory_path, parties)
    ca = ensure_ca(cluster.name)
    pem = ca.cert_pem.decode()
    fp = fingerprint(ca.cert_pem)
    if as_json:
        emit_result({"cluster": cluster.name, "parties": list(cluster.operated_names), "fingerprint": fp,
                     "ca_dir": str(ca_dir(cluster.name)), "cert_pem": pem}, Exit.OK)
        return
    click.echo(pem, nl=False)
    err_console.print(f"CA of cluster '{cluster.name}' on this controller ({ca_dir(cluster.name)}), "
                      f"sha256 {fp}")
