"""``POST /search/image``: products that look like an image (upload, base64, or store key)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fashion_search.catalog.api_keys import ApiKey
from fashion_search.errors import ImageTooLargeError, InvalidArgumentError
from fashion_search.search.service import SearchService, decode_base64_image
from fashion_search.settings import Settings
from functions.api.access import require_scope, requires
from functions.api.dependencies import Service
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import reject_unknown_parameters
from functions.api.schemas import ImageSearchIn, SearchOut

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


#: The multipart form's text fields (besides the file ``image``): ImageSearchIn's refinements.
_FORM_FIELDS = (
    "k", "filters", "modifier", "minScore", "collapse", "facets", "candidates", "understand",
)  # fmt: skip


async def _from_form(request: Request, service: SearchService) -> SearchOut:
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
        body = ImageSearchIn.model_validate(
            {**fields, "filters": json.loads(fields.get("filters") or "{}")}
        )
    except ValueError as error:  # pydantic's ValidationError and JSON's errors are ValueErrors
        raise InvalidArgumentError(f"form fields are not valid: {error}") from error
    result = await run_in_threadpool(
        service.image, data, body.k, body.filters, body.refinements(), body.modifier
    )
    return SearchOut.of(result)


@router.post(
    "/search/image",
    summary="Search by image",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": ImageSearchIn.model_json_schema(by_alias=True)},
                _MULTIPART: {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "filters": {"type": "string", "description": "JSON object"},
                            **{
                                name: ImageSearchIn.model_json_schema(by_alias=True)["properties"][
                                    name
                                ]
                                for name in _FORM_FIELDS
                                if name != "filters"
                            },
                        },
                    }
                },
            },
            "required": True,
        }
    },
)
async def search_image(
    request: Request, service: Service, caller: Annotated[ApiKey | None, requires("search")]
) -> SearchOut:
    """A multipart upload (field ``image``), or JSON with ``imageBase64``, ``key`` (of an
    image in the images bucket; in the uploads bucket with an admin key only) or ``productId``
    (a catalog product's image); ``modifier`` changes it by text ("in red")."""
    if request.headers.get("content-type", "").startswith(_MULTIPART):
        return await _from_form(request, service)
    raw = await request.body()  # at most the route's limit (functions/api/body_limit.py)
    try:
        body = ImageSearchIn.model_validate_json(raw)
    except ValueError as error:
        raise InvalidArgumentError(f"body is not a valid image search request: {error}") from error
    sources = [body.image_base64, body.key, body.product_id]
    if sum(source is not None for source in sources) != 1:
        raise InvalidArgumentError("give exactly one of imageBase64, key or productId")
    args = (body.k, body.filters, body.refinements(), body.modifier)
    if body.product_id is not None:
        result = await run_in_threadpool(service.similar, body.product_id, *args)
    elif body.key is not None:
        if body.bucket == service.settings.storage.uploads_bucket:
            require_scope(caller, "admin")
        result = await run_in_threadpool(service.image_by_key, body.key, body.bucket, *args)
    else:
        image = decode_base64_image(body.image_base64 or "")
        result = await run_in_threadpool(service.image, image, *args)
    return SearchOut.of(result)
