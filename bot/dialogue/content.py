"""Loading the conversation's content: the flows (structure) and the wording (every word shown).

Both are data files under `config/` that a safeguarding lead reviews. They are validated as a
whole at start-up, so a missing question or a misspelt option fails loudly before any reporter
meets it, with the file and the key at fault in the message.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from bot.errors import ConfigError

Audience = Literal["young_person", "worried_adult", "professional"]
AUDIENCES: tuple[Audience, ...] = ("young_person", "worried_adult", "professional")
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepDef(_Strict):
    kind: Literal["text", "choice"]
    required: bool
    options: list[StrictStr] = Field(default_factory=list)
    urgent_answers: dict[StrictStr, Literal["immediate", "high"]] = Field(default_factory=dict)
    # The option that typed words count as when they match none (e.g. "not sure" for danger).
    unmatched: StrictStr | None = None
    # Typed numbers that pick an option, e.g. an age of 13 picks the 11-13 band.
    number_ranges: dict[StrictStr, tuple[int, int]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_fit_kind(self) -> StepDef:
        if self.kind == "choice" and not self.options:
            raise ValueError("a choice step needs options")
        if self.kind == "text" and self.options:
            raise ValueError("a text step has no options")
        unknown = (set(self.urgent_answers) | set(self.number_ranges)) - set(self.options)
        if self.unmatched is not None:
            unknown |= {self.unmatched} - set(self.options)
        if unknown:
            raise ValueError(f"unknown options named: {sorted(unknown)}")
        return self


class Flows(_Strict):
    version: Literal[1]
    steps: dict[StrictStr, StepDef]
    flows: dict[Audience, list[StrictStr]]
    prefill: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _flows_use_known_steps(self) -> Flows:
        for audience in AUDIENCES:
            if audience not in self.flows:
                raise ValueError(f"no flow for audience {audience}")
            steps = self.flows[audience]
            unknown = [s for s in steps if s not in self.steps]
            if unknown:
                raise ValueError(f"flow {audience} uses unknown steps {unknown}")
            if len(set(steps)) != len(steps):
                raise ValueError(f"flow {audience} repeats a step")
        unknown_prefill = set(self.prefill.values()) - set(self.steps)
        if unknown_prefill:
            raise ValueError(f"prefill names unknown steps {sorted(unknown_prefill)}")
        return self


class OptionWording(_Strict):
    label: StrictStr
    also: list[StrictStr] = Field(default_factory=list)


class Buttons(_Strict):
    back: str
    skip: str
    start_again: str
    exit: str
    send: str
    change: str
    back_to_summary: str


class StaffWording(_Strict):
    escalation: str
    their_words: str
    read_with: str
    still_waiting: str
    resent_note: str
    combined_header: str
    level_labels: dict[str, str]
    audience_labels: dict[str, str]
    reasons: dict[str, str]
    acknowledge_button: str
    take_button: str
    acknowledged: str
    taken: str
    closed_line: str
    not_staff: str
    already_acknowledged: str
    already_taken: str
    you_took: str
    unknown_button: str
    reply_usage: str
    reply_sent: str
    reply_not_allowed: str
    reply_failed: str
    case_not_found: str
    to_reporter: str
    followup_header: str
    followup_on_closed: str
    queue_header: str
    queue_empty: str
    queue_line: str
    queue_more: str
    queue_unacknowledged: str
    queue_taken: str
    queue_in_progress: str
    queue_no_one_yet: str
    age_seconds: str
    age_minutes: str
    age_hours: str
    age_days: str
    digest: str
    digest_oldest: str
    flood_messages: str
    flood_reports: str
    flood_case: str
    case_header: str
    case_dates: str
    case_owner: str
    not_sent_yet: str
    nobody_yet: str
    replies_allowed: str
    replies_not_allowed: str
    status_labels: dict[str, str]
    alerts_title: str
    waiting_state: str
    timeline_title: str
    event_labels: dict[str, str]
    how_to_read: str
    content_title: str
    record_labels: dict[str, str]
    record_unreadable: str
    note_line: str
    note_usage: str
    note_saved: str
    close_usage: str
    closed: str
    already_closed: str
    reopen_usage: str
    reopened: str
    not_closed: str
    case_usage: str
    outcomes: dict[str, str]
    oncall_taken: str
    not_in_rota: str
    handover_usage: str
    staff_help: str


class ReferralFieldLabels(_Strict):
    what_happened: str
    who_is_at_risk: str
    age: str
    where: str
    when: str
    people_and_vehicles: str
    danger_now: str
    reporter_role: str
    contact: str
    anything_else: str


class ReferralWording(_Strict):
    """The headings and labels of a referral export (bot/reports/referral.py)."""

    title: str
    intro: str
    reference: str
    level: str
    status: str
    outcome: str
    reported_by: str
    opened: str
    report_sent: str
    closed: str
    exported: str
    not_yet: str
    can_reply: str
    can_reply_yes: str
    can_reply_no: str
    answers_title: str
    report_not_sent: str
    no_answers: str
    fields: ReferralFieldLabels
    other_answers: str
    not_given: str
    skipped: str
    registrations: str
    found_in_text: str
    entity_labels: dict[str, str]
    first_messages: str
    changed_messages: str
    risk_signals: str
    alert_line: str
    why_raised: str
    trigger: str
    acknowledged: str
    not_acknowledged: str
    no_alerts: str
    followups: str
    staff_notes: str
    note_by: str
    none: str
    timeline: str
    timeline_events: dict[str, str]
    reporter: str
    bot: str
    footer: str
    page: str
    missing_char: str
    right_to_left: str
    time_format: str


class Wording(_Strict):
    welcome: str
    help: str
    choose_audience: str
    audiences: dict[Audience, str]
    audience_matches: dict[Audience, list[StrictStr]]
    questions: dict[str, dict[str, str]]
    options: dict[str, dict[str, OptionWording]]
    buttons: Buttons
    kept_as_typed: str
    empty_answer: str
    empty_required: str
    stale_button: str
    edited_noted: str
    service_answers: dict[str, str]
    back_to_question: str
    followup_added: str
    ask_audience_first: str
    followup_usage: str
    followup_not_found: str
    followup_busy: str
    followup_attached: str
    followup_no_replies: str
    seen_by_team: str
    reply_expected: str
    media_removed: str
    media_not_kept: str
    media_kinds: dict[str, str]
    summary_header: str
    summary_skipped: str
    summary_shortened: str
    summary_edits: str
    summary_labels: dict[str, str]
    change_pick: str
    done_prompt: str
    submitted: str
    submitted_repeat: str
    reply_line_yes: str
    reply_line_no: str
    urgent_immediate: str
    urgent_self_harm: str
    urgent_high: str
    urgent_repeat: str
    exit_done: str
    something_went_wrong: str
    flood_slow_down: str
    staff: StaffWording
    referral: ReferralWording

    def question(self, step: str, audience: str) -> str:
        texts = self.questions[step]
        return texts.get(audience) or texts["default"]


class Content:
    """The validated flows and wording for one language."""

    def __init__(self, flows: Flows, wording: Wording, language: str = "en") -> None:
        self.flows = flows
        self.wording = wording
        self.language = language
        self._check_wording_covers_flows()

    @classmethod
    def load(cls, content_dir: Path, language: str) -> Content:
        flows_path = content_dir / "flows.yml"
        wording_path = content_dir / "wording" / f"{language}.yml"
        flows = _load_model(Flows, flows_path)
        wording = _load_model(Wording, wording_path)
        try:
            return cls(flows, wording, language)
        except ValueError as exc:
            raise ConfigError(f"{wording_path}: {exc}") from None

    def steps_for(self, audience: str) -> list[str]:
        return list(self.flows.flows[audience])  # type: ignore[index]

    def step(self, step_id: str) -> StepDef:
        return self.flows.steps[step_id]

    @cached_property
    def all_steps(self) -> frozenset[str]:
        return frozenset(self.flows.steps)

    def _check_wording_covers_flows(self) -> None:
        w = self.wording
        for audience, steps in self.flows.flows.items():
            for step_id in steps:
                texts = w.questions.get(step_id, {})
                if audience not in texts and "default" not in texts:
                    raise ValueError(f"questions.{step_id} has no wording for {audience}")
                if step_id not in w.summary_labels:
                    raise ValueError(f"summary_labels.{step_id} is missing")
                step = self.flows.steps[step_id]
                for option in step.options:
                    if option not in w.options.get(step_id, {}):
                        raise ValueError(f"options.{step_id}.{option} is missing")
        if "other" not in w.media_kinds:
            raise ValueError("media_kinds.other is missing")


def _load_model(model: type[M], path: Path) -> M:
    raw = _read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"missing content file: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
