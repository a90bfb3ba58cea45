"""NNR unit framing and syntax structures, driven by the tables in spec/syntax (see units.py)."""
from .units import (ParsedUnit, SyntaxState, UnitSpan, parse_unit, parse_units, split_units,
                    write_unit)

__all__ = ["ParsedUnit", "SyntaxState", "UnitSpan", "parse_unit", "parse_units", "split_units",
           "write_unit"]
