"""parse_inventory / load_inventory: the example loads with the right defaults; every bad file is
refused with an InventoryError whose problems name the YAML path and the line."""
from __future__ import annotations

import re
import time
from pathlib import Path
from textwrap import dedent, indent

import pytest

from sfcluster.errors import InventoryError
from sfcluster.inventory import load_inventory, parse_inventory
from sfcluster.inventory.load import (PROVISION_KEYS, DEFAULT_PYTHON, NODE_KEYS, PORT_KEYS, SPU_KEYS, SSH_KEYS, TOP_KEYS,
                                      WORKER_KEYS)
from sfcluster.inventory.yamldoc import MAX_INVENTORY_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from sfcluster.inventory.model import FirewallMode, RayPorts, SpuSettings, SshSpec

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
ALL_KEYS = TOP_KEYS | SSH_KEYS | PORT_KEYS | WORKER_KEYS | SPU_KEYS | NODE_KEYS | PROVISION_KEYS
# "path (line N): message", the shape of every problem but a YAML syntax error
PROBLEM = re.compile(r"^[^\s]+ \(line \d+\): \S")


def y(text: str) -> str:
    return dedent(text).lstrip("\n")


def problems_of(text: str) -> list:
    with pytest.raises(InventoryError) as ei:
        parse_inventory(text, source="bad.yaml")
    err = ei.value
    assert err.source == "bad.yaml"
    assert err.problems, "an InventoryError must carry its problems"
    assert str(err).startswith(f"bad.yaml: invalid inventory ({len(err.problems)} problem(s)):")
    return err.problems


# --------------------------------------------------------------------------------------------
# the example file
# --------------------------------------------------------------------------------------------

def test_example_loads_head_first_with_defaults():
    c = load_inventory(str(EXAMPLE))
    assert c.name == "demo"
    assert c.source == str(EXAMPLE)
    assert c.head_name == "alice" and c.head.name == "alice"
    assert c.party_names == ("alice", "bob", "carol")
    assert [n.name for n in c.workers] == ["bob", "carol"]
    assert [n.host for n in c.nodes] == ["10.10.0.11", "10.10.0.12", "10.10.0.13"]
    assert c.ray_address == "10.10.0.11:6379"
    assert c.temp_dir == "/tmp/sfc-demo/r" and c.temp_root == "/tmp/sfc-demo"

    assert c.ray == RayPorts()          # every port at its default, dashboard off
    assert c.ray.dashboard is None
    assert c.ray.worker_max == 6499
    assert c.spu == SpuSettings()       # SEMI2K / FM128 / 20100
    assert c.firewall is FirewallMode.OPEN
    assert c.known_hosts is None and c.ssh_config is None

    alice, bob, carol = c.nodes
    assert [n.spu_port for n in c.nodes] == [20100, 20101, 20102]
    assert [n.spu_advertise for n in c.nodes] == [n.host for n in c.nodes]
    assert all(n.spu_bind is None for n in c.nodes)
    assert all(n.python == "/opt/sf/bin/python" for n in c.nodes)
    assert [n.cpus for n in c.nodes] == [2, 2, 2]
    assert all(n.firewall_backend == "auto" for n in c.nodes)
    assert alice.data_paths == {"breast_cancer": "/srv/sfdata/breast_cancer.csv"} and bob.data == () and carol.data == ()
    # ssh: top-level defaults, overridden key by key
    assert alice.ssh == SshSpec(user="root")
    assert bob.ssh == SshSpec(user="sfops")
    assert carol.ssh == SshSpec(user="root", port=2222)


def test_example_documents_every_accepted_key():
    text = EXAMPLE.read_text()
    missing = sorted(k for k in ALL_KEYS if not re.search(rf"^\s*#?\s*{k}:", text, re.M))
    assert missing == []


def _uncomment_optional_keys(text: str) -> str:
    """`# key: value` lines of an accepted key become `key: value`."""
    def sub(m: re.Match) -> str:
        return f"{m.group(1)}{m.group(2)}" if m.group(3) in ALL_KEYS else m.group(0)
    return re.sub(r"^(\s*)# ((\w+): \S.*)$", sub, text, flags=re.M)


