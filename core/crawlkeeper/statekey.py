"""The state key: where the key that seals saved sessions comes from (see :func:`load_sealer`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SessionError
from .logs import register_secret
from .store import Sealer, derive_key, new_key_text

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("crawlkeeper.state")



def load_sealer(config: Config) -> Sealer:
    """The state key: ``CRAWLKEEPER_STATE_KEY``, else ``[sessions] key_file``, else the OS keyring (when a real
    backend exists), else a generated 0600 key file in the user config dir."""
    secret = os.environ.get("CRAWLKEEPER_STATE_KEY")
    if secret:
        register_secret(secret)
        return Sealer(derive_key(secret), "CRAWLKEEPER_STATE_KEY")
    configured = config.settings.sessions.key_file
    if configured is not None:
        path = Path(os.path.expanduser(configured))
        return _key_file(path if path.is_absolute() else config.base_dir / path)
    from_keyring = _keyring_key()
    if from_keyring is not None:
        return from_keyring
    from .config import user_config_dir

    return _key_file(user_config_dir() / "state.key")


def _keyring_key() -> Sealer | None:
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
            return None
        secret = backend.get_password("crawlkeeper", "state-key")
        if not secret:
            secret = new_key_text()
            backend.set_password("crawlkeeper", "state-key", secret)
    except Exception as exc:  # a locked or broken keyring: fall back to the key file
        log.warning("the OS keyring is not usable (%s); using the key file", type(exc).__name__)
        return None
    register_secret(secret)
    return Sealer(derive_key(secret), f"the OS keyring ({type(backend).__name__}, service 'crawlkeeper')")


def _key_file(path: Path) -> Sealer:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(new_key_text() + "\n")
            log.info("generated a new state key in %s", path)
        except FileExistsError:  # another process made it a moment ago
            pass
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("the state key file %s was readable by others; it is 0600 now", path)
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise SessionError(f"the state key file {path} is empty; delete it (saved sessions become unreadable)")
    register_secret(secret)
    return Sealer(derive_key(secret), f"the key file {path}")


__all__ = ["load_sealer"]
