"""The NLU: training-data loading, the embedded model, urgency, `safeguard nlu parse`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ConfigError
from nlu.embedded import EmbeddedModel
from nlu.pipeline import Nlu, UrgencyPolicy, build_nlu, load_embedded_model, model_path
from nlu.safety import SafetyRules
from nlu.training_data import DEFAULT_DATA_DIR, load_training_data
from nlu.types import Entity, IntentScore, Level, ModelOutput
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def nlu() -> Nlu:
    return build_nlu()


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "data.yml"
    path.write_text(body, encoding="utf-8")
    return path


# ---------------------------------------------------------------- training data


def test_annotations_become_plain_text_with_entity_spans(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'version: "3.1"\nnlu:\n- intent: report_self\n  examples: |\n'
        '    - my [bf]{"entity": "relation", "value": "boyfriend"} is [19](age)\n'
        "    - he lives in [Batley](place)\n"
        "- intent: greet\n  examples: |\n    - hiya\n",
    )
    data = load_training_data(path)
    first = data.examples[0]
    assert first.text == "my bf is 19"
    assert [(e.entity, e.value, first.text[e.start : e.end]) for e in first.entities] == [
        ("relation", "boyfriend", "bf"),
        ("age", "19", "19"),
    ]
    assert data.synonyms["bf"] == "boyfriend"
    assert data.intents == ["greet", "report_self"]


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ('version: "3.1"\nnlu:\n- intent: greet\n  examples: hi\n', 3, "'|' block"),
        ('version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    hi\n', 5, "start with '- '"),
        ('version: "3.1"\nnlu:\n- intnt: greet\n  examples: |\n    - hi\n', 3, "unknown keys"),
        ('version: "3.1"\nnlu:\n- intent: a\n  examples: |\n    - [x(age)\n', 5, "annotation"),
        ('version: "3.1"\nnlu:\n- regex: r\n  examples: |\n    - ([a-z\n', 5, "compile"),
        (
            'version: "3.1"\nnlu:\n- intent: a\n  examples: |\n    - same\n'
            "- intent: b\n  examples: |\n    - same\n",
            8,
            "both a and b",
        ),
        ('version: "3.1"\nnlu: [\n', 3, "not valid YAML"),
    ],
)
def test_a_malformed_file_names_the_file_and_line(
    tmp_path: Path, body: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_training_data(write(tmp_path, body))
    message = str(error.value)
    assert f"data.yml:{line}" in message and words in message, message


def test_the_shipped_data_loads_and_covers_every_intent() -> None:
    data = load_training_data(DEFAULT_DATA_DIR)
    counts: dict[str, int] = {}
    for example in data.examples:
        counts[example.intent] = counts.get(example.intent, 0) + 1
    for intent in ("report_self", "report_other", "immediate_danger", "self_harm"):
        assert counts.get(intent, 0) >= 60, (intent, counts.get(intent))
    assert {"place", "platform", "relation"} <= set(data.lookups)
    assert "registration" in data.regexes


def test_held_out_test_set_is_never_trained_on() -> None:
    training = {e.text.casefold() for e in load_training_data(DEFAULT_DATA_DIR).examples}
    held_out = load_training_data(ROOT / "nlu" / "tests" / "test_nlu.yml")
    assert len(held_out.examples) >= 150
    overlap = [e.text for e in held_out.examples if e.text.casefold() in training]
    assert not overlap, overlap


# ---------------------------------------------------------------- the model


def test_emoji_that_carry_tone_are_read_as_words() -> None:
    from nlu.embedded import normalise

    assert normalise("i want to DIE 😂") == "i want to die emoji_laughing"
    assert normalise("i want to die 😭") == "i want to die emoji_crying"
    assert normalise("hiya 🌞👋") == "hiya"  # the rest are dropped with the punctuation


def test_training_is_deterministic() -> None:
    data = load_training_data(DEFAULT_DATA_DIR)
    urgent = ["immediate_danger", "self_harm"]
    first, second = EmbeddedModel.train(data, urgent), EmbeddedModel.train(data, urgent)
    assert first.classes == second.classes
    assert np.array_equal(first.columns, second.columns)
    assert np.allclose(first.weights, second.weights)


def test_model_file_round_trips_and_is_named_by_the_data(tmp_path: Path) -> None:
    model = load_embedded_model(model_dir=tmp_path)
    (path,) = tmp_path.glob("embedded-*.npz")
    assert model.fingerprint in path.name
    again = EmbeddedModel.load(path)
    text = "my mates older brother keeps giving her vodka"
    assert again.predict_sync(text).ranking == model.predict_sync(text).ranking


def test_a_change_to_how_the_model_is_trained_names_another_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the model file for the current data and training recipe,
    import nlu.pipeline

    before = model_path()
    # When the recipe changes (say, the regularisation) but the data does not,
    monkeypatch.setattr(nlu.pipeline, "TRAINING_RECIPE", "v1-another-recipe")
    # Then a model trained the old way is not loaded in its place.
    assert model_path() != before
    assert model_path().name.startswith(before.name.rsplit("-", 1)[0])


def test_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "embedded-x.npz"
    path.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="unreadable model file"):
        EmbeddedModel.load(path)


def test_entities_come_from_the_data_sections() -> None:
    model = load_embedded_model()
    found = model.predict_sync("a silver car reg YX19 KLM outside Dewsbury bus station tonight")
    kinds = {e.entity for e in found.entities}
    assert {"registration", "place"} <= kinds, found.entities


# ---------------------------------------------------------------- urgency


def _output(
    intent: str, confidence: float, urgent_probability: float | None = None, **others: float
) -> ModelOutput:
    ranking = (IntentScore(intent, confidence), *(IntentScore(k, v) for k, v in others.items()))
    return ModelOutput(ranking[0], ranking, (), "test", urgent_probability)


class _Fixed:
    def __init__(self, out: ModelOutput) -> None:
        self.out = out

    async def predict(self, text: str) -> ModelOutput:
        return self.out


async def test_safety_rules_raise_what_the_model_misses() -> None:
    nlu = Nlu(_Fixed(_output("greet", 0.99)), SafetyRules.load())
    result = await nlu.parse("hes outside my house rn")
    assert result.urgency.level is Level.IMMEDIATE and result.urgency.escalate
    assert any(r.startswith("rule:") for r in result.urgency.reasons)


async def test_rules_never_lower_what_the_model_says() -> None:
    nlu = Nlu(_Fixed(_output("immediate_danger", 0.9)), SafetyRules.load())
    result = await nlu.parse("zzzz qqqq zzzz qqqq zzzz qqqq")
    assert result.urgency.level is Level.IMMEDIATE
    assert result.urgency.reasons[0].startswith("model:")


async def test_unsure_safeguarding_message_errs_towards_a_human() -> None:
    policy = UrgencyPolicy.load()
    out = _output("report_other", 0.4, immediate_danger=0.2, out_of_scope=0.4)
    text = "not sure what is going on with her lately"
    assert policy.judge(out, text).level is Level.HIGH
    sure = _output("report_other", 0.9, immediate_danger=0.05)
    assert policy.judge(sure, text).level is Level.ROUTINE
    assert policy.judge(out, "a man").level is Level.ROUTINE  # too short for the model alone


async def test_a_short_message_alerts_on_the_model_only_when_clearly_urgent() -> None:
    policy = UrgencyPolicy.load()
    # Given short messages (fewer words than the policy's minimum for a mixed score)
    short = "hurting myself rn"
    assert len(short.split()) < policy.model_min_words
    # When the model's top intent is urgent and sure, a person is alerted
    clear = _output("self_harm", policy.short_message_confidence + 0.05, out_of_scope=0.1)
    assert policy.judge(clear, short).level is Level.IMMEDIATE
    # but a mixed score (urgent intents adding up, the top one something else) is not enough,
    mixed = _output("give_detail", 0.5, immediate_danger=0.3, self_harm=0.2)
    assert policy.judge(mixed, "a man at the park").level is Level.NONE
    # nor is an urgent top intent the model is unsure of.
    unsure = _output("self_harm", policy.short_message_confidence - 0.05, out_of_scope=0.4)
    assert not policy.judge(unsure, short).escalate


def test_the_model_alerts_only_when_its_two_readings_agree() -> None:
    policy = UrgencyPolicy.load()
    text = "my mates are outside my house now waiting to go into town"
    # Given an intent reading that alone would alert the team,
    leaning = _output("immediate_danger", 0.6, out_of_scope=0.35)
    assert policy.judge(leaning, text).level is Level.IMMEDIATE  # Rasa: no urgency classifier
    # when the urgency classifier is nearly sure it is everyday, nobody is paged,
    doubted = _output("immediate_danger", 0.6, urgent_probability=0.05, out_of_scope=0.35)
    assert policy.judge(doubted, text).level is Level.NONE
    # and when it agrees, the reason shows the combined score (the geometric mean).
    agreed = _output("immediate_danger", 0.6, urgent_probability=0.98, out_of_scope=0.35)
    urgency = policy.judge(agreed, text)
    assert urgency.level is Level.IMMEDIATE
    assert urgency.reasons == ("model:test:immediate_danger 0.77",)


def test_the_urgency_classifier_tells_everyday_from_danger() -> None:
    model = load_embedded_model()
    assert set(model.urgent_intents) == set(UrgencyPolicy.load().urgent_intents)
    danger = model.predict_sync("hes outside my house with a knife and im hiding upstairs")
    everyday = model.predict_sync("what time does the chippy on the high street shut")
    assert danger.urgent_probability is not None and danger.urgent_probability > 0.9
    assert everyday.urgent_probability is not None and everyday.urgent_probability < 0.1


async def test_figurative_speech_is_not_escalated(nlu: Nlu) -> None:
    for text in (
        "this homework is killing me",
        "my mum will kill me if im late",
        "how do i kill a python process",
    ):
        result = await nlu.parse(text)
        assert not result.urgency.escalate, (text, result.to_json())


async def test_danger_now_is_escalated(nlu: Nlu) -> None:
    for text in (
        "hes outside my house rn",
        "i've taken a load of pills",
        "shes in a car with 2 older men right now shes only 13",
    ):
        result = await nlu.parse(text)
        assert result.urgency.escalate, (text, result.to_json())


async def test_parse_json_has_the_contract_shape() -> None:
    top = IntentScore("report_self", 0.9)
    out = ModelOutput(top, (top,), (Entity("age", "13", 10, 12),), "test")
    body = (await Nlu(_Fixed(out), SafetyRules.load()).parse("i am only 13")).to_json()
    assert set(body) == {"text", "intent", "intent_ranking", "entities", "urgency", "escalate"}
    assert body["entities"] == [{"entity": "age", "value": "13", "start": 10, "end": 12}]
    assert set(body["urgency"]) == {"level", "score", "reasons"}  # type: ignore[arg-type]


# ---------------------------------------------------------------- the command


def test_nlu_parse_command_writes_one_json_object_per_line(tmp_path: Path) -> None:
    lines = ["hes outside my house rn", "this homework is killing me", "", "x" * 4096]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "nlu", "parse"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(lines)
    assert out[0]["urgency"]["level"] == "immediate" and out[0]["escalate"] is True
    assert out[1]["escalate"] is False
    for item in out:
        assert item["urgency"]["level"] in ("immediate", "high", "routine", "none")
        assert item["escalate"] == (item["urgency"]["level"] in ("immediate", "high"))
        assert 0.0 <= item["intent"]["confidence"] <= 1.0
