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
    ) -> None:
        self.status = status
        self.error = error
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        self._body = body
        self.headers = headers or {}
        super().__init__(f"{status} {error}: {'; '.join(self.messages)}")

    def body(self) -> dict[str, Any]:
        if self._body is not None:
            return self._body
        return {"statusCode": self.status, "error": self.error, "messages": self.messages}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequestException", message)


def not_found(message: str = "Record not found") -> ApiError:
    return ApiError(404, "NotFoundException", message)


def missing_token() -> ApiError:
    return ApiError(403, "FORBIDDEN_EXCEPTION", "Missing authentication token")


def invalid_token() -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "Token invalid.")


def unknown_field(object_name: str, field_name: str) -> ApiError:
    return bad_request(f'Object {object_name} doesn\'t have any "{field_name}" field.')
