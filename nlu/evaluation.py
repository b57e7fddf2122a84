"""Measuring the NLU: per-intent precision/recall/F1, urgent recall, false escalations.

Urgency is judged end to end, exactly as the bot would: model + urgency policy + safety rules.
"Urgent" messages are those labelled with an urgent intent (immediate_danger, self_harm); they
must be escalated. "Everyday" messages are those labelled with neither an urgent nor a concern
intent (greetings, questions about the service, chitchat, out of scope, figurative speech);
escalating one is a false escalation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from nlu.embedded import SEED, EmbeddedModel
from nlu.pipeline import Nlu, UrgencyPolicy
from nlu.safety import SafetyRules
from nlu.training_data import Example, TrainingData
from nlu.types import ParseResult

DEFAULT_TEST_PATH = Path(__file__).with_name("tests") / "test_nlu.yml"


@dataclass
class Evaluation:
    labels: list[str]
    gold: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    urgent_total: int = 0
    urgent_escalated: int = 0
    urgent_immediate: int = 0
    everyday_total: int = 0
    everyday_escalated: int = 0
    concern_total: int = 0
    concern_escalated: int = 0
    # (text, what the pipeline said) for error analysis: evaluation data only, never users'.
    missed: list[tuple[str, str]] = field(default_factory=list)
    false_alarms: list[tuple[str, str]] = field(default_factory=list)

    def add(self, example: Example, result: ParseResult, policy: UrgencyPolicy) -> None:
        self.gold.append(example.intent)
        self.predicted.append(result.model.intent.name)
        if example.intent in policy.urgent_intents:
            self.urgent_total += 1
            self.urgent_escalated += result.urgency.escalate
            self.urgent_immediate += result.urgency.level.value == "immediate"
            if not result.urgency.escalate:
                self.missed.append((example.text, _verdict(result)))
        elif example.intent in policy.concern_intents:
            self.concern_total += 1
            self.concern_escalated += result.urgency.escalate
        else:
            self.everyday_total += 1
            self.everyday_escalated += result.urgency.escalate
            if result.urgency.escalate:
                self.false_alarms.append((example.text, _verdict(result)))

    @property
    def urgent_recall(self) -> float:
        return self.urgent_escalated / self.urgent_total if self.urgent_total else float("nan")

    @property
    def false_escalation_rate(self) -> float:
        return self.everyday_escalated / self.everyday_total if self.everyday_total else 0.0

    def per_intent(self) -> list[tuple[str, float, float, float, int]]:
        from sklearn.metrics import precision_recall_fscore_support

        p, r, f, s = precision_recall_fscore_support(
            self.gold, self.predicted, labels=self.labels, zero_division=0
        )
        return [(self.labels[i], p[i], r[i], f[i], int(s[i])) for i in range(len(self.labels))]

    @property
    def macro_f1(self) -> float:
        rows = [row for row in self.per_intent() if row[4] > 0]
        return sum(row[3] for row in rows) / len(rows) if rows else 0.0

    @property
    def accuracy(self) -> float:
        hits = sum(g == p for g, p in zip(self.gold, self.predicted, strict=True))
        return hits / len(self.gold) if self.gold else 0.0

    def table(self) -> str:
        lines = [f"{'intent':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
        for name, p, r, f, s in self.per_intent():
            lines.append(f"{name:<18} {p:9.3f} {r:7.3f} {f:6.3f} {s:8d}")
        lines.append("")
        lines.append(f"intent accuracy          {self.accuracy:.3f}")
        lines.append(f"intent macro-F1          {self.macro_f1:.3f}")
        lines.append(
            f"urgent recall            {self.urgent_recall:.3f} "
            f"({self.urgent_escalated}/{self.urgent_total} escalated, "
            f"{self.urgent_immediate} at immediate)"
        )
        lines.append(
            f"false-escalation rate    {self.false_escalation_rate:.3f} "
            f"({self.everyday_escalated}/{self.everyday_total} everyday messages)"
        )
        if self.concern_total:
            lines.append(
                f"reports escalated         {self.concern_escalated / self.concern_total:.3f} "
                f"({self.concern_escalated}/{self.concern_total} non-urgent reports; "
                "informative, not an error)"
            )
        return "\n".join(lines)

    def errors(self) -> str:
        """Each missed urgent message and each false alarm, with what the pipeline said."""
        lines = [f"missed ({len(self.missed)}):"]
        lines += [f"  {text}\n      -> {why}" for text, why in self.missed]
        lines.append(f"false alarms ({len(self.false_alarms)}):")
        lines += [f"  {text}\n      -> {why}" for text, why in self.false_alarms]
        return "\n".join(lines)

    def confusion_png(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import ConfusionMatrixDisplay

        fig, ax = plt.subplots(figsize=(11, 10))
        ConfusionMatrixDisplay.from_predictions(
            self.gold,
            self.predicted,
            labels=self.labels,
            ax=ax,
            xticks_rotation=70,
            colorbar=False,
            cmap="Blues",
        )
        ax.set_title("Intent confusion matrix (rows: true, columns: predicted)")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _verdict(result: ParseResult) -> str:
    top = result.model.intent
    reasons = ", ".join(result.urgency.reasons) or "no reasons"
    return f"{result.urgency.level.value} ({reasons}); intent {top.name} {top.confidence:.2f}"


async def _run(nlu: Nlu, examples: list[Example], evaluation: Evaluation) -> None:
    for example in examples:
        evaluation.add(example, await nlu.parse(example.text), nlu.policy)


def evaluate(nlu: Nlu, test: TrainingData, labels: list[str]) -> Evaluation:
    """Score the whole pipeline (model, urgency policy, safety rules) on labelled messages."""
    evaluation = Evaluation(labels=labels)
    asyncio.run(_run(nlu, test.examples, evaluation))
    return evaluation


def cross_validate(
    data: TrainingData, folds: int, rules: SafetyRules, policy: UrgencyPolicy
) -> Evaluation:
    """k-fold cross-validation on the training data, stratified by intent, fixed seed."""
    from sklearn.model_selection import StratifiedKFold

    texts, labels = data.texts_and_labels()
    evaluation = Evaluation(labels=data.intents)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for train_idx, test_idx in splitter.split(texts, labels):
        part = TrainingData(
            examples=[data.examples[i] for i in train_idx],
            synonyms=data.synonyms,
            regexes=data.regexes,
            lookups=data.lookups,
            fingerprint=f"{data.fingerprint}-cv",
        )
        nlu = Nlu(EmbeddedModel.train(part, policy.urgent_intents), rules, policy)
        asyncio.run(_run(nlu, [data.examples[i] for i in test_idx], evaluation))
    return evaluation
