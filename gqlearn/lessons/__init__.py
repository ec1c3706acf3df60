"""Per-chapter support for the notebooks: plots, widgets with static fallbacks, exercise
checkers.  The general library (``gqlearn.quantize``, ``gqlearn.metrics``, ...) stays free of
course-specific code."""
