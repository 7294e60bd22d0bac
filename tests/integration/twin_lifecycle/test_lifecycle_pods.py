"""Pods as kubectl sees them on a real cluster: graceful deletion, image pulls, events,
logs, containers that exit, Jobs and CronJobs (issue 10, rows 2, 3, 4, 5 and 8)."""
from __future__ import annotations

import subprocess

import pytest

from twin_lifecycle_helpers import condition, container_status, start_twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def kube(kubectl_bin, helm_bin, tmp_path_factory):
    # A slower clock than the default (1 cluster second = 200 ms): what a test reads in
    # between stays there long enough on a loaded machine; the behaviour is the same.
    k = start_twin(tmp_path_factory, kubectl_bin, helm_bin, speed=0.2)
    for ns in ("del", "img", "logs", "jobs"):
        k.kubectl("create", "namespace", ns)
    yield k
    k.twin.stop()


# ----------------------------------------------------------------------------- deletion
def test_deleted_pod_is_terminating_for_its_grace_period_then_gone(kube):
    # sleep as PID 1 ignores SIGTERM: the pod stays Terminating until the grace period ends
    kube.kubectl("run", "sleeper", "-n", "del", "--image=busybox:1.36", "--", "sleep", "3600")
    kube.kubectl("wait", "-n", "del", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
    kube.kubectl("delete", "pod", "sleeper", "-n", "del", "--wait=false")
    pod = kube.get("pod", "sleeper", "-n", "del")
    assert pod["metadata"]["deletionTimestamp"]
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    table = kube.kubectl("get", "pod", "sleeper", "-n", "del").stdout
    assert "Terminating" in table
    events = kube.events("del", "sleeper")
    assert any(e["reason"] == "Killing" and e["message"] == "Stopping container sleeper" for e in events)
    # kubectl delete waits until it is gone (30 cluster seconds; SIGKILL at the end)
    kube.kubectl("wait", "-n", "del", "--for=delete", "pod/sleeper", "--timeout=60s")
    assert kube.try_get("pod", "sleeper", "-n", "del") is None


def test_grace_period_and_force_shorten_the_wait(kube):
    for name in ("short", "forced"):
        kube.kubectl("run", name, "-n", "del", "--image=busybox:1.36", "--", "sleep", "3600")
        kube.kubectl("wait", "-n", "del", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    kube.kubectl("delete", "pod", "short", "-n", "del", "--grace-period=5", "--wait=false")
    assert kube.get("pod", "short", "-n", "del")["metadata"]["deletionGracePeriodSeconds"] == 5
    out = kube.kubectl("delete", "pod", "forced", "-n", "del", "--force", "--grace-period=0")
    assert "Immediate deletion does not wait" in out.stderr
    assert kube.try_get("pod", "forced", "-n", "del") is None
    kube.kubectl("wait", "-n", "del", "--for=delete", "pod/short", "--timeout=60s")


def test_finalizers_keep_a_deleted_pod_until_removed(kube):
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: held, namespace: del, finalizers: [example.com/hold]}
spec: {containers: [{name: web, image: "nginx:1.27"}]}
""")
    kube.kubectl("wait", "-n", "del", "--for=condition=Ready", "pod/held", "--timeout=60s")
    kube.kubectl("delete", "pod", "held", "-n", "del", "--wait=false")
    # nginx stops within a second; the pod stays, Terminating, while the finalizer holds it
    kube.until(lambda: "terminated" in container_status(kube.get("pod", "held", "-n", "del"), "web")["state"],
               what="container stopped")
    pod = kube.get("pod", "held", "-n", "del")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 0
    assert "Terminating" in kube.kubectl("get", "pod", "held", "-n", "del").stdout
    kube.kubectl("patch", "pod", "held", "-n", "del", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kube.until(lambda: kube.try_get("pod", "held", "-n", "del") is None, what="pod gone")


# ----------------------------------------------------------------------------- image pulls
def test_unknown_image_fails_to_pull_with_events(kube):
    kube.kubectl("run", "typo", "-n", "img", "--image=nginx:1.27-typo")
    kube.until(lambda: container_status(kube.get("pod", "typo", "-n", "img"), "typo")["state"]
               .get("waiting", {}).get("reason") == "ImagePullBackOff", what="ImagePullBackOff")
    status = kube.kubectl("get", "pod", "typo", "-n", "img").stdout.splitlines()[1].split()[2]
    assert status in ("ImagePullBackOff", "ErrImagePull")     # it alternates, as on a node
    # the kubelet records its events beside the status, not before it (as on a node): wait
    # for the three, then read them once
    wanted = {("Normal", "Pulling"), ("Warning", "Failed"), ("Normal", "BackOff")}
    kube.until(lambda: wanted <= {(e["type"], e["reason"]) for e in kube.events("img", "typo")},
               what="Pulling, Failed and BackOff events", timeout=60)
    events = kube.events("img", "typo")
    assert wanted <= {(e["type"], e["reason"]) for e in events}
    failed = [e["message"] for e in events if e["reason"] == "Failed"]
    assert any(m.startswith('Failed to pull image "nginx:1.27-typo": ') and
               m.endswith("docker.io/library/nginx:1.27-typo: not found") for m in failed)
    assert "Error: ErrImagePull" in failed
    p = kube.kubectl("logs", "typo", "-n", "img", check=False)
    assert p.returncode != 0 and "is waiting to start: trying and failing to pull image" in p.stderr
    # a later pull that fails again adds to the same Event's count (and series)
    kube.until(lambda: any(e["reason"] == "Pulling" and e.get("count", 1) >= 2 for e in kube.events("img", "typo")),
               what="repeated pull aggregated", timeout=90)
    series = kube.get("events.v1.events.k8s.io", "-n", "img")["items"]
    pulling = next(e for e in series if e["reason"] == "Pulling" and e["regarding"]["name"] == "typo")
    assert pulling["series"]["count"] == pulling["deprecatedCount"] >= 2


def test_images_of_running_pods_and_the_official_chart_are_known(kube):
    from twin.fixtures.images import CILIUM_CHART_IMAGES

    catalog = kube.twin.call(lambda: kube.twin.rt.component("workloads").kubelet.runs.catalog)
    pods = [p for p in kube.get("pods", "-A")["items"]
            if p["metadata"]["namespace"] not in ("del", "img", "logs", "jobs")]   # the fixture's
    assert len(pods) > 20
    for p in pods:
        for c in p["spec"]["containers"]:
            assert catalog.knows(c["image"]), c["image"]
    for ref in CILIUM_CHART_IMAGES:
        assert catalog.knows(ref)


# ----------------------------------------------------------------------------- events
def test_get_events_shows_the_kubelet_and_scheduler_story(kube):
    kube.kubectl("create", "deployment", "story", "-n", "logs", "--image=nginx:1.27")
    kube.kubectl("rollout", "status", "deployment/story", "-n", "logs", "--timeout=60s")
    pod = kube.get("pods", "-n", "logs", "-l", "app=story")["items"][0]["metadata"]["name"]
    events = {e["reason"]: e for e in kube.events("logs", pod)}
    assert events["Scheduled"]["source"]["component"] == "default-scheduler"
    assert events["Scheduled"]["message"].startswith(f"Successfully assigned logs/{pod} to ")
    assert {"Pulled", "Created", "Started"} <= set(events)
    assert events["Started"]["involvedObject"]["fieldPath"] == "spec.containers{nginx}"
    assert events["Started"]["count"] == 1 and events["Started"]["firstTimestamp"]
    wide = kube.kubectl("get", "events", "-n", "logs", "-o", "wide").stdout.splitlines()
    assert "COUNT" in wide[0] and "SOURCE" in wide[0]


# ----------------------------------------------------------------------------- logs
def test_logs_tail_since_container_previous_and_follow(kube):
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: chatty, namespace: logs}
spec:
  restartPolicy: Always
  containers:
  - {name: main, image: "busybox:1.36", command: [sh, -c, "echo one; echo two; echo three; sleep 20; exit 3"]}
  - {name: side, image: "nginx:1.27"}
""")
    kube.until(lambda: kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", check=False).stdout
               == "one\ntwo\nthree\n", what="main's lines")
    assert kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", "--tail=1").stdout == "three\n"
    stamped = kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", "--timestamps").stdout.splitlines()
    assert len(stamped) == 3 and stamped[0].endswith("Z one") and "T" in stamped[0].split()[0]
    assert kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", "--since=1h").stdout.count("\n") == 3
    side = kube.kubectl("logs", "chatty", "-n", "logs", "-c", "side").stdout
    assert "ready for start up" in side
    p = kube.kubectl("logs", "chatty", "-n", "logs", "-c", "nope", check=False)
    assert p.returncode != 0 and "container nope is not valid for pod chatty" in p.stderr
    p = kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", "--previous", check=False)
    assert p.returncode != 0 and 'previous terminated container "main" in pod "chatty" not found' in p.stderr
    # the program exits 3 after 20 cluster seconds: restarted (Always), so --previous has the first run
    kube.until(lambda: container_status(kube.get("pod", "chatty", "-n", "logs"), "main")["restartCount"] >= 1,
               what="restart")
    cs = container_status(kube.get("pod", "chatty", "-n", "logs"), "main")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    kube.until(lambda: kube.kubectl("logs", "chatty", "-n", "logs", "-c", "main", "--previous",
                                    check=False).stdout == "one\ntwo\nthree\n", what="previous run's log")
    assert any(e["reason"] == "BackOff" for e in kube.events("logs", "chatty"))


