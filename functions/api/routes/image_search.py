"""``POST /search/image``: products that look like an image (upload, base64, or store key)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fashion_search.catalog.api_keys import ApiKey
from fashion_search.errors import ImageTooLargeError, InvalidArgumentError, InvalidRequestError
from fashion_search.search.request import SearchRequest
from fashion_search.search.service import SearchService, decode_base64_image
from fashion_search.settings import Settings
from functions.api.access import require_scope, requires
from functions.api.dependencies import Service, Session
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import reject_unknown_parameters
from functions.api.schemas import (
    REFINED,
    SearchOut,
    request_from_body,
    request_schema,
    search_response,
)

router = APIRouter(
    tags=["search"],
    dependencies=[Depends(reject_unknown_parameters), requires("search")],
    responses=ERROR_RESPONSES,
)

_MULTIPART = "multipart/form-data"


def body_limit(settings: Settings) -> int:
    """The largest request body of this route: an upload, or its base64 in JSON (a third more)."""
    return settings.search.max_upload_bytes * 4 // 3 + 4096


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLargeError(f"upload is larger than {limit} bytes")
    return data


#: The JSON body: an image (base64), a key or a product id, and the search's values.
_JSON_BODY = request_schema(
    "key", "bucket", "productId", "modifier", *REFINED,
    imageBase64={"type": "string", "description": "a base64 image (or a data: URL)"},
)  # fmt: skip
#: The multipart form's text fields (besides the file ``image``).
_FORM_FIELDS = ("modifier", *REFINED)


async def _from_form(request: Request, service: SearchService) -> SearchRequest:
    limit = service.settings.search.max_upload_bytes
    async with request.form(
        max_files=1, max_fields=len(_FORM_FIELDS) + 1, max_part_size=limit + 1
    ) as form:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise InvalidArgumentError("multipart form needs a file field named 'image'")
        data = await _read_upload(upload, limit)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    unknown = sorted(set(fields) - set(_FORM_FIELDS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown form field(s) {', '.join(unknown)}; known: image, {', '.join(_FORM_FIELDS)}"
        )
    try:
        filters = json.loads(fields.get("filters") or "{}")
    except ValueError as error:
        raise InvalidRequestError(f"filters: not JSON ({error})") from error
    return SearchRequest.of({**fields, "filters": filters}, image=data)


async def _from_json(request: Request) -> SearchRequest:
    raw = await request.body()  # at most the route's limit (functions/api/body_limit.py)
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise InvalidRequestError(f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object")
    if "imageBase64" in body:
        if not isinstance(body["imageBase64"], str):
            raise InvalidRequestError("imageBase64: Input should be a valid string")
        body["imageBase64"] = decode_base64_image(body["imageBase64"])
    return request_from_body(body, _JSON_BODY, imageBase64=lambda _: "image")


@router.post(
    "/search/image",
    summary="Search by image",
    response_model=SearchOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": _JSON_BODY},
                _MULTIPART: {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            **request_schema(*_FORM_FIELDS)["properties"],
                            "filters": {"type": "string", "description": "JSON object"},
                        },
                    }
                },
            },
            "required": True,
        }
    },
)
async def search_image(
    request: Request,
    service: Service,
    session: Session,
    caller: Annotated[ApiKey | None, requires("search")],
) -> Response:
    """A multipart upload (field ``image``), or JSON with ``imageBase64``, ``key`` (of an
    image in the images bucket; in the uploads bucket with an admin key only) or ``productId``
    (a catalog product's image); ``modifier`` changes it by text ("in red")."""
    if request.headers.get("content-type", "").startswith(_MULTIPART):
        asked = await _from_form(request, service)
    else:
        asked = await _from_json(request)
    if asked.key is not None and asked.bucket == service.settings.storage.uploads_bucket:
        require_scope(caller, "admin")
    return search_response(await run_in_threadpool(service.search, asked, session))
