"""The plugin and the test shown in docs/plugins.md work exactly as printed (a new user copies them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_guides_plugin_and_its_test_pass_as_written(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    plugin = next(b for b in blocks if b.startswith("# crawlkeeper_apikey/__init__.py"))
    test = next(b for b in blocks if "def test_apikey_profile_logs_in" in b)
    assert len(plugin.strip().splitlines()) < 40, "the guide promises a complete plugin in under 40 lines"
    (tmp_path / "crawlkeeper_apikey").mkdir()
    (tmp_path / "crawlkeeper_apikey" / "__init__.py").write_text(plugin, encoding="utf-8")
    (tmp_path / "test_apikey.py").write_text(test, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLKEEPER_")}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_apikey.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
