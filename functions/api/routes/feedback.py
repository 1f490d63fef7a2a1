"""``POST /feedback``: what a shopper did with a search result (a click, an add-to-cart, a
"not relevant" mark), stored for evaluation and fine-tuning and relayed to the feedback
topic."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from fashion_search.learning.feedback import Feedback
from functions.api.access import requires
from functions.api.dependencies import FeedbackStore
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import reject_unknown_parameters

router = APIRouter(
    tags=["feedback"],
    dependencies=[Depends(reject_unknown_parameters), requires("search")],
    responses=ERROR_RESPONSES,
)


class FeedbackOut(BaseModel):
    """The stored record's id and time."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: int
    created_at: datetime


@router.post("/feedback", status_code=201, summary="Record a shopper's signal on a result")
async def record_feedback(store: FeedbackStore, feedback: Feedback) -> FeedbackOut:
    """``{"signal": "click", "query": "red dress", "productId": 15970, "position": 1,
    "sessionId": "...", "modelVersion": "3"}``; 404 when the product is not in the catalog,
    422 for a bad field (nothing is stored then)."""
    stored = await run_in_threadpool(store.record, feedback)
    return FeedbackOut(id=stored.id, created_at=stored.created_at)
