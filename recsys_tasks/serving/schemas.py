"""The serving app's HTTP contract: request and response bodies, with the limits a client can rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from recsys_tasks.contracts.feedback_store import FeedbackKind

DEFAULT_K = 10
MAX_K = 100
MAX_HISTORY_LENGTH = 1000
MAX_USER_ID_LENGTH = 256
MAX_FEEDBACK_EVENTS = 1000

# External item ids are non-negative 64-bit integers, as in the canonical interaction table.
ItemId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Request(BaseModel):
    # Strict: "12", 12.0 and true are not item ids; extra="forbid": a misspelt field is an error, not a default.
    model_config = ConfigDict(strict=True, extra="forbid")


class UserRequest(_Request):
    user_id: str | None = Field(
        None, max_length=MAX_USER_ID_LENGTH, description="Echoed back unchanged, to match answers to users."
    )
    history: list[ItemId] = Field(
        min_length=1, max_length=MAX_HISTORY_LENGTH, description="Item ids the user interacted with, oldest first."
    )
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="How many items to recommend.")
    exclude: list[ItemId] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_LENGTH,
        description="Item ids never to recommend, besides the history. Ids the model does not know are ignored.",
    )


class RecommendationRequest(_Request):
    users: list[UserRequest] = Field(min_length=1, description="One entry per user; at most the server's max batch.")
    ignore_unknown: bool = Field(
        False,
        description="Skip history items the model does not know instead of refusing the request "
        "(a history left with no known item is still refused).",
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    variant: str


class RecommendedItem(BaseModel):
    item_id: int
    score: float
    because: int | None = Field(None, description="The history item that contributed most to this one.")
    propensity: float = Field(
        description="Probability that the serving policy shows this item at this position for this history."
    )


class UserRecommendations(BaseModel):
    user_id: str | None
    request_id: str = Field(description="The id of this slate: send it back with the user's feedback on it.")
    items: list[RecommendedItem]


class ServingPolicyInfo(BaseModel):
    name: str
    exploration: float


class RecommendationResponse(BaseModel):
    model: ModelInfo
    policy: ServingPolicyInfo
    recommendations: list[UserRecommendations]


class FeedbackEventRequest(_Request):
    request_id: str = Field(min_length=1, max_length=36, description="The slate's request_id, as recommended.")
    item_id: ItemId = Field(description="An item of that slate.")
    event: FeedbackKind
    timestamp: AwareDatetime | None = Field(
        None,
        strict=False,  # an ISO 8601 string in JSON
        description="When the user acted, ISO 8601 with its time zone (default: when the server received it).",
    )


class FeedbackRequest(_Request):
    events: list[FeedbackEventRequest] = Field(min_length=1, max_length=MAX_FEEDBACK_EVENTS)


class FeedbackResponse(BaseModel):
    accepted: int
    received_at: datetime


class Readiness(BaseModel):
    status: str
    model: ModelInfo
    loading: str | None = Field(None, description="The version being loaded to replace this one, if any.")
    worker: int = Field(description="Process id of the worker that answered (each worker loads its own model).")
