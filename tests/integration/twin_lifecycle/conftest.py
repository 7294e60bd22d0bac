from __future__ import annotations

import sys
from pathlib import Path

# The helpers module sits next to the tests (unique name, no package needed).
sys.path.insert(0, str(Path(__file__).resolve().parent))
