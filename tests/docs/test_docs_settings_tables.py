"""The READMEs' tables of ``PIPELINE_STATE_*`` variables are the settings models, rendered.

When a setting changes (a new field, a default, a description), the committed README is
stale and this test fails with the command that regenerates it.
"""

from __future__ import annotations

import re

import pytest
from pipeline_state_kafka import Settings as KafkaSettings
from pipeline_state_service.readmes import REGENERATE_COMMAND, main, render_readmes, stale_readmes

from pipeline_state._settings import replace_block, variables_table


def test_docs_settings_tables_are_fresh() -> None:
    stale = [str(path) for path in stale_readmes()]
    assert stale == [], f"regenerate with `{REGENERATE_COMMAND}`: {stale}"
    assert main(["--check"]) == 0


def test_docs_kafka_readme_lists_every_kafka_variable_with_its_default() -> None:
    readme = next(text for path, text in render_readmes().items() if "pipeline_state_kafka" in str(path))
    for name, info in KafkaSettings.model_fields.items():
        row = re.search(rf"^\| `{KafkaSettings.variable(name)}` \| (.*?) \| (.*) \|$", readme, re.M)
        assert row is not None, name
        assert row.group(2) == info.description
    assert "| `PIPELINE_STATE_KAFKA_MAX_RECORDS` | `500` |" in readme


def test_docs_settings_table_drift_is_detected() -> None:
    lines = variables_table([KafkaSettings])
    text = replace_block(
        "a\n<!-- BEGIN settings:kafka -->\nold\n<!-- END settings:kafka -->\nb\n", "settings:kafka", lines
    )
    assert text.splitlines()[2:4] == lines[:2]
    edited = text.replace("records per fetch", "records per poll")
    assert edited != text
    assert replace_block(edited, "settings:kafka", lines) == text  # a hand edit is put back
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers here", "settings:kafka", lines)
