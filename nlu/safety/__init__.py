"""In-process safety rules run on every free-text message (see ``rules.yml``)."""

from nlu.safety.rules import DEFAULT_RULES_PATH, Rule, RuleMatch, SafetyRules

__all__ = ["DEFAULT_RULES_PATH", "Rule", "RuleMatch", "SafetyRules"]
