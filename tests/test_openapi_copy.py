"""The schemas kept in tests/fixtures/openai are OpenAI's own, unchanged."""

from __future__ import annotations

import json

import pytest

from tests.helpers.openapi import SCHEMAS, SPEC, schemas_from_spec


def test_the_kept_schemas_equal_openais_description() -> None:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} is not beside this clone: the kept copy is used as it is")
    assert json.loads(SCHEMAS.read_text()) == schemas_from_spec()