def test_follow_streams_new_lines_until_the_container_exits(kube):
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: logs}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: "busybox:1.36", command: [sh, -c, "echo start; sleep 10; echo middle; sleep 10; echo end"]}
""")
    kube.until(lambda: kube.kubectl("logs", "ticker", "-n", "logs", check=False).returncode == 0,
               what="container started")
    follow = subprocess.run([kube.kubectl_bin, "logs", "-f", "ticker", "-n", "logs"], env=kube.env,
                            capture_output=True, text=True, timeout=60)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == "start\nmiddle\nend\n"
    # the stream ended with the container: when kubectl returned, it had terminated
    assert "Completed" in kube.kubectl("get", "pod", "ticker", "-n", "logs").stdout


# ----------------------------------------------------------------------------- jobs
def test_job_runs_to_completion(kube):
    kube.kubectl("create", "job", "hello", "-n", "jobs", "--image=busybox:1.36", "--",
                 "sh", "-c", "echo hello from a job; sleep 5; echo bye")
    kube.kubectl("wait", "-n", "jobs", "--for=condition=complete", "job/hello", "--timeout=90s")
    job = kube.get("job", "hello", "-n", "jobs")
    assert job["status"]["succeeded"] == 1 and job["status"]["completionTime"]
    assert condition(job, "Complete")["reason"] == "CompletionsReached"
    assert kube.kubectl("logs", "job/hello", "-n", "jobs").stdout == "hello from a job\nbye\n"
    row = kube.kubectl("get", "job", "hello", "-n", "jobs").stdout.splitlines()[1].split()
    assert row[1:3] == ["Complete", "1/1"]
    assert "Completed" in kube.kubectl("get", "pods", "-n", "jobs", "-l", "job-name=hello").stdout
    assert any(e["reason"] == "SuccessfulCreate" for e in kube.events("jobs", "hello"))


def test_failing_job_backs_off_and_fails_at_its_backoff_limit(kube):
    kube.apply("""
