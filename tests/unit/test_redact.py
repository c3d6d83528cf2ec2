"""Secrets never leave the process: registered values and URL passwords are masked in every line."""

from __future__ import annotations

import base64
import io
import json
import warnings
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_action import redact as redact_module
from hokusai_action.redact import (
    MASK,
    RedactingStream,
    redact,
    register_basic_credentials,
    register_secret,
    register_url_password,
    registered_secrets,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fresh_secrets")]


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
        # database URLs keep the role name: drivers print it anyway, and it says which login failed
        ("postgresql://hokusai:s3cret@db:5432/hokusai", "postgresql://hokusai:***@db:5432/hokusai"),
        (
            "postgresql+psycopg2://hokusai:s3cret@db.example.com/hokusai",
            "postgresql+psycopg2://hokusai:***@db.example.com/hokusai",
        ),
        ("mysql://root:hunter2@127.0.0.1/site", "mysql://root:***@127.0.0.1/site"),
        ("postgresql://u:p%40ss%3Aw%2Frd%25x@db/site", "postgresql://u:***@db/site"),
        ("postgresql://u:raw@pass@db/site", "postgresql://u:***@db/site"),
        # everywhere else the whole user-info goes: a user name is half a credential, often a token
        ("https://ci-bot:ghp_0123456789@mlflow.example.com", "https://***@mlflow.example.com"),
        ("http://u:p@localhost:5000/api", "http://***@localhost:5000/api"),
        ("https://ghp_0123456789abcdef@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://canaryuser:CANARY-PASS@127.0.0.1:5000/#/experiments/1", "http://***@127.0.0.1:5000/#/experiments/1"),
        ("redis://:only-password@cache:6379/0", "redis://***@cache:6379/0"),
        ("amqp://guest:guest@rabbit//", "amqp://***@rabbit//"),
        ("git+ssh://deploy:k3y%40x@git.example.com/r.git", "git+ssh://***@git.example.com/r.git"),
    ],
)
def test_url_credentials_are_masked_in_any_scheme_without_registration(url: str, masked: str) -> None:
    assert redact(f"could not connect to {url} (timeout)") == f"could not connect to {masked} (timeout)"


def test_redaction_is_idempotent() -> None:
    register_secret("s3cret-value")
    once = redact("a https://tok@h/x and postgresql://u:s3cret-value@db/x and s3cret-value")
    assert redact(once) == once == "a https://***@h/x and postgresql://u:***@db/x and ***"


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://hokusai@db/hokusai",
        "https://mlflow.example.com:5000/#/models",
        "sqlite:////tmp/.hokusai/hokusai.db",
        "projects/hokusai/topics/token-events",
        "user@example.com: 12:30",
        "git@github.com:hokusai/repo.git",
        "models:/hokusai-XRAY/1 mlflow-artifacts:/1/models/m-1/artifacts",
        "file:///tmp/x@y",
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


# --- encoded forms ---------------------------------------------------------------------------------

AWKWARD = "p@ss:w/rd%zz 42"  # every character a URL must encode, and a "%" that is not an escape


def sqlalchemy_quote(text: str) -> str:
    # SQLAlchemy's render_as_string re-encodes only ":", "@" and "/"
    return text.replace(":", "%3A").replace("@", "%40").replace("/", "%2F")


@pytest.mark.parametrize(
    "shown",
    [
        AWKWARD,
        quote(AWKWARD, safe=""),
        quote(AWKWARD, safe="").lower(),
        quote_plus(AWKWARD, safe=""),
        quote(AWKWARD),  # "/" kept raw
        sqlalchemy_quote(AWKWARD),
        quote(quote(AWKWARD, safe=""), safe=""),  # encoded twice: a URL inside a query string
    ],
    ids=["raw", "quoted", "lower-hex", "plus", "slash-raw", "sqlalchemy", "twice"],
)
def test_a_registered_secret_is_masked_in_every_encoding(shown: str) -> None:
    register_secret(AWKWARD)
    assert redact(f"password={shown};") == "password=***;"


