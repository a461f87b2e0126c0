"""Tabs hold no torch: importing every webapp/tabs module (with all it imports) leaves torch, transformers and peft
unloaded, so the UI code reaches the model only through Services. A fresh interpreter imports the tabs one by one and
names the first that brought one in."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft")
CHECK = """
import importlib, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
    loaded = [name for name in {heavy!r} if name in sys.modules]
    if loaded:
        sys.exit(f"{{module}} imports {{', '.join(loaded)}}")
print(len(sys.argv) - 1)
"""


def test_no_tab_module_imports_torch() -> None:
    tabs = sorted(f"webapp.tabs.{p.stem}" for p in (ROOT / "webapp" / "tabs").glob("*.py"))
    assert {"webapp.tabs.arena", "webapp.tabs.chat", "webapp.tabs.review", "webapp.tabs.admin"} <= set(tabs)
    out = subprocess.run([sys.executable, "-c", CHECK.format(heavy=HEAVY), *tabs], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(len(tabs))
