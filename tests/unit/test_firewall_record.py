"""The node's firewall record (nodescripts/firewall_apply.py through firewall/apply.py), run here
as the nodes run it, against fake firewall tools on PATH that log their argv and keep ufw's and
firewalld's rules in a file: `up` records what it adds before adding it, `down` and the rollback
remove exactly that (even after a peer's IP changed), and a record that names anything but our
own rules' removal is refused before anything runs."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from sfcluster.lifecycle import teardown
from sfcluster.connect import Nodes
from sfcluster.errors import RemoteError
from sfcluster.facts import NodeFacts
from sfcluster.firewall import (NO_FALLBACK, FirewallFacts, Recorded, apply_plan, cached_removal, plan_add, plan_remove,
                                remove_recorded, rule_names)
from sfcluster.inventory import parse_inventory
from sfcluster.inventory.model import Cluster
from sfcluster.nodescripts import source, bundle
from sfcluster.remote.group import GroupResult
from sfcluster.nodescripts.answers import RayStopped
from sfcluster.remote.local import LocalRunner

INV = f"""
cluster: demo
python: {sys.executable}
nodes:
  alice: {{host: 10.0.0.1}}
  bob: {{host: 10.0.0.2}}
  carol: {{host: 10.0.0.3}}
"""
BOB_MOVED = INV.replace("10.0.0.2", "10.0.0.22")

# One fake for every tool (by its name), in sh: a Python one per call made these tests slow. It logs
# whether the record was there yet and its argv (one line, arguments split by \037); fails when
# FW_FAIL is in its arguments; keeps ufw's and firewalld's rules in FW_RULES (one a line), refusing
# to delete a rule that is not there, as the real tools do. As the real ones, it adds nothing for a
# rule already there: ufw matches a prepend against a rule whatever its action and comment ("Skipping
# inserting existing rule"), but deletes a rule only with its own comment; firewalld compares rich
# rules parsed (here: with runs of spaces squeezed), answers ALREADY_ENABLED (exit 0) to an add of one
# it has, and lists its rules as they were written.
FAKE_TOOL = r"""#!/bin/sh
US=$(printf '\037')
tool=${0##*/}
join() { for a in "$@"; do printf '%s%s' "$US" "$a"; done; }
ufw_key() { shift; for a in "$@"; do [ "$a" = comment ] && break; printf '%s%s' "$US" "$a"; done; }
{ [ -e "$FW_RECORD" ] && printf 1 || printf 0; join "$tool" "$@"; echo; } >>"$FW_LOG"
if [ -n "$FW_FAIL" ]; then
    case "$*" in *"$FW_FAIL"*) echo "fake failure at $FW_FAIL" >&2; exit 1;; esac
fi
touch "$FW_RULES"
case "$tool $1" in
    "ufw prepend"|"ufw delete") verb=$1; shift; rule="ufw$(join "$@")"; key=$(ufw_key "$@")
        keys=$(grep "^ufw$US" "$FW_RULES" | sed "s/^ufw$US[^$US]*//; s/${US}comment$US.*\$//");;
    "firewall-cmd --add-rich-rule="*) verb=prepend; rule="firewall-cmd$US${1#--add-rich-rule=}"
        key=$(printf '%s' "$rule" | tr -s ' '); keys=$(grep "^firewall-cmd$US" "$FW_RULES" | tr -s ' ');;
    "firewall-cmd --remove-rich-rule="*) verb=delete; rule="firewall-cmd$US${1#--remove-rich-rule=}";;
    "firewall-cmd --list-rich-rules") grep "^firewall-cmd$US" "$FW_RULES" | cut -d "$US" -f 2-; exit 0;;
    *) exit 0;;
esac
if [ "$verb" = delete ]; then
    grep -qxF -- "$rule" "$FW_RULES" || { echo "Could not delete non-existent rule" >&2; exit 1; }
    grep -vxF -- "$rule" "$FW_RULES" >"$FW_RULES.new"
    mv "$FW_RULES.new" "$FW_RULES"
    [ "$tool" = ufw ] && echo "Rule deleted"
