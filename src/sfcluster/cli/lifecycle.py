"""`sfcluster up`, `down`, `status`, `config`."""
from __future__ import annotations

import sys

import click
from rich.markup import escape
from rich.table import Table

from sfcluster import api, lifecycle
from sfcluster.cli.check import render
from sfcluster.cli.common import (activity, console, emit_json, emit_result, err_console, handle_errors, inventory_option,
                                  json_option, load, lock_wait, party_option, wait_options)
from sfcluster.config import secretflow_config
from sfcluster.exitcodes import Exit
from sfcluster.tls.install import recorded_dirs




@click.command("up")
@inventory_option
@party_option
@click.option("--skip-check", is_flag=True, help="Skip the preflight (facts, privileges and foreign Ray are still checked).")
@click.option("--keep-on-failure", is_flag=True, help="On failure, leave what was started for inspection.")
@click.option("--join-timeout", type=click.FloatRange(min=1), default=lifecycle.JOIN_TIMEOUT, show_default=True,
              metavar="SECONDS", help="How long to wait for every party to join Ray. A head that goes silent ends "
                                      "`up` at most this + 8 s after the wait began (exit 69).")
@click.option("--rotate-certs", is_flag=True, help="tls: on: a NEW CA for the cluster (the old one deleted: every "
                                                   "certificate it issued becomes useless), every node's certificate "
                                                   "reissued from it, Ray restarted with them (refused while a run "
                                                   "holds the lock).")
@click.option("--provision", "provision_first", is_flag=True,
              help="First `sfcluster provision`: each node's venv as the inventory's `provision:` pins it "
                   "(a no-op in seconds where it already is).")
@click.option("--dry-run", is_flag=True,
              help="Show what `up` would do (firewall commands per node, which Ray starts with which argv, which "
                   "certificates are issued) from the same checks and facts; change nothing anywhere.")
@wait_options
@json_option
@handle_errors
def up_cmd(inventory_path: str, parties: tuple, skip_check: bool, keep_on_failure: bool, join_timeout: float, rotate_certs: bool,
           provision_first: bool, dry_run: bool, wait: bool, wait_timeout: float, as_json: bool) -> None:
    """Start the cluster: preflight, firewall rules scoped to peers, Ray head, then workers.

    \b
    Idempotent: on a cluster that is already up with this inventory it changes nothing and says so;
    a node that is down is started again; a Ray that is not this cluster's is reported, never killed.
    On failure it rolls back what it started (unless --keep-on-failure).
    Runs under the cluster lock on the head: while a run, an up or a down holds it, `up` fails at
    once naming the holder (exit 75), or waits with --wait.
    Prints the Ray address and the SecretFlow config the driver will get (`--json`: both, with
    what was done per node).
    Production mode: no Ray; the preflight, the certificates and the firewall of every party. With
    --party (a federation): only that party's node, its certificate from this controller's CA (the
    party's own; `sfcluster ca` prints it for the peers), trusting the peers' CAs (ca_cert).
    """
    target = api.Cluster.load(inventory_path, parties)
    cluster = target.inventory
    if dry_run:
        if provision_first or rotate_certs:
            raise click.UsageError("--dry-run shows the plan of a plain `up`: without --provision or --rotate-certs")
        return _dry_run(target, skip_check, as_json)
    try:
        with activity(f"up: cluster '{cluster.name}'", quiet=as_json) as progress:
            res = target.up(skip_check=skip_check, keep_on_failure=keep_on_failure, join_timeout=join_timeout,
                            lock_wait=lock_wait(wait, wait_timeout), rotate_certs=rotate_certs,
                            provision=provision_first, progress=progress)
    except lifecycle.PreflightFailed as e:
        if not as_json:  # with --json, the report is part of the error's JSON
            render(e.report)
        raise
    config = res.config
    production = not cluster.mode.runs_ray
    if as_json:
        emit_result(res.to_json(), res.exit_code)
        return
    if res.changed:
        console.print(f"[green]cluster '{cluster.name}' is up[/]: " +
                      escape("; ".join(f"{n}: {', '.join(a)}" for n, a in res.actions.items())))
    else:
        console.print(f"[green]cluster '{cluster.name}' is already up with this plan: nothing changed[/]")
    if production:
        console.print("production mode: no Ray; each party's driver comes with `run`. Parties: " + escape(", ".join(
            f"{n.name} (cross-silo {n.spu_advertise}:{n.cross_silo_port}, SPU {n.spu_port})" for n in cluster.nodes)))
        if cluster.federated:
            mine = " ".join(f"--party {p}" for p in cluster.operated_names)
            console.print(f"run this party's driver, with the run id agreed with the other operators: `sfcluster run "
                          f"-i {inventory_path} {mine} --run-id RUN_ID SCRIPT`")
        else:
            console.print("run the drivers (one per party): `sfcluster run -i %s SCRIPT`" % inventory_path)
        return
    console.print(f"Ray address: {cluster.ray_address}   parties: " +
                  ", ".join(f"{p} ({cluster.node(p).cpus} cpus)" for p, s in res.parties.items() if s.get("resource")))
    console.print("SecretFlow config (`sfcluster config -i %s --json`; `run` hands it to the driver):"
                  % inventory_path)
    console.print_json(data={k: config[k] for k in ("parties", "ray_address", "spu_cluster_def")})
    console.print("run a driver: `sfcluster run -i %s SCRIPT`" % inventory_path)


