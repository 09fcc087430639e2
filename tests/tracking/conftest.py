"""The tracking tests share the app tests' one-thread fixture (see tests/app/conftest.py)."""

from tests.app.conftest import one_torch_thread  # noqa: F401 - the same autouse fixture