elif printf '%s\n' "$keys" | grep -qxF -- "$key"; then
    [ "$tool" = ufw ] && echo "Skipping inserting existing rule" || echo "Warning: ALREADY_ENABLED: '${1#*=}'" >&2
else
    { printf '%s\n' "$rule"; cat "$FW_RULES"; } >"$FW_RULES.new"
    mv "$FW_RULES.new" "$FW_RULES"
    [ "$tool" = ufw ] && echo "Rule inserted"
fi
exit 0
"""


class Node:
    """A fake node: its home (the state dir), its firewall (the fakes' log and rules) and a runner."""

    def __init__(self, tmp: Path) -> None:
        self.home, self.bin = tmp / "home", tmp / "bin"
        self.home.mkdir()
        self.bin.mkdir()
        for tool in ("iptables", "nft", "ufw", "firewall-cmd"):
            (self.bin / tool).write_text(FAKE_TOOL)
            (self.bin / tool).chmod(0o755)
        self.log, self.rules_file = tmp / "calls.log", tmp / "rules.txt"
        self.record = self.home / ".sfcluster" / "demo" / "firewall.json"
        self.env = dict(os.environ, PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", SFCLUSTER_NODE_HOME=str(self.home),
                        FW_LOG=str(self.log), FW_RULES=str(self.rules_file), FW_RECORD=str(self.record))
        self.runner = LocalRunner("node", env=self.env, user="sfops")

    def fail_at(self, text: str) -> None:
        self.env["FW_FAIL"] = text

    def calls(self) -> List[dict]:
        """Each call: its argv, and whether the record was there when it ran."""
        if not self.log.exists():
            return []
        return [{"record": line[0] == "1", "argv": line.split("\037")[1:]} for line in self.log.read_text().splitlines()]

    def rules(self) -> List[List[str]]:
        """ufw's and firewalld's rules, first first."""
        text = self.rules_file.read_text() if self.rules_file.exists() else ""
        return [line.split("\037") for line in text.splitlines()]

    def apply(self, cluster: Cluster, backend: str, fallback=NO_FALLBACK):
        return apply_plan(self.runner, cluster, cluster.node("alice"), backend, fallback, sudo=False)

    def remove(self, cluster: Cluster, fallback=NO_FALLBACK):
        return remove_recorded(self.runner, cluster, cluster.node("alice"), fallback, sudo=False)


@pytest.fixture
def node(tmp_path):
    return Node(tmp_path)


@pytest.fixture
def cluster():
    return parse_inventory(INV)


def as_rules(commands) -> List[List[str]]:
    """What a plan's add commands leave in the fake firewall (ufw and firewalld)."""
    out = []
    for c in commands:
        out.append(["ufw", *c[2:]] if c[0] == "ufw" else ["firewall-cmd", c[1].partition("=")[2]])
    return out


@pytest.mark.parametrize("backend", ["iptables", "nftables", "ufw", "firewalld"])
def test_the_record_is_written_before_the_first_add_and_names_the_plans_removal(node, cluster, backend):
    out = node.apply(cluster, backend)
    plan, undo = plan_add(cluster, "alice", backend), plan_remove(cluster, "alice", backend)
    assert (out.source, out.removed, out.added) == ("nothing", 0, len(plan.commands))
    calls = node.calls()
    if backend == "firewalld":  # what the site has already: looked at once, before the record
        assert calls[0]["argv"] == ["firewall-cmd", "--list-rich-rules"] and not calls[0]["record"]
        calls = calls[1:]
    assert [c["argv"] for c in calls] == [list(c) for c in plan.commands]
    record = {"backend": backend, "remove": [list(c) for c in undo.commands], "plan": plan.digest, "kept": []}
    assert calls[0]["record"]  # already there when the first rule went in
    assert json.loads(node.record.read_text()) == record
    assert stat.S_IMODE(os.lstat(node.record).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(node.record.parent).st_mode) == 0o700
    before = len(node.calls())
    out = node.remove(cluster)  # the planner's removals pass the node's checks, every backend
    assert (out.source, out.removed, out.gone) == ("record", len(undo.commands), 0)
    assert [c["argv"] for c in node.calls()[before:]] == [list(c) for c in undo.commands]
    assert not node.record.exists() and node.rules() == []


def test_a_failing_add_stops_there_and_leaves_a_record_that_remove_clears(node, cluster):
    node.fail_at("from 10.0.0.2")
    with pytest.raises(RemoteError) as e:
        node.apply(cluster, "ufw")
    assert "10.0.0.2" in str(e.value) and "fake failure" in str(e.value) and "rollback" in str(e.value)
    plan = plan_add(cluster, "alice", "ufw").commands
    first_bad = next(i for i, c in enumerate(plan) if "10.0.0.2" in c)
    assert len(node.calls()) == first_bad + 1  # stopped at the first failure
    assert len(node.rules()) == first_bad and node.record.exists()
    node.fail_at("nothing fails")
    out = node.remove(cluster)  # what the rollback does: the record alone, no fallback
    assert out.source == "record" and out.removed == first_bad and out.gone == len(plan) - first_bad
    assert node.rules() == [] and not node.record.exists()


@pytest.mark.parametrize("backend", ["ufw", "firewalld"])
def test_after_a_peers_ip_changed_the_old_rules_go_first_and_down_leaves_none(node, cluster, backend):
    node.apply(cluster, backend)
    moved = parse_inventory(BOB_MOVED)
    assert plan_add(moved, "alice", backend).digest != plan_add(cluster, "alice", backend).digest
    before = len(node.calls())
    out = node.apply(moved, backend)  # up with the new inventory: the record names the old plan
    assert out.source == "record" and out.removed == len(plan_remove(cluster, "alice", backend).commands)
    again = [c["argv"] for c in node.calls()[before:]]
    removals = again[:out.removed]
    assert sum("10.0.0.2" in " ".join(c) and "10.0.0.22" not in " ".join(c) for c in removals) == 5  # bob's old allows
    assert node.rules() == list(reversed(as_rules(plan_add(moved, "alice", backend).commands)))
    assert [r for r in node.rules() if "10.0.0.2" in r or 'address="10.0.0.2"' in r[-1]] == []
    # down with the new inventory and a fallback planned from it: the record counts, nothing of bob's old IP stays
    out = node.remove(moved, fallback=plan_remove(moved, "alice", backend))
    assert out.source == "record" and out.gone == 0 and node.rules() == []


def test_down_after_a_peers_ip_changed_removes_what_up_added(node, cluster, monkeypatch, tmp_path):
    """The reproduced bug: up, then bob's IP changes in the inventory, then down. Recomputed from
    the inventory, the removal missed bob's old allows (5 ufw rules); the node's record has them."""
    node.apply(cluster, "ufw")  # what `up` did on alice
    moved = parse_inventory(BOB_MOVED)
    stale = {tuple(r) for r in as_rules(plan_add(cluster, "alice", "ufw").commands)} - \
        {tuple(r) for r in as_rules(plan_remove(moved, "alice", "ufw").commands)}
    assert len(stale) == 5  # what a removal recomputed from the new inventory leaves behind
    fw = FirewallFacts("ufw", rules_present=True, rules_complete=True,
                       record=Recorded("ufw", plan_add(cluster, "alice", "ufw").digest))
    facts = NodeFacts(node="alice", hostname="alice", user="sfops", python="3.10.13", ray=None, secretflow=None, spu=None,
                      addresses=[], ports={}, ray_processes=[], sudo="root", firewall=fw, mem_available=None,
                      shm_free=None, tmp_free=None)
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "controller"))  # no cached copy either
    monkeypatch.setattr(teardown, "gather_all", lambda *a, **kw: GroupResult(results={"alice": facts}))
    monkeypatch.setattr(teardown, "stop_ray", lambda *a: RayStopped())

    nodes = Nodes(moved, runners={"alice": node.runner})  # the core takes any Runner
    res = teardown._down(moved, nodes, force=False, progress=lambda n, m: None)  # _down: without the cluster lock
    assert res.errors == {} and res.firewall_removed == ["alice"]
    assert node.rules() == [] and not node.record.exists()