def test_a_percent_encoded_url_password_registers_its_decoded_form() -> None:
    register_url_password(f"postgresql+psycopg2://postgres:{quote(AWKWARD, safe='')}@127.0.0.1/site")
    assert redact(f'FATAL: password "{AWKWARD}" rejected') == 'FATAL: password "***" rejected'
    assert redact(f"dsn=password={sqlalchemy_quote(AWKWARD)}") == "dsn=password=***"


def test_a_token_passed_as_url_user_is_registered_but_a_database_role_is_not() -> None:
    register_url_password("https://ghp_0123456789abcdef@mlflow.example.com")
    register_url_password("postgresql://postgres@127.0.0.1/site")
    register_url_password("https://admin:pa55word@mlflow.example.com")  # the password, not the user name
    basic = {base64.b64encode(pair).decode() for pair in (b"ghp_0123456789abcdef:", b"admin:pa55word")}
    basic |= {form.rstrip("=") for form in basic}
    assert registered_secrets() == frozenset({"ghp_0123456789abcdef", "pa55word", *basic})
    assert redact("Bearer ghp_0123456789abcdef for admin") == "Bearer *** for admin"


def test_a_webhook_secret_is_masked_with_and_without_its_prefix() -> None:
    secret = "whsec_" + "Y2FuYXJ5LXdlYmhvb2stc2VjcmV0LTMyLWJ5dGVzISE="
    register_secret(secret)
    body = secret.removeprefix("whsec_")
    for shown in (secret, body, body.rstrip("="), quote(body, safe="")):
        assert redact(f"key {shown} end") == "key *** end"


@given(password=st.text(alphabet="abcXYZ019@:/%+ -_.!~*'()", min_size=4, max_size=24))
def test_no_database_password_survives_in_any_encoding(password: str) -> None:
    redact_module._secrets = set()
    url = f"postgresql+psycopg2://postgres:{quote(password, safe='')}@127.0.0.1:5432/site"
    register_url_password(url)
    for shown in (password, quote(password, safe=""), sqlalchemy_quote(password), url):
        scrubbed = redact(f"[{shown}]")
        assert password not in scrubbed
        assert quote(password, safe="") not in scrubbed


# --- escaped and derived forms -----------------------------------------------------------------------
# A library that refuses a value quotes it with repr (requests: "... in header value: 'Bearer tok\\n'"),
# a JSON document escapes it, and basic auth sends base64("user:password"): each is the secret too.

ESCAPABLE = "tok\\en'x\"42\t"  # a backslash, both quotes and a tab: every escape repr and JSON make


@pytest.mark.parametrize(
    "shown",
    [
        repr(f"Bearer {ESCAPABLE}"),  # what requests' InvalidHeader quotes
        repr({"t": ESCAPABLE}),
        repr(ESCAPABLE.replace('"', "")),  # without a double quote, repr escapes the single one
        json.dumps({"t": ESCAPABLE}),
        json.dumps({"t": ESCAPABLE}, ensure_ascii=False),
        ESCAPABLE.strip(),
        quote(ESCAPABLE, safe=""),
    ],
    ids=["repr-header", "repr-dict", "repr-single-quote", "json", "json-unicode", "stripped", "quoted"],
)
def test_a_secret_is_masked_in_its_repr_json_and_stripped_forms(shown: str) -> None:
    register_secret(ESCAPABLE)
    register_secret(ESCAPABLE.replace('"', ""))
    scrubbed = redact(f"error: {shown} (end)")
    assert "tok" not in scrubbed and "42" not in scrubbed
    assert MASK in scrubbed


def test_a_secret_with_a_trailing_newline_is_masked_as_requests_quotes_it() -> None:
    register_secret("tok-abcdef-123\n")
    line = "Invalid ... return character(s) in header value: 'Bearer tok-abcdef-123\\n'"
    assert redact(line).endswith("in header value: 'Bearer ***'")
    assert redact("token tok-abcdef-123 stripped") == "token *** stripped"


def test_basic_credentials_are_masked_in_their_base64_form() -> None:
    register_basic_credentials("alice", "s3cret-pwd")
    encoded = base64.b64encode(b"alice:s3cret-pwd").decode()
    assert encoded.endswith("=")
    assert redact(f"echoed: Authorization: Basic {encoded}") == "echoed: Authorization: Basic ***"
    assert redact(f"unpadded {encoded.rstrip('=')}.") == "unpadded ***."
    assert redact("alice is a user name, not a secret") == "alice is a user name, not a secret"


