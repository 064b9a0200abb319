"""Figures, tables and claim verdicts built from stored results only (never by measuring).

build_report: `vimbench report`; import_anchors: the reference measurements into our schema;
reproduce: paper claims (claims/*.toml) against measured results."""
from __future__ import annotations

from vimbench.report.anchors import import_anchors
from vimbench.report.build import ReportOutput, build_report

__all__ = ["ReportOutput", "build_report", "import_anchors"]
