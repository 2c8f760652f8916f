"""`sfcluster init`: a short, commented inventory for the hosts on the command line, and the
packaged templates (training scripts, the full example inventory) copied out."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click
from rich.markup import escape

from sfcluster.cli.common import console, handle_errors
from sfcluster.errors import InventoryError, SfclusterError
from sfcluster.inventory import parse_inventory

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"   # shipped in the package (the wheel too)
EXAMPLE = TEMPLATES / "inventory.example.yaml"
SAMPLE = "breast_cancer"   # the sample data: scikit-learn's breast cancer set split vertically in 3 shares
SAMPLE_SHARES = ("alice", "bob", "carol")   # the label is in the first share: the head's party gets it
HOST_SPEC = re.compile(r"^(?P<party>[^=\s]+)=(?:(?P<user>[^@\s]+)@)?(?P<host>[^:@\s]+)(?::(?P<port>[0-9]{1,5}))?$")


def template_names() -> List[str]:
    """The training scripts sfcluster ships (`run NAME` takes one by name)."""
    return sorted(p.stem for p in TEMPLATES.glob("*.py") if not p.name.startswith("_"))


def template_path(name: str) -> Optional[Path]:
    stem = name[:-3] if name.endswith(".py") else name
    return TEMPLATES / f"{stem}.py" if stem in template_names() else None


def parse_host(spec: str) -> Tuple[str, Optional[str], str, Optional[int]]:
    """PARTY=[USER@]HOST[:PORT] -> (party, user, host, port)."""
    m = HOST_SPEC.match(spec)
    if not m:
        raise click.BadParameter(f"{spec!r} is not PARTY=[USER@]HOST[:PORT] (e.g. bob=ops@10.0.0.2:2222)")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise click.BadParameter(f"{spec!r}: port {port} is not 1-65535")
    return m["party"], m["user"], m["host"], port


def sample_path(ray_user: Optional[str]) -> str:
    """Where the sample data goes on every node: the Ray user's home (data push makes the dir as that user)."""
    return f"/home/{ray_user}/data/{SAMPLE}.csv" if ray_user else f"/srv/data/{SAMPLE}.csv"


def inventory_text(cluster: str, hosts: List[Tuple[str, Optional[str], str, Optional[int]]],
                   ray_user: Optional[str], sample_data: bool = False, python: Optional[str] = None) -> str:
    """A minimal inventory that validates, each choice commented where a newcomer needs to act."""
    out = [
        "# sfcluster inventory, written by `sfcluster init`. Every key, documented: `sfcluster init --example`.",
        f"cluster: {cluster}",
        f"head: {hosts[0][0]}              # the party whose node runs Ray's head and the one driver",
        "tls: on                  # mutual TLS between the parties; the CA stays on this controller",
        "firewall: open           # only the peers reach the cluster's ports (the SSH user needs passwordless sudo)",
    ]
    if python:
        out.append(f"python: {python}   # each node's Python with SecretFlow and Ray (`sfcluster provision` can make it)")
    else:
        out += ["# python: /opt/sf/bin/python   # each node's Python with SecretFlow and Ray; default python3 on PATH",
                "#                               # (`provision:` + `sfcluster provision` make it: init --example shows how)"]
    if ray_user:
        out += [
            "# Ray and the driver run as this user on every node. It must have NO sudo rights (`check` fails",
            "# otherwise: a driver's code would become root). Make it once on each node:",
            f"#   sudo useradd -m -s /bin/bash {ray_user}",
            f"ray_user: {ray_user}",
        ]
    out += [
        "# Host keys are always checked. Add each node's key to known_hosts first (compare the",
        "# fingerprint out of band):  ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts",
        "# known_hosts: ~/.ssh/known_hosts",
        "nodes:",
    ]
    for party, user, host, port in hosts:
        out += [f"  {party}:", f"    host: {host}"]
        ssh = ", ".join(x for x in (f"user: {user}" if user else "", f"port: {port}" if port else "") if x)
        if ssh:
            out.append(f"    ssh: {{{ssh}}}")
        if sample_data:
            out.append(f"    data: {{{SAMPLE}: {sample_path(ray_user)}}}   # sfcluster data push {party} {SAMPLE} "
                       f"data/{SAMPLE}/{party}.csv")
        else:
            out.append(f"    # data: {{{SAMPLE}: {sample_path(ray_user)}}}   # then: sfcluster data push {party} {SAMPLE} FILE")
    return "\n".join(out) + "\n"


