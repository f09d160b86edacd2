"""Find the Twenty CRM API key, and keep secrets out of logs and error messages.

The key normally lives in Google Cloud Secret Manager under one of several historical names; on a
laptop or in CI it comes from an environment variable instead. This module tries each place in the
documented order, says which one won (never the key itself), and when none does, raises an error
that lists every place tried and why it failed, so the fix is obvious without a debugger.

Lookup order (see the seed doc "API Key Configuration"):

1. Secret Manager, version ``latest`` of ``twenty-crm-api-key``, ``twenty_api_key``,
   ``TWENTY_CRM_API_KEY``, ``twenty-api-key`` in the configured GCP project;
2. environment variable ``TWENTY_CRM_API_KEY``;
3. environment variable ``TWENTY_API_KEY``.

Without a configured project, Secret Manager is skipped outright: building a client would call
``google.auth.default()``, which can spend seconds probing the GCE metadata server.

The webhook secret of `truth-forge serve` is looked up the same way (Secret Manager
``twenty-webhook-secret``, then ``TWENTY_WEBHOOK_SECRET``), and `store_webhook_secret` keeps it in
the first of those places that applies.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from truth_forge.core.config import Settings, get_settings

logger = logging.getLogger(__name__)

SECRET_NAMES: tuple[str, ...] = (
    "twenty-crm-api-key",
    "twenty_api_key",
    "TWENTY_CRM_API_KEY",
    "twenty-api-key",
)
ENV_VARS: tuple[str, ...] = ("TWENTY_CRM_API_KEY", "TWENTY_API_KEY")
WEBHOOK_SECRET_NAMES: tuple[str, ...] = ("twenty-webhook-secret",)
WEBHOOK_ENV_VARS: tuple[str, ...] = ("TWENTY_WEBHOOK_SECRET",)
SECRET_VERSION = "latest"

# Per call, not per lookup. Long enough for a real round trip to secretmanager.googleapis.com,
# short enough that an unreachable service costs seconds, not the client's default 60 s.
DEFAULT_TIMEOUT_SECONDS = 5.0

NOT_FOUND_PREFIX = "Twenty CRM API key not found"
_MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class ResolvedApiKey:
    """The key and where it came from. ``repr`` shows only the source, so logging it is safe."""

    value: str = field(repr=False)
    source: str


def redact(text: str, *secrets: str) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    # Longest first, so a secret that contains another is not left half-visible ("***def").
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def resolve_api_key(
    settings: Settings | None = None,
    *,
    secret_client: Any = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> str:
    """Return the Twenty CRM API key; raise ``ValueError("Twenty CRM API key not found ...")``."""
    return find_api_key(settings, secret_client=secret_client, timeout=timeout).value


def find_api_key(
    settings: Settings | None = None,
    *,
    secret_client: Any = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ResolvedApiKey:
    """Look the key up in Secret Manager, then the environment; see the module docstring.

    ``secret_client`` is anything with the official client's ``access_secret_version(name=...,
    timeout=...)``; when None and a project is configured, the official client is built here
    (and closed again). ``timeout`` bounds each Secret Manager call, in seconds.
    """
    return _find_secret(API_KEY, settings, secret_client, timeout)


def find_webhook_secret(
    settings: Settings | None = None,
    *,
    secret_client: Any = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ResolvedApiKey:
    """The Twenty webhook secret, looked up where the API key is (Secret Manager, then environment)."""
    return _find_secret(WEBHOOK_SECRET, settings, secret_client, timeout)


@dataclass(frozen=True)
class _SecretKind:
    """One secret truth-forge reads: where it may be kept, and what to say when it is nowhere."""

    label: str
    secret_names: tuple[str, ...]
    env_vars: tuple[str, ...]
    not_found: str
    hint: str


API_KEY = _SecretKind("Twenty CRM API key", SECRET_NAMES, ENV_VARS, NOT_FOUND_PREFIX,
                      f"Store the key in Secret Manager as {SECRET_NAMES[0]} or set {ENV_VARS[0]}.")
WEBHOOK_SECRET = _SecretKind("Twenty webhook secret", WEBHOOK_SECRET_NAMES, WEBHOOK_ENV_VARS, "Twenty webhook secret not found",
                             "Run `truth-forge webhooks register --url URL`, which stores it, "
                             f"or set {WEBHOOK_ENV_VARS[0]}.")


def _find_secret(kind: _SecretKind, settings: Settings | None, secret_client: Any, timeout: float) -> ResolvedApiKey:
    settings = settings if settings is not None else get_settings()
    failures: list[str] = []

    project = (settings.gcp_project_id or "").strip()
    if project:
        try:
            found = _from_secret_manager(project, kind.secret_names, secret_client, timeout, failures)
        except ImportError:
            found = None
            failures.append(f"Secret Manager secrets {', '.join(kind.secret_names)}: skipped, Google's clients are "
                            "not installed (pip install 'truth-forge[bigquery]')")
        if found is not None:
            return _won(found, kind.label)
    else:
        failures.append(
            f"Secret Manager secrets {', '.join(kind.secret_names)}: skipped, no GCP project configured "
            "(set TRUTH_FORGE_GCP_PROJECT_ID or GOOGLE_CLOUD_PROJECT)"
        )

    dotenv = dotenv_file_values()
    for var in kind.env_vars:
        raw = os.environ.get(var)
        where = f"environment variable {var}"
        if raw is None and dotenv.get(var) is not None:
            # Settings read `.env` too; a key kept there is as good as one exported.
            raw, where = dotenv[var], f"environment variable {var} (from .env)"
        if raw is None:
            failures.append(f"environment variable {var}: not set")
        elif not raw.strip():
            failures.append(f"environment variable {var}: set but empty")
        else:
            return _won(ResolvedApiKey(value=raw.strip(), source=where), kind.label)

    tried = "\n".join(f"  - {line}" for line in failures)
    raise ValueError(f"{kind.not_found}. Tried, in order:\n{tried}\n{kind.hint}")


def store_webhook_secret(
    value: str,
    settings: Settings | None = None,
    *,
    secret_client: Any = None,
    dotenv_path: str = ".env",
) -> str:
    """Keep the webhook secret where `find_webhook_secret` looks first; returns where (never the value).

    With a GCP project: a new version of Secret Manager secret `twenty-webhook-secret` (created if
    missing). Without one: a `TWENTY_WEBHOOK_SECRET=` line in `.env` (file mode 0600), which the
    environment lookup reads.
    """
    settings = settings if settings is not None else get_settings()
    project = (settings.gcp_project_id or "").strip()
    if project:
        return _store_in_secret_manager(project, WEBHOOK_SECRET_NAMES[0], value, secret_client)
    return _store_in_dotenv(dotenv_path, WEBHOOK_ENV_VARS[0], value)


def _store_in_secret_manager(project: str, name: str, value: str, client: Any) -> str:
    from google.api_core import exceptions as gexc

    owned = client is None
    client = client or _build_client()
    try:
        try:
            client.create_secret(request={"parent": f"projects/{project}", "secret_id": name,
                                          "secret": {"replication": {"automatic": {}}}})
        except gexc.AlreadyExists:
            pass  # a new version of the existing secret is what we want
        client.add_secret_version(request={"parent": f"projects/{project}/secrets/{name}",
                                           "payload": {"data": value.encode("utf-8")}})
    finally:
        if owned:
            _close(client)
    return f"Secret Manager secret {name} in project {project}"


def _store_in_dotenv(path: str, var: str, value: str) -> str:
    lines = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().splitlines() if not line.startswith(f"{var}=")]
    lines.append(f"{var}={value}")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return f"environment file {path} ({var})"


def dotenv_file_values(path: str = ".env") -> dict[str, str | None]:
    from dotenv import dotenv_values

    return dict(dotenv_values(path)) if os.path.isfile(path) else {}


def _won(found: ResolvedApiKey, what: str = "Twenty CRM API key") -> ResolvedApiKey:
    logger.info("%s loaded from %s", what, found.source)
    return found


def _from_secret_manager(
    project: str, names: tuple[str, ...], client: Any, timeout: float, failures: list[str]
) -> ResolvedApiKey | None:
    """Try each secret name in turn; append one line per name that did not yield a key."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    def where(name: str) -> str:
        return f"Secret Manager secret {name} in project {project}"

    # Failures that say nothing about one secret: every further name would fail the same way,
    # so trying them only multiplies the wait.
    fatal: tuple[type[BaseException], ...] = (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.Unauthenticated,
        gexc.RetryError,
        auth_exc.GoogleAuthError,
    )

    owned = client is None
    if owned:
        try:
            client = _build_client()
        except auth_exc.GoogleAuthError as exc:  # DefaultCredentialsError and friends
            reason = f"no usable Google credentials ({_reason(exc)})"
            failures.extend(f"{where(name)}: {reason}" for name in names)
            return None

    try:
        call_kwargs = _call_kwargs(client, timeout)
        for index, name in enumerate(names):
            resource = f"projects/{project}/secrets/{name}/versions/{SECRET_VERSION}"
            try:
                response = client.access_secret_version(name=resource, **call_kwargs)
            except fatal as exc:
                failures.append(f"{where(name)}: {_reason(exc)}")
                skipped = f"not tried, Secret Manager unusable ({type(exc).__name__})"
                failures.extend(f"{where(later)}: {skipped}" for later in names[index + 1 :])
                logger.debug("Secret Manager unusable, going on to environment variables: %s", _reason(exc))
                return None
            except gexc.GoogleAPICallError as exc:
                # NotFound, PermissionDenied (Secret Manager also answers this for a secret that
                # does not exist when the caller lacks list rights), FailedPrecondition (disabled
                # version): specific to this secret, so the next name may still work.
                failures.append(f"{where(name)}: {_reason(exc)}")
                continue

            value, problem = _payload_text(response)
            if problem:
                failures.append(f"{where(name)}: {problem}")
                continue
            return ResolvedApiKey(value=value, source=where(name))
        return None
    finally:
        if owned:
            _close(client)


