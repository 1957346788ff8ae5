"""Settings: environment names in, one clear ConfigError out, a persisted stream secret."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from callbridge.errors import ConfigError
from callbridge.settings import SECRET_FILE, load_settings

VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "PUBLIC_URL",
    "TRUSTED_PROXIES",
    "CALLBRIDGE_STREAM_SECRET",
    "CALLBRIDGE_DATA_DIR",
    "CALLBRIDGE_INSECURE_SKIP_SIGNATURE",
    "CALLBRIDGE_HOST",
    "CALLBRIDGE_PORT",
    "CALLBRIDGE_MAX_CALLS",
    "CALLBRIDGE_ASSISTANT",
    "TWILIO_API_BASE_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HOST",
    "PORT",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok" * 8)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("PUBLIC_URL", "https://calls.example.com/")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1 ,::1")
    monkeypatch.setenv("CALLBRIDGE_PORT", "9090")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    monkeypatch.setenv("PORT", "1")  # a platform's PORT is not ours
    s = load_settings()
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "tok" * 8
    assert s.public_url == "https://calls.example.com"
    assert s.trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]
    assert (s.host, s.port, s.log_level, s.log_format) == ("0.0.0.0", 9090, "DEBUG", "text")
    assert s.assistant_path == Path("examples/assistant.yaml")
    assert "tok" * 8 not in repr(s)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TWILIO_AUTH_TOKEN=fromdotenv12345\nCALLBRIDGE_MAX_CALLS=3\n")
    s = load_settings()
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "fromdotenv12345"
    assert s.max_calls == 3


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("CALLBRIDGE_PORT", "eighty", "CALLBRIDGE_PORT"),
        ("CALLBRIDGE_PORT", "70000", "CALLBRIDGE_PORT"),
        ("PUBLIC_URL", "calls.example.com", "PUBLIC_URL"),
        ("PUBLIC_URL", "https://calls.example.com/voice", "PUBLIC_URL"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "TRUSTED_PROXIES"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("CALLBRIDGE_INSECURE_SKIP_SIGNATURE", "perhaps", "CALLBRIDGE_INSECURE_SKIP_SIGNATURE"),
        ("CALLBRIDGE_STREAM_SECRET", "short", "CALLBRIDGE_STREAM_SECRET"),
        ("TWILIO_API_BASE_URL", "ftp://x", "TWILIO_API_BASE_URL"),
    ],
)
def test_malformed_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(named)
    assert "pydantic" not in str(err.value)


def test_auth_token_required_unless_explicitly_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        load_settings()
    monkeypatch.setenv("CALLBRIDGE_INSECURE_SKIP_SIGNATURE", "1")
    assert load_settings().insecure_skip_signature is True


def test_stream_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "state"
    first = load_settings(auth_token="t" * 32, data_dir=data)
    path = data / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_settings(auth_token="t" * 32, data_dir=data)
    assert first.stream_secret is not None and second.stream_secret is not None
    assert first.stream_secret.get_secret_value() == second.stream_secret.get_secret_value()
    assert len(first.stream_secret.get_secret_value()) >= 32
    os.chmod(path, 0o644)  # loosened by hand: tightened again on load
    load_settings(auth_token="t" * 32, data_dir=data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_explicit_stream_secret_writes_nothing(tmp_path: Path) -> None:
    s = load_settings(auth_token="t" * 32, stream_secret="x" * 20, data_dir=tmp_path / "d")
    assert s.stream_secret is not None and s.stream_secret.get_secret_value() == "x" * 20
    assert not (tmp_path / "d").exists()


def test_unwritable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="CALLBRIDGE_DATA_DIR"):
        load_settings(auth_token="t" * 32, data_dir=blocker / "sub")


def test_env_example_loads_and_its_placeholder_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    s = load_settings()  # blank values mean "unset", not "invalid"
    assert s.stream_secret is not None and s.trusted_proxies == []
    assert s.twilio_api_base_url is None and s.insecure_skip_signature is False
    assert any("placeholder" in r.getMessage() for r in caplog.records)


def test_blank_auth_token_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN is not set"):
        load_settings()