def test_up_replaces_rules_whose_record_names_another_plan(cluster):
    plan = plan_add(cluster, "alice", "ufw")
    moved = plan_add(parse_inventory(BOB_MOVED), "alice", "ufw")
    assert not FirewallFacts("ufw", True, True, record=Recorded("ufw", plan.digest)).needs(plan)
    # ufw counts allows and denies: after bob's IP changed the count still looks complete; the record tells
    assert FirewallFacts("ufw", True, True, record=Recorded("ufw", plan.digest)).needs(moved)
    assert FirewallFacts("ufw", True, False, record=Recorded("ufw", plan.digest)).needs(plan)  # incomplete
    assert not FirewallFacts("ufw", True, True).needs(moved)  # no record (an older sfcluster): the probe alone


def test_without_a_record_remove_falls_back_to_what_the_controller_sends(node, cluster):
    node.apply(cluster, "firewalld")
    node.record.unlink()  # rules added by an older sfcluster: no record on the node
    assert node.remove(cluster).source == "nothing" and len(node.rules()) == 30  # nothing sent, nothing done
    out = node.remove(cluster, fallback=cached_removal(cluster, "alice", "firewalld", "none"))  # an old cache entry
    assert (out.source, out.removed, out.gone) == ("fallback", 30, 0) and node.rules() == []
    out = node.remove(cluster, fallback=plan_remove(cluster, "alice", "firewalld"))
    assert (out.source, out.removed, out.gone) == ("fallback", 0, 30)  # idempotent: all gone already


