"""The anonymous safeguarding reporting bot."""
