"""Found by an attack: variants of the media profile (examples/custom_catalog.py) for ``serve
--profile tests/kafka/media_profiles.py:NAME``. No tests here: the attack tests are
in test_kafka_custom_profile_attacks.py."""

from __future__ import annotations

from pathlib import Path

import attrs

from pipeline_state.profiles import load_profile

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_catalog.py"
_MEDIA = load_profile(f"{_EXAMPLE}:MEDIA")

MEDIA_SEQUENTIAL = attrs.evolve(_MEDIA, max_parallel=1)
"""The media profile, one phase at a time (thumbnails and captions no longer overlap)."""

MEDIA_QUICK_DEADLINES = attrs.evolve(_MEDIA, deadlines={"captions": 1.0}, max_resends=1)
"""The media profile with a 1 s captions deadline and one re-send."""
