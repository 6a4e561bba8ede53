"""DynamoDB errors in the shape the JSON 1.0 protocol and botocore expect.

A response body looks like::

    {"__type": "com.amazon.coral.validate#ValidationException",
     "message": "Invalid UpdateExpression: ..."}

botocore takes the error code from ``__type`` (the part after the last ``#``)
and the message from ``message`` or ``Message``; modelled members such as
``CancellationReasons`` or ``Item`` are read from the same body.  The
namespace before ``#`` is not read by botocore, but we send the one DynamoDB
sends: validation errors come from the Coral validation layer
(``com.amazon.coral.validate#``), protocol errors from the Coral service layer
(``com.amazon.coral.service#``), the service's own modelled errors from
``com.amazonaws.dynamodb.v20120810#``.
"""

from __future__ import annotations

import json
from typing import Any

DYNAMODB_NS = "com.amazonaws.dynamodb.v20120810#"
CORAL_VALIDATE_NS = "com.amazon.coral.validate#"
CORAL_SERVICE_NS = "com.amazon.coral.service#"

# The namespace DynamoDB puts in front of each error type it returns.
_NAMESPACES = {
    "ValidationException": CORAL_VALIDATE_NS,
    "SerializationException": CORAL_SERVICE_NS,
    "UnknownOperationException": CORAL_SERVICE_NS,
    "MissingAuthenticationTokenException": CORAL_SERVICE_NS,
    "UnrecognizedClientException": CORAL_SERVICE_NS,
    "AccessDeniedException": CORAL_SERVICE_NS,
}

# Errors whose message member DynamoDB spells ``Message`` (botocore reads both).
_CAPITAL_MESSAGE = {"TransactionCanceledException"}

CONDITIONAL_REQUEST_FAILED = "The conditional request failed"


class DynamoError(Exception):
    """An error answered to the client: type, message, HTTP status, extras.

    ``type_name`` is the bare error code ("ValidationException"); ``extra``
    holds modelled members sent beside the message (``CancellationReasons``,
    ``Item``).  ``retryable`` is True for the 5xx errors, which botocore
    retries.
    """

    def __init__(
        self,
        type_name: str,
        message: str | None,
        status: int = 400,
        extra: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
    ) -> None:
        super().__init__(message if message is not None else type_name)
        self.type_name = type_name
        self.message = message
        self.status = status
        self.extra = dict(extra) if extra else {}
        self.namespace = namespace if namespace is not None else _NAMESPACES.get(type_name, DYNAMODB_NS)

    @property
    def retryable(self) -> bool:
        return self.status >= 500

    @property
    def full_type(self) -> str:
        return f"{self.namespace}{self.type_name}"

    def to_body(self) -> dict[str, Any]:
        """The JSON error body (a dict; see :meth:`to_json` for bytes)."""
        body: dict[str, Any] = {"__type": self.full_type}
        if self.message is not None:
            key = "Message" if self.type_name in _CAPITAL_MESSAGE else "message"
            body[key] = self.message
        body.update(self.extra)
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.to_body(), separators=(",", ":")).encode()

    def __repr__(self) -> str:
        return f"DynamoError({self.type_name!r}, {self.message!r}, status={self.status})"


# -- constructors for the common errors ---------------------------------------


def validation(message: str) -> DynamoError:
    return DynamoError("ValidationException", message, 400)


def serialization(message: str) -> DynamoError:
    return DynamoError("SerializationException", message, 400)


def unknown_operation(message: str | None = None) -> DynamoError:
    return DynamoError("UnknownOperationException", message, 400)


def conditional_check_failed(item: dict[str, Any] | None = None) -> DynamoError:
    """ConditionalCheckFailedException; ``item`` is the old item returned
    when the request asked for ReturnValuesOnConditionCheckFailure=ALL_OLD."""
    extra = {"Item": item} if item is not None else None
    return DynamoError("ConditionalCheckFailedException", CONDITIONAL_REQUEST_FAILED, 400, extra)


def resource_not_found(message: str = "Requested resource not found") -> DynamoError:
    return DynamoError("ResourceNotFoundException", message, 400)


def table_not_found(table_name: str) -> DynamoError:
    """The message DescribeTable/DeleteTable give for a missing table."""
    return resource_not_found(f"Requested resource not found: Table: {table_name} not found")


def resource_in_use(message: str) -> DynamoError:
    return DynamoError("ResourceInUseException", message, 400)


def table_in_use(table_name: str) -> DynamoError:
    return resource_in_use(f"Table already exists: {table_name}")


def transaction_canceled(reasons: list[dict[str, Any]]) -> DynamoError:
    """TransactionCanceledException with one reason per request item, in
    request order: ``{"Code": "None"}`` for items that did not fail, e.g.
    ``{"Code": "ConditionalCheckFailed", "Message": "The conditional request
    failed"}`` (plus ``"Item"`` when ALL_OLD was asked for) for those that did.
    """
    codes = ", ".join(str(r.get("Code", "None")) for r in reasons)
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    return DynamoError("TransactionCanceledException", message, 400, {"CancellationReasons": list(reasons)})


def cancellation_reason(code: str | None = None, message: str | None = None,
                        item: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry of CancellationReasons (``code=None`` gives ``{"Code": "None"}``)."""
    if code is None:
        return {"Code": "None"}
    reason: dict[str, Any] = {"Code": code}
    if message is not None:
        reason["Message"] = message
    if item is not None:
        reason["Item"] = item
    return reason


def transaction_conflict(message: str = "Transaction is ongoing for the item") -> DynamoError:
    return DynamoError("TransactionConflictException", message, 400)


def internal_server_error(message: str = "Internal server error") -> DynamoError:
    return DynamoError("InternalServerError", message, 500)


def service_unavailable(message: str = "Service unavailable") -> DynamoError:
    return DynamoError("ServiceUnavailable", message, 503)
