"""DummyJSON as a product source: the HTTP client and the shape of what it returns.

Errors become Temporal ApplicationErrors whose retryability follows the issue's rule: 5xx, 408 and
network errors retry with backoff; 429 retries after Retry-After; other 4xx and invalid JSON don't.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class Dimensions(BaseModel):
    width: float
    height: float
    depth: float


class Meta(BaseModel):
    createdAt: str | None = None
    updatedAt: str | None = None
    barcode: str | None = None


class SourceProduct(BaseModel):
    """One DummyJSON product, validated before it reaches the catalog. Unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")

    id: int = Field(ge=1)
    title: str = Field(min_length=1)
    description: str = ""
    category: str | None = None
    price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    discountPercentage: float | None = None
    rating: float | None = None
    stock: int = Field(ge=0)
    tags: list[str] = []
    brand: str | None = None
    sku: str | None = None
    weight: float | None = None
    dimensions: Dimensions | None = None
    warrantyInformation: str | None = None
    shippingInformation: str | None = None
    availabilityStatus: str | None = None
    returnPolicy: str | None = None
    minimumOrderQuantity: int | None = None
    meta: Meta | None = None
    images: list[str] = []
    thumbnail: str | None = None


class Page(BaseModel):
    products: list[dict[str, Any]]
    total: int
    skip: int
    limit: int


def _retry_after(response: httpx.Response) -> timedelta:
    try:
        return timedelta(seconds=max(0.0, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return timedelta(seconds=1)


_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")  # what an HTTP header value may hold
BAD_KEY = (
    "invalid API key characters (line breaks, control or non-ASCII characters cannot go in an "
    "HTTP header); store the key again with `starter.py connections add --replace`"
)


def scrub(text: str, secret: str | None) -> str:
    """`text` without `secret` in any rendering an error message may use: as is, escaped as in
    a repr (httpx quotes a bad header as bytes: b'Bearer a\\r\\nb'), and each of its lines."""
    if not secret:
        return text
    forms = {secret, repr(secret)[1:-1], repr(secret.encode(errors="replace"))[2:-1]}
    forms |= {line for line in re.split(r"[\r\n]+", secret) if len(line) >= 4}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "(hidden)")
    return text


class DummyJSONClient:
    """One pooled httpx client per worker process; thread-safe, so activities share it.

    The API key goes only into the Authorization header, and no error text built here carries
    it: a key that cannot be a header value is refused before any request (httpx would quote it
    whole in its error), and every message is scrubbed of it all the same.
    """

    def __init__(
        self, base_url: str, *, api_key: str | None = None, category: str | None = None
    ) -> None:
        self._key = api_key or None
        self._bad_key = self._key is not None and not _HEADER_SAFE.fullmatch(self._key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key and not self._bad_key else {}
        self.base_url = base_url.rstrip("/")
        # A connection's scope: only this category's products (DummyJSON's category route).
        self.path = f"/products/category/{category}" if category else "/products"
        self._http = httpx.Client(base_url=self.base_url, timeout=TIMEOUT, headers=headers)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            return self._request(path, params)
        except ApplicationError as exc:
            if self._key is None or scrub(exc.message, self._key) == exc.message:
                raise
            # A last line of defence: a message that quotes the key is rebuilt without it, and
            # without the original as its cause (a cause's text travels into history too).
            raise ApplicationError(
                scrub(exc.message, self._key),
                type=exc.type,
                non_retryable=exc.non_retryable,
                next_retry_delay=exc.next_retry_delay,
                category=exc.category,
            ) from None

    def _request(self, path: str, params: dict[str, Any]) -> Any:
        where = f"GET {path}?" + "&".join(f"{k}={v}" for k, v in params.items())
        if self._bad_key:
            raise ApplicationError(f"{where}: {BAD_KEY}", type="InvalidApiKey", non_retryable=True)
        try:
            response = self._http.get(path, params=params)
        except (httpx.LocalProtocolError, ValueError) as exc:  # a header the client refused
            if self._key is None:
                raise
            raise ApplicationError(
                f"{where}: {type(exc).__name__}: the request could not be built ({BAD_KEY})",
                type="InvalidApiKey",
                non_retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"{where}: {type(exc).__name__}: {scrub(str(exc), self._key)}",
                type="SourceUnavailable",
            ) from None
        status = response.status_code
        if status == 429:
            delay = _retry_after(response)
            raise ApplicationError(
                f"{where}: 429 rate limited, retry after {delay.total_seconds():g}s",
                type="RateLimited",
                next_retry_delay=delay,
            )
        if status >= 500 or status == 408:
            raise ApplicationError(f"{where}: HTTP {status}", type="SourceUnavailable")
        if status in (401, 403):
            raise ApplicationError(
                f"{where}: HTTP {status}: the source refused the API key; fix it with "
                "`starter.py connections add --replace`",
                type="Unauthorized",
                non_retryable=True,
                # A key to fix, reported in the job's report: no traceback in the worker's log.
                category=ApplicationErrorCategory.BENIGN,
            )
        if status >= 400:
            raise ApplicationError(
                f"{where}: HTTP {status} {response.text[:200]}",
                type="SourceRejected",
                non_retryable=True,
            )
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ApplicationError(
                f"{where}: invalid JSON ({exc.msg} at char {exc.pos})",
                type="InvalidJson",
                non_retryable=True,
            ) from exc

    def count(self) -> int:
        """How many products the source has, in one tiny request."""
        return Page.model_validate(self._get(self.path, {"limit": 1, "select": "id"})).total

    def external_ids(self) -> set[str]:
        """Every product the source lists now, as catalog keys, in one request of ids only
        (`limit=0` is DummyJSON's "all")."""
        page = Page.model_validate(self._get(self.path, {"limit": 0, "select": "id"}))
        ids = {f"dummyjson:{p['id']}" for p in page.products if isinstance(p.get("id"), int)}
        if len(ids) != page.total:  # a short answer must not read as "the rest were removed"
            raise ApplicationError(
                f"GET {self.path}?limit=0: {len(ids)} ids for a total of {page.total}",
                type="SourceIncomplete",
            )
        return ids

    def page(self, skip: int, limit: int) -> Page:
        try:
            return Page.model_validate(self._get(self.path, {"limit": limit, "skip": skip}))
        except ValueError as exc:  # a 200 that is not a products page
            raise ApplicationError(
                f"GET {self.path}?skip={skip}: unexpected body: {str(exc).splitlines()[0]}",
                type="InvalidJson",
                non_retryable=True,
            ) from exc
