"""Evaluation: metrics as numbers (:mod:`.metrics`) and as pictures (:mod:`.plots`)."""

from aimass.evaluate.metrics import classification_report, quick_scores, top_losses

__all__ = ["classification_report", "quick_scores", "top_losses"]
