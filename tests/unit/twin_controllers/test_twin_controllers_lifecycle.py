"""Unit tests of the pod/node lifecycle as data: stages, programs, runs, rollouts, PDB
arithmetic, cron schedules, image catalog, events conversion and container logs."""
from __future__ import annotations

import doctest
import importlib

import pytest

from twin.controllers.kubelet_events import status_changes
from twin.controllers.logs import ContainerLogs
from twin.controllers.pod_runs import PodRuns, container_state
from twin.controllers.pod_status import PodFate, build_pod_status, crash_loop_message, go_duration
from twin.controllers.programs import Program, program_for
from twin.controllers.stages import STAGES, backoff, seconds
from twin.controllers.workloads.cronjobs import ScheduleError, next_minute, parse_schedule
from twin.controllers.workloads.disruption import EVICTION_REFUSED, eviction_decision
from twin.controllers.workloads.rollouts import fenceposts, new_rs_replicas, old_rs_targets
from twin.fixtures.images import CILIUM_CHART_IMAGES, ImageCatalog, canonical_ref, split_ref
from twin.store.conversion import to_served, to_storage

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}}


def test_every_stage_names_its_source_and_backoffs_double_to_their_cap():
    for stage in STAGES.values():
        assert stage.source and stage.then and stage.delay >= 0
    assert seconds("pod.sigterm-exit") < seconds("pod.sigkill")
    assert [backoff("pod.crash-loop", n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert backoff("job.pod-failure-backoff", 10) == STAGES["job.pod-failure-backoff"].cap


@pytest.mark.parametrize("container, want", [
    ({"image": "busybox:1.36"}, (0.0, 0, (), 1.0)),                      # sh without a terminal
    ({"image": "nginx:1.27"}, (None, 0, None, 1.0)),                      # a server
    ({"image": "x", "command": ["sleep", "30"]}, (30.0, 0, (), None)),    # PID 1 ignores SIGTERM
    ({"image": "x", "command": ["sh", "-c", "echo a && false || echo b; exit 4"]}, (0.0, 4, ("a", "b"), None)),
    ({"image": "x", "command": ["sh", "-c", "exec myserver --port 80"]}, (None, 0, (), 1.0)),
    ({"image": "x", "command": ["/bin/sh", "-c"], "args": ["sleep 2m; echo done"]}, (120.0, 0, ("done",), None)),
    ({"image": "longhornio/longhorn-manager:v1.7.2", "args": ["sleep", "infinity"]}, (None, 0, (), 1.0)),
    ({"image": "busybox:1.36", "args": ["sleep", "5"]}, (5.0, 0, (), None)),   # no entrypoint: args run
    ({"image": "x", "command": ["sh", "-ec", "trap true INT TERM; sleep infinity & wait"]}, (None, 0, (), 1.0)),
])
def test_programs_read_like_a_shell(container, want):
    p = program_for(POD, container)
    assert (p.runs_for, p.exit_code) == want[:2]
    if want[2] is not None:
        assert p.lines == want[2]
    assert p.stop_seconds == want[3]


def test_program_output_keeps_its_times():
    p = program_for(POD, {"image": "x", "command": ["sh", "-c", "echo a; sleep 5; echo b; sleep 1"]})
    assert p.output == ((0.0, "a"), (5.0, "b")) and p.runs_for == 6.0 and p.timed
    assert not program_for(POD, {"image": "nginx:1.27"}).timed


def test_sigterm_annotation_overrides_every_container():
    pod = {"metadata": {"name": "p", "annotations": {"twin.phase22.io/sigterm-exit-seconds": "ignore"}}}
    assert program_for(pod, {"image": "nginx:1.27"}).stop_seconds is None
    pod["metadata"]["annotations"]["twin.phase22.io/sigterm-exit-seconds"] = "7"
    assert program_for(pod, {"image": "nginx:1.27"}).stop_seconds == 7.0


def test_http_clients_ask_the_cluster():
    calls = []

    def reach(url, ns):
        calls.append((url, ns))
        return (url.startswith("http://up"), "can't connect to remote host (10.43.0.9): Connection refused")
    ok = program_for(POD, {"image": "b", "command": ["wget", "-qO-", "http://up:80"]}, reach)
    bad = program_for(POD, {"image": "b", "command": ["wget", "http://down:80"]}, reach)
    assert ok.exit_code == 0 and bad.exit_code == 1
    assert bad.lines[-1] == "wget: can't connect to remote host (10.43.0.9): Connection refused"
    assert calls == [("http://up:80", "ns"), ("http://down:80", "ns")]   # the pod's namespace


@pytest.mark.parametrize("policy, t, want", [
    ("Always", 4.0, ("running", 0, False)),
    ("Always", 6.0, ("waiting", 1, False)),       # exited at 5, back-off 10 s
    ("Always", 16.0, ("running", 1, False)),      # restarted at 15
    ("OnFailure", 6.0, ("waiting", 1, False)),
    ("Never", 6.0, ("terminated", 0, True)),
])
def test_container_state_follows_restart_policy(policy, t, want):
    st, _ = container_state(Program(5.0, exit_code=2), policy, t)
    assert (st.kind, st.restarts, st.final) == want


def test_on_failure_stops_after_success():
    st, nxt = container_state(Program(1.0, exit_code=0), "OnFailure", 3.0)
    assert st.kind == "terminated" and st.final and nxt is None


def test_unknown_image_pull_fails_then_backs_off():
    runs = PodRuns(ImageCatalog(["docker.io/library/nginx:1.27"]))
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:nope"}]}}
    fate = PodFate("Running", True, cni="flannel", ip="10.42.0.9")
    seen = []
    for t in (0.0, 1.5, 2.5, 12.5, 13.5, 14.5):
        f, due = runs.adjust("k", pod, fate, t)
        seen.append(f.waiting_reason)
        assert f.phase == "Pending" and not f.ready and due > t
    assert seen == ["ContainerCreating", "ErrImagePull", "ImagePullBackOff", "ImagePullBackOff",
                    "ErrImagePull", "ImagePullBackOff"]
    f, _ = runs.adjust("k", pod, fate, 1.5)
    assert "docker.io/library/nginx:nope: not found" in f.message
    known = {"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}
    assert runs.adjust("q", known, fate, 0.0) == (fate, None)


def test_catalog_knows_the_official_chart_images_by_tag_and_digest():
    cat = ImageCatalog(CILIUM_CHART_IMAGES)
    for ref in CILIUM_CHART_IMAGES:
        assert cat.knows(ref)
    assert cat.knows("quay.io/cilium/operator-generic:v1.19.3")
    assert not cat.knows("quay.io/cilium/cilium:v1.19.3@sha256:" + "0" * 64)
    assert not cat.knows("quay.io/cilium/cilium:v1.19.4")
    assert split_ref("nginx") == ("docker.io/library/nginx", None, None)
    assert canonical_ref("bitnami/redis:7") == "docker.io/bitnami/redis:7"
    assert ImageCatalog(None).knows("anything:at-all")


def test_crash_loop_status_has_the_kubelet_message_and_the_crash_in_last_state():
    pod = {"metadata": dict(POD["metadata"]),
           "spec": {"containers": [{"name": "agent", "image": "a:1",
                                    "terminationMessagePolicy": "FallbackToLogsOnError"}]}}
    crash = PodFate("Running", False, "CrashLoopBackOff", "why it died", ip="10.0.0.4")
    st = build_pod_status(pod, None, crash, "T", crash_messages={"agent": "fatal: why it died"})
    cs = st["containerStatuses"][0]
    assert cs["state"]["waiting"]["message"] == crash_loop_message(pod, "agent", 1)
    assert cs["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=agent pod=p_ns(u1)")
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["lastState"]["terminated"]["message"] == "fatal: why it died"
    assert [go_duration(s) for s in (10, 80, 300)] == ["10s", "1m20s", "5m0s"]


def test_status_changes_report_what_a_kubelet_records():
    pod = {"metadata": dict(POD["metadata"]),
           "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
           "status": {"containerStatuses": [{"name": "c", "restartCount": 0,
                                             "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    running = {"containerStatuses": [{"name": "c", "restartCount": 0, "state": {"running": {}}}]}
    got = status_changes(pod, running, image_present=True, start_lines={"c": ("hi",)}, exit_lines={})
    assert [(r.reason, r.message) for r in got] == [
        ("Pulled", 'Container image "nginx:1.27" already present on machine'),
        ("Created", "Created container: c"), ("Started", "Started container c")]
    assert got[1].log_lines == ("hi",)
    pull = {"containerStatuses": [{"name": "c", "restartCount": 0, "state": {
        "waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}
    reasons = [r.reason for r in status_changes(pod, pull, image_present=False, start_lines={}, exit_lines={})]
    assert reasons == ["Pulling", "Failed", "Failed"]


def test_rollout_fenceposts_and_steps_follow_the_real_controller():
    assert fenceposts("25%", "25%", 10) == (3, 2)      # surge rounds up, unavailable down
    assert fenceposts("10%", "10%", 3) == (1, 0)
    assert fenceposts(0, 0, 3) == (0, 1)

    def rs(name, spec, avail, created):
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"replicas": spec}, "status": {"availableReplicas": avail}}
    old = rs("old", 10, 10, "2026-01-01T00:00:00Z")
    new = rs("new", 0, 0, "2026-01-02T00:00:00Z")
    # surge 3: the new RS may grow to 3 while the old one still has 10
    assert new_rs_replicas(10, 3, new, [old, new]) == 3
    new = rs("new", 3, 0, "2026-01-02T00:00:00Z")
    # none of the new pods is available yet: old may drop by maxUnavailable (2) only
    assert old_rs_targets(10, 2, new, [old]) == {"old": 8}
    new = rs("new", 3, 3, "2026-01-02T00:00:00Z")
    old = rs("old", 8, 8, "2026-01-01T00:00:00Z")
    # 11 available, 8 must stay: 3 old pods may go
    assert old_rs_targets(10, 2, new, [old]) == {"old": 5}
    # unhealthy old pods go first, whatever the budget of available ones
    sick = rs("old", 8, 5, "2026-01-01T00:00:00Z")
    assert old_rs_targets(10, 2, new, [sick]) == {"old": 5}


def pdb(status, *, gen=1, policy=None, selector=None):
    spec = {"selector": selector or {"matchLabels": {"app": "web"}}, "minAvailable": 2}
    if policy:
        spec["unhealthyPodEvictionPolicy"] = policy
    return {"metadata": {"name": "web", "namespace": "ns", "generation": gen}, "spec": spec,
            "status": dict(status, observedGeneration=status.get("observedGeneration", gen))}


def web_pod(ready=True, phase="Running"):
    return {"metadata": {"name": "web-1", "namespace": "ns", "labels": {"app": "web"}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_eviction_decision_by_the_pod_disruption_budget():
    full = pdb({"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2})
    refused = eviction_decision(web_pod(), [full])
    assert (refused.allowed, refused.code, refused.message) == (False, 429, EVICTION_REFUSED)
    assert refused.cause == "The disruption budget web needs 2 healthy pods and has 2 currently"
    ok = eviction_decision(web_pod(), [pdb({"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2})])
    assert ok.allowed and ok.pdb is not None
    assert eviction_decision(web_pod(), []).allowed
    assert eviction_decision(web_pod(phase="Succeeded"), [full]).allowed
    assert eviction_decision(web_pod(ready=False), [full]).allowed               # budget met
    short = pdb({"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 2})
    assert not eviction_decision(web_pod(ready=False), [short]).allowed
    assert eviction_decision(web_pod(ready=False), [pdb(dict(short.get("status")), policy="AlwaysAllow")]).allowed
    stale = pdb({"disruptionsAllowed": 1, "observedGeneration": 1}, gen=2)
    assert eviction_decision(web_pod(), [stale]).code == 429
    assert eviction_decision(web_pod(), [full, ok.pdb]).code == 500


def test_cron_schedules():
    assert parse_schedule("@hourly")[0] == {0}
    assert parse_schedule("*/20 * * * *")[0] == {0, 20, 40}
    with pytest.raises(ScheduleError):
        parse_schedule("* * *")
    with pytest.raises(ScheduleError):
        parse_schedule("61 * * * *")
    # 1970-01-01T00:00 is a Thursday (cron day 4): the next Friday 09:30 is day 1 + 9.5 h
    assert next_minute(parse_schedule("30 9 * * 5"), 0) == (24 + 9) * 60 + 30


def test_events_k8s_io_view_of_a_core_event():
    core = {"involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "count": 3,
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:00:00.000000Z"},
            "source": {"component": "kubelet", "host": "n"}, "reportingComponent": "kubelet",
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z"}
    served = to_served(core, "events.k8s.io")
    assert served["regarding"]["name"] == "p" and served["note"] == "m"
    assert served["deprecatedCount"] == 3 and served["series"]["count"] == 3
    assert served["reportingController"] == "kubelet" and "involvedObject" not in served
    assert to_storage(served, "events.k8s.io") == core


def test_container_logs_keep_two_instances_and_end_followers():
    logs = ContainerLogs()
    logs.write("u", "c", "one", "two", at=100.0)
    q = logs.follow("u", "c")
    logs.write("u", "c", "three", at=200.0)
    assert q.get_nowait() == (200.0, "three")
    assert [t for _, t in logs.read("u", "c", tail=2)] == ["two", "three"]
    assert [t for _, t in logs.read("u", "c", since=150.0)] == ["three"]
    logs.finish("u", "c")
    assert q.get_nowait() is None
    logs.restart("u", "c")
    assert logs.has("u", "c", previous=True) and logs.read("u", "c") == []
    logs.forget("u")
    assert not logs.has("u", "c") and not logs.has("u", "c", previous=True)


def test_docstring_examples_of_the_lifecycle_modules_run():
    for name in ("twin.controllers.stages", "twin.controllers.programs", "twin.controllers.logs",
                 "twin.controllers.pod_runs", "twin.controllers.heartbeats", "twin.fixtures.images",
                 "twin.store.conversion", "twin.store.garbage_collection",
                 "twin.controllers.workloads.rollouts", "twin.controllers.workloads.cronjobs"):
        result = doctest.testmod(importlib.import_module(name), verbose=False)
        assert result.failed == 0 and result.attempted > 0, name


class _Clock:
    speed = 0.05

    def __init__(self) -> None:
        self.now = 0.0

    def cluster_now(self) -> float:
        return self.now

    def real(self, s: float) -> float:
        return s * self.speed


def _event_store():
    from twin.store import Store
    s = Store()
    s.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    return s


def test_event_recorder_aggregates_repeats_within_ten_minutes():
    from twin.controllers.events import EventRecorder
    store, clock = _event_store(), _Clock()
    rec = EventRecorder(store, clock)
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default", "uid": "u"}}
    for _ in range(3):
        rec.record(pod, "Warning", "BackOff", "Back-off restarting failed container c", component="kubelet",
                   host="n1", field_path="spec.containers{c}")
    events = store.list(store.lookup("", "v1", "events"), "default").items
    assert len(events) == 1 and events[0]["count"] == 3 and events[0]["series"]["count"] == 3
    assert events[0]["metadata"]["name"].startswith("p.")
    clock.now += 601      # past the correlator's window: a new Event
    rec.record(pod, "Warning", "BackOff", "Back-off restarting failed container c", component="kubelet",
               host="n1", field_path="spec.containers{c}")
    assert len(store.list(store.lookup("", "v1", "events"), "default").items) == 2


def test_event_recorder_keeps_events_bounded_by_count_and_ttl():
    from twin.controllers.events import EventRecorder
    store, clock = _event_store(), _Clock()
    rec = EventRecorder(store, clock, max_events=5)
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n1", "uid": "u"}}
    for i in range(8):
        rec.record(node, "Normal", "NodeReady", f"Node n1 status is now: NodeReady ({i})", component="node-controller")
    events_t = store.lookup("", "v1", "events")
    kept = store.list(events_t, "default").items
    assert len(kept) == 5 and {e["involvedObject"]["kind"] for e in kept} == {"Node"}
    assert not any(e["message"].endswith("(0)") for e in kept)      # the oldest went first
    old = dict(kept[0], metadata={"name": "stale", "namespace": "default"},
               lastTimestamp="2000-01-01T00:00:00Z")
    store.create(old, rtype=events_t)                                 # written by someone else
    assert rec.sweep() == 1
    assert store.try_get(events_t, "default", "stale") is None


def test_a_cilium_cni_sandbox_failure_is_failed_create_pod_sandbox():
    from twin.controllers.network import CILIUM_CNI_DOWN_MESSAGE
    pod = {"metadata": dict(POD["metadata"]), "spec": {"containers": [{"name": "c", "image": "x"}]},
           "status": {"containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    new = {"containerStatuses": [{"name": "c", "state": {"waiting": {
        "reason": "ContainerCreating", "message": CILIUM_CNI_DOWN_MESSAGE}}}]}
    got = status_changes(pod, new, image_present=True, start_lines={}, exit_lines={})
    assert [(r.etype, r.reason, r.message) for r in got] == [
        ("Warning", "FailedCreatePodSandBox", CILIUM_CNI_DOWN_MESSAGE)]
    assert 'plugin type="cilium-cni"' in got[0].message
