"""OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from starlette.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 502: "upstream_error", 503: "service_unavailable",
         504: "upstream_error"}


def error_body(status: int, message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "error"), "param": None, "code": code}}


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


class GatewayError(Exception):
    """Ends a request with an OpenAI-style error."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.headers)