apiVersion: batch/v1
kind: Job
metadata: {name: broken, namespace: jobs}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: "busybox:1.36", command: [sh, -c, "echo boom; exit 2"]}]
""")
    kube.kubectl("wait", "-n", "jobs", "--for=condition=failed", "job/broken", "--timeout=90s")
    job = kube.get("job", "broken", "-n", "jobs")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 2
    pods = kube.get("pods", "-n", "jobs", "-l", "job-name=broken")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert all(container_status(p, "main")["state"]["terminated"]["exitCode"] == 2 for p in pods)
    assert "Error" in kube.kubectl("get", "pods", "-n", "jobs", "-l", "job-name=broken").stdout


def test_on_failure_restarts_in_place_and_counts_against_the_limit(kube):
    kube.apply("""
apiVersion: batch/v1
kind: Job
metadata: {name: retry, namespace: jobs}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: OnFailure
      containers: [{name: main, image: "busybox:1.36", command: [sh, -c, "exit 1"]}]
""")
    kube.kubectl("wait", "-n", "jobs", "--for=condition=failed", "job/retry", "--timeout=120s")
    pods = kube.get("pods", "-n", "jobs", "-l", "job-name=retry")["items"]
    # one pod, restarted by the kubelet; the Job deletes it once it has failed
    assert len(pods) <= 1
    assert any(e["reason"] == "BackoffLimitExceeded" for e in kube.events("jobs", "retry"))


def test_cronjob_creates_jobs_on_schedule(kube):
    kube.kubectl("create", "cronjob", "tick", "-n", "jobs", "--image=busybox:1.36",
                 "--schedule=* * * * *", "--", "sh", "-c", "echo tick")
    # every cluster minute: 3 wall seconds at the default speed
    kube.until(lambda: any(j["metadata"]["name"].startswith("tick-") and condition(j, "Complete")
                           for j in kube.get("jobs", "-n", "jobs")["items"]),
               what="a completed scheduled job", timeout=90)
    cj = kube.get("cronjob", "tick", "-n", "jobs")
    assert cj["status"].get("lastScheduleTime")
    jobs = [j for j in kube.get("jobs", "-n", "jobs")["items"] if j["metadata"]["name"].startswith("tick-")]
    assert all(j["metadata"]["ownerReferences"][0]["kind"] == "CronJob" for j in jobs)
    kube.kubectl("patch", "cronjob", "tick", "-n", "jobs", "--type=merge", "-p", '{"spec":{"suspend":true}}')