def test_apply_without_a_record_removes_the_fallback_first(node, cluster):
    node.apply(cluster, "ufw")
    node.record.unlink()
    moved = parse_inventory(BOB_MOVED)
    out = node.apply(moved, "ufw", fallback=plan_remove(cluster, "alice", "ufw"))  # the controller's cached copy
    assert out.source == "fallback" and out.removed == 30
    assert node.rules() == list(reversed(as_rules(plan_add(moved, "alice", "ufw").commands)))


FORGED = {
    "rm": ("iptables", [["rm", "-rf", "/"]]),
    "flush INPUT": ("iptables", [["iptables", "-w", "-F", "INPUT"]]),
    "flush INPUT, no -w": ("iptables", [["iptables", "-F", "INPUT"]]),
    "delete INPUT rule 1": ("iptables", [["iptables", "-w", "-D", "INPUT", "1"]]),
    "another cluster's chain": ("iptables", [["iptables", "-w", "-X", "SFC-other"]]),
    "tool of another backend": ("ufw", [["iptables", "-w", "-X", "SFC-demo"]]),
    "nft flush ruleset": ("nftables", [["nft", "flush", "ruleset"]]),
    "another table": ("nftables", [["nft", "delete", "table", "inet", "filter"]]),
    "ufw by number": ("ufw", [["ufw", "delete", "1"]]),
    "ufw reset": ("ufw", [["ufw", "--force", "reset"]]),
    "ufw rule not ours": ("ufw", [["ufw", "delete", "allow", "22", "comment", "site"]]),
    "firewalld service": ("firewalld", [["firewall-cmd", "--remove-service=ssh"]]),
    "firewalld permanent": ("firewalld", [["firewall-cmd", "--permanent", "--remove-rich-rule=rule drop"]]),
    "firewalld: a site's service rule": ("firewalld", [["firewall-cmd",
                                                        '--remove-rich-rule=rule family="ipv4" service name="ssh" accept']]),
    "firewalld: an accept from a network": ("firewalld", [["firewall-cmd", '--remove-rich-rule=rule family="ipv4" source '
                                                           'address="10.0.0.0/8" port port="6379" protocol="tcp" accept']]),
    "firewalld: a drop from an address": ("firewalld", [["firewall-cmd", '--remove-rich-rule=rule family="ipv4" source '
                                                         'address="10.0.0.2" port port="6379" protocol="tcp" drop']]),
    "firewalld: a second rule after a newline": ("firewalld", [["firewall-cmd", '--remove-rich-rule=rule priority="32000" '
                                                                'family="ipv4" port port="6379" protocol="tcp" drop\n']]),
    "firewalld: a port out of range": ("firewalld", [["firewall-cmd", '--remove-rich-rule=rule priority="32000" '
                                                      'family="ipv4" port port="99999" protocol="tcp" drop']]),
    "unknown backend": ("sh", [["sh", "-c", "true"]]),
    "not a list": ("iptables", "iptables -w -F INPUT"),
}