def _build_client() -> Any:
    # Imported here so that `import truth_forge.core.secrets` stays cheap and works without GCP libs.
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


def _call_kwargs(client: Any, timeout: float) -> dict[str, Any]:
    """``timeout``, plus ``retry=None`` where the client accepts it.

    The official client retries UNAVAILABLE for up to 60 s by default; a dead endpoint must instead
    fail at once so the environment fallback is reached. Test doubles need not accept ``retry``.
    """
    kwargs: dict[str, Any] = {"timeout": timeout}
    try:
        params = inspect.signature(client.access_secret_version).parameters
    except (TypeError, ValueError):  # builtins or C callables without a signature: pass less
        return kwargs
    if "retry" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["retry"] = None
    return kwargs


def _payload_text(response: Any) -> tuple[str, str | None]:
    """(value, None) for a usable payload, or ("", why not). Never puts the payload in the reason."""
    payload = getattr(response, "payload", None)
    data = getattr(payload, "data", b"") or b""
    expected_crc = getattr(payload, "data_crc32c", None)
    if expected_crc:
        actual_crc = _crc32c(data)
        if actual_crc is not None and actual_crc != expected_crc:
            return "", "payload failed its CRC32C check (corrupted in transit)"
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "", "payload is not valid UTF-8"
    if not value:
        return "", "secret is empty"
    return value, None


def _crc32c(data: bytes) -> int | None:
    try:
        import google_crc32c
    except ImportError:
        # Not a declared dependency of google-cloud-secret-manager; without it, skip the check.
        return None
    return int(google_crc32c.value(data))


def _reason(exc: BaseException) -> str:
    """One short line naming the error; these come from Google, never from the secret payload."""
    message = getattr(exc, "message", None) or str(exc)
    first_line = (message.strip().splitlines() or [""])[0]
    if len(first_line) > _MAX_REASON_CHARS:
        first_line = first_line[: _MAX_REASON_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _close(client: Any) -> None:
    transport = getattr(client, "transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        close()
