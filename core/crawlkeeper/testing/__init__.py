"""Testing helpers shipped with crawlkeeper: a fake browser, a local test site and pytest fixtures.

``FakeBrowser`` lets plugin authors test without Chromium; the fixtures (``crawlkeeper_browser``,
``crawlkeeper_app``, ``crawlkeeper_register``, ``crawlkeeper_client``) are in :mod:`.pytest_plugin`, which
pytest loads automatically once crawlkeeper is installed.
"""

from .fake import CannedPage, FakeBrowser, FakeContext, FakePageHandle, FakeRequest, FakeRoute

__all__ = ["CannedPage", "FakeBrowser", "FakeContext", "FakePageHandle", "FakeRequest", "FakeRoute"]
