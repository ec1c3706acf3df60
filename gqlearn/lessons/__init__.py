"""Per-chapter support for the notebooks: plots, widgets with static fallbacks, exercise
checkers.  The general library (``gqlearn.quantize``, ``gqlearn.metrics``, ...) stays free of
course-specific code.

One module per chapter; what they share is in :mod:`~gqlearn.lessons.display` (tables, figures,
widgets) and :mod:`~gqlearn.lessons.exercises` (feedback, running the learner's function).  A
chapter module imports those two and the library, never another chapter module."""
