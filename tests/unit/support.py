"""Small helpers shared by the unit tests (imported as ``support``; pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from typing import Any


def shown(result: Any) -> str:
    """Everything a client sees of a tool result: its text blocks and its structured content."""
    return "\n".join(getattr(b, "text", "") for b in result.content) + json.dumps(result.structured_content or {})


def error_text(result: Any) -> str:
    """The message of a tool result that must be an error."""
    assert result.is_error, shown(result)
    return result.content[0].text