def _dry_run(target: api.Cluster, skip_check: bool, as_json: bool) -> None:
    cluster = target.inventory
    try:
        with activity(f"up --dry-run: checking {len(cluster.operated_names)} node(s)", quiet=as_json):
            p = target.plan_up(skip_check=skip_check)
    except lifecycle.PreflightFailed as e:
        if not as_json:
            render(e.report)
        raise
    if as_json:
        emit_result({"dry_run": True, **p.to_json()}, Exit.OK)
        return
    console.print(f"[bold]up --dry-run[/]: cluster '{escape(cluster.name)}' ({p.mode} mode); nothing was changed")
    for w in p.warnings:
        console.print(f"  [yellow]warning[/] {escape(w)}")
    if p.new_ca:
        console.print(f"  controller  a new CA for cluster '{escape(cluster.name)}' (its key stays on this controller)")
    for n, what in p.certificates.items():
        console.print(f"  {escape(n):>10}  certificate: {escape(what)}")
    for f in p.firewall:
        console.print(f"  {escape(f.node):>10}  firewall {f.action} ({escape(f.backend)}): " + escape(
            "; ".join(" ".join(c) for c in f.commands)) + (" (ruleset on stdin)" if f.ruleset else ""))
    for n, argv in p.start.items():
        console.print(f"  {escape(n):>10}  start Ray: {escape(' '.join(argv))}")
    for n in p.running:
        console.print(f"  {escape(n):>10}  Ray of this cluster is running: left as it is")
    if not p.changes:
        console.print("[green]the cluster is up with this plan: `up` would change nothing[/]")


@click.command("down")
@inventory_option
@party_option
@click.option("--force", is_flag=True, help="Tear down the reachable nodes even when some cannot be reached (when the "
                                           "head cannot be reached, without the cluster lock, and says so).")
@click.option("--cancel-run", is_flag=True, help="If a run holds the cluster lock, cancel it first (as `sfcluster "
                                                 "cancel` does), then tear down.")
@click.option("--purge", is_flag=True, help="Also remove the cluster's certificates from the nodes and its CA from this "
                                           "controller (by default they stay: a later `up` reuses them).")
@wait_options
@json_option
@handle_errors
def down_cmd(inventory_path: str, parties: tuple, force: bool, cancel_run: bool, purge: bool, wait: bool, wait_timeout: float,
             as_json: bool) -> None:
    """Stop workers, then the head; kill this cluster's leftovers holding planned ports; remove
    exactly the firewall rules `up` added. Safe on a half-up cluster; idempotent.

    \b
    Runs under the cluster lock on the head: a cluster is never torn away under a run. While a
    run holds the lock, `down` refuses naming it (exit 75) unless --cancel-run; while an up or a
    down holds it, `down` fails at once (75) or waits with --wait.
    Exit 0 when every node is down, 1 when some node could not be torn down, 69 when a node cannot
    be reached (nothing stopped; see --force), 75 when the lock is held."""
    target = api.Cluster.load(inventory_path, parties)
    cluster = target.inventory
    with activity(f"down: cluster '{cluster.name}'", quiet=as_json) as progress:
        res = target.down(force=force, cancel_run=cancel_run, lock_wait=lock_wait(wait, wait_timeout), purge=purge,
                          progress=progress)
    code = res.exit_code
    if as_json:
        emit_result({"cluster": cluster.name, "stopped": res.stopped, "killed": res.killed, "seconds": res.seconds,
                     "firewall_removed": sorted(res.firewall_removed), "errors": res.errors,
                     "problems": [{"path": n, "line": None, "message": e} for n, e in res.errors.items()]}, code)
        sys.exit(int(code))
    for n, e in res.errors.items():
        err_console.print(f"[red]{escape(n)}: {escape(str(e))}[/]")
    console.print(f"cluster '{cluster.name}' is down" if not res.errors else "down finished with errors")
    sys.exit(int(code))


