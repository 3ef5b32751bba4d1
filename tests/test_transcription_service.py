"""Planning the chunks the openai engine sends."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("duration, silences, expected", [
    (2400.4, [], [(0, 1195.0), (1195.0, 2390.0), (2390.0, 2400.4)]),
    (2392.0, [], [(0, 1195.0), (1195.0, 2392.0)]),  # a 2 s tail joins the chunk before it
    (100.0, [], [(0, 100.0)]),
])
def test_chunk_plan_folds_a_sliver_into_the_last_chunk(duration, silences, expected):
    from transcription_service import chunk_plan
    plan = chunk_plan(duration, silences, 1200)
    assert [x for pair in plan for x in pair] == pytest.approx([x for pair in expected for x in pair])
    assert all(end - start <= 1200 for start, end in plan)
