"""Understanding one message: the intent model, then urgency, then the safety rules on top.

`Nlu.parse` is what the conversation and `safeguard nlu parse` call. The model (embedded, or a
Rasa server with the embedded model as its fallback) names the intent; `UrgencyPolicy` turns its
probabilities into a level; the safety rules always run too and can only raise that level.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import ConfigError
from nlu.embedded import TRAINING_RECIPE, EmbeddedModel
from nlu.safety import SafetyRules
from nlu.training_data import DEFAULT_DATA_DIR, data_fingerprint, load_training_data
from nlu.types import IntentModel, Level, ModelOutput, ParseResult, Urgency

log = logging.getLogger("safeguard.nlu")

DEFAULT_POLICY_PATH = Path(__file__).with_name("urgency.yml")
DEFAULT_MODEL_DIR = Path(__file__).with_name("models")


class UrgencyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    urgent_intents: dict[str, Level]
    concern_intents: list[str]
    immediate_threshold: float = Field(gt=0, le=1)
    unsure_below: float = Field(gt=0, le=1)
    unsure_urgent_threshold: float = Field(gt=0, le=1)
    model_min_words: int = Field(ge=1)
    short_message_confidence: float = Field(gt=0, le=1)

    @classmethod
    def load(cls, path: Path = DEFAULT_POLICY_PATH) -> UrgencyPolicy:
        try:
            return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"{path}: invalid urgency policy ({type(exc).__name__})") from None

    def urgent_intent_score(self, out: ModelOutput) -> tuple[float, str | None]:
        """The urgent intents' probabilities added up, and the likeliest of them."""
        score, best, best_p = 0.0, None, 0.0
        for item in out.ranking:
            if item.name in self.urgent_intents:
                score += item.confidence
                if item.confidence > best_p:
                    best, best_p = item.name, item.confidence
        return score, best

    def judge(self, out: ModelOutput, text: str) -> Urgency:
        intent_score, urgent = self.urgent_intent_score(out)
        score = intent_score
        if out.urgent_probability is not None:
            # Both of the embedded model's readings must lean towards danger: the geometric
            # mean is high only when the intent model and the urgency classifier agree.
            score = (intent_score * out.urgent_probability) ** 0.5
        top = out.intent
        tag = f"model:{out.engine}"
        if len(text.split()) < self.model_min_words:
            # A short answer to a specific question ("a man at the park") says too little for
            # the model to page anyone on a mixed score; only a clear urgent reading counts
            # ("hurting myself rn"). The safety rules still judge every message.
            clear = top.name in self.urgent_intents
            if not clear or top.confidence < self.short_message_confidence:
                urgent = None
        if urgent is not None and score >= self.immediate_threshold:
            level = self.urgent_intents[urgent]
            return Urgency(level, round(score, 4), (f"{tag}:{urgent} {score:.2f}",))
        looks_like_safeguarding = (
            top.name in self.urgent_intents or top.name in self.concern_intents
        )
        if (
            urgent is not None
            and looks_like_safeguarding
            and top.confidence < self.unsure_below
            and intent_score >= self.unsure_urgent_threshold
        ):
            reason = f"{tag}:unsure urgent {intent_score:.2f}"
            return Urgency(Level.HIGH, round(intent_score, 4), (reason,))
        if top.name in self.concern_intents:
            reason = f"{tag}:{top.name} {top.confidence:.2f}"
            return Urgency(Level.ROUTINE, round(top.confidence, 4), (reason,))
        return Urgency(Level.NONE, round(score, 4), ())


@dataclass
class Nlu:
    model: IntentModel
    rules: SafetyRules
    policy: UrgencyPolicy = field(default_factory=UrgencyPolicy.load)

    async def parse(self, text: str) -> ParseResult:
        out = await self.model.predict(text)
        urgency = self.policy.judge(out, text).merge(self.rules.assess(text))
        return ParseResult(text, out, urgency)


def model_path(
    data_dir: Path = DEFAULT_DATA_DIR,
    model_dir: Path = DEFAULT_MODEL_DIR,
    urgent_intents: Iterable[str] | None = None,
) -> Path:
    """Where the model for the current training data and recipe is (or will be) saved.

    The recipe includes which intents are urgent (`urgency.yml`): the urgency classifier is
    trained to find exactly those.
    """
    if urgent_intents is None:
        urgent_intents = UrgencyPolicy.load().urgent_intents
    recipe = f"{TRAINING_RECIPE}-{','.join(sorted(urgent_intents))}"
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:6]
    return model_dir / f"embedded-{data_fingerprint(data_dir)}-{digest}.npz"


def load_embedded_model(
    data_dir: Path = DEFAULT_DATA_DIR,
    model_dir: Path = DEFAULT_MODEL_DIR,
    *,
    retrain: bool = False,
    policy: UrgencyPolicy | None = None,
) -> EmbeddedModel:
    """The model for the current training data: loaded if already trained, else trained now.

    The file name carries a hash of the training data, so editing the data retrains once.
    """
    urgent_intents = list((policy or UrgencyPolicy.load()).urgent_intents)
    path = model_path(data_dir, model_dir, urgent_intents)
    if path.exists() and not retrain:
        return EmbeddedModel.load(path)
    model = EmbeddedModel.train(load_training_data(data_dir), urgent_intents)
    try:
        model.save(path)
        log.info("model_trained fingerprint=%s", model.fingerprint)
    except OSError as exc:  # a read-only install still works, it just trains each start
        log.warning("model_not_saved error=%s", type(exc).__name__)
    return model


def build_nlu(engine: str = "embedded", rasa_url: str | None = None) -> Nlu:
    policy = UrgencyPolicy.load()
    model: IntentModel = load_embedded_model(policy=policy)
    if engine == "rasa":
        from nlu.rasa_client import RasaEngine

        if not rasa_url:
            raise ConfigError("nlu.engine is 'rasa' but nlu.rasa_url is not set")
        model = RasaEngine(rasa_url, fallback=model)
    return Nlu(model=model, rules=SafetyRules.load(), policy=policy)
