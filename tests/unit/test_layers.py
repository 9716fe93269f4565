"""The dependency directions STYLE.md draws, checked in a fresh interpreter."""

import subprocess
import sys

SESSION_MODULES = [
    "authgate.session.cache",
    "authgate.session.cookies",
    "authgate.session.kv",
    "authgate.session.login_state",
    "authgate.session.memory",
    "authgate.session.redis",
    "authgate.session.replay",
    "authgate.session.sessions",
]


def loaded_after(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing `modules`."""
    code = f"import sys\nfor m in {list(modules)!r}: __import__(m)\nprint(*sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_session_package_does_not_load_the_web_framework():
    assert "aiohttp.web" not in loaded_after(*SESSION_MODULES)


def test_the_session_cache_does_not_import_the_sessions_back():
    assert "authgate.session.sessions" not in loaded_after("authgate.session.cache")
