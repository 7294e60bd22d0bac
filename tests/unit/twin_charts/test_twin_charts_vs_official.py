"""The stand-in against the official cilium 1.19.3 archive, both rendered by the real
helm with the same values. Skips when ../shared/charts/cilium-1.19.3.tgz is absent."""
from __future__ import annotations

import pytest

from twin_charts_helpers import (FAILS, STANDIN, VARIANTS, fail_message, helm_template,
                                 objects, workload_view)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

WORKLOADS = ("DaemonSet", "Deployment", "StatefulSet", "Job", "CronJob")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def both(request, helm_bin, module_env, cilium_chart):
    sets = VARIANTS[request.param]
    real = objects(helm_template(helm_bin, module_env, cilium_chart, sets).stdout)
    mine = objects(helm_template(helm_bin, module_env, STANDIN, sets).stdout)
    return real, mine


def test_same_object_set(both):
    real, mine = both
    assert set(mine) == set(real), (
        f"only in the real chart: {sorted(set(real) - set(mine))}; "
        f"only in the stand-in: {sorted(set(mine) - set(real))}")


def test_same_cilium_config(both):
    real, mine = both
    key = ("ConfigMap", "kube-system", "cilium-config")
    r, m = real[key]["data"], mine[key]["data"]
    diff = {k: (r.get(k), m.get(k)) for k in set(r) | set(m) if r.get(k) != m.get(k)}
    assert diff == {}, f"(real, stand-in) per differing key: {diff}"


def test_same_labels_everywhere(both):
    real, mine = both
    for key in real.keys() & mine.keys():
        assert mine[key]["metadata"].get("labels") == real[key]["metadata"].get("labels"), key


def test_same_workloads(both):
    real, mine = both
    for key in real.keys() & mine.keys():
        if key[0] in WORKLOADS:
            assert workload_view(mine[key]) == workload_view(real[key]), key


def test_same_services_secrets_configmap_keys_and_bindings(both):
    real, mine = both
    for key in real.keys() & mine.keys():
        r, m = real[key], mine[key]
        if key[0] == "Service":
            for f in ("type", "clusterIP", "selector", "ports", "internalTrafficPolicy"):
                assert m["spec"].get(f) == r["spec"].get(f), (key, f)
        elif key[0] in ("Secret", "ConfigMap"):
            assert set(m.get("data") or {}) == set(r.get("data") or {}), key
            assert m.get("type") == r.get("type"), key
        elif key[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert (m["roleRef"], m["subjects"]) == (r["roleRef"], r["subjects"]), key
        elif key[0] in ("ClusterRole", "Role"):
            assert m["rules"] == r["rules"], key


@pytest.mark.parametrize("case", sorted(FAILS))
def test_same_template_failures(helm_bin, module_env, cilium_chart, case):
    sets, message = FAILS[case]
    real = helm_template(helm_bin, module_env, cilium_chart, sets, check=False)
    mine = helm_template(helm_bin, module_env, STANDIN, sets, check=False)
    assert real.returncode != 0 and mine.returncode != 0
    assert message in fail_message(real.stderr)
    assert fail_message(mine.stderr) == fail_message(real.stderr)
