"""Pictures of training and evaluation: ``curves.png`` in a run dir (``nlpforge plot``) and the
self-contained ``report.html`` of ``nlpforge evaluate --report``. matplotlib comes with the
``plots`` extra; the runtime never needs it."""

from nlpforge.report.section import ReportSection

__all__ = ["ReportSection"]
