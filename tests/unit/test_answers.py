"""The node scripts' answers, parsed in one place (nodescripts/answers.py): what a broken or hostile
node sends cannot pass for more than it is."""
from sfcluster.nodescripts.answers import GcsAnswer, LockHolder, RayStopped


def test_a_holder_s_fields_of_the_wrong_type_are_not_believed():
    h = LockHolder.parse({"op": "run", "verified": "yes", "pid": True, "driver_pid": "7", "run_id": 5,
                          "user": ["x"], "since": "10:00"})
    assert h.verified is False and h.pid is None and h.driver_pid is None and h.run_id is None and h.user == "?"
    assert not h.run and "[unverified:" in h.text() and "started 10:00" in h.text()
    assert LockHolder.parse({"op": "rm -rf", "verified": True}).op is None
    assert LockHolder.parse("not a mapping") == LockHolder()


def test_a_verified_run_holder_and_how_status_and_json_show_it():
    h = LockHolder.parse({"active": True, "op": "run", "verified": True, "run_id": "20261201-000000-abcdef",
                          "script": "train.py", "user": "ann", "controller": "lap", "since": "x", "pid": 42,
                          "driver_pid": 43, "log": "/h/.sfcluster/demo/runs/20261201-000000-abcdef/driver.log"})
    assert h.run and h.pid == 42 and h.driver_pid == 43
    st = h.for_status()
    assert st["held"] is True and st["text"].startswith("run 20261201-000000-abcdef (train.py)") and "log" not in st
    assert h.to_json()["driver_pid"] == 43 and "active" not in h.to_json() and "cancelled" not in h.to_json()
    assert LockHolder.parse({"active": False}).for_status() == {"held": False}
    assert LockHolder(active=False, error="[alice] timed out").for_status() == {"held": False, "error": "[alice] timed out"}


def test_ray_stop_and_gcs_answers():
    assert RayStopped.parse({"stopped": [3, "4", True, 5], "killed": None}) == RayStopped((3, 5), ())
    g = GcsAnswer.parse({"parties": {"alice": {"ip": "10.0.0.1", "alive": True, "resource": 1},
                                     "bob": {"ip": "10.0.0.2", "alive": True, "resource": None},
                                     "carol": {"alive": "true", "resource": 1.0}},
                         "jobs": [{"job_id": "01", "driver_ip": "10.0.0.1", "driver_pid": 9, "is_dead": False},
                                  {"job_id": "02", "is_dead": True}, "junk"]})
    assert g.missing == ["bob", "carol"] and g.parties["alice"].resource == 1.0 and g.error is None
    assert [j.job_id for j in g.live_jobs()] == ["01"] and g.parties_json()["alice"]["alive"] is True
    assert GcsAnswer.parse({"error": "exit 3"}).error == "exit 3" and not GcsAnswer.parse({"timeout": "yes"}).timeout


def test_provision_answers_believe_only_their_types():
    from sfcluster.nodescripts.answers import NodeStep, VenvBuilt, VenvFound, WheelsThere
    f = VenvFound.parse({"base_version": "3.10.13", "python_ok": "true", "self_swap": True, "user": "sfray",
                         "marker": {"digest": "abc", "versions": {"ray": "2.9.3", "x": 1}},
                         "busy": [{"pid": 7, "cmd": "python"}, "junk"]})
    assert f.python_ok is False and f.self_swap and f.marker_digest == "abc" and f.versions == {"ray": "2.9.3"}
    assert [(b.pid, b.cmd) for b in f.busy] == [(7, "python")]
    assert VenvFound.parse({"marker": "x"}).marker_digest == ""
    assert NodeStep.parse({"refused": "no", "needs_root": 1}) == NodeStep(refused="no")
    assert WheelsThere.parse({"dir": "/h/w", "missing": ["a.whl", 3]}).missing == ["a.whl"]
    b = VenvBuilt.parse({"failed": "pip exited 1", "package": "ray", "stage": "pip", "versions": None})
    assert b.failed and b.package == "ray" and b.versions == {}