def test_url_credentials_register_the_basic_header_requests_sends() -> None:
    # requests sends the URL's user-info, percent-decoded, as basic auth; a user alone as "user:"
    register_url_password("https://ci-bot:p%40ss%3Aword@mlflow.example.com")
    register_url_password("https://ghp_0123456789abcdef@mlflow.example.com")
    for credentials in (b"ci-bot:p@ss:word", b"ghp_0123456789abcdef:"):
        encoded = base64.b64encode(credentials).decode()
        assert redact(f"Basic {encoded}") == f"Basic {MASK}"


@given(
    secret=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="*"),
        min_size=4,
        max_size=24,
    )
)
def test_no_form_of_any_secret_survives_redaction(secret: str) -> None:
    redact_module._secrets = set()
    register_secret(secret)
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    if len(secret.strip()) >= 4:
        forms.add(secret.strip())
    shown = (
        secret,
        secret.strip(),
        repr(secret),
        repr(f"it's {secret}"),
        repr(f'say "{secret}'),
        json.dumps(secret),
        json.dumps(secret, ensure_ascii=False),
        quote(secret),
    )
    for text in shown:
        scrubbed = redact(f"<{text}>")
        assert not [form for form in forms if form in scrubbed], (text, scrubbed)


# --- streams and warnings ----------------------------------------------------------------------------


def test_a_redacting_stream_masks_a_secret_split_across_writes() -> None:
    register_secret("split-secret-1234")
    inner = io.StringIO()
    stream = RedactingStream(inner)
    for chunk in ("View run at: ", "split-sec", "ret-1234", "\nprogress split-secret-1234\r", "tail split-"):
        stream.write(chunk)
    assert inner.getvalue() == "View run at: ***\nprogress ***\r"
    stream.write("secret-1234")
    stream.flush()
    assert inner.getvalue().endswith("tail ***")
    assert "split-secret-1234" not in inner.getvalue()


def test_a_redacting_stream_keeps_each_threads_partial_line_whole() -> None:
    """Another thread finishing its line must not cut this thread's URL user-info in two."""
    import threading

    inner = io.StringIO()
    stream = RedactingStream(inner)
    half_written, finish = threading.Event(), threading.Event()

    def upload_thread() -> None:
        stream.write("uploading to https://unregistered-user:unregistered")
        half_written.set()
        finish.wait(5)
        stream.write("-pass@store.example.com/bucket\n")

    worker = threading.Thread(target=upload_thread)
    worker.start()
    half_written.wait(5)
    stream.write("progress 50%\n")  # another thread's whole line, in between
    finish.set()
    worker.join(5)
    stream.flush()
    assert "unregistered" not in inner.getvalue()
    assert inner.getvalue().splitlines() == ["progress 50%", "uploading to https://***@store.example.com/bucket"]


def test_a_redacting_stream_masks_url_user_info_printed_by_mlflow() -> None:
    inner = io.StringIO()
    print(
        "\U0001f3c3 View run r at: http://canaryuser:CANARY-PASS@127.0.0.1:5000/#/runs/1", file=RedactingStream(inner)
    )
    assert inner.getvalue() == "\U0001f3c3 View run r at: http://***@127.0.0.1:5000/#/runs/1\n"


def test_add_mask_commands_pass_through_unredacted() -> None:
    # the runner needs the secret itself to mask it; it never shows these lines
    register_secret("tok-3f9a8b7c")
    inner = io.StringIO()
    stream = RedactingStream(inner)
    stream.write("::add-mask::tok-3f9a8b7c\nthen tok-3f9a8b7c\n")
    assert inner.getvalue() == "::add-mask::tok-3f9a8b7c\nthen ***\n"


def test_warnings_are_redacted() -> None:
    register_secret("warned-secret-99")
    out = io.StringIO()
    redact_module._redacting_showwarning(
        UserWarning("connecting to https://warned-secret-99@h"), UserWarning, "x.py", 3, file=out
    )
    assert "warned-secret-99" not in out.getvalue()
    assert "UserWarning: connecting to https://***@h" in out.getvalue()
    assert warnings.showwarning is not redact_module._redacting_showwarning  # nothing global was touched
