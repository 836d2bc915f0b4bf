"""Documentation that is generated from code stays in sync with it."""

from pathlib import Path

from scripts.settings_doc import render, render_readme

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_settings_classes():
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), "run: python -m scripts.settings_doc"
    readme = (ROOT / "README.md").read_text()
    assert "| `RAG_QDRANT_URL` |" in readme, "the README lists every variable"
    assert render_readme(readme) == readme, "run: python -m scripts.settings_doc"


def test_container_files_reference_what_the_repository_has():
    import re

    import yaml

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / source).exists(), source
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    modules = {s["command"][2] for s in compose["services"].values() if s.get("command", [None])[0] == "python"}
    assert modules == {"llm_service", "rag_service", "rag_service.ingest", "gateway"}
    assert (ROOT / "data" / "corpus.jsonl").exists()
