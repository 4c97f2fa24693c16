"""Evaluation: metrics as numbers (:mod:`.metrics`) and as pictures (:mod:`.plots`)."""

from aimass.evaluation.metrics import classification_report, quick_scores, top_losses

__all__ = ["classification_report", "quick_scores", "top_losses"]