def test_example_commented_keys_are_valid_too(tmp_path):
    text = _uncomment_optional_keys(EXAMPLE.read_text())
    assert "# dashboard:" not in text and "# bind:" not in text
    # ca_cert names a file beside the inventory: a peer organisation's CA certificate
    from sfcluster.tls.pki import new_ca
    (tmp_path / "alice-ca.pem").write_bytes(new_ca("alice").cert_pem)
    c = parse_inventory(text, source=str(tmp_path / "inventory.yaml"))
    assert c.node("alice").ca_cert == str(tmp_path / "alice-ca.pem")
    assert c.ray.dashboard == 8265
    assert c.known_hosts == "~/.ssh/known_hosts" and c.ssh_config == "~/.ssh/config"
    bob = c.node("bob")
    assert bob.spu_advertise == "203.0.113.12" and bob.spu_bind == "10.10.0.12"
    assert bob.ssh.user == "sfops" and bob.ssh.port == 22
    assert bob.ssh.identity_file == "~/.ssh/id_ed25519"
    assert bob.ssh.alias == "sf-node" and bob.ssh.proxy_jump == "ops@bastion:22"
    assert c.node("carol").ssh.port == 2222
    assert c.node("alice").spu_port == 20100


# --------------------------------------------------------------------------------------------
# good files
# --------------------------------------------------------------------------------------------

MINIMAL = y("""
    cluster: c1
    nodes:
      alice: {host: 10.0.0.1}
      bob: {host: 10.0.0.2}
""")


def test_minimal_file_defaults():
    c = parse_inventory(MINIMAL)
    assert c.head_name == "alice"                  # head defaults to the first party
    assert c.ray == RayPorts() and c.spu == SpuSettings()
    assert c.firewall is FirewallMode.OPEN
    for i, n in enumerate(c.nodes):
        assert n.ssh == SshSpec()
        assert n.python == DEFAULT_PYTHON
        assert n.cpus == 2  # MIN_CPUS: the fewest a party trains with
        assert n.spu_port == 20100 + i
        assert n.spu_advertise == n.host and n.spu_bind is None
        assert n.data == () and n.firewall_backend == "auto"
    assert c.source == "<inventory>"


def test_head_is_moved_first_others_keep_file_order():
    c = parse_inventory(y("""
        cluster: c1
        head: carol
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
          carol: {host: 10.0.0.3}
    """))
    assert c.party_names == ("carol", "alice", "bob")
    assert c.head.name == "carol" and c.ray_address == "10.0.0.3:6379"
    # default SPU ports follow file order, not head-first order
    assert {n.name: n.spu_port for n in c.nodes} == {"alice": 20100, "bob": 20101, "carol": 20102}


def test_overrides_and_pinned_ports():
    c = parse_inventory(y("""
        cluster: c1
        ssh: {user: root, identity_file: ~/.ssh/k}
        python: /opt/sf/bin/python
        cpus: 4
        ports:
          ray_gcs: 7000
          dashboard: 8265
          worker_ports: {start: 30000, count: 50}
          spu_base: 40000
        spu: {protocol: ABY3, field: FM64}
        firewall: check
        nodes:
          alice:
            host: node-a.example.com
            cpus: 8
          bob:
            host: 10.0.0.2
            ssh: {port: 2222}
            python: /usr/bin/python3.10
            spu_port: 41000
            advertise: 203.0.113.2
            bind: 0.0.0.0
            data: {x: /d/x.csv}
            firewall_backend: nftables
          carol:
            host: 10.0.0.3
    """))
    assert c.ray.gcs == 7000 and c.ray.dashboard == 8265
    assert (c.ray.worker_min, c.ray.worker_max) == (30000, 30049)
    assert c.spu == SpuSettings(protocol="ABY3", field="FM64", base_port=40000)
    assert c.firewall is FirewallMode.CHECK
    alice, bob, carol = c.nodes
    assert alice.cpus == 8 and bob.cpus == 4
    assert alice.ssh == SshSpec(user="root", identity_file="~/.ssh/k")
    assert bob.ssh == SshSpec(user="root", port=2222, identity_file="~/.ssh/k")
    assert bob.python == "/usr/bin/python3.10" and carol.python == "/opt/sf/bin/python"
    assert (alice.spu_port, bob.spu_port, carol.spu_port) == (40000, 41000, 40002)
    assert (bob.spu_advertise, bob.spu_bind) == ("203.0.113.2", "0.0.0.0")
    assert bob.data_paths == {"x": "/d/x.csv"} and bob.firewall_backend == "nftables"


