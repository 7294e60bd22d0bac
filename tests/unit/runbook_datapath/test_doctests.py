"""The examples in the docstrings of the rollback's datapath modules run as written."""
from __future__ import annotations

import doctest

import pytest

from runbook import (cilium_cleanup, containerd, datapath, dns_probe, pod_exec,
                     rollback_datapath)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.mark.parametrize("module", [cilium_cleanup, containerd, datapath, dns_probe, pod_exec,
                                    rollback_datapath], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0, res
