"""Judges' pure logic: the rules, rubrics and verdict parsers, LLM, reward-model and ensemble judges."""