@pytest.mark.parametrize("forged", FORGED.values(), ids=list(FORGED))
@pytest.mark.parametrize("action", ["remove", "apply"])
def test_a_forged_record_is_refused_and_nothing_runs(node, cluster, forged, action):
    node.record.parent.mkdir(mode=0o700, parents=True)
    os.chmod(node.record.parent.parent, 0o700)
    backend, remove = forged
    if isinstance(remove, list) and backend in ("iptables", "nftables", "ufw", "firewalld"):
        # a valid first entry: the whole list is checked before anything runs
        remove = [list(plan_remove(cluster, "alice", backend).commands[0])] + remove
    node.record.write_text(json.dumps({"backend": backend, "remove": remove, "plan": "0" * 64}))
    with pytest.raises(RemoteError) as e:
        node.remove(cluster, fallback=plan_remove(cluster, "alice", "iptables")) if action == "remove" \
            else node.apply(cluster, "iptables")
    assert "refused" in str(e.value) or "not a record" in str(e.value)
    assert "firewall.json" in str(e.value)  # the fix names the file
    assert node.calls() == [] and node.record.exists()


def test_a_forged_fallback_is_refused_too(node, cluster):
    with pytest.raises(RemoteError, match="refused"):
        forged = {"backend": "iptables", "remove": [["iptables", "-F", "INPUT"]]}  # a controller cache edited by hand
        node.remove(cluster, fallback=cached_removal(cluster, "alice", forged, "iptables"))
    assert node.calls() == []


def test_an_unsafe_state_dir_is_refused_before_any_rule_changes(node, cluster):
    (node.home / ".sfcluster").mkdir(mode=0o700)
    (node.home / ".sfcluster" / "demo").mkdir()
    os.chmod(node.home / ".sfcluster" / "demo", 0o770)
    with pytest.raises(RemoteError, match="not safe"):
        node.apply(cluster, "ufw")
    assert node.calls() == []


def test_a_long_cluster_names_hashed_chain_passes_the_checks(node):
    long = parse_inventory(INV.replace("cluster: demo", "cluster: " + "x" * 31))
    node.record = node.home / ".sfcluster" / long.name / "firewall.json"
    node.env["FW_RECORD"] = str(node.record)
    for backend in ("iptables", "nftables"):
        node.apply(long, backend)
        assert node.record.exists() and node.remove(long).removed == len(plan_remove(long, "alice", backend).commands)


