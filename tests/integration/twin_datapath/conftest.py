from __future__ import annotations

import sys
from pathlib import Path

# The harness module sits next to the tests (unique name, no package needed); it reuses
# the network tests' socket-less helpers for setup.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "twin_network"))
