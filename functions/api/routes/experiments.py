"""``GET|POST /experiments`` and ``POST /experiments/stop``: online experiments (an admin key);
what a design may say: :mod:`fashion_search.experiments.design`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.concurrency import run_in_threadpool

from fashion_search.catalog.api_keys import ApiKey
from fashion_search.catalog.limits import MAX_PRODUCT_ID
from fashion_search.experiments.design import Design
from functions.api.access import recorded_as, requires
from functions.api.dependencies import Service
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import reject_unknown_parameters

admin = requires("admin")
router = APIRouter(
    tags=["experiments"],
    dependencies=[Depends(reject_unknown_parameters)],
    responses=ERROR_RESPONSES,
)
ExperimentId = Annotated[
    int | None, Query(ge=1, le=MAX_PRODUCT_ID, description="an experiment (default: the latest)")
]


@router.get(
    "/experiments", summary="An experiment's arms, figures and verdict", dependencies=[admin]
)
async def experiment_status(service: Service, id: ExperimentId = None) -> dict[str, Any]:
    """Per arm: sessions, searches, click-through at 10, add-to-cart rate, reciprocal rank of
    the first click, "not relevant" rate (95% intervals); each arm against the first by the
    sequential test; the verdict ("keep running", or which arm is better and "stop")."""
    status = await run_in_threadpool(service.experiments.status, id)
    return status.to_json()


@router.post("/experiments", status_code=201, summary="Start an experiment")
async def start_experiment(
    service: Service,
    caller: Annotated[ApiKey | None, admin],
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "arms": [
                        {"name": "A", "kind": "serving", "share": 0.9},
                        {"name": "B", "kind": "version", "value": "3", "share": 0.1},
                    ]
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """Arms (the first is the control) with their shares; 422 names what is wrong (nothing is
    stored then), 409 while another experiment runs."""
    design = Design.of(body)
    started = await run_in_threadpool(service.experiments.start, design, recorded_as(caller))
    status = await run_in_threadpool(service.experiments.status, started.id)
    return status.to_json()


@router.post("/experiments/stop", summary="Stop the running experiment")
async def stop_experiment(
    service: Service, caller: Annotated[ApiKey | None, admin], id: ExperimentId = None
) -> dict[str, Any]:
    """Its figures and verdict now become its decision; 409 when it has stopped already."""
    status = await run_in_threadpool(service.experiments.stop, id, recorded_as(caller))
    return status.to_json()