@pytest.mark.parametrize("word, mode", [("open", FirewallMode.OPEN), ("check", FirewallMode.CHECK),
                                        ("off", FirewallMode.OFF), ("'off'", FirewallMode.OFF)])
def test_firewall_modes(word, mode):
    # unquoted `off` is a YAML 1.1 boolean: it must still mean "off"
    assert parse_inventory(f"firewall: {word}\n" + MINIMAL).firewall is mode


def test_load_inventory_from_file(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text(MINIMAL)
    assert load_inventory(str(f)).source == str(f)


def test_load_inventory_missing_file(tmp_path):
    with pytest.raises(InventoryError) as ei:
        load_inventory(str(tmp_path / "nope.yaml"))
    assert "cannot read" in ei.value.problems[0]


def test_proxy_jump_forms_and_protocol_party_counts_accepted():
    c = parse_inventory(y("""
        cluster: c1
        ssh: {proxy_jump: ops@bastion.example.com:2222}
        spu: {protocol: CHEETAH}
        nodes:
          alice: {host: 10.0.0.1, ssh: {proxy_jump: 10.0.0.9}}
          bob: {host: fd00::2, ssh: {proxy_jump: bastion}}
    """))
    assert [n.ssh.proxy_jump for n in c.nodes] == ["10.0.0.9", "bastion"]
    assert c.node("bob").host == "fd00::2"          # an IPv6 address without a scope id is fine
    assert c.spu.protocol == "CHEETAH"


def test_limits_leave_room_for_a_100_party_inventory():
    """Every key set on 100 parties stays well under MAX_YAML_NODES and MAX_INVENTORY_BYTES."""
    party = y("""
        p{i}:
          host: 10.1.0.{n}
          cpus: 4
          ssh: {{user: sfops, port: 22, identity_file: ~/.ssh/id_ed25519, proxy_jump: ops@bastion:22}}
          python: /opt/sf/bin/python
          spu_port: {spu}
          advertise: 203.0.113.{n}
          bind: 0.0.0.0
          data: {{train: /data/train_{i}.csv, test: /data/test_{i}.csv}}
          firewall_backend: nftables
    """)
    parties = "".join(indent(party.format(i=i, n=i + 1, spu=30000 + i), "  ") for i in range(100))
    text = _uncomment_optional_keys(EXAMPLE.read_text()).split("\nnodes:")[0].replace("head: alice", "head: p0")
    text += "\nnodes:\n" + parties
    assert len(text) < MAX_INVENTORY_BYTES / 4
    assert len(parse_inventory(text).nodes) == 100


# --------------------------------------------------------------------------------------------
# files that must be refused fast, never with a traceback or a hang
# --------------------------------------------------------------------------------------------

def test_load_inventory_not_utf8(tmp_path):
    f = tmp_path / "inv.yaml"
    data = b"cluster: demo\nnodes:\n  alice: {host: d\xe9mo}\n"
    f.write_bytes(data)
    with pytest.raises(InventoryError) as ei:
        load_inventory(str(f))
    assert ei.value.exit_code == 78
    assert ei.value.problems == [f"(line 3): not UTF-8: byte 0xe9 at byte offset {data.index(0xe9)}; "
                                 f"save the file as UTF-8"]


def test_load_inventory_refuses_a_file_over_the_size_limit(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text(MINIMAL + "#" * MAX_INVENTORY_BYTES + "\n")   # valid YAML, only too big
    with pytest.raises(InventoryError) as ei:
        load_inventory(str(f))
    assert ei.value.problems == [f"the file is {f.stat().st_size} bytes, an inventory is at most "
                                 f"{MAX_INVENTORY_BYTES}: is it the right file?"]


def test_billion_laughs_is_refused_fast():
    lol = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    assert len(lol) < 600                            # 9**9 strings once expanded
    start = time.monotonic()
    problems = problems_of(lol + MINIMAL)
    assert time.monotonic() - start < 5              # was 37 s and 3 GB
    assert len(problems) == 1 and PROBLEM.match(problems[0])
    assert problems[0].message.startswith(f"more than {MAX_YAML_NODES} YAML nodes")
    assert problems[0].line == 5                     # `e:`, the first alias whose expansion passed the limit


def test_too_many_nodes_without_aliases():
    problems = problems_of(MINIMAL + "spu: [" + ", ".join(["1"] * MAX_YAML_NODES) + "]\n")
    assert len(problems) == 1 and problems[0].line == 5
    assert f"more than {MAX_YAML_NODES} YAML nodes" in problems[0]


@pytest.mark.parametrize("text, line", [
    ("cluster: " + "[" * 5000 + "]" * 5000 + "\n", 1),             # was a RecursionError in PyYAML
    ("cluster: demo\nspu: " + "[" * 100000 + "\n", 2),
])
def test_too_deep(text, line):
    problems = problems_of(text)
    assert problems == [f"(line {line}): nested more than {MAX_YAML_DEPTH} levels deep; an inventory needs 5"]


def test_too_deep_through_aliases():
    # each line nests 10 levels around the previous one: shallow in the file, deep once expanded
    text = "".join(f"x{i}: &x{i} {'[' * 10}{f'*x{i - 1}' if i else 1}{']' * 10}\n" for i in range(50))
    problems = problems_of(text + MINIMAL)
    # reported at the alias whose expansion goes too deep: x1's, 10 levels into line 2
    assert f"x1{'.0' * 10} (line 2): nested more than {MAX_YAML_DEPTH} levels deep; an inventory needs 5" in problems


def test_character_yaml_does_not_allow():
    problems = problems_of("cluster: demo\nnodes:\n  alice: {host: 10.0.0.1\x00}\n")
    assert problems == ["(line 3): not valid YAML: character U+0000 is not allowed (special characters are not allowed)"]


# --------------------------------------------------------------------------------------------
# bad files: (id, text, [substrings that must each appear in one problem])
# --------------------------------------------------------------------------------------------

BAD = [
    ("ssh_port_not_int", y("""
        cluster: demo
        head: alice
        ssh:
          user: root
        python: /opt/sf/bin/python
        firewall: open
        nodes:
          alice:
            host: 10.10.0.11
          bob:
            host: 10.10.0.12
            ssh:
              user: sfops
              port: twenty-two
          carol:
            host: 10.10.0.13
    """), ["nodes.bob.ssh.port (line 14): expected an integer, got 'twenty-two'"]),

    ("unknown_top_key", y("""
        cluster: demo
        colour: blue
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["colour (line 2): unknown key 'colour' (allowed: cluster, cpus, firewall,"]),

    ("unknown_node_key", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          bob:
            host: 10.0.0.2
            hots: 10.0.0.3
    """), ["nodes.bob.hots (line 7): unknown key 'hots' (did you mean 'host'? allowed: advertise, base_python, bind, ca_cert, cpus, cross_silo_port, data,"]),

    ("unknown_ssh_key", y("""
        cluster: demo
        ssh:
          username: root
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ssh.username (line 3): unknown key 'username' (allowed: alias, identity_file, port, proxy_jump, user)"]),

    ("unknown_port_key", y("""
        cluster: demo
        ports:
          gcs: 7000
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.gcs (line 3): unknown key 'gcs'"]),

    ("duplicate_party", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          bob:
            host: 10.0.0.2
          bob:
            host: 10.0.0.3
    """), ["nodes.bob (line 7): duplicate key (first at line 5)"]),

    ("duplicate_top_key", y("""
        cluster: demo
        firewall: open
        firewall: check
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["firewall (line 3): duplicate key (first at line 2)"]),

    ("head_not_among_nodes", y("""
        cluster: demo
        head: dave
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["head (line 2): 'dave' is not among nodes (alice, bob)"]),

    ("port_below_1024", y("""
        cluster: demo
        ports:
          ray_gcs: 80
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.ray_gcs (line 3): port 80 out of range 1024-65535"]),

    ("port_above_65535", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            spu_port: 70000
    """), ["nodes.bob.spu_port (line 6): port 70000 out of range 1024-65535"]),

    ("ssh_port_zero", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            ssh: {port: 0}
    """), ["nodes.bob.ssh.port (line 6): port 0 out of range 1-65535"]),

    ("spu_port_equals_ray_gcs_on_head", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
            spu_port: 6379
          bob:
            host: 10.0.0.2
    """), ["nodes.alice.spu_port (line 5): port 6379 on 10.0.0.1 is planned twice: alice:ray_gcs and alice:spu"]),

    ("spu_port_equals_node_manager", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            spu_port: 6380
    """), ["nodes.bob.spu_port (line 6): port 6380 on 10.0.0.2 is planned twice: bob:node_manager and bob:spu"]),

    ("spu_port_inside_worker_range", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            spu_port: 6450
    """), ["nodes.bob.spu_port (line 6): port 6450 on 10.0.0.2 is planned twice: bob:worker_ports and bob:spu"]),

    ("worker_range_over_default_spu_ports", y("""
        cluster: demo
        ports:
          worker_ports:
            start: 20000
            count: 200
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.worker_ports (line 3): port 20100 on 10.0.0.1 is planned twice: alice:worker_ports and alice:spu"]),

    ("two_ray_ports_equal", y("""
        cluster: demo
        ports:
          node_manager: 7000
          object_manager: 7000
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.object_manager (line 4): port 7000 on 10.0.0.1 is planned twice: "
           "alice:node_manager and alice:object_manager"]),

    ("two_parties_one_host", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.1}
    """), ["nodes.bob.host (line 4): parties alice and bob are both on host 10.0.0.1, and port 6380 (node_manager) "
           "is planned for each"]),

    ("unsafe_party_name", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          Bob-1:
            host: 10.0.0.2
    """), ["nodes.Bob-1 (line 5): party name 'Bob-1' is not a safe identifier"]),

    ("unsafe_cluster_name", y("""
        cluster: "my cluster"
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["cluster (line 1): 'my cluster' is not a safe identifier"]),

    ("bad_protocol", y("""
        cluster: demo
        spu:
          protocol: SPDZ2K
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["spu.protocol (line 3): 'SPDZ2K' is not one of SEMI2K, ABY3, CHEETAH, REF2K"]),

    ("bad_field", y("""
        cluster: demo
        spu:
          protocol: SEMI2K
          field: FM256
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["spu.field (line 4): 'FM256' is not one of FM32, FM64, FM128"]),

    ("bad_firewall_mode", y("""
        cluster: demo
        firewall: maybe
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["firewall (line 2): 'maybe' is not one of open, check, off"]),

    ("firewall_true", y("""
        cluster: demo
        firewall: true
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["firewall (line 2): expected a non-empty string, got bool True"]),

    ("bad_firewall_backend", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1, firewall_backend: pf}
          bob: {host: 10.0.0.2}
    """), ["nodes.alice.firewall_backend (line 3): 'pf' is not one of auto, none, iptables, nftables, ufw, firewalld"]),

    ("only_one_node", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
    """), ["nodes (line 2): a SecretFlow cluster needs at least two parties"]),

    ("no_nodes", y("""
        cluster: demo
        firewall: open
    """), ["nodes (line 1): missing (at least two parties are needed)"]),

    ("nodes_not_a_mapping", y("""
        cluster: demo
        nodes:
          - alice
          - bob
    """), ["nodes (line 2): expected a mapping of party name -> node, got list"]),

    ("missing_host", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          bob:
            cpus: 2
    """), ["nodes.bob.host (line 5): missing (IP or DNS name that the other parties use)"]),

    ("empty_host", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          bob:
            host:
    """), ["nodes.bob.host (line 6): missing (IP or DNS name that the other parties use)"]),

    ("empty_node", y("""
        cluster: demo
        nodes:
          alice:
            host: 10.0.0.1
          bob:
    """), ["nodes.bob.host (line 5): missing"]),

    ("bad_host", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: "bad host!"}
    """), ["nodes.bob.host (line 4): 'bad host!' is neither an IP address nor a valid host name"]),

    ("bad_advertise", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            advertise: -nope-
    """), ["nodes.bob.advertise (line 6): '-nope-' is neither an IP address nor a valid host name"]),

    ("missing_cluster", y("""
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["cluster (line 1): missing (a name for this cluster, e.g. 'cluster: demo')"]),

    ("empty_cluster", y("""
        cluster:
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["cluster (line 1): missing"]),

    ("cpus_out_of_range", y("""
        cluster: demo
        cpus: 0
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2, cpus: many}
    """), ["cpus (line 2): cpus 0 out of range 1-1024",
           "nodes.bob.cpus (line 5): expected an integer, got 'many'"]),

    ("data_not_a_mapping", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1, data: [/a.csv]}
          bob: {host: 10.0.0.2}
    """), ["nodes.alice.data (line 3): expected a mapping of name -> path"]),

    ("ssh_not_a_mapping", y("""
        cluster: demo
        ssh: root
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ssh (line 2): expected a mapping, got 'root'"]),

    ("worker_range_past_65535", y("""
        cluster: demo
        ports:
          worker_ports:
            start: 65500
            count: 100
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.worker_ports (line 3): range 65500-65599 goes past 65535"]),

    ("worker_count_too_small", y("""
        cluster: demo
        ports:
          worker_ports: {start: 7000, count: 5}
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ports.worker_ports.count (line 3): count 5 out of range 10-10000"]),

    ("default_spu_port_past_65535", y("""
        cluster: demo
        ports:
          spu_base: 65535
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["nodes.bob.spu_port (line 6): default SPU port 65535+1 = 65536 is past 65535"]),

    ("unsafe_yaml_tag", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob:
            host: 10.0.0.2
            spu_port: !!python/name:os.system
    """), ["nodes.bob.spu_port (line 6): cannot read a value tagged 'tag:yaml.org,2002:python/name:os.system'"]),

    ("bad_int_tag", y("""
        cluster: demo
        cpus: !!int lots
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["cpus (line 2): cannot read a value tagged 'tag:yaml.org,2002:int'"]),

    ("nodes_empty_mapping", y("""
        cluster: demo
        nodes: {}
    """), ["nodes (line 2): a SecretFlow cluster needs at least two parties"]),

    ("aby3_with_two_parties", y("""
        cluster: demo
        spu:
          protocol: ABY3
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["spu.protocol (line 3): ABY3 needs exactly 3 parties, `nodes` has 2"]),

    ("cheetah_with_three_parties", y("""
        cluster: demo
        spu: {protocol: CHEETAH}
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
          carol: {host: 10.0.0.3}
    """), ["spu.protocol (line 2): CHEETAH needs exactly 2 parties, `nodes` has 3"]),

    ("proxy_jump_port_not_int", y("""
        cluster: demo
        ssh:
          proxy_jump: host:abc
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["ssh.proxy_jump (line 3): 'host:abc': port 'abc' is not an integer 1-65535 (expected [user@]host[:port])"]),

    ("proxy_jump_per_node", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1, ssh: {proxy_jump: "ops@bad host"}}
          bob: {host: 10.0.0.2, ssh: {proxy_jump: "ops@bastion:70000"}}
          carol: {host: 10.0.0.3, ssh: {proxy_jump: "a@b,c@d"}}
          dave: {host: 10.0.0.4, ssh: {proxy_jump: "@bastion"}}
          eve: {host: 10.0.0.5, ssh: {proxy_jump: "ops@[fd00::1]:22"}}
          fay: {host: 10.0.0.6, ssh: {proxy_jump: "-oProxyCommand=x"}}
    """), ["nodes.alice.ssh.proxy_jump (line 3): jump host 'bad host' is neither an IP address nor a valid host name",
           "nodes.bob.ssh.proxy_jump (line 4): 'ops@bastion:70000': port '70000' is not an integer 1-65535",
           "nodes.carol.ssh.proxy_jump (line 5): 'a@b,c@d' names several jump hosts; one is supported",
           "nodes.dave.ssh.proxy_jump (line 6): '@bastion' has an empty user before '@'",
           "nodes.eve.ssh.proxy_jump (line 7): 'ops@[fd00::1]:22': an IPv6 address cannot be a jump host here",
           "nodes.fay.ssh.proxy_jump (line 8): jump host '-oProxyCommand=x' is neither an IP address"]),

    ("ipv6_scope_id", y("""
        cluster: demo
        ssh: {proxy_jump: "ops@fe80::9%eth0"}
        nodes:
          alice:
            host: fe80::1%eth0
          bob:
            host: 10.0.0.2
            advertise: fe80::1%$(reboot)
            bind: "fe80::2%1"
    """), ["ssh.proxy_jump (line 2): jump host 'fe80::9%eth0' has a '%': IPv6 scope ids",
           "nodes.alice.host (line 5): 'fe80::1%eth0' has a '%': IPv6 scope ids (fe80::1%eth0) are not supported; "
           "use a global address or a host name",
           "nodes.bob.advertise (line 8): 'fe80::1%$(reboot)' has a '%'",
           "nodes.bob.bind (line 9): 'fe80::2%1' has a '%'"]),

    ("alias_cycle_in_list", y("""
        cluster: demo
        python: &x
          - *x
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["python.0 (line 3): alias *x is used inside the node it names, which would then contain itself forever"]),

    ("alias_cycle_in_mapping", y("""
        cluster: demo
        nodes:
          alice: &x
            host: 10.0.0.1
            ssh: *x
          bob: {host: 10.0.0.2}
    """), ["nodes.alice.ssh (line 5): alias *x is used inside the node it names"]),

    ("alias_cycle_via_merge_key", y("""
        cluster: demo
        nodes:
          alice: {host: 10.0.0.1}
          bob: &x
            host: 10.0.0.2
            <<: *x
    """), ["nodes.bob.<< (line 6): alias *x is used inside the node it names"]),

    ("key_not_a_scalar", y("""
        cluster: demo
        ? [a, b]
        : 1
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """), ["<top> (line 2): a key must be a plain name, not a list or a mapping"]),
]


@pytest.mark.parametrize("text, expected", [pytest.param(t, e, id=i) for i, t, e in BAD])
def test_bad_inventory(text, expected):
    problems = problems_of(text)
    joined = "\n".join(problems)
    for want in expected:
        assert want in joined, f"{want!r} not in:\n{joined}"
    for p in problems:
        assert PROBLEM.match(p), f"no 'path (line N): ' in {p!r}"


def test_bad_file_ids_are_unique():
    ids = [i for i, _, _ in BAD]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("text, line, says", [
    ("cluster: demo\nnodes: [alice,\n", 3, "not closed"),                              # unclosed flow sequence
    ("cluster: demo\nnodes:\n  alice: {host: 10.0.0.1\n  bob: {}\n", 4,
     "a {...} or [...] opened on line 3 is not closed"),                                 # unclosed flow mapping
    ("cluster: demo\n  firewall: open\n", 2, "a ': ' inside a value"),                    # bad indentation
    ("cluster: demo\nnodes:\n  alice:\n    host: 1\n   bob: {}\n", 5, "indentation"),  # a line one space off
    ("cluster: demo\n\tnodes: {}\n", 2, "YAML indents with spaces only"),                 # tab
    ("cluster: demo\n---\ncluster: again\n", 2, "document"),                            # two documents
])
def test_invalid_yaml(text, line, says):
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith(f"(line {line}): not valid YAML at column "), problems[0]
    assert says in problems[0], problems[0]
    assert "the line reads:" in problems[0] or "the file ends" in problems[0], problems[0]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n"])
def test_not_a_mapping(text):
    problems = problems_of(text)
    assert len(problems) == 1
    assert "(line 1)" in problems[0] and "mapping" in problems[0]


def test_all_problems_reported_at_once():
    problems = problems_of(y("""
        cluster: Demo
        colour: blue
        firewall: maybe
        ports:
          ray_gcs: 80
        spu:
          protocol: SPDZ2K
        nodes:
          alice:
            host: 10.0.0.1
            ssh: {port: twenty-two}
          Bob-1:
            hots: 10.0.0.2
    """))
    expected = [
        "cluster (line 1): 'Demo' is not a safe identifier",
        "colour (line 2): unknown key 'colour'",
        "ports.ray_gcs (line 5): port 80 out of range 1024-65535",
        "spu.protocol (line 7): 'SPDZ2K' is not one of",
        "firewall (line 3): 'maybe' is not one of open, check, off",
        "nodes.alice.ssh.port (line 11): expected an integer, got 'twenty-two'",
        "nodes.Bob-1 (line 12): party name 'Bob-1' is not a safe identifier",
        "nodes.Bob-1.hots (line 13): unknown key 'hots'",
        "nodes.Bob-1.host (line 12): missing",
    ]
    for want in expected:
        assert sum(want in p for p in problems) == 1, f"{want!r} not reported exactly once in {problems}"
    assert len(problems) == len(expected)
    assert all(PROBLEM.match(p) for p in problems)


def test_error_exit_code_and_message():
    with pytest.raises(InventoryError) as ei:
        parse_inventory("cluster: demo\nnodes:\n  alice: {host: 10.0.0.1}\n", source="inv.yaml")
    assert ei.value.exit_code == 78  # EX_CONFIG
    assert str(ei.value) == ("inv.yaml: invalid inventory (1 problem(s)):\n"
                             "  nodes (line 2): a SecretFlow cluster needs at least two parties")


def test_an_unknown_key_near_a_known_one_says_which_was_meant():
    problems = problems_of(y("""
        cluster: demo
        firewal: open
        nodes:
          alice: {host: 10.0.0.1, cpu: 2}
          bob: {host: 10.0.0.2}
    """))
    assert any(p.startswith("firewal (line 2): unknown key 'firewal' (did you mean 'firewall'? allowed:") for p in problems), problems
    assert any("unknown key 'cpu' (did you mean 'cpus'?" in p for p in problems), problems
    far = problems_of(y("""
        cluster: demo
        zebra: 1
        nodes:
          alice: {host: 10.0.0.1}
          bob: {host: 10.0.0.2}
    """))
    assert any("unknown key 'zebra' (allowed:" in p for p in far), far  # nothing near: no guess


def test_a_missing_inventory_file_says_how_to_name_one(tmp_path):
    from sfcluster.inventory import load_inventory
    with pytest.raises(InventoryError) as ei:
        load_inventory(str(tmp_path / "inventory.yaml"))
    assert ei.value.exit_code == 78 and "cannot read" in ei.value.problems[0]
    assert "-i PATH" in ei.value.hint and "sfcluster init" in ei.value.hint


def test_load_inventory_names_controller_files_it_cannot_read(tmp_path):
    """identity_file, known_hosts and ssh_config are files on this controller: a missing one is
    the loader's error (78, YAML path and line), before any SSH; parse_inventory of a text is not
    about this machine's files."""
    key = tmp_path / "id_ed25519"
    key.write_text("k")
    text = dedent(f"""\
        cluster: c
        known_hosts: {tmp_path}/known_hosts
        ssh_config: {tmp_path}
        ssh: {{identity_file: {key}}}
        nodes:
          alice: {{host: 10.0.0.1}}
          bob: {{host: 10.0.0.2, ssh: {{identity_file: {tmp_path}/bob_key}}}}
        """)
    f = tmp_path / "inv.yaml"
    f.write_text(text)
    with pytest.raises(InventoryError) as e:
        load_inventory(str(f))
    assert e.value.exit_code == 78
    got = [(p.path, p.line, p.message) for p in e.value.problems]
    assert got == [
        ("known_hosts", 2, f"cannot read {tmp_path}/known_hosts: No such file or directory (fill it as the runbook "
                           "says: ssh-keyscan, fingerprints compared out of band)"),
        ("ssh_config", 3, f"cannot read {tmp_path}: Is a directory"),
        ("nodes.bob.ssh.identity_file", 7, f"cannot read {tmp_path}/bob_key: No such file or directory "
                                           "(the private key SSH logs in with)"),
    ]
    parse_inventory(text)  # the same text, not loaded from this controller: no file is looked at
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "bob_key").write_text("k")
    f.write_text(text.replace(f"ssh_config: {tmp_path}\n", ""))
    assert load_inventory(str(f)).node("bob").ssh.identity_file == f"{tmp_path}/bob_key"
