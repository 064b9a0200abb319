"""How a value is written in a table cell, for the terminal (render.py) and for report files (report/tables.py)
alike: one rule for missing values, booleans and decimals."""
from __future__ import annotations

from typing import Any


def format_cell(value: Any, digits: int = 1, thousands: bool = False) -> str:
    """'-' for missing (None, NaN), yes/no for booleans, floats with `digits` decimals, anything else as str.
    thousands=True groups digits with commas (terminal tables); files keep plain numbers (CSV, LaTeX)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    sep = "," if thousands else ""
    if isinstance(value, int):
        return f"{value:{sep}}"
    if isinstance(value, float):
        return f"{value:{sep}.{digits}f}"
    return str(value)
