"""Measuring a policy: CARES scoring, judge agreement, metrics files and reports."""