@click.command("init")
@click.argument("hosts", nargs=-1, metavar="PARTY=[USER@]HOST[:PORT]...")
@click.option("-o", "--output", default="inventory.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the inventory.")
@click.option("--cluster", default="demo", show_default=True, help="The cluster's name.")
@click.option("--ray-user", default="sfray", show_default=True,
              help="The user Ray runs as on every node (no sudo rights); '' to run Ray as the SSH user.")
@click.option("--python", metavar="PATH",
              help="The nodes' Python that has SecretFlow and Ray (e.g. /opt/sf/bin/python); default python3 on PATH.")
@click.option("--template", "templates", multiple=True, metavar="NAME",
              help="Also copy a packaged training script here (e.g. train_lr); repeatable.")
@click.option("--sample-data", is_flag=True,
              help="Also write the sample data, one CSV per party (data/breast_cancer/PARTY.csv: scikit-learn's "
                   "breast cancer set split by columns, the label at the head's party), and name it in the "
                   "inventory; 2 or 3 parties.")
@click.option("--example", is_flag=True, help="Print the full, documented example inventory and exit.")
@click.option("--force", is_flag=True, help="Replace files that exist.")
@handle_errors
def init_cmd(hosts: Tuple[str, ...], output: str, cluster: str, ray_user: str, python: Optional[str],
             templates: Tuple[str, ...], sample_data: bool, example: bool, force: bool) -> None:
    """Write a short inventory for the hosts given, and copy out packaged templates.

    \b
      sfcluster init alice=10.0.0.1 bob=ops@10.0.0.2:2222        # -> inventory.yaml
      sfcluster init --template train_lr                          # -> train_lr.py
      sfcluster init alice=10.0.0.1 bob=10.0.0.2 --sample-data    # + data/breast_cancer/{alice,bob}.csv
      sfcluster init --example > inventory.full.yaml               # every key, documented
    The first party is the head. The inventory is checked as `check` would load it; nothing is
    contacted. Next: `sfcluster check -i inventory.yaml`.
    """
    if example:
        sys.stdout.write(EXAMPLE.read_text())
        return
    if not hosts and not templates:
        raise click.UsageError("give the parties' hosts (PARTY=[USER@]HOST[:PORT], two or more) and/or --template NAME")
    for name in templates:  # before anything is written: a bad name changes nothing
        if template_path(name) is None:
            raise click.BadParameter(f"no template {name!r} (templates: {', '.join(template_names())})",
                                     param_hint="--template")
    text = None
    if sample_data and not hosts:
        raise click.UsageError("--sample-data writes one CSV per party: give the parties' hosts too")
    if sample_data and len(hosts) > len(SAMPLE_SHARES):
        raise click.BadParameter(f"the sample data has {len(SAMPLE_SHARES)} shares; {len(hosts)} parties given "
                                 "(train_lr.py -- --synthetic trains on generated data at any number)",
                                 param_hint="--sample-data")
    if python is not None and not re.fullmatch(r"[A-Za-z0-9_./+-]+", python):
        raise click.BadParameter(f"{python!r} is not a command or path (letters, digits and _./+- only)",
                                 param_hint="--python")
    if hosts:
        parsed = [parse_host(h) for h in hosts]
        if len(parsed) < 2:
            raise click.BadParameter("a cluster has two or more parties", param_hint="PARTY=HOST")
        text = inventory_text(cluster, parsed, ray_user or None, sample_data, python)
        try:
            parse_inventory(text, source=output)
        except InventoryError as e:  # a party name or host the loader refuses: said in its words
            raise click.BadParameter("; ".join(p.message for p in e.problems), param_hint="PARTY=HOST") from None
    samples = {p: Path("data") / SAMPLE / f"{p}.csv" for p, *_ in parsed} if sample_data else {}
    targets = ([Path(output)] if text is not None else []) + [Path(Path(template_path(t)).name) for t in templates] + \
        list(samples.values())
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise SfclusterError(f"{', '.join(existing)} exists: nothing was written", "pass --force to replace it")
    if text is not None:
        Path(output).write_text(text)
        console.print(escape(f"wrote {output} ({len(hosts)} parties, head {parsed[0][0]}); "
                             f"next: sfcluster check -i {output}"))
    for name in templates:
        src = template_path(name)
        assert src is not None
        Path(src.name).write_text(src.read_text())
        console.print(escape(f"wrote {src.name}; run it: sfcluster run -i {output} {src.name}"))
    for share, (party, target) in zip(SAMPLE_SHARES, samples.items()):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((TEMPLATES / "data" / SAMPLE / f"{share}.csv").read_bytes())
        console.print(escape(f"wrote {target} (the sample's {share} share); to {party}'s node: "
                             f"sfcluster data push -i {output} {party} {SAMPLE} {target}"))
