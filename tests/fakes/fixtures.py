"""Pytest fixtures for the fakes, loaded for every test by ``pytest_plugins`` in tests/conftest.py."""

import pytest

from .anthropic_server import FakeAnthropic
from .gemini_server import FakeGemini
from .http_server import FakeHTTP, Listener, SilentServer
from .openai_server import FakeOpenAI

__all__ = ["allow_loopback", "fake_anthropic", "fake_gemini", "fake_http", "fake_openai", "listener", "silent_server"]


@pytest.fixture
def fake_openai():
    server = FakeOpenAI(api_key="sk-fake-secret-0123456789").start()
    yield server
    server.stop()


@pytest.fixture
def fake_anthropic():
    server = FakeAnthropic(api_key="sk-ant-fake-secret-0123456789").start()
    yield server
    server.stop()


@pytest.fixture
def fake_gemini():
    server = FakeGemini(api_key="AIza-fake-secret-0123456789").start()
    yield server
    server.stop()


@pytest.fixture
def fake_http():
    server = FakeHTTP().start()
    yield server
    server.stop()


@pytest.fixture
def silent_server():
    server = SilentServer().start()
    yield server
    server.stop()


@pytest.fixture
def listener():
    server = Listener().start()
    yield server
    server.stop()


@pytest.fixture
def allow_loopback(settings):
    """Let the outbound guard reach 127.0.0.1 (where the fakes listen), and nothing else local."""
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": ["127.0.0.1/32"]}
