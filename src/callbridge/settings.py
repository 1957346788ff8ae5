"""Process settings from the environment and ``.env`` (pydantic-settings).

The names are the environment variables a deployer writes, so every error message names
the variable to fix, not a Python attribute. The stream secret is generated once and kept
in the data dir so tokens minted before a restart still verify after it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from callbridge.errors import ConfigError

__all__ = ["Settings", "load_settings"]

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SECRET_FILE = "stream_secret"
MIN_SECRET_CHARS = 16
PLACEHOLDER_TOKEN = "your_auth_token_here"  # the value .env.example ships with
DEFAULT_MAX_CALLS = 30
DRAIN_MESSAGE = "Sorry, we have to end this call now. Please call us again in a moment. Goodbye."


class Settings(BaseSettings):
    """Everything the process needs to know before it takes a call."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    account_sid: str = Field("", validation_alias="TWILIO_ACCOUNT_SID")
    auth_token: SecretStr | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN")
    public_url: str | None = Field(None, validation_alias="PUBLIC_URL")
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list, validation_alias="TRUSTED_PROXIES"
    )
    stream_secret: SecretStr | None = Field(None, validation_alias="CALLBRIDGE_STREAM_SECRET")
    data_dir: Path = Field(Path("data"), validation_alias="CALLBRIDGE_DATA_DIR")
    insecure_skip_signature: bool = Field(
        False,
        validation_alias="CALLBRIDGE_INSECURE_SKIP_SIGNATURE",
    )
    host: str = Field("0.0.0.0", validation_alias="CALLBRIDGE_HOST")
    port: int = Field(8080, ge=0, le=65535, validation_alias="CALLBRIDGE_PORT")
    # Live streams per process; past it callers hear a polite refusal. 30 is what one
    # core holds with every latency bar met (README, Benchmarks); 0 = no limit.
    max_calls: int = Field(DEFAULT_MAX_CALLS, ge=0, validation_alias="CALLBRIDGE_MAX_CALLS")
    assistant_path: Path = Field(
        Path("examples/assistant.yaml"),
        validation_alias="CALLBRIDGE_ASSISTANT",
    )
    twilio_api_base_url: str | None = Field(None, validation_alias="TWILIO_API_BASE_URL")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    log_format: Literal["json", "text"] = Field("json", validation_alias="LOG_FORMAT")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    api_token: SecretStr | None = Field(None, validation_alias="CALLBRIDGE_API_TOKEN")
    from_number: str | None = Field(None, validation_alias="TWILIO_PHONE_NUMBER")
    recordings_dir: Path | None = Field(None, validation_alias="CALLBRIDGE_RECORDINGS_DIR")
    recording_retention_days: float = Field(
        0, ge=0, validation_alias="CALLBRIDGE_RECORDING_RETENTION_DAYS"
    )
    # Deploys and several instances (DESIGN.md §10).
    drain_timeout_s: float = Field(600, ge=0, validation_alias="CALLBRIDGE_DRAIN_TIMEOUT_S")
    drain_message: str = Field(DRAIN_MESSAGE, validation_alias="CALLBRIDGE_DRAIN_MESSAGE")
    overflow_url: str | None = Field(None, validation_alias="CALLBRIDGE_OVERFLOW_URL")
    workers: int | None = Field(None, ge=1, validation_alias="CALLBRIDGE_WORKERS")

    @field_validator(
        "public_url",
        "twilio_api_base_url",
        "auth_token",
        "stream_secret",
        "database_url",
        "api_token",
        "from_number",
        "recordings_dir",
        "overflow_url",
        "workers",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("drain_message", mode="before")
    @classmethod
    def _default_goodbye(cls, v: Any) -> Any:
        return DRAIN_MESSAGE if isinstance(v, str) and not v.strip() else v

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"expected an origin like https://example.com, got {v!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"expected an origin without path or query, got {v!r}")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("twilio_api_base_url", "overflow_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v.strip().rstrip("/")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [
                ipaddress.ip_network(p.strip(), strict=False) for p in v.split(",") if p.strip()
            ]
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("stream_secret", "api_token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return v

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for the log redactor."""
        values = [
            s.get_secret_value()
            for s in (self.auth_token, self.stream_secret, self.api_token)
            if s is not None and s.get_secret_value()
        ]
        password = urlsplit(self.database_url).password if self.database_url else None
        if password:
            values.append(password)
        return values

    @property
    def shared_store(self) -> bool:
        """PostgreSQL: several instances may share it. SQLite is one instance's file."""
        url = (self.database_url or "").lower()
        return url.startswith(("postgres://", "postgresql://", "postgresql+"))

    @property
    def recordings_path(self) -> Path:
        """Where call recordings go: ``CALLBRIDGE_RECORDINGS_DIR`` or the data dir's."""
        return self.recordings_dir or self.data_dir / "recordings"


def _env_names() -> dict[str, str]:
    """Every spelling pydantic may report in an error's ``loc`` → the variable to fix."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        env = alias if isinstance(alias, str) else field.upper()
        names[field.lower()] = env
        names[env.lower()] = env
    return names


_ENV_NAMES = _env_names()


def load_settings(**overrides: Any) -> Settings:
    """Read env/.env, check cross-field rules and make sure a stream secret exists.

    Raises ``ConfigError`` naming the variable; never a pydantic traceback.
    """
    # Overrides may use field names (port=0); the model itself only answers to the
    # variable names, so a stray HOST or PORT in the environment is never picked up.
    try:
        settings = Settings(**{_ENV_NAMES.get(k.lower(), k): v for k, v in overrides.items()})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if not token and not settings.insecure_skip_signature:
        raise ConfigError(
            "TWILIO_AUTH_TOKEN is not set: it is needed to check Twilio's signatures "
            "(for local development only, set CALLBRIDGE_INSECURE_SKIP_SIGNATURE=1)"
        )
    if token == PLACEHOLDER_TOKEN:
        log.warning(
            "settings.placeholder_token TWILIO_AUTH_TOKEN is still the .env.example "
            "placeholder: every Twilio request will be refused (403) until it is set"
        )
    if settings.stream_secret is None and settings.shared_store:
        # Each instance would make its own secret and refuse every stream whose webhook
        # another instance answered: with Postgres, the instances are meant to be several.
        raise ConfigError(
            "CALLBRIDGE_STREAM_SECRET is not set: with DATABASE_URL on PostgreSQL every "
            "instance must share one stream secret (e.g. `openssl rand -base64 32`)"
        )
    if settings.stream_secret is None:
        secret = ensure_stream_secret(settings.data_dir)
        settings = settings.model_copy(update={"stream_secret": SecretStr(secret)})
    return settings


def ensure_stream_secret(data_dir: Path) -> str:
    """Return the persisted stream secret, creating it (mode 0600) on first start."""
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _read_secret(path)
        secret = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        log.info("settings.stream_secret_created path=%s", path)
        return secret
    except OSError as exc:
        raise ConfigError(
            f"CALLBRIDGE_DATA_DIR: cannot keep the stream secret in {path}: {exc.strerror} "
            "(or set CALLBRIDGE_STREAM_SECRET)"
        ) from exc


def _read_secret(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Someone loosened it; a readable secret lets anyone open a media stream.
        os.chmod(path, 0o600)
        log.warning("settings.stream_secret_mode_fixed path=%s was=%o", path, mode)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"CALLBRIDGE_STREAM_SECRET: the secret in {path} is shorter than "
            f"{MIN_SECRET_CHARS} characters; delete the file to generate a new one"
        )
    return secret


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        env = _ENV_NAMES.get(field.lower(), field.upper())
        lines.append(f"{env}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)
