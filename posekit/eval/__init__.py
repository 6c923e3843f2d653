"""Evaluation: one function per pose error, matching, recall and BOP AR, reports and plots."""
