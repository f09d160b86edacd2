"""Twenty's REST error bodies, in one place.

Every handler raises `ApiError`; the app turns it into the exact JSON Twenty sends
(`{"statusCode", "error", "messages"}`), so the bodies cannot drift between routes.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error with Twenty's body shape (or a custom body for metadata validation)."""

    def __init__(
        self,
        status: int,
        error: str,
        messages: list[str] | str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        # Newer servers add Twenty's own exception code (`code`) to the body of errors raised as
        # Twenty exceptions (send-http-exception-response.util.ts); plain Nest exceptions have none.
        self.code = code
        self.error = error
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        self._body = body
        self.headers = headers or {}
        super().__init__(f"{status} {error}: {'; '.join(self.messages)}")

    def body(self) -> dict[str, Any]:
        if self._body is not None:
            return self._body
        body: dict[str, Any] = {"statusCode": self.status, "error": self.error, "messages": self.messages}
        if self.code is not None:
            body["code"] = self.code
        return body

    def without_code(self) -> ApiError:
        """The same error as older servers send it (no `code` in the body)."""
        if self.code is None:
            return self
        return ApiError(self.status, self.error, self.messages, body=self._body, headers=self.headers)


def bad_request(message: str, *, code: str | None = None) -> ApiError:
    return ApiError(400, "BadRequestException", message, code=code)


def not_found(message: str = "Record not found") -> ApiError:
    # The REST layer turns the query runner's RECORD_NOT_FOUND into Nest's NotFoundException
    # (common-query-runner-to-rest-api-exception-handler.util.ts): no `code`.
    return ApiError(404, "NotFoundException", message)


def permission_denied() -> ApiError:
    """SettingsPermissionGuard's refusal (a PermissionsException, category FORBIDDEN)."""
    return ApiError(403, "ForbiddenException", "User does not have permission", code="PERMISSION_DENIED")


def missing_token() -> ApiError:
    return ApiError(403, "FORBIDDEN_EXCEPTION", "Missing authentication token")


def invalid_token() -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "Token invalid.")


def unknown_field(object_name: str, field_name: str) -> ApiError:
    return bad_request(f'Object {object_name} doesn\'t have any "{field_name}" field.')


def conflict(message: str) -> ApiError:
    """A 409 ConflictException (Nest's: no `code`)."""
    return ApiError(409, "ConflictException", message)


def quota_exhausted(spender_id: str, retry_after_s: int = 86_400) -> ApiError:
    """Newer servers' 402 for a spent usage quota or credit allowance: the usage-limit body
    (usage-limit-to-rest-api-exception-handler.util.ts), and no Retry-After or X-RateLimit-*
    headers (those go on 429s only). `retryAfterSeconds` says when the period ends."""
    message = "Credit allowance exhausted for this billing period"
    body = {"statusCode": 402, "error": "QUOTA_EXHAUSTED", "messages": [message],
            "limitKind": "quota", "exhaustedKind": "allowance",
            "scope": {"spenderType": "apiKey", "spenderId": spender_id, "operationType": "API_REQUEST"},
            "limit": 0, "remaining": 0, "periodCount": 1, "periodUnit": "month",
            "retryAfterSeconds": retry_after_s}
    return ApiError(402, "QUOTA_EXHAUSTED", message, body=body)
