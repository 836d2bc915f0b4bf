"""Documentation that is generated from code stays in sync with it."""

from pathlib import Path

from scripts.settings_doc import render

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_settings_classes():
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "run: python -m scripts.settings_doc > docs/configuration.md"
    )
