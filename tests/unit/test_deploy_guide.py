"""The compose file and replica config in docs/deploy.md fit together as a reader copies them: every file a
replica reads (its config, the state key, the tokens file) is mounted where the config makes it look.

A replica whose tokens file is missing refuses every client (401), and one without its key cannot read a saved
session: neither shows until the containers run, which the suite cannot do here (no image registry).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from crawlkeeper.config import load_config

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def block(tag: str, first_line: str) -> str:
    guide = GUIDE.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(rf"```{tag}\n(.*?)```", guide, flags=re.S) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/deploy.md should print one block starting {first_line!r}"
    return blocks[0]


def replica_mounts() -> tuple[str, dict[str, str]]:
    """The replicas' --config path and their mounts (container path -> host path), from the compose file."""
    compose = yaml.safe_load(block("yaml", "# compose.yaml"))
    replica = compose["services"]["replica1"]
    assert replica == compose["services"]["replica2"], "both replicas run the same service definition"
    command = replica["command"]
    config = command[command.index("--config") + 1]
    mounts = {}
    for volume in replica["volumes"]:
        host, container, *_ = volume.split(":")
        mounts[container] = host
    return config, mounts


def test_every_file_a_replica_reads_is_mounted_where_it_looks(tmp_path: Path) -> None:
    config_path, mounts = replica_mounts()
    assert mounts.get(config_path) == "./crawlkeeper.toml"
    # The container's file system, under tmp_path: the guide's config, with its absolute paths moved there too.
    root = str(tmp_path)
    text = block("toml", "# crawlkeeper.toml").replace('"/etc/', f'"{root}/etc/')
    inside = Path(root + config_path)
    inside.parent.mkdir(parents=True)
    inside.write_text(text, encoding="utf-8")
    config = load_config(inside)

    def mounted(path: Path) -> str | None:
        return mounts.get("/" + str(path.relative_to(root)))

    assert mounted(config.tokens_file) == "./tokens.json", (config.tokens_file, mounts)
    key_file = config.settings.sessions.key_file
    assert key_file is not None and mounted(Path(key_file)) == "./state.key", (key_file, mounts)

