"""``NetworkModel.one_instant``: a round of questions about one instant reads each node's
network facts once, gets the same answers as without it, and a later instant sees changes."""
from __future__ import annotations

import pytest

from twin.api import Twin
from twin_network_helpers import AGENT1, SPEED, Net

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def net(tmp_path):
    t = Twin(tmp_path / "twin", speed=SPEED).start()
    yield Net(t)
    t.stop()


def test_one_instant_reads_each_node_once_and_answers_the_same(net) -> None:
    nodes = sorted(net.rt.nodes)

    def answers() -> list:
        return [(n, net.net.facts(n), net.net.working_cni(n), net.net.reach(n, "10.43.0.10", 53, "udp"))
                for n in nodes]

    def compare() -> tuple[list, list, int]:
        plain = answers()
        reads = []
        real = net.net._facts
        net.net._facts = lambda name: reads.append(name) or real(name)
        try:
            with net.net.one_instant():
                with net.net.one_instant():        # nested: the outer instant's memo holds
                    inside = answers() + answers()
        finally:
            del net.net._facts
        return plain, inside, len(reads)

    plain, inside, reads = net.call(compare)
    assert inside == plain + plain
    assert reads == len(nodes)
    assert all(cni == "flannel" for _, _, cni, _ in plain)

    # the memo ends with the block: a change on a node shows in the next instant
    net.sh(AGENT1, "sudo ip link delete flannel.1")
    after = net.call(lambda: [net.net.working_cni(n) for n in nodes])
    assert after[nodes.index(AGENT1)] is None and after.count("flannel") == len(nodes) - 1
