"""A script's stated needs (run/needs.py): read without running it; `run` refuses before anything
is shipped when the inventory gives less; `check --for` says the same in its table."""
from click.testing import CliRunner

from sfcluster.cli.init import template_path
from sfcluster.cli.main import cli
from sfcluster.doctor import Report, Status
from sfcluster.inventory import parse_inventory
from sfcluster.run import needs

TEMPLATE = str(template_path("train_lr"))


def cluster(cpus: int, mode: str = "simulation"):
    return parse_inventory(f"cluster: demo\nmode: {mode}\ncpus: {cpus}\n"
                           "nodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2, cpus: 4}\n")


def test_the_template_states_its_needs_and_an_option_can_ask_for_more():
    assert needs.needs_for(TEMPLATE, []) == needs.Needs(2, "")
    assert needs.needs_for(TEMPLATE, ["--model", "xgb"]) == needs.Needs(3, "--model xgb")
    assert needs.needs_for(TEMPLATE, ["--model=xgb", "--trees", "3"]).cpus == 3
    assert needs.needs_for(TEMPLATE, ["--model", "glm"]).cpus == 2
    assert needs.needs_for(TEMPLATE, ["--model", "sgb"]) == needs.Needs(4, "--model sgb")


def test_a_script_that_says_nothing_or_lies_in_its_types_needs_nothing(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("print('hi')\n")
    odd = tmp_path / "odd.py"
    odd.write_text("SFCLUSTER_NEEDS = {'cpus': '9', 'by_arg': {'--m': 'x'}}\nimport os; os.system('false')\n")
    broken = tmp_path / "broken.py"
    broken.write_text("SFCLUSTER_NEEDS = {'cpus': 2 + len('x')}\n")  # not a literal: never evaluated
    for s in (plain, odd, broken, tmp_path / "missing.py"):
        assert needs.needs_for(str(s), ["--m", "x"]) == needs.Needs(0, ""), s


def test_run_refuses_before_it_ships_naming_each_party_short():
    err = needs.refusal(cluster(2), TEMPLATE, ["--model", "xgb"])
    assert err is not None and err.exit_code == 78
    assert "train_lr.py (--model xgb) needs cpus: 3" in err.message and "alice has 2" in err.message
    assert "bob" not in err.message and "cpus: 3" in err.hint
    assert needs.refusal(cluster(3), TEMPLATE, ["--model", "xgb"]) is None
    assert needs.refusal(cluster(2, "production"), TEMPLATE, ["--model", "xgb"]) is None  # no Ray to share


def test_check_for_a_script_adds_its_row():
    r = Report()
    needs.check_row(r, cluster(2), TEMPLATE, ["--model", "xgb"])
    assert [(c.node, c.status) for c in r.checks] == [("alice", Status.FAIL)] and "cpus: 3" in r.checks[0].fix
    r = Report()
    needs.check_row(r, cluster(3), TEMPLATE, ["--model", "xgb"])
    assert [c.status for c in r.checks] == [Status.OK]


def test_run_of_the_template_with_too_few_cpus_exits_78_without_touching_a_node(tmp_path):
    inv = tmp_path / "inv.yaml"   # 10.0.0.x: never dialled (the refusal comes before any SSH)
    inv.write_text("cluster: demo\ncpus: 2\nnodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n")
    r = CliRunner().invoke(cli, ["run", "-i", str(inv), "train_lr", "--", "--model", "xgb"])
    assert r.exit_code == 78, r.output
    assert "needs cpus: 3 at every party; alice has 2, bob has 2" in r.output
    r = CliRunner().invoke(cli, ["check", "-i", str(inv), "--", "--model", "xgb"])  # arguments, but for no script
    assert r.exit_code == 2 and "no --for SCRIPT" in r.output, r.output
