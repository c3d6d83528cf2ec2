"""Secrets never leave the process: registered values and URL passwords are masked in every line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_action import redact as redact_module
from hokusai_action.redact import MASK, redact, register_secret, register_url_password, registered_secrets

pytestmark = [pytest.mark.unit]


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """redact keeps secrets in a module-level set: give each test its own."""
    monkeypatch.setattr(redact_module, "_secrets", set())


def test_a_registered_secret_is_masked_everywhere_it_appears() -> None:
    register_secret("whsec_abcdef123456")
    line = "signing with whsec_abcdef123456; again: whsec_abcdef123456."
    assert redact(line) == "signing with ***; again: ***."


def test_the_longest_secret_is_masked_first() -> None:
    # masking the short one first would leave the long one's tail ("-extra") in clear
    register_secret("token")
    register_secret("token-extra-long")
    assert redact("a token-extra-long and a token") == "a *** and a ***"


def test_overlapping_secrets_registered_in_any_order_leave_no_fragment() -> None:
    for secret in ("abcd", "abcdefgh", "efgh", "cdefgh12"):
        register_secret(secret)
    scrubbed = redact("x abcdefgh12 y")
    for secret in registered_secrets():
        assert secret not in scrubbed


@pytest.mark.parametrize("short", ["a", "ab", "abc", ""])
def test_values_shorter_than_four_characters_are_ignored(short: str) -> None:
    register_secret(short)
    assert registered_secrets() == frozenset()
    assert redact("a cab abc") == "a cab abc"


def test_none_is_ignored() -> None:
    register_secret(None)
    register_url_password(None)
    assert registered_secrets() == frozenset()


def test_a_four_character_secret_is_masked() -> None:
    register_secret("pw42")
    assert redact("password pw42") == "password ***"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://hokusai:s3cret@db:5432/hokusai", "postgresql://hokusai:***@db:5432/hokusai"),
        (
            "postgresql+psycopg2://hokusai:s3cret@db.example.com/hokusai",
            "postgresql+psycopg2://hokusai:***@db.example.com/hokusai",
        ),
        ("https://ci-bot:ghp_0123456789@mlflow.example.com", "https://ci-bot:***@mlflow.example.com"),
        ("http://u:p@localhost:5000/api", "http://u:***@localhost:5000/api"),
        ("mysql://root:hunter2@127.0.0.1/site", "mysql://root:***@127.0.0.1/site"),
        ("redis://:only-password@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://guest:guest@rabbit//", "amqp://guest:***@rabbit//"),
        ("git+ssh://deploy:k3y%40x@git.example.com/r.git", "git+ssh://deploy:***@git.example.com/r.git"),
    ],
)
def test_url_passwords_are_masked_in_any_scheme_without_registration(url: str, masked: str) -> None:
    assert redact(f"could not connect to {url} (timeout)") == f"could not connect to {masked} (timeout)"


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://hokusai@db/hokusai",
        "https://mlflow.example.com:5000/#/models",
        "sqlite:////tmp/.hokusai/hokusai.db",
        "projects/hokusai/topics/token-events",
        "user@example.com: 12:30",
        "",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_a_url_password_registered_once_is_masked_when_echoed_bare() -> None:
    # a driver may print only the password ("password authentication failed for ...")
    register_url_password("postgresql://hokusai:pg-Secret-4242@db/hokusai")
    assert registered_secrets() == frozenset({"pg-Secret-4242"})
    assert redact('FATAL: password "pg-Secret-4242" rejected') == 'FATAL: password "***" rejected'


def test_a_url_without_password_registers_nothing() -> None:
    register_url_password("postgresql://hokusai@db/hokusai")
    register_url_password("sqlite:///x.db")
    assert registered_secrets() == frozenset()


def test_a_multi_line_traceback_is_masked_on_every_line() -> None:
    register_secret("whsec_abcdef123456")
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    sign('whsec_abcdef123456')\n"
        "OperationalError: connection to postgresql://u:pw9999@db failed\n"
    )
    scrubbed = redact(traceback)
    assert "whsec_abcdef123456" not in scrubbed
    assert "pw9999" not in scrubbed
    assert scrubbed.count(MASK) == 2


secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=4, max_size=40)
surroundings = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(secret_values=st.lists(secrets, min_size=1, max_size=4), before=surroundings, after=surroundings)
def test_no_registered_secret_survives_redaction(secret_values: list[str], before: str, after: str) -> None:
    redact_module._secrets = set()  # hypothesis runs many examples within one fixture
    for secret in secret_values:
        register_secret(secret)
    scrubbed = redact(before + " ".join(secret_values) + after)
    for secret in secret_values:
        assert secret not in scrubbed


@given(
    user=st.from_regex(r"[a-z0-9_.-]{0,12}", fullmatch=True),
    password=st.from_regex(r"[A-Za-z0-9!$%^&*()_+=:-]{1,30}", fullmatch=True),
)
def test_no_url_password_survives_redaction(user: str, password: str) -> None:
    url = f"postgresql://{user}:{password}@db.example.com:5432/site"
    assert redact(f"error: {url}") == f"error: postgresql://{user}:***@db.example.com:5432/site"