@click.command("status")
@inventory_option
@party_option
@json_option
@handle_errors
def status_cmd(inventory_path: str, parties: tuple, as_json: bool) -> None:
    """Per party: role, Ray alive, resources seen by the head, SPU listening, firewall rules, the
    drivers connected (from Ray's job table), and who holds the cluster lock (`--json`: `lock`). Exit 0 healthy; 71 degraded (a party is not up,
    or a driver that `sfcluster run` did not start is connected); 69 down."""
    target = api.Cluster.load(inventory_path, parties)
    cluster = target.inventory
    with activity(f"status: asking {len(cluster.operated_names)} node(s)", quiet=as_json):
        res = target.status()
    st, code = res.data, res.exit_code
    if as_json:
        emit_result(st, code)
    elif st.get("mode") == "production":
        _production_table(st)
    else:
        t = Table(title=f"cluster {cluster.name}: {st['health']}")
        for col in ("party", "host", "role", "ray", "resource", "raylet pid", "spu listening", "firewall", "tls"):
            t.add_column(col)
        for r in st["nodes"]:
            t.add_row(escape(r["party"]), escape(r["host"]), r["role"], "[green]alive[/]" if r["ray_alive"] else "[red]down[/]",
                      f"{r['resource']:g}" if r["resource"] else "-", ",".join(map(str, r["raylet_pids"])) or "-",
                      "yes" if r["spu_listening"] else "no", escape(r["firewall"]) if r["reachable"] else f"[red]{escape(r['error'])}[/]",
                      _tls_cell(r))
        console.print(t)
        for d in st["drivers"]:
            tag = "[green]sanctioned[/]" if d["sanctioned"] else "[bold red]NOT sanctioned[/]"
            console.print(f"driver: {escape(str(d['driver_ip']))} pid {escape(str(d['driver_pid']))} {tag}: "
                          f"{escape(str(d['entrypoint']))}")
        if st["lock"].get("held"):
            console.print(f"cluster lock: held by {escape(st['lock']['text'])}")
        for why in st["problems"]:
            console.print(f"[bold red]{escape(why['message'])}[/]")
        for note in st.get("notes", []):
            console.print(f"[yellow]{escape(note)}[/]")
    sys.exit(int(code))


def _production_table(st: dict) -> None:
    t = Table(title=f"cluster {st['cluster']} (production mode): {st['health']}")
    for col in ("party", "host", "cross-silo", "spu", "driver", "firewall", "cert"):
        t.add_column(col)
    for r in st["nodes"]:
        driver_on = r["cross_silo_listening"] or r["spu_listening"]
        t.add_row(escape(r["party"]), escape(r["host"]), str(r["cross_silo_port"]), str(r["spu_port"]),
                  "[green]running[/]" if driver_on else "-",
                  escape(r["firewall"]) if r["reachable"] else f"[red]{escape(r['error'])}[/]",
                  f"{r['cert_days_left']:.0f} d" if r.get("cert_days_left") is not None else "-")
    console.print(t)
    if st["lock"].get("held"):
        console.print(f"cluster lock: held by {escape(st['lock']['text'])}")
    for why in st["problems"]:
        console.print(f"[bold red]{escape(why['message'])}[/]")
    for note in st.get("notes", []):
        console.print(f"[yellow]{escape(note)}[/]")


def _tls_cell(r: dict) -> str:
    mode = {True: "on", False: "[bold red]OFF[/]", None: "-"}[r["tls"]]
    return mode + (f" (cert: {r['cert_days_left']:.0f} d)" if r.get("cert_days_left") is not None else "")


@click.command("config")
@inventory_option
@json_option
@handle_errors
def config_cmd(inventory_path: str, as_json: bool) -> None:
    """The generated SecretFlow config (what `run` hands the driver as $SFCLUSTER_CONFIG). With
    tls: on, each SPU node's `tls_opts` names its certificate files on that node, as the last
    `up` from this controller recorded them."""
    cluster = load(inventory_path)
    dirs = recorded_dirs(cluster)
    cfg = secretflow_config(cluster, dirs)
    missing = [n for n in cluster.party_names if n not in dirs]
    if cluster.tls.value == "on" and missing:
        err_console.print(f"[bold]note:[/] tls: on, but this controller has not brought {escape(', '.join(missing))} up: "
                          "their SPU entries have no tls_opts yet (the certificate paths come with `sfcluster up`)")
    if as_json:
        emit_result(cfg, Exit.OK)
        return
    console.print(f"cluster {cfg['cluster']}, head {cfg['head']}, Ray address {cfg['ray_address']}")
    for p, v in cfg["parties"].items():
        console.print(f"  party {p}: {v['host']}")
    console.print("SPU cluster_def:")
    emit_json(cfg["spu_cluster_def"])
