"""Helpers shared by the test folders: ``from helpers.<module> import ...``.

``tests/`` is on ``sys.path`` (pytest's rootdir conftest lives there), so every test
module and conftest can import this package. One module per concern:

- ``required_tools``: ``RUNBOOK_REQUIRE_TOOLS`` (a missing helm, kubectl, Chromium,
  OpenSSH client or official chart skips locally and fails in CI) and where the official
  Cilium chart archive is found.
- ``phase_runs``: the fast params copy (short phase timeouts) and ``runner.run`` as the
  phase and fault tests call it.
- ``run_evidence``: readers of a run folder: journal entries, statuses, the text of an
  executed notebook's outputs, the report's visible text, the cell that failed.
- ``twin_disks``: what a twin's node roots hold (file digests, k3s configs, interfaces).
- ``journal_watch``: act on a running phase once its journal reaches a step (the
  "SSH goes down after the server restarted" sequence, the SIGKILL mid-phase).
- ``migrated_run``: the pytest session's one ``runbook rehearse --with-rollback``,
  shared by every test that only reads a migration's evidence.
- ``secret_search``: the credentials a twin holds, and searching files (and every member
  of a ``.tar.gz``, e.g. a cluster snapshot) for them.
"""
