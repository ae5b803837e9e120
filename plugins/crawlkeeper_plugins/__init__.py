"""crawlkeeper's built-in plugins: ``cookies``, ``profiles`` and ``ttl``.

They use only the public API (``import crawlkeeper``) and are registered through the ``crawlkeeper``
entry-point group like any third-party plugin, so each can be disabled and replaced.
"""
