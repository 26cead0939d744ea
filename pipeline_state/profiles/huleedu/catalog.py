"""The HuleEdu profile's pipelines (CONTRACT section 2): four pipelines over the phases
spellcheck, cj_assessment, nlp and ai_feedback. The same data ships as
``pipeline_state/profiles/huleedu.toml``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline_state._catalog import Catalog

__all__ = ["HULEEDU_CATALOG"]

_HULEEDU_PROFILE: Mapping[str, Any] = {
    "pipelines": {
        "cj_assessment": {
            "steps": [
                {"name": "spellcheck"},
                {"name": "cj_assessment", "depends_on": ["spellcheck"]},
            ]
        },
        "nlp": {
            "steps": [
                {"name": "spellcheck"},
                {"name": "nlp", "depends_on": ["spellcheck"]},
            ]
        },
        "ai_feedback": {
            "steps": [
                {"name": "spellcheck"},
                {"name": "nlp", "depends_on": ["spellcheck"]},
                {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
            ]
        },
        "comprehensive": {
            "steps": [
                {"name": "spellcheck"},
                {"name": "cj_assessment", "depends_on": ["spellcheck"]},
                {"name": "nlp", "depends_on": ["spellcheck"]},
                {"name": "ai_feedback", "depends_on": ["spellcheck", "nlp"]},
            ]
        },
    }
}

HULEEDU_CATALOG: Catalog = Catalog.from_dict(_HULEEDU_PROFILE)
"""The HuleEdu profile's pipelines (CONTRACT section 2)."""