def test_the_probe_reads_the_records_plan_and_backend_only(node, cluster):
    def probe() -> dict:
        req = {"cluster": "demo", "firewall_backend": "none", "ports": [], **rule_names(cluster)}
        env = {k: v for k, v in node.env.items() if k != "SUDO_UID"}  # the record is ours, not a sudo caller's
        p = subprocess.run([sys.executable, "-c", source("probe"), json.dumps(req)], capture_output=True, text=True,
                           timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])["firewall"]
    assert probe()["record"] is None
    node.apply(cluster, "ufw")
    assert probe()["record"] == {"backend": "ufw", "plan": plan_add(cluster, "alice", "ufw").digest, "kept_ufw": [0, 0]}
    node.record.write_text("not json")
    assert "not a record" in probe()["record"]["error"]


SITE_RULES = json.loads((Path(__file__).parent / "data" / "firewall" / "site_rules.json").read_text())


def counterpart(add: List[str]) -> List[str]:
    return ["ufw", "delete", *add[2:]] if add[0] == "ufw" else \
        ["firewall-cmd", "--remove-rich-rule=" + add[1].partition("=")[2]]


@pytest.mark.parametrize("case", SITE_RULES, ids=[c["case"] for c in SITE_RULES])
def test_a_rule_the_site_already_had_is_neither_recorded_nor_removed(node, cluster, case):
    """Facts in (the site's rules), out: what up adds, what the record names, what down removes."""
    backend, site, kept = case["backend"], case["site"], case["kept"]
    node.rules_file.write_text("".join("\037".join(r) + "\n" for r in site))
    plan, undo = plan_add(cluster, "alice", backend), plan_remove(cluster, "alice", backend)
    assert all(k in [list(c) for c in plan.commands] for k in kept)  # the data names rules of the plan
    for _ in range(2):  # the first up, then an up that replaces its own rules: the site's stay out of it
        out = node.apply(cluster, backend)
        assert (out.added, out.kept) == (len(plan.commands) - len(kept), len(kept))
        record = json.loads(node.record.read_text())
        assert record["kept"] == kept
        assert record["remove"] == [list(c) for c in undo.commands if list(c) not in [counterpart(k) for k in kept]]
        assert all(r in node.rules() for r in site)
    if backend == "ufw":  # what the probe counts as ours is short by the site's: complete all the same
        req = {"cluster": "demo", "firewall_backend": "none", "ports": [], **rule_names(cluster)}
        p = subprocess.run([sys.executable, "-c", source("probe"), json.dumps(req)], capture_output=True, text=True,
                           timeout=60, env={k: v for k, v in node.env.items() if k != "SUDO_UID"})
        rec = json.loads(p.stdout.strip().splitlines()[-1])["firewall"]["record"]
        assert rec["kept_ufw"] == [sum(k[2] == "allow" for k in kept), sum(k[2] == "deny" for k in kept)]
    out = node.remove(cluster, fallback=plan_remove(cluster, "alice", backend))
    assert (out.source, out.gone) == ("record", 0)  # nothing removed that was not there, nothing of the site's
    assert node.rules() == site and not node.record.exists()


@pytest.mark.parametrize("backend", ["ufw", "firewalld"])
def test_a_plan_whose_removal_is_not_its_adds_counterpart_is_refused(node, cluster, backend):
    """The record names what the plan adds: a request whose removal names more (a site's rule) is refused."""
    plan, undo = plan_add(cluster, "alice", backend), plan_remove(cluster, "alice", backend)
    req = {"action": "apply", "cluster": "demo", "sudo": False, "names": rule_names(cluster),
           "fallback": {"backend": "none", "remove": []}, "backend": backend, "add": [list(c) for c in plan.commands[1:]],
           "add_stdin": None, "remove": [list(c) for c in undo.commands], "plan": plan.digest}
    p = subprocess.run([sys.executable, "-c", bundle("firewall_apply")], input=json.dumps(req), capture_output=True,
                       text=True, timeout=60, env=node.env)
    answer = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 3 and answer["kind"] == "bad_request" and "exactly the removal" in answer["error"]
    assert node.calls() == [] and not node.record.exists()
