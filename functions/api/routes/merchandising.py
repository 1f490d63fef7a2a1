"""``GET|POST /rules`` and ``DELETE /rules/{id}``: merchandising rules and synonym sets (an
admin key); what a body may say: :mod:`fashion_search.search.merchandising`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Response
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from fashion_search.catalog.api_keys import ApiKey
from fashion_search.catalog.limits import MAX_PRODUCT_ID
from fashion_search.catalog.rules import EntryKind, StoredEntry
from functions.api.access import recorded_as, requires
from functions.api.dependencies import Service
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import reject_unknown_parameters

admin = requires("admin")
router = APIRouter(
    tags=["merchandising"],
    dependencies=[Depends(reject_unknown_parameters)],
    responses=ERROR_RESPONSES,
)


class RuleOut(BaseModel):
    """A stored rule or synonym set: its id, kind, body, who created it and when."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: int
    kind: EntryKind
    body: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, entry: StoredEntry) -> RuleOut:
        """From a stored entry."""
        return cls(**vars(entry))


@router.get("/rules", summary="Every merchandising rule and synonym set", dependencies=[admin])
async def list_rules(service: Service) -> list[RuleOut]:
    """Oldest first."""
    entries = await run_in_threadpool(service.merchandising.entries)
    return [RuleOut.of(e) for e in entries]


@router.post("/rules", status_code=201, summary="Add a rule or synonym set")
async def add_rule(
    service: Service,
    caller: Annotated[ApiKey | None, admin],
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "when": {"query": "running shoes", "match": "contains"},
                    "then": {"pin": [{"productId": 9204, "position": 1}]},
                    "note": "launch week",
                }
            ]
        ),
    ],
) -> RuleOut:
    """A rule (``when``, ``then``, ``note``) or a synonym set (``synonyms``; ``words`` with
    ``synonyms`` or ``values``); 422 names what is wrong, and nothing is stored then."""
    added = await run_in_threadpool(service.merchandising.add, body, recorded_as(caller))
    return RuleOut.of(added)


@router.delete(
    "/rules/{rule_id}",
    status_code=204,
    summary="Remove a rule or synonym set",
    dependencies=[admin],
)
async def remove_rule(
    service: Service, rule_id: Annotated[int, Path(ge=1, le=MAX_PRODUCT_ID)]
) -> Response:
    """404 when there is none with that id."""
    await run_in_threadpool(service.merchandising.remove, rule_id)
    return Response(status_code=204)
