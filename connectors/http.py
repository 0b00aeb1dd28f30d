"""HTTP options shared by the network connectors: authentication, TLS, timeout, retries.

Secrets (bearer tokens, basic-auth passwords) are read from environment variables or files,
never taken on the command line, so they do not land in shell history or ``ps``. They are held
in ``Secret`` wrappers whose ``repr`` and ``str`` are masked, so an options object can be logged,
put in an error message or a report without leaking them. Error messages name the variable or
file, never its content.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.util.retry import Retry

from latentcause.errors import InputError

__all__ = ["HttpOptions", "Secret", "redact_url"]

log = logging.getLogger(__name__)

#: Statuses worth retrying: the server or a proxy in front of it is briefly unavailable.
RETRY_STATUSES = (500, 502, 503, 504)


class Secret:
    """A string that does not show itself: ``repr`` and ``str`` print ``***``.

    Call ``reveal()`` at the one place the value is sent (an HTTP header).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _BearerAuth(AuthBase):
    """Sets ``Authorization: Bearer``; as a session ``auth`` it is not overridden by ~/.netrc."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class _MaskedBasicAuth(HTTPBasicAuth):
    """Basic auth whose repr does not show the password."""

    def __repr__(self) -> str:
        return f"HTTPBasicAuth({self.username!r}, ***)"


@dataclass(frozen=True)
class HttpOptions:
    """How to talk to an HTTP source.

    Attributes
    ----------
    bearer_token
        Sent as ``Authorization: Bearer``; None for none.
    basic_auth_user, basic_auth_password
        Basic authentication; both or neither.
    ca_file
        CA bundle to verify the server's certificate (private CAs).
    insecure
        Skip certificate verification (logged as a warning).
    timeout
        Seconds to wait for a connection or a response.
    retries
        Retries on connection errors and on 5xx answers, with exponential ``backoff``
        (seconds; urllib3 waits 0, 2*backoff, 4*backoff, ...).
    """

    bearer_token: Secret | None = None
    basic_auth_user: str | None = None
    basic_auth_password: Secret | None = field(default=None)
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.bearer_token is not None and self.basic_auth_user is not None:
            raise InputError("give a bearer token or basic auth, not both")
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise InputError(
                "basic auth needs both --basic-auth-user and --basic-auth-password-env"
            )
        if self.ca_file is not None and self.insecure:
            raise InputError("give --ca-file or --insecure, not both")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise InputError(f"--ca-file {self.ca_file}: no such file")
        if not self.timeout > 0:
            raise InputError(f"--timeout must be positive, got {self.timeout}")
        if self.retries < 0 or self.backoff < 0:
            raise InputError("retries and backoff must not be negative")

    def __repr__(self) -> str:
        auth = "bearer=***" if self.bearer_token else (
            f"basic={self.basic_auth_user!r}:***" if self.basic_auth_user else "auth=None"
        )
        tls = f"ca_file={str(self.ca_file)!r}" if self.ca_file else f"insecure={self.insecure}"
        return (
            f"HttpOptions({auth}, {tls}, timeout={self.timeout}, retries={self.retries}, "
            f"backoff={self.backoff})"
        )

    __str__ = __repr__

    @classmethod
    def from_cli(
        cls,
        bearer_token_env: str | None = None,
        bearer_token_file: Path | str | None = None,
        basic_auth_user: str | None = None,
        basic_auth_password_env: str | None = None,
        ca_file: Path | str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
    ) -> HttpOptions:
        """Build options from command-line values, reading the secrets they point to.

        Raises
        ------
        InputError
            A named variable is unset or empty, a named file is missing or empty, or the
            options contradict each other.
        """
        if bearer_token_env is not None and bearer_token_file is not None:
            raise InputError("give --bearer-token-env or --bearer-token-file, not both")
        token: Secret | None = None
        if bearer_token_env is not None:
            token = _from_env(bearer_token_env, "--bearer-token-env")
        elif bearer_token_file is not None:
            token = _from_file(Path(bearer_token_file), "--bearer-token-file")
        password = None
        if basic_auth_password_env is not None:
            password = _from_env(basic_auth_password_env, "--basic-auth-password-env")
        return cls(
            bearer_token=token,
            basic_auth_user=basic_auth_user,
            basic_auth_password=password,
            ca_file=Path(ca_file) if ca_file is not None else None,
            insecure=insecure,
            timeout=float(timeout),
        )

    def retry(self) -> Retry:
        """Return the urllib3 retry policy: connection errors and 5xx, exponential backoff.

        ``raise_on_status=False`` hands the last 5xx answer back, so its status and message
        can be reported instead of a bare "too many retries".
        """
        return Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
        )

    def session(self) -> requests.Session:
        """Return a ``requests.Session`` with these credentials, TLS settings and retries."""
        s = requests.Session()
        adapter = HTTPAdapter(max_retries=self.retry())
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        if self.bearer_token is not None:
            s.auth = _BearerAuth(self.bearer_token)
        elif self.basic_auth_user is not None and self.basic_auth_password is not None:
            s.auth = _MaskedBasicAuth(self.basic_auth_user, self.basic_auth_password.reveal())
        if self.ca_file is not None:
            s.verify = str(self.ca_file)
        elif self.insecure:
            log.warning("TLS certificate verification is off (--insecure)")
            s.verify = False
        return s


def redact_url(url: str) -> str:
    """Return ``url`` with any ``user:password@`` replaced by ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _from_env(name: str, option: str) -> Secret:
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"{option} {name}: the environment variable is not set")
    if not value.strip():
        raise InputError(f"{option} {name}: the environment variable is empty")
    return Secret(value.strip())


def _from_file(path: Path, option: str) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{option} {path}: cannot be read ({type(exc).__name__})") from None
    if not value:
        raise InputError(f"{option} {path}: the file is empty")
    return Secret(value)
