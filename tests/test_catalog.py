"""The catalog and prompt files: contents, overrides, and one-line errors for broken files."""

from __future__ import annotations

import pytest

from simulator.conversation.catalog import load_catalog
from simulator.conversation.prompts import Prompts
from simulator.core.errors import UserError


def test_catalog_has_the_article_entries(catalog):
    assert list(catalog.settings) == ["bar_club", "workplace", "supermarket", "elsewhere"]
    assert sorted(catalog.personas) == ["aloof", "friendly", "unsure"]
    assert list(catalog.strategies) == ["turn_back", "common_interest", "high_point_exit", "work_need", "friends_pretext", "social_media", "no_ask"]
    assert [s for s, v in catalog.strategies.items() if v.baseline] == ["friends_pretext", "social_media", "no_ask"]
    assert catalog.personas["aloof"].baseline.interest < catalog.personas["friendly"].baseline.interest


def test_unknown_name_lists_the_valid_ones(catalog):
    with pytest.raises(UserError, match="unknown persona 'shy'; choose from: .*aloof.*friendly.*unsure|unknown persona 'shy'; choose from: .*"):
        catalog.pick("personas", "shy")
    assert catalog.names("settings", "all") == list(catalog.settings)
    with pytest.raises(UserError, match="unknown setting 'moon'"):
        catalog.names("settings", "bar_club,moon")


def test_user_directories_override_file_by_file(tmp_path, catalog):
    personas, prompts_dir = tmp_path / "personas", tmp_path / "prompts"
    personas.mkdir(), prompts_dir.mkdir()
    (personas / "aloof.yaml").write_text(
        catalog.personas["aloof"].model_copy(update={"summary": "Our own aloof."}).model_dump_json()
    )  # JSON is YAML
    (prompts_dir / "settings.yaml").write_text("gym:\n  summary: s\n  place: a gym\n  assumption: a\n  moment: m\n")
    (prompts_dir / "persona.j2").write_text("Custom persona prompt {{ persona.id }}")
    cat = load_catalog(personas, prompts_dir)
    assert cat.personas["aloof"].summary == "Our own aloof."
    assert cat.personas["friendly"] == catalog.personas["friendly"]  # untouched files still come from the package
    assert list(cat.settings) == ["gym"]
    prompts = Prompts(cat.prompt_dirs)
    assert prompts.render("persona", persona=cat.personas["aloof"]) == "Custom persona prompt aloof"
    assert "{{ setting.place }}" in prompts.source("practitioner")


@pytest.mark.parametrize(
    "content, message",
    [
        ("id: aloof\nsummary: [unclosed\n", r"aloof.yaml: line 3, column 1: invalid YAML"),
        ("", r"aloof.yaml: file is empty"),
        ("id: aloof\nsummary: x\ntemperament: x\non_agendas: x\non_ambiguity: x\non_pressure: x\nbaseline: {interest: 2, comfort: 4}\nexpected_first_turn: {interest: [0, 5], comfort: [0, 8]}\nmood: x\n",
         r"aloof.yaml: mood: Extra inputs are not permitted"),
        ("id: aloof\nsummary: x\ntemperament: x\non_agendas: x\non_ambiguity: x\non_pressure: x\nbaseline: {interest: high, comfort: 4}\nexpected_first_turn: {interest: [0, 5], comfort: [0, 8]}\n",
         r"aloof.yaml: baseline.interest: Input should be 0, 1, 2"),
        ("id: shy\nsummary: x\ntemperament: x\non_agendas: x\non_ambiguity: x\non_pressure: x\nbaseline: {interest: 2, comfort: 4}\nexpected_first_turn: {interest: [0, 5], comfort: [0, 8]}\n",
         r"aloof.yaml: id 'shy' does not match the file name 'aloof'"),
    ],
)
def test_broken_persona_file_names_the_file_and_the_problem(tmp_path, content, message):
    (tmp_path / "aloof.yaml").write_text(content)
    with pytest.raises(UserError, match=message):
        load_catalog(tmp_path)


def test_non_utf8_and_huge_files(tmp_path):
    (tmp_path / "aloof.yaml").write_bytes(b"id: \xff\xfe\n")
    with pytest.raises(UserError, match="aloof.yaml: not UTF-8 text"):
        load_catalog(tmp_path)
    (tmp_path / "aloof.yaml").write_text("#" * 2_000_000)
    with pytest.raises(UserError, match="aloof.yaml: file is larger than"):
        load_catalog(tmp_path)


def test_missing_template_variables_are_all_named(tmp_path):
    (tmp_path / "x.j2").write_text("{{ a }} and {{ b }} and {{ c }}")
    with pytest.raises(UserError, match=r"x.j2: undefined variable\(s\): b, c"):
        Prompts((tmp_path,)).render("x", a=1)


def test_template_syntax_error_names_the_line(tmp_path):
    (tmp_path / "x.j2").write_text("fine\n{% if %}")
    with pytest.raises(UserError, match=r"x.j2: line 2"):
        Prompts((tmp_path,)).render("x")
