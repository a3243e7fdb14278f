"""Prompt sets and data sources, the Arrow schemas between stages, and buffer import/export."""
