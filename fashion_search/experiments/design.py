"""What an experiment is: two or more named arms, each a model version the catalog holds or a
ranking setting, with the share of sessions each gets. Checked once here for every way in
(CLI, REST, GraphQL); :class:`~fashion_search.errors.InvalidRequestError` (422) otherwise.

An arm is written ``NAME=WHAT``: ``A=serving`` (the serving version with the settings),
``B=version:3`` (the catalog's embeddings of model version 3), ``B=mode:vector`` or
``B=understand:off`` (a ranking setting, on the serving version: it replaces what a request of
the arm's sessions asks for, so the arm decides).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Self, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from fashion_search.errors import InvalidRequestError
from fashion_search.search.request import SearchRequest, describe

ArmKind: TypeAlias = Literal["serving", "version", "mode", "understand"]
#: The ranking settings an arm may set (fields of a search request), and their values.
SETTING_VALUES: dict[str, tuple[str, ...]] = {
    name: get_args(get_args(SearchRequest.model_fields[name].annotation)[0])
    for name in ("mode", "understand")
}
MAX_ARMS = 4
ArmName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
_ARM = re.compile(r"^(?P<name>[^=]+)=(?P<kind>[a-z]+)(?::(?P<value>.+))?$")


class Arm(BaseModel):
    """One arm: its name, what it changes, and its share of sessions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ArmName
    kind: ArmKind
    value: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    share: Annotated[float, Field(strict=False, allow_inf_nan=False, gt=0, le=1)]

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Self:
        if self.kind == "serving":
            if self.value is not None:
                raise ValueError(f"arm {self.name}: serving takes no value")
        elif self.value is None:
            raise ValueError(f"arm {self.name}: {self.kind} needs a value ({self.kind}:...)")
        elif self.kind in SETTING_VALUES and self.value not in SETTING_VALUES[self.kind]:
            allowed = ", ".join(SETTING_VALUES[self.kind])
            raise ValueError(f"arm {self.name}: {self.kind} is one of {allowed}")
        return self

    @property
    def label(self) -> str:
        """``serving``, ``version:3``, ``mode:vector``..."""
        return self.kind if self.value is None else f"{self.kind}:{self.value}"


class Design(BaseModel):
    """An experiment's arms (the first is the control), their shares summing to 1; or, with
    ``interleave``, two arms whose rankings every session sees merged (team-draft: shares do
    not apply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: Annotated[list[Arm], Field(min_length=2, max_length=MAX_ARMS)]
    interleave: bool = False

    @model_validator(mode="after")
    def _arms_fit(self) -> Self:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must differ")
        labels = [arm.label for arm in self.arms]
        if len(set(labels)) != len(labels):
            raise ValueError("two arms do the same thing")
        if not math.isclose(sum(arm.share for arm in self.arms), 1.0, abs_tol=1e-9):
            raise ValueError("the arms' shares must sum to 1")
        if self.interleave and len(self.arms) != 2:
            raise ValueError("interleaving merges exactly two arms")
        return self

    @classmethod
    def of(cls, body: Mapping[str, object]) -> Design:
        """A design from its JSON; InvalidRequestError with what is wrong."""
        try:
            return cls.model_validate(body)
        except ValidationError as error:
            raise InvalidRequestError(f"experiment: {describe(error)}") from None

    @classmethod
    def parse(
        cls, arms: Sequence[str], shares: Mapping[str, float] = {}, interleave: bool = False
    ) -> Design:
        """A design from ``NAME=WHAT`` arms and the shares named (the rest split evenly
        between the arms not named)."""
        parsed = []
        for text in arms:
            found = _ARM.match(text.strip())
            if found is None:
                raise InvalidRequestError(f"arm {text!r}: write NAME=WHAT, e.g. B=version:3")
            parsed.append(found.groupdict())
        unknown = set(shares) - {arm["name"] for arm in parsed}
        if unknown:
            raise InvalidRequestError(f"a share names no arm: {', '.join(sorted(unknown))}")
        rest = [arm for arm in parsed if arm["name"] not in shares]
        left = 1.0 - sum(shares.values())
        for arm in parsed:
            arm["share"] = shares.get(arm["name"], left / len(rest) if rest else 0.0)
        return cls.of({"arms": parsed, "interleave": interleave})

    def arm(self, name: str) -> Arm:
        """The arm called ``name``; InvalidRequestError when there is none."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise InvalidRequestError(f"the experiment has no arm {name!r}")
