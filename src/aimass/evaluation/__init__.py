"""Evaluation: metrics as numbers (:mod:`.metrics`) and as pictures (:mod:`.plots`)."""

from aimass.evaluation.metrics import check_labels, classification_report, quick_scores, top_losses

__all__ = ["check_labels", "classification_report", "quick_scores", "top_losses"]
